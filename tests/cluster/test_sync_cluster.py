"""The cluster test: a real ``git daemon``, 3 clones, 2 worker processes per clone, the 525 real
episodes through every stage with ~10% failures; faults: the server killed and restarted
mid-run, a node's worker killed -9 while it pushes, a node offline for a while.

Invariants afterwards: no episode held by two workers at the same time (acknowledged claims,
with the time of their release), no acknowledged transition lost, every file's history
legal, every clone equal to the remote, ``git fsck`` clean everywhere.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from hystate.core.model import ProcessingStage
from hystate.core.rules import legal_move
from tests.conftest import REPO_ROOT, git, run_hystate
from tests.harness.sync import GitServer, clone_node, free_port, fsck_clean, seed_remote

CATALOG = REPO_ROOT / "processed"  # the project's own 525 episodes (discover --from a state folder)
LEASE = 45.0  # > any stall of a node seen on a loaded 2-core machine; the killed worker's
# episodes come back once it has expired
CONFIG = {
    "sync": {"remote": "origin", "push": "batch"},
    "recovery": {
        "retry_delay": 0,
        "stage_timeouts": {"downloading": LEASE, "converting": LEASE, "uploading": LEASE},
    },
}
NODES, WORKERS = 3, 2
SUBSET = 5  # every episode through the first claim, one in SUBSET through every stage
S = ProcessingStage

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("heavy")]


class Cluster:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.server = GitServer(tmp / "srv")
        self.server.start()
        seed_remote(self.server, tmp / "seed", CATALOG, CONFIG)
        self.nodes = [clone_node(self.server, tmp / f"node{i}", f"n{i}") for i in range(NODES)]
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.deaths: dict[str, float] = {}  # worker -> time it was killed
        self.deadline = time.time() + 600

    def log(self, worker: str) -> Path:
        return self.tmp / f"{worker}.jsonl"

    def start(self, node: int, number: int, seed: int) -> str:
        name = f"n{node}w{number}s{seed}"
        args = [
            str(self.nodes[node]),
            name,
            str(self.log(name)),
            str(seed),
            "0.1",
            str(self.deadline),
            str(SUBSET),
        ]
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "tests.harness.sync_worker", *args],
            cwd=Path(__file__).parents[2],
            stdout=subprocess.DEVNULL,
            stderr=open(self.tmp / f"{name}.err", "wb"),  # noqa: SIM115
        )
        return name

    def kill_while_pushing(self, node: int) -> str:
        """SIGKILL one worker of ``node`` at a moment its `git push` child runs."""
        prefix = f"n{node}w"
        until = time.time() + 60
        while time.time() < until:
            for name, proc in self.procs.items():
                if name.startswith(prefix) and proc.poll() is None and _pushing(proc.pid):
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    self.deaths[name] = time.time()
                    return name
            if all(p.poll() is not None for n, p in self.procs.items() if n.startswith(prefix)):
                raise AssertionError(f"the workers of node {node} ended before any push")
            time.sleep(0.005)
        raise AssertionError("no push seen to kill")

    def wait(self) -> None:
        for name, proc in self.procs.items():
            if name not in self.deaths:
                assert proc.wait(timeout=max(self.deadline - time.time(), 1) + 30) == 0, name

    def events(self) -> list[dict[str, object]]:
        found = []
        for name in self.procs:
            if self.log(name).exists():
                found += [json.loads(line) for line in self.log(name).read_text().splitlines()]
        return sorted(found, key=lambda e: float(e["t"]))  # type: ignore[arg-type]


def _pushing(pid: int) -> bool:
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return False
    for child in children:
        try:
            cmd = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"push" in cmd[:3] and not any(b"refs/hystate" in part for part in cmd):
            return True
    return False


def _after(seconds: float, action: object) -> threading.Timer:
    timer = threading.Timer(seconds, action)  # type: ignore[arg-type]
    timer.start()
    return timer


def test_cluster_of_three_nodes_with_faults(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    try:
        _run_and_check(cluster)
    finally:
        for proc in cluster.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        cluster.server.kill()


def _run_and_check(cluster: Cluster) -> None:
    for node in range(NODES):
        for number in range(WORKERS):
            cluster.start(node, number, seed=node * 10 + number)
    server = cluster.server
    started = time.time()

    # the server dies for a few seconds
    time.sleep(4)
    server.kill()
    time.sleep(3)
    server.start()
    # a worker of node 1 is killed -9 while it pushes; its node goes on with a new one
    killed = cluster.kill_while_pushing(1)
    cluster.start(1, 0, seed=99)
    # node 2 goes offline (its remote points at a dead port), then comes back
    url = server.url
    time.sleep(2)
    git(cluster.nodes[2], "remote", "set-url", "origin", f"git://127.0.0.1:{free_port()}/state.git")
    time.sleep(5)
    git(cluster.nodes[2], "remote", "set-url", "origin", url)
    cluster.wait()
    elapsed = time.time() - started

    for node in cluster.nodes:  # everyone catches up
        proc = run_hystate(node, "sync", "--json", timeout=300)
        assert proc.returncode == 0, proc.stderr
    for node in cluster.nodes:
        proc = run_hystate(node, "sync", timeout=300)
        assert proc.returncode == 0, proc.stderr
    tip = server.tip()
    docs = _remote_docs(server)
    events = cluster.events()
    claims = [e for e in events if e["ev"] == "claim"]
    offline = [e for e in events if e["ev"] == "offline"]
    print(
        f"\n{len(docs)} episodes, {len(claims)} acknowledged claims, {len(offline)} refused"
        f" while offline, {elapsed:.0f} s, killed {killed}",
        file=sys.stderr,
    )

    # every clone equal to the remote, clean, fsck-clean
    for node in [*cluster.nodes, server.bare]:
        assert git(node, "rev-parse", "main").strip() == tip
        fsck_clean(node)
    for node in cluster.nodes:
        assert git(node, "status", "--porcelain", "--untracked-files=no") == ""
        assert run_hystate(node, "validate").returncode == 0

    # all the way through
    stages = {doc["stage"] for doc in docs.values()}
    assert len(docs) == 525 and stages <= {"published", "skipped"}, stages
    published = sum(doc["stage"] == "published" for doc in docs.values())
    assert published > 525 / SUBSET * 0.6, published
    assert all(len(doc["history"]) > 2 for doc in docs.values())  # every one was claimed

    # every history legal
    for eid, doc in docs.items():
        stage, failed = S.DISCOVERED, None
        for entry in doc["history"][1:]:
            to = S(entry["to"])
            assert legal_move(stage, failed, to), (eid, stage, to)
            failed = stage if to is S.FAILED and stage is not S.FAILED else failed
            stage = to

    # no acknowledged transition lost: every claim and step logged is in its file's history
    entries = {
        eid: {(h["at"], h["to"], h["by"]) for h in doc["history"]} for eid, doc in docs.items()
    }
    for e in events:
        if e["ev"] in ("claim", "step"):
            assert (e["at"], e["to"], e["w"]) in entries[str(e["id"])], e

    # never two workers on one episode at once: a claim holds it until its worker's next step
    # on it (or the worker's death)
    held: dict[str, tuple[str, float]] = {}
    for e in events:
        eid, worker = str(e.get("id")), str(e["w"])
        for w, t in list(cluster.deaths.items()):
            for k, (holder, _) in list(held.items()):
                if holder == w and float(e["t"]) > t:
                    del held[k]
        if e["ev"] == "claim":
            assert eid not in held or held[eid][0] == worker, (eid, held.get(eid), e)
            held[eid] = (worker, float(e["t"]))
        elif (
            e["ev"] == "step"
            and held.get(eid, ("", 0))[0] == worker
            and e["to"] in ("failed", "downloaded", "converted", "published")
        ):
            del held[eid]


def _remote_docs(server: GitServer) -> dict[str, dict[str, object]]:
    out = git(server.bare, "ls-tree", "-r", "--name-only", "main", "--", "processed")
    names = [n for n in out.split() if n.endswith(".yaml")]
    batch = subprocess.run(
        ["git", "cat-file", "--batch"],
        input="".join(f"main:{n}\n" for n in names).encode(),
        cwd=server.bare,
        capture_output=True,
        check=True,
    ).stdout
    docs, pos = {}, 0
    for name in names:
        header_end = batch.index(b"\n", pos)
        size = int(batch[pos:header_end].split()[2])
        body = batch[header_end + 1 : header_end + 1 + size]
        pos = header_end + 1 + size + 1
        docs[Path(name).stem] = yaml.safe_load(body)
    return docs
