"""Several claims per push (``hystate.cluster.batch``, issue 24): the workers of one node share
its pushes. Real worker processes (``hystate next --claim``), a real ``git daemon`` on 127.0.0.1.

The node's sync lock is held by the test (as a push in flight would hold it) while workers claim:
their claims are committed locally and wait; once it is released, one push carries them all."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from hystate.cluster.sync import SYNC_LOCK
from hystate.core.locks import StateLock
from hystate.manager import StateManager
from tests.conftest import HYSTATE, git, run_hystate
from tests.harness.sync import GitServer, branch_docs, clone_nodes, served

CONFIG = {
    "sync": {"remote": "origin"},
    "recovery": {"auto_resume": False, "stage_timeouts": {"downloading": 1}},
}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[GitServer, list[Path]]]:
    with served(tmp_path, CONFIG, 12) as server:
        git(server.bare, "config", "core.logAllRefUpdates", "always")  # one line per push
        yield server, clone_nodes(server, tmp_path)


def wait_until(ok: Callable[[], bool], what: str, limit: float = 300) -> None:
    end = time.monotonic() + limit
    while not ok():
        assert time.monotonic() < end, f"never: {what}"
        time.sleep(0.05)


def claimers(node: Path, names: list[str]) -> dict[str, subprocess.Popen[str]]:
    return {
        name: subprocess.Popen(
            [*HYSTATE, "next", "downloading", "--claim", "--worker", name, "--json"],
            cwd=node,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in names
    }


def unpushed(node: Path) -> int:
    return int(git(node, "rev-list", "--count", "refs/remotes/origin/main..HEAD").strip())


def pushes(server: GitServer) -> int:
    return len(git(server.bare, "reflog", "show", "refs/heads/main").splitlines())


def remote_held(server: GitServer, tmp: Path) -> dict[str, tuple[str, str]]:
    """Episode -> (worker, lease) of every episode in downloading on the server's branch."""
    return {
        eid: (doc["history"][-1]["by"], doc["history"][-1]["lease"])
        for eid, doc in branch_docs(server, tmp).items()
        if isinstance(doc, dict) and doc.get("stage") == "downloading"
    }


def sync_lock(node: Path) -> StateLock:
    return StateLock(StateManager(cwd=node).locks_dir / SYNC_LOCK, timeout=60)


def finish(procs: dict[str, subprocess.Popen[str]]) -> dict[str, subprocess.CompletedProcess[str]]:
    done = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        done[name] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return done


def test_one_push_carries_the_claims_of_the_waiting_workers(
    cluster: tuple[GitServer, list[Path]], tmp_path: Path
) -> None:
    server, (node, _) = cluster
    before = pushes(server)
    lock = sync_lock(node)
    with lock:  # a push in flight
        procs = claimers(node, ["w1", "w2", "w3"])
        wait_until(lambda: unpushed(node) == 3, "three claims committed locally")
        assert all(p.poll() is None for p in procs.values())  # none acknowledged yet
        assert remote_held(server, tmp_path) == {}
    done = finish(procs)
    acked = {}
    for name, proc in done.items():
        assert proc.returncode == 0, proc.stderr
        (row,) = json.loads(proc.stdout)
        acked[row["episode_id"]] = (name, row["lease"])
    assert len(acked) == 3  # three episodes, each acknowledged to one worker once
    assert remote_held(server, tmp_path) == acked  # each on the remote, under its lease
    assert pushes(server) == before + 1  # one push carried the three
    assert unpushed(node) == 0


def test_a_worker_killed_while_waiting_in_a_batch(
    cluster: tuple[GitServer, list[Path]], tmp_path: Path
) -> None:
    server, (node, other) = cluster
    with sync_lock(node):
        procs = claimers(node, ["w1", "w2", "w3"])
        wait_until(lambda: unpushed(node) == 3, "three claims committed locally")
        os.kill(procs["w2"].pid, signal.SIGKILL)
        procs["w2"].wait()
    done = finish({k: v for k, v in procs.items() if k != "w2"})
    acked = {}
    for name, proc in done.items():
        assert proc.returncode == 0, proc.stderr
        (row,) = json.loads(proc.stdout)
        acked[row["episode_id"]] = (name, row["lease"])
    held = remote_held(server, tmp_path)
    # the survivors' claims are on the remote; the killed worker's, never acknowledged, was
    # carried by the same push (as a claim killed before its own push is carried by the next)
    assert {k: v for k, v in held.items() if v[0] != "w2"} == acked
    (lost,) = [k for k, v in held.items() if v[0] == "w2"]
    # nobody works on it: its lease runs out and any node recovers it
    time.sleep(1.5)
    proc = run_hystate(other, "fsck", "--repair", timeout=300)
    assert proc.returncode in (0, 1), proc.stderr
    assert lost not in remote_held(server, tmp_path)


def test_a_failed_push_withdraws_every_waiting_claim(
    cluster: tuple[GitServer, list[Path]], tmp_path: Path
) -> None:
    server, (node, _) = cluster
    with sync_lock(node):
        procs = claimers(node, ["w1", "w2", "w3"])
        wait_until(lambda: unpushed(node) == 3, "three claims committed locally")
        server.kill()  # the push that would carry them cannot
    done = finish(procs)
    for proc in done.values():
        assert proc.returncode == 7 and "unreachable" in proc.stderr, proc.stderr
    assert unpushed(node) == 0  # each withdrew its own claim: nothing held locally
    manager = StateManager(cwd=node)
    assert manager.list_episodes(["downloading"]) == []
    server.start()
    assert remote_held(server, tmp_path) == {}
    (proc,) = finish(claimers(node, ["w4"])).values()
    assert proc.returncode == 0, proc.stderr
    (row,) = json.loads(proc.stdout)
    assert remote_held(server, tmp_path) == {row["episode_id"]: ("w4", row["lease"])}


LOOP = """
import json, sys
from hystate.manager import StateManager
manager = StateManager(cwd=sys.argv[1], worker=sys.argv[2])
while True:
    got = manager.claim_next("downloading", 1, worker=sys.argv[2])
    if not got:
        break
    print(json.dumps([got[0].episode.episode_id, got[0].lease]), flush=True)
"""


def test_workers_of_two_nodes_claim_everything_each_once(
    cluster: tuple[GitServer, list[Path]], tmp_path: Path
) -> None:
    server, nodes = cluster
    procs = {
        f"n{i}w{j}": subprocess.Popen(
            [*HYSTATE[:1], "-c", LOOP, str(node), f"n{i}w{j}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, node in enumerate(nodes)
        for j in range(3)
    }
    acked: dict[str, tuple[str, str]] = {}
    for name, proc in finish(procs).items():
        assert proc.returncode == 0, proc.stderr
        for line in proc.stdout.splitlines():
            eid, lease = json.loads(line)
            assert eid not in acked, f"{eid} acknowledged to {acked[eid][0]} and {name}"
            acked[eid] = (name, lease)
    # every episode claimed, each acknowledged once, each on the remote under that very claim
    assert len(acked) == 12
    assert remote_held(server, tmp_path) == acked


def _commit_of(node: Path, name: str, data: bytes) -> str:
    blob = (
        subprocess.run(
            ["git", "hash-object", "-w", "--stdin"], cwd=node, input=data, capture_output=True
        )
        .stdout.decode()
        .strip()
    )
    tree = subprocess.run(
        ["git", "mktree"], cwd=node, input=f"100644 blob {blob}\t{name}\n".encode(),
        capture_output=True,
    ).stdout.decode().strip()  # fmt: skip
    return git(node, "commit-tree", tree, "-m", "t").strip()


def test_hostile_turns_refs_neither_stop_nor_stall_a_node(
    cluster: tuple[GitServer, list[Path]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Anyone who can push may write ``refs/hystate/turns/*``: junk is ignored, and however many
    nodes say they contend, a node yields at most MAX_PAUSE before a push."""
    from datetime import UTC, datetime

    from hystate.cluster import turns

    _, (node, other) = cluster
    now = datetime.now(UTC).isoformat()
    refs = {
        "deep": b"[" * 100_000 + b"]" * 100_000,
        "junk": json.dumps({"lost_at": 1e308}).encode(),
        "future": json.dumps({"lost_at": "2999-01-01T00:00:00+00:00"}).encode(),
        "naive": json.dumps({"lost_at": "2026-01-01T00:00:00"}).encode(),
        **{f"many{i}": json.dumps({"lost_at": now}).encode() for i in range(18)},
        "slow": json.dumps({"lost_at": now, "cycle": 1e308}).encode(),
        "nan": json.dumps({"lost_at": now, "cycle": float("nan")}).encode(),
    }
    for name, data in refs.items():
        commit = _commit_of(other, turns.FILE, data)
        git(other, "push", "-q", "-f", "origin", f"{commit}:refs/hystate/turns/{name}")
    blob = git(other, "rev-parse", f"{commit}:{turns.FILE}").strip()
    git(other, "push", "-q", "-f", "origin", f"{blob}:refs/hystate/turns/not-a-commit")
    assert run_hystate(node, "sync").returncode == 0  # fetched with the lease tables
    manager = StateManager(cwd=node)
    assert turns._contending(manager, "n0")[0] == 20  # only the well-formed, recent ones
    pauses: list[float] = []
    clock = [time.time()]

    def sleep(seconds: float) -> None:
        pauses.append(seconds)
        clock[0] += seconds

    with sync_lock(node), monkeypatch.context() as patch:  # as a worker pushing back to back
        fake = SimpleNamespace(time=lambda: clock[0], monotonic=time.monotonic, sleep=sleep)
        patch.setattr(turns, "time", fake)  # (turns' own clock and pauses only)
        turns.after_push(manager, 1, 60.0)  # (a round as slow as can be)
        turns.before_push(manager, "origin", "main")
    assert pauses and 0 < sum(pauses) <= turns.MAX_PAUSE  # it yields, boundedly
    (proc,) = finish(claimers(node, ["w1"])).values()
    assert proc.returncode == 0, proc.stderr


def test_a_sync_lock_that_is_no_lock_file_refuses_the_claim_before_it_is_made(
    cluster: tuple[GitServer, list[Path]],
) -> None:
    _, (node, _) = cluster
    path = StateManager(cwd=node).locks_dir / SYNC_LOCK
    path.mkdir(parents=True)
    before = git(node, "rev-parse", "HEAD")
    proc = run_hystate(node, "next", "downloading", "--claim", "--worker", "w1")
    assert proc.returncode != 0 and "not a lock file" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert git(node, "rev-parse", "HEAD") == before  # nothing committed, nothing held
