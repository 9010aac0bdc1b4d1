"""Fault injection: worker processes advancing episodes are killed with SIGKILL at random
moments (50 kills), `fsck --repair` runs between rounds, and afterwards every acknowledged
transition is in git, every file validates, HEAD/index/work tree agree, `git fsck` is clean,
the caches equal the tree, and work goes on at once. The long version: bench/faults.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from hystate.manager import StateManager
from tests.harness.faults import check_sound, run_faults


@pytest.mark.slow
@pytest.mark.faults
def test_fifty_kills(repo: Path, manager: StateManager) -> None:
    (repo / "hystate.yaml").write_text("state_management:\n  locks:\n    timeout: 5\n")
    run = run_faults(repo, kills=50)
    assert run.kills >= 50 and len(run.acks) > 20
    assert check_sound(repo, run) == []
    # work continues at once: no lock of a dead process to wait for
    fresh = StateManager(cwd=repo, worker="after")
    ready = fresh.get_next_for_processing("downloading", 1) or fresh.get_next_for_processing(
        "converting", 1
    )
    if ready:
        target = "downloading" if ready[0].stage.value in ("discovered", "failed") else "converting"
        result = fresh.update_state(ready[0].episode_id, target, lock_timeout=0, force=True)
        assert result.changed


@pytest.mark.slow
@pytest.mark.faults
def test_kills_of_cli_workers_behind_shell_wrappers(repo: Path) -> None:
    """CLI workers as a pipeline runs them (`sh -c` scripts calling `hystate advance`), killed
    with their whole process group; a live `git commit` holds index.lock during some repairs.
    fsck --repair never leaves anything for a person and never removes the live lock."""
    (repo / "hystate.yaml").write_text("state_management:\n  locks:\n    timeout: 5\n")
    run = run_faults(repo, kills=30, workers=1, cli_workers=2, live_git_every=3)
    assert run.kills >= 30 and run.cli_kills >= 15 and run.live_git_rounds >= 3
    assert run.manual_steps == [] and run.live_git_lock_removed == 0
    assert len(run.acks) > 20
    assert check_sound(repo, run) == []
