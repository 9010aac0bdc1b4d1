"""Answers kept in state.db per tree (``hystate.cache.memo``): the forecast's model, its groups,
the counts per stage, the history's span. A kept answer equals the one computed from the
tables, and is never shown once HEAD's tree differs: a person's commit, a checkout, a cache
copied from another repository, a planted or garbled row, a clock far from the runs."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from hystate.cache import forecast_queries, memo, queries
from hystate.manager import StateManager
from hystate.reports import summary, trained
from hystate.reports.fit import MAX_TRAINING_RUNS, fit
from tests.conftest import git, run_hystate

PERSON = ("-c", "user.name=P", "-c", "user.email=p@x", "-c", "core.hooksPath=/dev/null")


@pytest.fixture
def worked(manager: StateManager, monkeypatch: pytest.MonkeyPatch) -> StateManager:
    """Eight episodes through the pipeline on a moving clock (one fails), six hours ago."""
    import hystate.engine.steps as steps_module

    clock = [datetime.now(UTC) - timedelta(hours=6)]
    monkeypatch.setattr(steps_module, "now_utc", lambda: clock[0].isoformat(timespec="seconds"))
    ids = sorted(e.episode_id for e in manager.list_episodes())
    for n, eid in enumerate(ids[:8]):
        size = 20_000_000 + 5_000_000 * n
        manager.update_state(eid, "downloading")
        clock[0] += timedelta(seconds=size / 1_000_000)
        fields = {"files.audio_file": f"a/{eid}.mp3", "metrics.audio_size": size}
        manager.update_state(eid, "downloaded", fields=fields)
        manager.update_state(eid, "converting")
        clock[0] += timedelta(seconds=90 + n % 3)
        if n == 5:
            manager.fail(eid, "ffmpeg exited with status 1")
            continue
        manager.update_state(eid, "converted", fields={"files.video_file": f"v/{eid}.mp4"})
    return manager


def kept(manager: StateManager) -> dict[str, str]:
    return {r[0]: r[1] for r in manager.cache.query("SELECT name, stamp FROM memo")}


def forget(manager: StateManager) -> None:
    with manager.cache.connect(write=True) as db:
        db.db.execute("DROP TABLE IF EXISTS memo")


def computed(manager: StateManager, now: datetime) -> dict[str, Any]:
    """The summary with nothing kept (the memo table dropped first; kept again after)."""
    forget(manager)
    return summary.generate_summary(manager, now)


@pytest.mark.parametrize("hours", [0, 30 * 24, -30 * 24, 7 * 24 - 3])
def test_a_kept_answer_is_the_computed_one(worked: StateManager, hours: int) -> None:
    """At the clock of the runs, a month later (no run in the window), a month earlier (a
    clock stepped back) and with the window's start among the runs: the same numbers, kept
    or not."""
    now = datetime.now(UTC) + timedelta(hours=hours)
    first = summary.generate_summary(worked, now)  # computes and keeps
    tree = worked.repo.subtree(worked.cache.rel_dir)
    assert tree is not None
    assert set(kept(worked).values()) == {f"{memo.FORMAT_VERSION}:{memo.code_stamp()}:{tree.hex()}"}
    assert len(kept(worked)) >= 5
    assert summary.generate_summary(worked, now) == first  # from what was kept
    assert computed(worked, now) == first
    runs = trained.runs_from_log(forecast_queries.training_log(worked.cache, MAX_TRAINING_RUNS))
    model = fit(runs, {"download": 3, "conversion": 2, "upload": 3}, 60.0, now.timestamp())
    again = trained.trained_model(
        worked.cache, {"download": 3, "conversion": 2, "upload": 3}, 60.0, now.timestamp()
    )
    assert again == model


def test_a_persons_commit_and_checkout_are_shown(worked: StateManager, repo: Path) -> None:
    now = datetime.now(UTC)
    before = summary.generate_summary(worked, now)
    victim = next((repo / "processed").rglob("*.yaml"))
    git(repo, "rm", "-q", str(victim))
    git(repo, *PERSON, "commit", "-q", "-m", "a person removes an episode")
    after = json.loads(run_hystate(repo, "status", "--json").stdout)
    assert after["total_episodes"] == before["total_episodes"] - 1
    tree = worked.repo.subtree(worked.cache.rel_dir)
    assert tree is not None  # only this tree's answers are left
    assert set(kept(worked).values()) == {f"{memo.FORMAT_VERSION}:{memo.code_stamp()}:{tree.hex()}"}
    expected = computed(worked, now)
    for part in ("progress", "total_episodes", "completion_percentage"):
        assert after[part] == expected[part], part
    for part in ("stages", "remaining_episodes", "expected_skips", "remaining_work_seconds"):
        assert after["predictions"][part] == expected["predictions"][part], part
    git(repo, "checkout", "-q", "HEAD~1")
    back = json.loads(run_hystate(repo, "status", "--json").stdout)
    assert back["progress"] == before["progress"]
    assert back["predictions"]["stages"] == before["predictions"]["stages"]


def test_a_cache_from_another_repository_is_not_believed(
    worked: StateManager, repo: Path, tmp_path: Path
) -> None:
    """Another repository's state.db, kept answers and all, copied over this one's."""
    other = tmp_path / "other"
    shutil.copytree(repo, other, symlinks=True)
    git(other, "rm", "-q", "-r", "processed/2005")
    git(other, *PERSON, "commit", "-q", "-m", "fewer")
    assert run_hystate(other, "status").returncode == 0  # its cache keeps its answers
    mine = worked.cache.cache_dir
    worked.cache.close()
    shutil.rmtree(mine)
    shutil.copytree(StateManager(cwd=other).cache.cache_dir, mine)
    shown = json.loads(run_hystate(repo, "status", "--json").stdout)
    with worked.cache.connect(write=True) as db:
        db.db.execute("DROP TABLE memo")
    assert shown["progress"] == queries.count_by_stage(worked.cache)
    assert (
        shown["predictions"]["stages"]
        == computed(worked, datetime.now(UTC))["predictions"]["stages"]
    )
    assert shown["total_episodes"] == len(list((repo / "processed").rglob("*.yaml")))


@pytest.mark.parametrize(
    "value",
    ["not json", '{"stages": 1}', '[["published", "many"]]', "[[1, 2, 3]]", '"2026-01-01T00:00"'],
)
def test_a_garbled_kept_row_is_computed_again(worked: StateManager, value: str) -> None:
    """Rows this code did not write (none of them a kept answer's shape): computed again.
    (A row of the right shape and stamp is believed, as the tables' own rows are: state.db
    lives in .git, where nothing a branch carries can put it.)"""
    now = datetime.now(UTC)
    first = computed(worked, now)
    with worked.cache.connect(write=True) as db:
        db.db.execute("UPDATE memo SET value = ?", (value,))
    assert summary.generate_summary(worked, now) == first


def test_a_row_of_another_tree_is_ignored(worked: StateManager) -> None:
    now = datetime.now(UTC)
    first = computed(worked, now)
    with worked.cache.connect(write=True) as db:
        db.db.execute(
            "UPDATE memo SET stamp = ?, value = ? WHERE name = 'count_by_stage/1'",
            (
                f"{memo.FORMAT_VERSION}:{memo.code_stamp()}:{'0' * 40}",
                json.dumps([["discovered", 99999]]),
            ),
        )
    assert summary.generate_summary(worked, now) == first


def test_a_read_only_cache_answers_without_keeping(worked: StateManager) -> None:
    """A state.db that cannot be written (a query-only connection): the answers are computed,
    the same, and nothing is kept."""
    now = datetime.now(UTC)
    first = computed(worked, now)
    forget(worked)
    conn = worked.cache._connection()
    conn.execute("PRAGMA query_only = ON")
    try:
        assert summary.generate_summary(worked, now) == first
        assert summary.generate_summary(worked, now) == first
        assert not worked.cache.query("SELECT name FROM sqlite_master WHERE name = 'memo'")
    finally:
        conn.execute("PRAGMA query_only = OFF")


def test_a_busy_cache_is_not_waited_for(worked: StateManager) -> None:
    """Another process holds state.db's write lock: the answer is computed and not kept,
    without waiting for it (the lock is held for the whole call)."""
    now = datetime.now(UTC)
    first = computed(worked, now)
    forget(worked)
    other = sqlite3.connect(worked.cache.db_path, timeout=1, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        assert summary.generate_summary(worked, now) == first
        assert not worked.cache.query("SELECT name FROM sqlite_master WHERE name = 'memo'")
    finally:
        other.execute("ROLLBACK")
        other.close()
    summary.generate_summary(worked, now)
    assert kept(worked)


def test_a_cache_on_a_read_only_file_system(
    worked: StateManager, repo: Path, tmp_path: Path
) -> None:
    """The whole repository, fresh cache and all, on a read-only mount: status answers as on
    the writable copy."""
    from tests.harness.disk import remount, tmpfs

    expected = json.loads(run_hystate(repo, "status", "--json").stdout)
    mount = tmp_path / "ro"
    with tmpfs(mount, size="64m"):
        subprocess.run(["cp", "-a", f"{repo}/.", str(mount)], check=True)
        remount(mount, "ro")
        try:
            for _ in range(2):
                done = run_hystate(mount, "status", "--json")
                assert done.returncode == 0, done.stderr
                shown = json.loads(done.stdout)
                assert shown["progress"] == expected["progress"]
                assert shown["predictions"]["stages"] == expected["predictions"]["stages"]
        finally:
            remount(mount, "rw")
