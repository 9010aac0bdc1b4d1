"""hystate sync and claims through a shared remote, against a real ``git daemon``."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from hystate.engine import claims as work
from hystate.manager import StateManager
from tests.conftest import git, run_hystate
from tests.harness.sync import GitServer, clone_nodes, fsck_clean, served

CONFIG = {"sync": {"remote": "origin"}, "recovery": {"retry_delay": 0}}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[GitServer]:
    with served(tmp_path, CONFIG, 6) as srv:
        yield srv


@pytest.fixture
def nodes(server: GitServer, tmp_path: Path) -> list[Path]:
    return clone_nodes(server, tmp_path)


def manager(path: Path, worker: str) -> StateManager:
    return StateManager(cwd=path, worker=worker)


def clean(path: Path) -> None:
    assert git(path, "status", "--porcelain", "--untracked-files=no") == ""
    assert git(path, "diff-index", "--cached", "HEAD") == ""
    fsck_clean(path)


def remote_doc(server: GitServer, episode_id: str) -> dict[str, object]:
    names = git(server.bare, "ls-tree", "-r", "--name-only", "main").split()
    (name,) = [n for n in names if n.endswith(f"/{episode_id}.yaml")]
    import yaml

    return yaml.safe_load(git(server.bare, "show", f"main:{name}"))  # type: ignore[no-any-return]


def test_claim_is_pushed_before_it_is_acknowledged(server: GitServer, nodes: list[Path]) -> None:
    a = manager(nodes[0], "wa")
    (result,) = a.claim_next("downloading", 1, worker="wa")
    doc = remote_doc(server, result.episode.episode_id)
    assert doc["stage"] == "downloading" and doc["worker"] == "wa"
    assert server.tip() == git(nodes[0], "rev-parse", "HEAD").strip()
    clean(nodes[0])


def test_two_nodes_race_for_one_episode_exactly_one_wins(
    server: GitServer, nodes: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = manager(nodes[0], "wa"), manager(nodes[1], "wb")
    b.claim_next("downloading", 1, worker="wb")  # b is up to date, then takes one more:
    original = work.claim
    raced: list[str] = []

    def racing(
        m: StateManager, stage: str, limit: int, worker: str | None, **kw: object
    ) -> list[object]:
        kw["order"] = None  # both nodes the oldest first: they race for the same episode
        if m is b and not raced:  # a claims between b's last fetch and b's push
            raced.append("")
            raced[:] = [r.episode.episode_id for r in a.claim_next(stage, 1, worker="wa")]
        return original(m, stage, limit, worker, **kw)  # type: ignore[arg-type,return-value]

    monkeypatch.setattr(work, "claim", racing)
    got = b.claim_next("downloading", 1, worker="wb")
    assert len(got) == 1 and raced and got[0].episode.episode_id != raced[0]
    assert remote_doc(server, raced[0])["worker"] == "wa"
    assert remote_doc(server, got[0].episode.episode_id)["worker"] == "wb"
    history = remote_doc(server, raced[0])["history"]
    assert [h["to"] for h in history] == ["discovered", "downloading"]  # b's claim left no trace
    for node in nodes:
        clean(node)


def test_sync_reports_a_dropped_transition(server: GitServer, nodes: list[Path]) -> None:
    a, b = manager(nodes[0], "wa"), manager(nodes[1], "wb")
    (won,) = a.claim_next("downloading", 1, worker="wa")
    b.sync_remote = None  # b works offline (not fetched since): a local claim of the same one
    b.update_state(won.episode.episode_id, "downloading", worker="wb")
    proc = run_hystate(nodes[1], "sync", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["pushed"] == [] and report["replayed"] == []
    (dropped,) = report["dropped"]
    assert dropped["episode_id"] == won.episode.episode_id
    assert (dropped["from"], dropped["to"]) == ("discovered", "downloading")
    assert "remote moved it discovered -> downloading (by wa)" in dropped["reason"]
    assert git(nodes[1], "rev-parse", "HEAD").strip() == server.tip()
    assert manager(nodes[1], "x").episode(won.episode.episode_id).worker == "wa"
    clean(nodes[1])


def test_people_and_other_episodes_survive_a_sync(server: GitServer, nodes: list[Path]) -> None:
    a, b = manager(nodes[0], "wa"), manager(nodes[1], "wb")
    b.sync_remote = None
    ids = sorted(p.stem for p in b.store.iter_paths())
    b.update_state(ids[5], "skipped", message="not this one")
    (nodes[1] / "NOTES.md").write_text("a person's notes\n")
    git(nodes[1], "add", "NOTES.md")
    git(nodes[1], "commit", "-qm", "notes")
    (nodes[1] / "STAGED.md").write_text("staged, not committed\n")
    git(nodes[1], "add", "STAGED.md")
    a.update_state(ids[4], "skipped", message="remote side")  # pushed (sync.push: each)
    report = run_hystate(nodes[1], "sync", "--json")
    assert report.returncode == 0, report.stderr
    assert len(json.loads(report.stdout)["replayed"]) == 2
    files = git(server.bare, "ls-tree", "-r", "--name-only", "main")
    assert "NOTES.md" in files and "STAGED.md" not in files
    assert remote_doc(server, ids[5])["stage"] == "skipped"
    assert remote_doc(server, ids[4])["stage"] == "skipped"
    assert git(nodes[1], "diff", "--cached", "--name-only").split() == ["STAGED.md"]
    assert git(nodes[1], "status", "--porcelain", "--untracked-files=no").split() == [
        "A",
        "STAGED.md",
    ]
    log = git(nodes[1], "log", "--format=%an|%s", "-3").splitlines()
    assert "n1|notes" in log  # author kept
    fsck_clean(nodes[1])


def test_offline_node_keeps_its_episodes_and_refuses_claims(
    server: GitServer, nodes: list[Path]
) -> None:
    a = manager(nodes[0], "wa")
    (held,) = a.claim_next("downloading", 1, worker="wa")
    eid = held.episode.episode_id
    server.kill()
    proc = run_hystate(nodes[0], "next", "downloading", "--claim", "--worker", "wa")
    assert proc.returncode == 7, proc.stderr
    assert "new claims need the remote" in proc.stderr and len(proc.stderr.splitlines()) == 1
    before = git(nodes[0], "rev-parse", "HEAD").strip()
    proc = run_hystate(
        nodes[0], "advance", eid, "downloaded", "--worker", "wa",
        "--set", "files.audio_file=a.mp3", "--lease", str(held.lease),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "pending" in proc.stderr and "not on the remote yet" in proc.stderr
    assert git(nodes[0], "rev-parse", "HEAD~").strip() == before  # the withdrawn claim left nothing
    status = json.loads(run_hystate(nodes[0], "status", "--json").stdout)["sync"]
    assert (status["ahead"], status["behind"]) == (1, 0)  # (claims push without a fetch)
    assert run_hystate(nodes[0], "sync").returncode == 7
    server.start()
    proc = run_hystate(nodes[0], "sync", "--json")
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)["pushed"]) == 1
    assert remote_doc(server, eid)["stage"] == "downloaded"
    text = run_hystate(nodes[0], "status").stdout
    assert "0 commit(s) ahead, 0 behind, as of the last fetch" in text
    clean(nodes[0])


def test_status_says_how_far_behind(server: GitServer, nodes: list[Path]) -> None:
    a = manager(nodes[0], "wa")
    a.claim_next("downloading", 2, worker="wa")
    git(nodes[1], "fetch", "-q")
    status = json.loads(run_hystate(nodes[1], "status", "--json").stdout)["sync"]
    assert (status["remote"], status["ahead"], status["behind"]) == ("origin", 0, 2)


def test_push_each_judges_a_transition_on_the_remotes_latest(
    server: GitServer, nodes: list[Path]
) -> None:
    a = manager(nodes[0], "wa")
    eid = sorted(p.stem for p in a.store.iter_paths())[2]
    a.update_state(eid, "skipped", message="duplicate upload")  # pushed at once
    proc = run_hystate(nodes[1], "advance", eid, "downloading", "--worker", "wb")  # stale clone
    assert proc.returncode == 3, proc.stderr
    assert "cannot move from skipped to downloading" in proc.stderr
    assert remote_doc(server, eid)["stage"] == "skipped"
    clean(nodes[1])


def test_replayed_commits_are_signed_when_git_signs(
    server: GitServer, nodes: list[Path], tmp_path: Path
) -> None:
    key = tmp_path / "signing-key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "n1", "-f", str(key)], check=True
    )
    git(nodes[1], "config", "gpg.format", "ssh")
    git(nodes[1], "config", "user.signingKey", str(key))
    git(nodes[1], "config", "commit.gpgSign", "true")
    a, b = manager(nodes[0], "wa"), manager(nodes[1], "wb")
    b.sync_remote = None  # a transition made offline, replayed by the sync below
    ids = sorted(p.stem for p in b.store.iter_paths())
    b.update_state(ids[3], "skipped", message="signed here")
    a.update_state(ids[2], "skipped", message="remote side")  # the remote moved meanwhile
    report = run_hystate(nodes[1], "sync", "--json")
    assert report.returncode == 0, report.stderr
    assert len(json.loads(report.stdout)["replayed"]) == 1
    assert server.tip() == git(nodes[1], "rev-parse", "HEAD").strip()
    body = git(server.bare, "cat-file", "commit", "main")
    assert "-----BEGIN SSH SIGNATURE-----" in body and "signed here" in body
    assert git(server.bare, "log", "-1", "--format=%an", "main").strip() == "n1"
    fsck_clean(nodes[1])


def test_a_replayed_claim_is_judged_against_the_remotes_limits(tmp_path: Path) -> None:
    config = {**CONFIG, "limits": {"downloading": {"concurrency": 1}}}
    with served(tmp_path, config, 6) as server:
        nodes = clone_nodes(server, tmp_path)
        a, b = manager(nodes[0], "wa"), manager(nodes[1], "wb")
        b.sync_remote = None  # b works offline: its local claim fits its own view
        second = [e.episode_id for e in b.list_episodes()][1]
        local = b.update_state(second, "downloading", worker="wb")
        (won,) = a.claim_next("downloading", 1, worker="wa")  # the remote's one slot
        assert won.episode.episode_id != second
        proc = run_hystate(nodes[1], "sync", "--json")
        assert proc.returncode == 0, proc.stderr
        (dropped,) = json.loads(proc.stdout)["dropped"]
        assert dropped["episode_id"] == local.episode.episode_id
        assert "downloading limit reached: 1 of 1 running" in dropped["reason"]
        assert remote_doc(server, local.episode.episode_id)["stage"] == "discovered"
        assert manager(nodes[1], "x").claim_next("downloading", 1) == []  # full everywhere
        clean(nodes[1])


def test_a_claim_on_a_detached_head_is_refused_before_anything_is_committed(
    nodes: list[Path],
) -> None:
    """Detached HEAD, opted in: a claim through the remote could be neither pushed nor
    withdrawn, so it is refused in one line (exit 7) and nothing is held."""
    node = nodes[0]
    git(node, "checkout", "-q", "--detach")
    git(node, "config", "hystate.allowDetachedHead", "true")
    before = git(node, "rev-parse", "HEAD").strip()
    done = run_hystate(node, "next", "downloading", "--claim", "--worker", "d")
    assert done.returncode == 7, done.stderr
    assert "detached" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert git(node, "rev-parse", "HEAD").strip() == before
    assert git(node, "status", "--porcelain", "--untracked-files=no") == ""
