"""Leases across hosts: published on each node's own ref, judged by the latest deadline; a
lease expired on one node is recovered by ``fsck --repair`` on another, and that syncs."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hystate.manager import StateManager
from tests.conftest import catalog_rows, git, run_hystate, write_search_json
from tests.harness.sync import GitServer, clone_node, fsck_clean, seed_remote

LEASE = 4.0
CONFIG = {
    "sync": {"remote": "origin"},
    "recovery": {"retry_delay": 0, "auto_resume": False, "stage_timeouts": {"downloading": LEASE}},
}


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[tuple[GitServer, list[Path]]]:
    srv = GitServer(tmp_path / "srv")
    srv.start()
    catalog = write_search_json(tmp_path / "catalog.json", catalog_rows(4))
    seed_remote(srv, tmp_path / "seed", catalog, CONFIG)
    yield srv, [clone_node(srv, tmp_path / f"node{i}", f"n{i}") for i in range(2)]
    srv.kill()


def test_fsck_on_another_node_judges_by_the_latest_lease(
    nodes: tuple[GitServer, list[Path]],
) -> None:
    server, (a_path, b_path) = nodes
    a = StateManager(cwd=a_path, worker="wa")
    claimed = a.claim_next("downloading", 2, worker="wa")
    renewed, forgotten = (r.episode.episode_id for r in claimed)
    count = git(server.bare, "rev-list", "--count", "main")
    token = str(claimed[0].lease)
    proc = run_hystate(a_path, "heartbeat", renewed, "--seconds", "600", "--lease", token)
    assert proc.returncode == 0, proc.stderr
    refs = git(server.bare, "for-each-ref", "--format=%(refname)", "refs/hystate/")
    assert refs.split() == ["refs/hystate/leases/n0"]
    assert git(server.bare, "rev-list", "--count", "main") == count  # renewals never commit
    time.sleep(LEASE + 0.5)
    proc = run_hystate(b_path, "fsck", "--repair", "--json")
    assert proc.returncode == 0, proc.stderr
    findings = json.loads(proc.stdout)["findings"]
    (finding,) = [f for f in findings if f["kind"] == "stuck"]  # the renewed one is alive
    assert forgotten in finding["path"] and finding["repaired"]
    assert "never renewed" in finding["message"]
    # the recovery is a transition of node b, pushed: every node sees it
    b_tip = git(b_path, "rev-parse", "HEAD").strip()
    assert server.tip() == b_tip
    shown = git(server.bare, "log", "-1", "--format=%s", "main").strip()
    assert shown == f"{forgotten}: downloading -> failed"
    # node a, still working on the lost one, is told at its next sync: its step is dropped
    a.sync_remote = None
    a.update_state(forgotten, "downloaded", fields={"files.audio_file": "x.mp3"})
    proc = run_hystate(a_path, "sync", "--json")
    (dropped,) = json.loads(proc.stdout)["dropped"]
    assert dropped["episode_id"] == forgotten and "downloading -> failed" in dropped["reason"]
    assert StateManager(cwd=a_path).episode(forgotten).stage.value == "failed"
    assert StateManager(cwd=a_path).episode(renewed).stage.value == "downloading"
    for path in (a_path, b_path):
        fsck_clean(path)
