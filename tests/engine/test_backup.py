"""Backup (a verified git bundle) and restore (a working state repo with rebuilt caches)."""

from __future__ import annotations

import json
from pathlib import Path

from hystate.manager import StateManager
from tests.conftest import Cli, full_walk, git, run_hystate


def tracked_files(root: Path) -> dict[str, bytes]:
    names = git(root, "ls-files", "-z").split("\0")
    return {n: (root / n).read_bytes() for n in names if n}


def all_commits(root: Path) -> list[str]:
    return sorted(
        git(root, "rev-list", "--all", "--format=%H %T %P", "--no-commit-header").split("\n")
    )


def test_round_trip_keeps_every_file_and_every_commit(
    repo: Path, run: Cli, manager: StateManager, episode_id: str, tmp_path: Path
) -> None:
    full_walk(manager, episode_id)
    other = sorted(p.stem for p in manager.store.iter_paths())[1]
    manager.update_state(other, "downloading", worker="dl")
    manager.fail(other, "HTTP 503 Service Unavailable from archive.org")
    git(repo, "branch", "review")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "tag", "-a", "v1", "-m", "one")
    manager.refresh()
    assert manager.cache.db_path.exists()
    bundle = tmp_path / "backups" / "state.bundle"
    result = run("backup", "-o", str(bundle), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["verified"] is True
    assert set(report["refs"]) == {"HEAD", "refs/heads/main", "refs/heads/review", "refs/tags/v1"}
    # the caches are not tracked, so not in the bundle
    listed = git(repo, "bundle", "list-heads", str(bundle))
    assert "state.db" not in listed
    assert run("backup", "--verify", str(bundle)).exit_code == 0

    target = tmp_path / "restored"
    restored = run_hystate(tmp_path, "restore", str(bundle), str(target))
    assert restored.returncode == 0, restored.stderr
    assert "caches rebuilt" in restored.stdout
    assert all_commits(target) == all_commits(repo)
    assert tracked_files(target) == tracked_files(repo)
    assert git(target, "rev-parse", "--abbrev-ref", "HEAD").strip() == "main"
    assert git(target, "status", "--porcelain") == ""
    assert git(target, "remote").strip() == ""
    assert git(target, "config", "--get", "merge.hystate.driver").strip()
    assert (target / ".git" / "hystate" / "cache" / "processed" / "state.db").exists()
    assert (target / ".git" / "hystate" / "cache" / "processed" / "index.json").exists()
    for cmd in (["status", "--json"], ["list", "--json"], ["history", episode_id, "--json"]):
        here = run_hystate(repo, *cmd)
        there = run_hystate(target, *cmd)
        assert here.returncode == there.returncode == 0
        before, after = json.loads(here.stdout), json.loads(there.stdout)
        if cmd[0] == "status":
            before.pop("timestamp"), after.pop("timestamp")
        assert before == after
    # the restored repository works: a transition commits there
    restored_manager = StateManager(cwd=target, worker="w")
    restored_manager.retry([other], now=True)
    assert git(target, "log", "-1", "--format=%s").strip() == f"{other}: failed -> downloading"


def test_a_damaged_bundle_is_refused(repo: Path, run: Cli, tmp_path: Path) -> None:
    bundle = tmp_path / "state.bundle"
    assert run("backup", "-o", str(bundle)).exit_code == 0
    data = bytearray(bundle.read_bytes())
    data[-30] ^= 0xFF  # flip a byte inside the pack
    broken = tmp_path / "broken.bundle"
    broken.write_bytes(bytes(data))
    result = run("backup", "--verify", str(broken))
    assert result.exit_code == 5, result.output
    assert "broken.bundle" in result.output
    truncated = tmp_path / "short.bundle"
    truncated.write_bytes(bundle.read_bytes()[: len(data) // 2])
    assert run("backup", "--verify", str(truncated)).exit_code == 5
    (tmp_path / "text.bundle").write_text("hello\n")
    result = run("backup", "--verify", str(tmp_path / "text.bundle"))
    assert result.exit_code == 5 and "not a git bundle" in result.output
    target = tmp_path / "never"
    assert run("restore", str(broken), str(target)).exit_code == 5
    assert not target.exists()


def test_restore_refuses_a_folder_with_content(repo: Path, run: Cli, tmp_path: Path) -> None:
    bundle = tmp_path / "state.bundle"
    assert run("backup", "-o", str(bundle)).exit_code == 0
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    result = run("restore", str(bundle), str(busy))
    assert result.exit_code == 2
    assert (busy / "keep.txt").read_text() == "mine"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run("restore", str(bundle), str(empty)).exit_code == 0
    assert (empty / ".git").is_dir()


def test_backup_needs_one_of_its_options(repo: Path, run: Cli, tmp_path: Path) -> None:
    assert run("backup").exit_code == 2
    both = run("backup", "-o", str(tmp_path / "a"), "--verify", str(tmp_path / "b"))
    assert both.exit_code == 2


def test_backup_names_uncommitted_state_changes(
    repo: Path, run: Cli, manager: StateManager, episode_id: str, tmp_path: Path
) -> None:
    path = manager.store.find(episode_id)
    assert path is not None
    path.write_text(path.read_text().replace("status_message: null", "status_message: x"))
    result = run("backup", "-o", str(tmp_path / "b.bundle"))
    assert result.exit_code == 0
    assert "not in the backup" in result.output


def test_the_backup_file_is_replaced_only_once_verified(
    repo: Path, run: Cli, tmp_path: Path
) -> None:
    bundle = tmp_path / "state.bundle"
    bundle.write_text("an older backup\n")
    assert run("backup", "-o", str(bundle)).exit_code == 0
    assert bundle.read_bytes().startswith(b"# v2 git bundle")
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_a_detached_head_on_no_branch_round_trips(
    repo: Path, run: Cli, manager: StateManager, episode_id: str, tmp_path: Path
) -> None:
    git(repo, "checkout", "-q", "--detach")
    manager.update_state(episode_id, "downloading", worker="dl")  # a commit on no branch
    bundle = tmp_path / "detached.bundle"
    assert run("backup", "-o", str(bundle)).exit_code == 0
    target = tmp_path / "restored"
    assert run("restore", str(bundle), str(target)).exit_code == 0
    assert all_commits(target) == all_commits(repo)
    assert git(target, "rev-parse", "HEAD") == git(repo, "rev-parse", "HEAD")
    assert tracked_files(target) == tracked_files(repo)
