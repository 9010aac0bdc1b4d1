"""A ``hystate.yaml`` that does not load arriving by ``sync`` (issue 26): it stranded every node
(every command exit 5, ``sync`` included, so the fix could not arrive). Now ``sync`` keeps
working on the last good copy and says so; the fix arrives by the next ``sync``."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import git, run_hystate
from tests.harness.sync import GitServer, clone_nodes, served

CONFIG = {"sync": {"remote": "origin"}, "recovery": {"retry_delay": 0}}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[GitServer]:
    with served(tmp_path, CONFIG, 4) as srv:
        yield srv


def push_config(node: Path, text: str, message: str) -> None:
    (node / "hystate.yaml").write_text(text)
    git(node, "commit", "-qm", message, "--", "hystate.yaml")
    git(node, "push", "-q", "origin", "HEAD:main")


def test_a_config_that_does_not_load_never_strands_a_node(
    server: GitServer, tmp_path: Path
) -> None:
    author, node = clone_nodes(server, tmp_path)
    good = (author / "hystate.yaml").read_text()
    assert run_hystate(node, "status").returncode == 0  # the node has known a good config
    broken = good.replace('"retry_delay"', '"retry_dleay"')
    assert broken != good
    push_config(author, broken, "a typo")

    arrived = run_hystate(node, "sync")
    assert arrived.returncode == 0, arrived.stderr
    assert "hystate.yaml" in arrived.stderr and "retry_dleay" in arrived.stderr
    assert (node / "hystate.yaml").read_text() == broken  # it is the branch's, it arrived

    refused = run_hystate(node, "status")
    assert refused.returncode == 5, refused.stderr
    assert "retry_dleay" in refused.stderr and "sync" in refused.stderr  # the way out

    # the node still syncs (its own work goes out, the remote's comes in) ...
    again = run_hystate(node, "sync", "--json")
    assert again.returncode == 0, again.stderr
    assert "last good" in again.stderr
    json.loads(again.stdout)
    # ... so the fix reaches it
    git(author, "pull", "-q", "--ff-only", "origin", "main")
    push_config(author, good, "fix the typo")
    fixed = run_hystate(node, "sync")
    assert fixed.returncode == 0, fixed.stderr
    assert (node / "hystate.yaml").read_text() == good
    assert run_hystate(node, "status").returncode == 0


@pytest.mark.parametrize("room", [0, 8, 64, 512], ids=lambda k: f"{k}k-free")
def test_sync_on_a_full_disk_says_the_real_cause(
    server: GitServer, tmp_path: Path, room: int
) -> None:
    """Whatever little room is left, the line says the disk is full (it said "commit or
    stash your changes" when git could not write the files of the remote's state)."""
    from tests.harness.disk import fill, tmpfs

    author, node = clone_nodes(server, tmp_path)
    eid = sorted(p.stem for p in (author / "processed").rglob("*.yaml"))[0]
    moved = run_hystate(author, "advance", eid, "downloading")
    assert moved.returncode == 0, moved.stderr
    assert run_hystate(author, "sync").returncode == 0
    mount = tmp_path / "full"
    with tmpfs(mount, size="64m"):
        subprocess.run(["cp", "-a", f"{node}/.", str(mount)], check=True)
        reserve = mount / ".reserve"
        reserve.write_bytes(b"\0" * room * 1024)
        filler = fill(mount)
        reserve.unlink()
        failed = run_hystate(mount, "sync")
        if failed.returncode == 0:  # room enough after all: synced
            assert git(mount, "rev-parse", "HEAD") == git(author, "rev-parse", "HEAD")
        else:
            assert failed.returncode == 7, failed.stderr
            line = failed.stderr.strip().splitlines()[-1]
            assert "commit or stash" not in failed.stderr, failed.stderr
            assert "No space left on device" in line or "Out of diskspace" in line, line
            assert "free" in line, line
        filler.unlink()
        done = run_hystate(mount, "sync")
        assert done.returncode == 0, done.stderr
        assert git(mount, "rev-parse", "HEAD") == git(author, "rev-parse", "HEAD")
