"""A worker killed between its write and its commit no longer stops the node's syncs: the move
forward mends the dead process's write as `fsck --repair` would (hystate/cluster/in_the_way.py).
Real processes, a real kill -9, a real `git daemon`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from hystate.manager import StateManager
from tests.conftest import git, run_hystate
from tests.harness.dead_write import killed_mid_commit
from tests.harness.sync import GitServer, clone_nodes, fsck_clean, served

CONFIG = {"sync": {"remote": "origin", "push": "batch"}, "recovery": {"retry_delay": 0}}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[GitServer]:
    with served(tmp_path, CONFIG, 4) as srv:
        yield srv


@pytest.fixture
def nodes(server: GitServer, tmp_path: Path) -> list[Path]:
    return clone_nodes(server, tmp_path)


def test_a_dead_workers_write_no_longer_stops_the_sync(
    server: GitServer, nodes: list[Path], tmp_path: Path
) -> None:
    a, b = nodes
    eid = sorted(p.stem for p in StateManager(cwd=a).store.iter_paths())[0]
    killed_mid_commit(a, tmp_path, "advance", eid, "skipped", "--worker", "wa")
    assert git(a, "status", "--porcelain", "--untracked-files=no").strip()  # written, uncommitted
    # meanwhile another node moves the same episode and pushes
    assert run_hystate(b, "advance", eid, "downloading", "--worker", "wb").returncode == 0
    assert run_hystate(b, "sync").returncode == 0

    proc = run_hystate(a, "sync", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    (mended,) = report["mended"]
    assert mended["path"].endswith(f"/{eid}.yaml")
    assert mended["action"].startswith("committed as ")
    assert "died before its commit" in proc.stderr
    # the dead worker's transition was committed, then lost to the remote's: dropped and told
    (dropped,) = report["dropped"]
    assert (dropped["episode_id"], dropped["to"], dropped["worker"]) == (eid, "skipped", "wa")
    assert git(a, "rev-parse", "HEAD").strip() == server.tip()
    assert git(a, "status", "--porcelain", "--untracked-files=no") == ""
    assert not list((a / "processed" / ".locks").glob("*.lock"))
    fsck_clean(a)
    assert StateManager(cwd=a).episode(eid).stage.value == "downloading"


def test_a_dead_workers_write_the_remote_did_not_touch_is_kept_and_pushed(
    server: GitServer, nodes: list[Path], tmp_path: Path
) -> None:
    a, b = nodes
    first, second = sorted(p.stem for p in StateManager(cwd=a).store.iter_paths())[:2]
    killed_mid_commit(a, tmp_path, "advance", first, "skipped", "--worker", "wa")
    assert run_hystate(b, "advance", second, "skipped", "--worker", "wb").returncode == 0
    assert run_hystate(b, "sync").returncode == 0
    # the move does not touch `first`: the sync goes through and leaves it to `fsck --repair`
    proc = run_hystate(a, "sync", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["mended"] == []
    assert run_hystate(a, "fsck", "--repair").returncode == 0
    assert run_hystate(a, "sync").returncode == 0
    assert StateManager(cwd=b).episode(first).stage.value == "discovered"  # before b syncs
    assert run_hystate(b, "sync").returncode == 0
    assert StateManager(cwd=b).episode(first).stage.value == "skipped"


def test_a_persons_edit_is_never_mended(server: GitServer, nodes: list[Path]) -> None:
    a, b = nodes
    eid = sorted(p.stem for p in StateManager(cwd=a).store.iter_paths())[0]
    path = next((a / "processed").rglob(f"{eid}.yaml"))
    edited = path.read_bytes().replace(b"title: ", b"title: (edited) ", 1)
    path.write_bytes(edited)  # a person's uncommitted edit: no lock of a dead process
    assert run_hystate(b, "advance", eid, "skipped", "--worker", "wb").returncode == 0
    assert run_hystate(b, "sync").returncode == 0
    proc = run_hystate(a, "sync")
    assert proc.returncode == 7
    assert "not uptodate" in proc.stderr and "fsck --repair" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert path.read_bytes() == edited


def test_whoever_takes_the_dead_processs_lock_next_mends_its_write(
    server: GitServer, nodes: list[Path], tmp_path: Path
) -> None:
    a, b = nodes
    eid = sorted(p.stem for p in StateManager(cwd=a).store.iter_paths())[0]
    killed_mid_commit(a, tmp_path, "advance", eid, "skipped", "--worker", "wa")
    # another worker of the node takes the episode's lock first: it mends, then judges its own
    # move on the committed state (skipped: its move no longer applies)
    late = run_hystate(a, "advance", eid, "downloading", "--worker", "wc")
    assert late.returncode == 3, late.stderr
    assert "died before its commit" in late.stderr and "committed as" in late.stderr
    assert git(a, "status", "--porcelain", "--untracked-files=no") == ""
    assert StateManager(cwd=a).episode(eid).stage.value == "skipped"
    # the remote meanwhile moved it: the node's sync drops the dead worker's step and goes on
    assert run_hystate(b, "advance", eid, "downloading", "--worker", "wb").returncode == 0
    assert run_hystate(b, "sync").returncode == 0
    proc = run_hystate(a, "sync", "--json")
    assert proc.returncode == 0, proc.stderr
    assert [d["worker"] for d in json.loads(proc.stdout)["dropped"]] == ["wa"]
    fsck_clean(a)
