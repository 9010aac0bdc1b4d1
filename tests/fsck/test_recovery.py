"""fsck finds and mends what crashes and hand edits leave; stuck workers; orphans; retries."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from hystate.core.errors import GitError
from hystate.core.model import ProcessingStage, now_utc
from hystate.core.rules import Change, apply_change
from hystate.core.store import dump
from hystate.fsck.recovery import RecoveryManager
from hystate.manager import StateManager
from tests.conftest import Cli, commits, git


def write_uncommitted(manager: StateManager, eid: str, to: str, worker: str = "w") -> Path:
    """What a worker killed between writing the file and committing it leaves behind."""
    path = manager.path_of(eid)
    _, episode = manager.store.read(path)
    doc = apply_change(episode, Change(ProcessingStage(to), now_utc(), worker, worker=worker))
    manager.store.write(path, dump(doc))
    return path


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def kinds(findings: list) -> list[str]:  # type: ignore[type-arg]
    return sorted(f.kind for f in findings)


def test_clean_repository_is_clean(manager: StateManager) -> None:
    manager.refresh()
    assert RecoveryManager(manager).fsck() == []


def test_crash_between_write_and_commit_is_committed_as_the_transition(
    manager: StateManager, repo: Path, episode_id: str
) -> None:
    write_uncommitted(manager, episode_id, "downloading", worker="dl-7")
    findings = RecoveryManager(manager).fsck(repair=True)
    [fixed] = [f for f in findings if f.kind == "uncommitted"]
    assert fixed.repaired and "discovered -> downloading" in fixed.message
    trailers = git(repo, "log", "-1", "--format=%(trailers:only,unfold)")
    assert "Hystate-To: downloading" in trailers and "Hystate-Worker: dl-7" in trailers
    assert git(repo, "status", "--porcelain") == ""
    assert manager.get_episode_state(episode_id).stage is ProcessingStage.DOWNLOADING


def test_illegal_or_invalid_uncommitted_edit_is_restored_and_kept(
    manager: StateManager, repo: Path, episode_id: str
) -> None:
    path = manager.path_of(episode_id)
    committed = path.read_bytes()
    path.write_text(path.read_text().replace("stage: discovered", "stage: published"))
    before = commits(repo)
    RecoveryManager(manager).fsck(repair=True)
    assert path.read_bytes() == committed and commits(repo) == before
    assert len(list((repo / ".git" / "hystate-lost").iterdir())) == 1


def test_stale_locks_and_temp_files_are_removed(manager: StateManager, episode_id: str) -> None:
    manager.locks_dir.mkdir(exist_ok=True)
    lock = manager.locks_dir / f"{episode_id}.lock"
    lock.write_text(
        json.dumps(
            {"host": socket.gethostname(), "pid": dead_pid(), "start": "1", "acquired_at": "t"}
        )
    )
    temp = manager.path_of(episode_id).with_name(f".{episode_id}.{dead_pid()}.tmp")
    temp.write_text("half")
    findings = RecoveryManager(manager).fsck(repair=True)
    assert {"stale-lock", "temp-file"} <= set(kinds(findings))
    assert not lock.exists() and not temp.exists()


def _die_holding_index_lock(repo: Path) -> None:
    """A hystate process killed (SIGKILL) while it holds git's index.lock."""
    code = (
        "import os, sys; from pathlib import Path;"
        "from hystate.git.lockfile import LockFile, owners_dir;"
        "g = Path(sys.argv[1]);"
        "LockFile(g / 'index.lock', owners_dir(g), 1.0, 'index').write(b'partial index');"
        "os.kill(os.getpid(), 9)"
    )
    subprocess.run([sys.executable, "-c", code, str(repo / ".git")], check=False)
    assert (repo / ".git" / "index.lock").exists()


def test_git_locks_left_by_a_dead_hystate_commit_are_removed(
    manager: StateManager, repo: Path, episode_id: str
) -> None:
    _die_holding_index_lock(repo)
    findings = RecoveryManager(manager).fsck(repair=True)
    assert "stale-lock" in kinds(findings)
    assert not (repo / ".git" / "index.lock").exists()
    manager.update_state(episode_id, "downloading")  # work continues at once


def test_the_next_transition_breaks_a_dead_hystate_processes_index_lock(
    manager: StateManager, repo: Path, episode_id: str
) -> None:
    _die_holding_index_lock(repo)
    manager.update_state(episode_id, "downloading")  # no fsck, no person needed
    assert git(repo, "status", "--porcelain") == ""


def test_gits_own_index_lock_is_never_removed(
    manager: StateManager, repo: Path, episode_id: str
) -> None:
    (repo / ".git" / "index.lock").write_bytes(b"")  # as a running git command holds it
    RecoveryManager(manager).fsck(repair=True)
    assert (repo / ".git" / "index.lock").exists()
    manager.repo.lock_wait = 0.2
    with pytest.raises(GitError):
        manager.update_state(episode_id, "downloading")
    assert (repo / ".git" / "index.lock").exists()
    assert manager.get_episode_state(episode_id).stage.value == "discovered"


def test_a_live_git_lock_without_a_dead_hystate_owner_is_left(
    manager: StateManager, repo: Path
) -> None:
    (repo / ".git" / "index.lock").write_bytes(b"someone's git add")
    RecoveryManager(manager).fsck(repair=True)
    assert (repo / ".git" / "index.lock").exists()


def test_index_drift_is_set_back(manager: StateManager, repo: Path, episode_id: str) -> None:
    rel = manager.store.name(manager.path_of(episode_id))
    (repo / "other-content").write_text("not the committed content\n")
    blob = git(repo, "hash-object", "-w", "other-content").strip()
    (repo / "other-content").unlink()
    git(repo, "update-index", "--cacheinfo", f"100644,{blob},{rel}")
    assert git(repo, "diff", "--cached", "--name-only") == f"{rel}\n"
    findings = RecoveryManager(manager).fsck(repair=True)
    assert "index-drift" in kinds(findings)
    assert git(repo, "diff", "--cached", "--name-only") == ""


def test_stuck_when_the_registered_worker_process_is_gone(
    manager: StateManager, repo: Path, episode_id: str
) -> None:
    # an API worker that registered its own pid (heartbeat(register_pid=True)) and died
    code = (
        "import sys; from hystate.manager import StateManager; "
        "m = StateManager(cwd=sys.argv[1], worker='dl-api'); "
        "m.update_state(sys.argv[2], 'downloading'); m.heartbeat(sys.argv[2], register_pid=True)"
    )
    subprocess.run([sys.executable, "-c", code, str(repo), episode_id], check=True)
    recovery = RecoveryManager(manager)
    assert recovery.identify_incomplete()[ProcessingStage.DOWNLOADING] == [episode_id]
    [fixed] = recovery.resume_processing()
    episode = manager.episode(episode_id)
    assert episode.stage is ProcessingStage.FAILED
    assert "worker lost: worker dl-api (pid" in episode.error_history[-1]["error"]
    assert fixed.kind == "stuck"


def test_a_dead_pid_in_the_worker_name_is_only_a_name(
    manager: StateManager, episode_id: str
) -> None:
    manager.update_state(episode_id, "downloading", worker=f"{socket.gethostname()}:{dead_pid()}")
    assert [f for f in RecoveryManager(manager).fsck() if f.kind == "stuck"] == []


def test_an_expired_lease_makes_an_episode_stuck(repo: Path, episode_id: str) -> None:
    (repo / "hystate.yaml").write_text(
        "state_management:\n  recovery:\n    stage_timeouts:\n      downloading: 0.001\n"
    )
    manager = StateManager(cwd=repo)
    manager.update_state(episode_id, "downloading", worker="dl-named")
    import time

    time.sleep(1.1)
    findings = RecoveryManager(manager).fsck(repair=True)
    assert any(
        f.kind == "stuck" and "lease of worker dl-named expired" in f.message for f in findings
    )
    assert manager.episode(episode_id).stage is ProcessingStage.FAILED


def test_live_worker_is_not_stuck(manager: StateManager, episode_id: str) -> None:
    manager.update_state(episode_id, "downloading")
    manager.heartbeat(episode_id, register_pid=True)
    assert [f for f in RecoveryManager(manager).fsck() if f.kind == "stuck"] == []


def test_orphans_reported_and_removed_only_when_asked(repo: Path, episode_id: str) -> None:
    (repo / "hystate.yaml").write_text("state_management:\n  media:\n    directories: [media]\n")
    (repo / "media").mkdir()
    (repo / "media" / "kept.mp3").write_bytes(b"x")
    (repo / "media" / "orphan.mp3").write_bytes(b"y")
    manager = StateManager(cwd=repo)
    manager.update_state(episode_id, "downloading")
    manager.update_state(episode_id, "downloaded", fields={"files.audio_file": "media/kept.mp3"})
    other = sorted(p.stem for p in manager.store.iter_paths())[1]
    manager.update_state(other, "downloading")
    manager.update_state(other, "downloaded", fields={"files.audio_file": "media/missing.mp3"})
    findings = RecoveryManager(manager).fsck(repair=True)
    assert [(f.kind, f.path) for f in findings if f.kind in ("orphan", "missing-media")] == [
        ("missing-media", "media/missing.mp3"),
        ("orphan", "media/orphan.mp3"),
    ]
    assert (repo / "media" / "orphan.mp3").exists()
    RecoveryManager(manager).cleanup_orphaned_files(remove=True)
    assert not (repo / "media" / "orphan.mp3").exists() and (repo / "media" / "kept.mp3").exists()


def test_cli_fsck_exit_codes(run: Cli, repo: Path, episode_id: str) -> None:
    manager = StateManager(cwd=repo)
    manager.refresh()
    assert run("fsck").exit_code == 0
    write_uncommitted(manager, episode_id, "downloading")
    result = run("fsck", "--json")
    assert result.exit_code == 1 and json.loads(result.output)["remaining"] >= 1
    assert run("fsck", "--repair").exit_code == 0
    assert run("fsck").exit_code == 0


def test_locks_and_unlock_commands(run: Cli, repo: Path, episode_id: str) -> None:
    locks = repo / "processed" / ".locks"
    locks.mkdir(exist_ok=True)
    (locks / f"{episode_id}.lock").write_text(
        json.dumps(
            {"host": socket.gethostname(), "pid": dead_pid(), "start": "1", "acquired_at": "t"}
        )
    )
    (locks / "other.lock").write_text(
        json.dumps(
            {"host": socket.gethostname(), "pid": os.getpid(), "start": None, "acquired_at": "t"}
        )
    )
    listed = {r["lock"]: r["stale"] for r in json.loads(run("locks", "--json").output)}
    assert listed == {f"{episode_id}.lock": True, "other.lock": False}
    assert run("unlock", "other").exit_code == 6
    assert run("unlock", "--all-stale").exit_code == 0
    assert sorted(p.name for p in locks.glob("*.lock")) == ["other.lock"]
    assert run("unlock", "other", "--force").exit_code == 0


def test_locks_names_an_unreadable_lock_file_without_python_nones(
    run: Cli, repo: Path, episode_id: str
) -> None:
    locks = repo / "processed" / ".locks"
    locks.mkdir(exist_ok=True)
    (locks / f"{episode_id}.lock").write_text("garbage")
    result = run("locks")
    assert result.exit_code == 0
    assert "None" not in result.stdout and "not a readable lock file" in result.stdout


@pytest.mark.parametrize("due", [True, False])
def test_retry_dry_run_changes_nothing(
    manager: StateManager, repo: Path, episode_id: str, due: bool
) -> None:
    manager.update_state(episode_id, "downloading")
    manager.fail(episode_id, "boom")
    before = commits(repo)
    manager.recovery.retry_delay = 0 if due else 3600
    [outcome] = manager.retry(dry_run=True)
    assert outcome.action == ("would-retry" if due else "waiting")
    assert commits(repo) == before
