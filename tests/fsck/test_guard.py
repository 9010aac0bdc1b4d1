"""A person's plain `git commit` next to running workers must not revert transitions silently:
the pre-commit hook `hystate init` installs refuses a staged older state (`validate --staged`),
and `fsck --repair` re-applies what a bypassed hook let through and resets a stale index."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from hystate.fsck.guard import regression, reverts, staged_regressions
from hystate.fsck.recovery import RecoveryManager
from hystate.git.hooks import install_pre_commit
from hystate.manager import StateManager
from tests.conftest import git, run_hystate

PERSON = ["-c", "user.name=Person", "-c", "user.email=person@example.org"]


def advance_twice(manager: StateManager, episode_id: str) -> tuple[str, str]:
    """Two transitions; returns (path, blob of the file before them)."""
    rel = manager.repo.relpath(manager.path_of(episode_id))
    before = git(manager.repo.root, "rev-parse", f"HEAD:{rel}").strip()
    manager.update_state(episode_id, "downloading")
    manager.update_state(episode_id, "downloaded", fields={"files.audio_file": "a/x.mp3"})
    return rel, before


def stale_index(repo: Path, rel: str, blob: str) -> None:
    """What a person's `git commit` that lost the race leaves: the index entry of an episode
    back to an older blob (its stale copy of the index, written under index.lock)."""
    git(repo, "update-index", "--cacheinfo", f"100644,{blob},{rel}")


def person_commit(repo: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    (repo / "notes.txt").write_text(f"note {os.urandom(4).hex()}\n")
    git(repo, "add", "notes.txt")
    return subprocess.run(
        ["git", *PERSON, "commit", "-q", "-m", "my notes", *extra],
        cwd=repo, capture_output=True, text=True, check=False,
    )  # fmt: skip


def stage_of(repo: Path, rel: str, rev: str = "HEAD") -> str:
    text = git(repo, "show", f"{rev}:{rel}")
    return next(line.split(": ", 1)[1] for line in text.splitlines() if line.startswith("stage:"))


# -- the rule ----------------------------------------------------------------------------------


def test_regression_is_an_older_history_only() -> None:
    def doc(*stages: str, title: str = "T") -> bytes:
        hist = "".join(f"- {{at: '2026-01-0{i + 1}', to: {s}}}\n" for i, s in enumerate(stages))
        return f"title: {title}\nstage: {stages[-1]}\nhistory:\n{hist}".encode()

    head = doc("discovered", "downloading", "downloaded")
    older = regression("f.yaml", head, doc("discovered"))
    assert older is not None and older.behind == 2 and older.strict_prefix
    assert older.older_stage == "discovered" and older.current_stage == "downloaded"
    # a history that went another way: lacks HEAD's last transition, not a prefix
    other = regression("f.yaml", head, doc("discovered", "skipped"))
    assert other is not None and other.behind == 2 and not other.strict_prefix
    assert regression("f.yaml", head, head) is None
    assert regression("f.yaml", head, doc("discovered", "downloading", "downloaded", "x")) is None
    assert (
        regression("f.yaml", head, doc("discovered", "downloading", "downloaded", title="Hand"))
        is None
    )
    assert regression("f.yaml", head, b"<<<<<<< ours\n: not yaml [") is None


# -- validate --staged and the hook -----------------------------------------------------------


def test_validate_staged_refuses_a_stale_index_entry(
    repo: Path, manager: StateManager, episode_id: str
) -> None:
    rel, old = advance_twice(manager, episode_id)
    assert run_hystate(repo, "validate", "--staged").returncode == 0
    stale_index(repo, rel, old)
    proc = run_hystate(repo, "validate", "--staged")
    assert proc.returncode == 1
    [line] = proc.stdout.splitlines()
    assert line.startswith(f"{rel}: error: ") and "revert 2 transitions" in line
    assert f"git restore --staged {rel}" in line and "hystate fsck --repair" in line
    assert "Traceback" not in proc.stderr
    # the way out it names works
    git(repo, "restore", "--staged", rel)
    assert run_hystate(repo, "validate", "--staged").returncode == 0


def test_validate_staged_accepts_a_newer_or_unrelated_staged_change(
    repo: Path, manager: StateManager, episode_id: str
) -> None:
    rel = manager.repo.relpath(manager.path_of(episode_id))
    path = repo / rel
    path.write_text(path.read_text().replace("title: ", "title: Edited "))
    git(repo, "add", rel)
    (repo / "other.txt").write_text("x\n")
    git(repo, "add", "other.txt")
    assert staged_regressions(manager) == []
    assert run_hystate(repo, "validate", "--staged").returncode == 0


def test_init_installs_the_hook_which_stops_the_revert(
    repo: Path, manager: StateManager, episode_id: str
) -> None:
    first = run_hystate(repo, "init")
    assert first.returncode == 0 and "pre-commit hook installed" in first.stdout
    hook = repo / ".git" / "hooks" / "pre-commit"
    assert hook.stat().st_mode & stat.S_IXUSR
    again = run_hystate(repo, "init")  # idempotent: same file, no second line, no message
    assert again.returncode == 0 and "hook" not in again.stdout + again.stderr
    assert hook.read_text().count("validate --staged") == 2  # the installed and PATH fallbacks

    rel, old = advance_twice(manager, episode_id)
    head = git(repo, "rev-parse", "HEAD")
    stale_index(repo, rel, old)
    refused = person_commit(repo)
    assert refused.returncode != 0
    assert f"git restore --staged {rel}" in refused.stdout + refused.stderr
    assert git(repo, "rev-parse", "HEAD") == head and stage_of(repo, rel) == "downloaded"
    git(repo, "restore", "--staged", rel)
    assert person_commit(repo).returncode == 0
    assert stage_of(repo, rel) == "downloaded"
    assert git(repo, "diff-tree", "--no-commit-id", "--name-only", "-r", "HEAD").split() == [
        "notes.txt"
    ]


def test_init_leaves_an_existing_hook_alone_and_says_what_to_add(repo: Path) -> None:
    hook = repo / ".git" / "hooks" / "pre-commit"
    hook.parent.mkdir(exist_ok=True)
    hook.write_text("#!/bin/sh\nexec my-linter\n")
    proc = run_hystate(repo, "init")
    assert proc.returncode == 0
    assert hook.read_text() == "#!/bin/sh\nexec my-linter\n"
    assert "left alone" in proc.stderr and "validate --staged" in proc.stderr
    # once the line is added, init is quiet about it
    hook.write_text("#!/bin/sh\nhystate validate --staged || exit 1\nexec my-linter\n")
    assert "hook" not in run_hystate(repo, "init").stderr


def test_init_honours_core_hooks_path(repo: Path, manager: StateManager) -> None:
    git(repo, "config", "core.hooksPath", "githooks")
    result = install_pre_commit(manager.repo)
    assert result.status == "installed"
    assert result.path == repo / "githooks" / "pre-commit" and result.path.exists()
    assert not (repo / ".git" / "hooks" / "pre-commit").exists()
    assert install_pre_commit(manager.repo).status == "present"


def test_pre_commit_framework_entry_runs_the_staged_check() -> None:
    import yaml

    hooks = yaml.safe_load((Path(__file__).parents[2] / ".pre-commit-hooks.yaml").read_text())
    [entry] = [h for h in hooks if h["id"] == "hystate-staged"]
    assert entry["entry"] == "hystate validate --staged" and entry["pass_filenames"] is False


# -- fsck ------------------------------------------------------------------------------------


def test_fsck_resets_a_regressed_index_entry(
    repo: Path, manager: StateManager, episode_id: str
) -> None:
    rel, old = advance_twice(manager, episode_id)
    (repo / "mine.txt").write_text("staged by the person\n")
    git(repo, "add", "mine.txt")
    stale_index(repo, rel, old)
    checked = run_hystate(repo, "fsck")
    assert checked.returncode == 1 and "older state than HEAD" in checked.stdout
    assert checked.stdout.count(rel) == 1  # one finding, not one per check that sees it
    repaired = run_hystate(repo, "fsck", "--repair")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert "index entry set back to HEAD" in repaired.stdout
    assert git(repo, "diff", "--cached", "--name-only").split() == ["mine.txt"]  # theirs kept
    assert git(repo, "status", "--porcelain", "--", "processed") == ""


def test_fsck_reapplies_transitions_a_bypassed_hook_let_through(
    repo: Path, manager: StateManager, episode_id: str
) -> None:
    rel, old = advance_twice(manager, episode_id)
    acked = git(repo, "rev-parse", f"HEAD:{rel}").strip()
    stale_index(repo, rel, old)
    assert person_commit(repo, "--no-verify").returncode == 0
    revert = git(repo, "rev-parse", "HEAD").strip()
    assert stage_of(repo, rel) == "discovered"  # the transitions are gone from HEAD
    [found] = reverts(manager)
    assert found.commit == revert and found.path == rel and found.regression.behind == 2

    checked = run_hystate(repo, "fsck")
    assert checked.returncode == 1 and f"commit {revert[:8]}" in checked.stdout
    repaired = run_hystate(repo, "fsck", "--repair")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert git(repo, "rev-parse", f"HEAD:{rel}").strip() == acked
    message = git(repo, "log", "-1", "--format=%B")
    assert f"reverted by {revert[:8]}" in message and f"Hystate-Reapplies: {revert}" in message
    assert git(repo, "diff-tree", "--no-commit-id", "--name-only", "-r", "HEAD").split() == [rel]
    assert git(repo, "status", "--porcelain", "--", "processed") == ""
    assert reverts(manager) == []
    assert run_hystate(repo, "fsck").returncode == 0  # nothing left, and not found twice
    # the episode moves on at once
    assert manager.update_state(episode_id, "converting").changed


def test_fsck_reapplies_when_the_work_tree_was_reset_too(
    repo: Path, manager: StateManager, episode_id: str
) -> None:
    rel, old = advance_twice(manager, episode_id)
    acked = git(repo, "rev-parse", f"HEAD:{rel}").strip()
    stale_index(repo, rel, old)
    assert person_commit(repo, "--no-verify").returncode == 0
    git(repo, "checkout", "--", rel)  # the work tree follows the reverting commit
    findings = RecoveryManager(StateManager(cwd=repo)).fsck(repair=True)
    assert [f.kind for f in findings if f.kind != "cache"] == ["reverted"]
    assert git(repo, "rev-parse", f"HEAD:{rel}").strip() == acked
    assert (repo / rel).read_bytes() == git(repo, "show", f"HEAD:{rel}").encode()


def test_fsck_leaves_a_revert_alone_when_the_work_tree_holds_a_third_version(
    repo: Path, manager: StateManager, episode_id: str
) -> None:
    rel, old = advance_twice(manager, episode_id)
    stale_index(repo, rel, old)
    assert person_commit(repo, "--no-verify").returncode == 0
    path = repo / rel
    path.write_text(path.read_text().replace("title: ", "title: Mine "))
    findings = RecoveryManager(StateManager(cwd=repo)).fsck(repair=True)
    [reverted] = [f for f in findings if f.kind == "reverted"]
    assert not reverted.repaired and "third version" in reverted.action
    assert "title: Mine " in path.read_text()  # never overwritten, never "restored"
    assert not [f for f in findings if f.kind == "uncommitted"]


@pytest.mark.parametrize("count", [1, 3])
def test_fsck_ignores_hand_commits_that_move_forward(
    repo: Path, manager: StateManager, count: int
) -> None:
    ids = sorted(p.stem for p in manager.store.iter_paths())[:count]
    for eid in ids:
        path = manager.path_of(eid)
        path.write_text(path.read_text().replace("title: ", "title: Fixed "))
        git(repo, "add", str(path))
    assert person_commit(repo).returncode == 0
    assert reverts(manager) == []


def test_validate_staged_usage_and_an_empty_repository(tmp_path: Path) -> None:
    repo = tmp_path / "fresh"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    assert run_hystate(repo, "init").returncode == 0
    both = run_hystate(repo, "validate", "--staged", "--base", "HEAD")
    assert both.returncode == 2 and "do not go together" in both.stderr
    assert "Traceback" not in both.stderr
    (repo / "processed" / "2004").mkdir()
    (repo / "processed" / "2004" / "x.yaml").write_text("episode_id: x\n")
    git(repo, "add", "processed")
    assert run_hystate(repo, "validate", "--staged").returncode == 0  # new files revert nothing
