"""A claim whose push landed but whose answer never came back (the server still running its
``post-receive`` hook when the node's ``sync.timeout`` ran out): the remote is asked again, and
the claim it holds is returned to its worker, not withdrawn while the remote holds it. Both
claim modes; a real ``git daemon`` on 127.0.0.1 and real processes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import git, run_hystate
from tests.harness.sync import GitServer, branch_docs, clone_nodes, served, server_tickets

TIMEOUT = 5  # seconds a push may take: the hook below outlasts it by far


@pytest.fixture(params=["branch", "refs"])
def cluster(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[str, GitServer, list[Path]]]:
    config = {
        "sync": {"remote": "origin", "claims": request.param, "timeout": TIMEOUT},
        "recovery": {"auto_resume": False},
    }
    with served(tmp_path, config, 6) as server:
        nodes = clone_nodes(server, tmp_path, 2)
        yield request.param, server, nodes


def slow_hook(server: GitServer, marker: Path) -> None:
    """Every push from now on lands, then the server keeps its client waiting for a minute."""
    hook = server.bare / "hooks" / "post-receive"
    hook.write_text(f"#!/bin/sh\ncat >/dev/null\ntouch '{marker}'\nsleep 60\n")
    hook.chmod(0o755)


def test_a_claim_whose_answer_was_lost_is_returned_not_withdrawn(
    cluster: tuple[str, GitServer, list[Path]], tmp_path: Path
) -> None:
    mode, server, (a, b) = cluster
    marker = tmp_path / "hook-ran"
    slow_hook(server, marker)
    proc = run_hystate(a, "next", "downloading", "--claim", "--worker", "wa", "--json", timeout=120)
    assert marker.exists()  # the push landed and its answer was held back past sync.timeout
    assert proc.returncode == 0, proc.stderr
    (row,) = json.loads(proc.stdout)
    eid, lease = row["episode_id"], row["lease"]
    # the node still holds it: the worker can go on with it
    shown = json.loads(run_hystate(a, "show", eid, "--json").stdout)
    assert shown["stage"] == "downloading"
    assert shown["history"][-1]["lease"] == lease
    # and so does the remote (its ticket, in refs mode; the branch, in branch mode)
    if mode == "refs":
        held = server_tickets(server)
        assert eid in held
        assert f"Hystate-Lease: {lease}" in git(server.bare, "log", "-1", "--format=%B", held[eid])
    else:
        assert branch_docs(server, tmp_path)[eid]["history"][-1]["lease"] == lease
    # nothing was dropped or withdrawn on the way: a's sync reports no dropped transition
    (server.bare / "hooks" / "post-receive").unlink()
    synced = run_hystate(a, "sync", "--json", timeout=120)
    assert synced.returncode == 0, synced.stderr
    assert json.loads(synced.stdout)["dropped"] == []
    # another node claims another episode
    other = run_hystate(b, "next", "downloading", "--claim", "--worker", "wb", "--json")
    assert other.returncode == 0, other.stderr
    assert json.loads(other.stdout)[0]["episode_id"] != eid
    assert branch_docs(server, tmp_path)[eid]["history"][-1]["lease"] == lease
