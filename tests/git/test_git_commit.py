"""The commit path on real repositories: one commit per transition, exactly one file,
nothing of the user's swept in, HEAD/index/work tree in agreement."""

from __future__ import annotations

from pathlib import Path

import pytest

from hystate.core.errors import GitError
from hystate.git import GitRepo
from hystate.manager import StateManager
from tests.conftest import commits, files_in, full_walk, git


def trailers(repo: Path, rev: str = "HEAD") -> dict[str, str]:
    out = git(repo, "log", "-1", "--format=%(trailers:only,unfold)", rev)
    return dict(line.split(": ", 1) for line in out.strip().splitlines())


def test_one_commit_per_transition_with_message_and_trailers(
    manager: StateManager, repo: Path, episode_id: str
) -> None:
    before = commits(repo)
    result = manager.update_state(episode_id, "downloading", message="starting", worker="dl-1")
    assert commits(repo) == [result.commit, *before]
    rel = manager.store.name(manager.path_of(episode_id))
    assert files_in(repo) == [rel]
    assert (
        git(repo, "log", "-1", "--format=%s").strip() == f"{episode_id}: discovered -> downloading"
    )
    assert git(repo, "log", "-1", "--format=%b").startswith("starting\n")
    assert trailers(repo) == {
        "Hystate-Episode": episode_id,
        "Hystate-From": "discovered",
        "Hystate-To": "downloading",
        "Hystate-Worker": "dl-1",
        "Hystate-Lease": result.lease,  # the token entering an active stage issued
    }
    assert git(repo, "status", "--porcelain") == ""


def test_a_full_walk_makes_eight_commits_and_git_log_is_the_audit(
    manager: StateManager, repo: Path, episode_id: str
) -> None:
    before = len(commits(repo))
    full_walk(manager, episode_id)
    assert len(commits(repo)) == before + 8
    log = git(repo, "log", "--format=%(trailers:key=Hystate-To,valueonly)", "--grep", episode_id)
    assert [s for s in log.split() if s] == [
        "published", "scheduled", "uploaded", "uploading",
        "converted", "converting", "downloaded", "downloading", "discovered",
    ]  # fmt: skip
    history = manager.get_episode_state(episode_id).history
    assert [h["to"] for h in history][-1] == "published" and len(history) == 9
    assert git(repo, "fsck", "--strict", "--no-progress") == ""


def test_staged_and_unstaged_user_changes_are_never_swept_in(
    manager: StateManager, repo: Path, episode_id: str
) -> None:
    (repo / "README").write_text("tracked\n")
    git(repo, "add", "README")
    git(repo, "-c", "user.name=u", "-c", "user.email=u@x", "commit", "-qm", "readme")
    (repo / "notes.txt").write_text("staged by the user\n")
    git(repo, "add", "notes.txt")
    (repo / "README").write_text("unstaged edit\n")
    (repo / "untracked.txt").write_text("untracked\n")
    status_before = git(repo, "status", "--porcelain")

    manager.update_state(episode_id, "downloading")

    assert files_in(repo) == [manager.store.name(manager.path_of(episode_id))]
    assert git(repo, "status", "--porcelain") == status_before
    assert git(repo, "diff", "--cached", "--name-only").split() == ["notes.txt"]
    assert (repo / "README").read_text() == "unstaged edit\n"


def test_index_and_work_tree_agree_with_head_after_each_transition(
    manager: StateManager, repo: Path, episode_id: str
) -> None:
    full_walk(manager, episode_id)
    rel = manager.store.name(manager.path_of(episode_id))
    index_sha = git(repo, "ls-files", "-s", rel).split()[1]
    assert index_sha == git(repo, "rev-parse", f"HEAD:{rel}").strip()
    assert git(repo, "diff", "--quiet", "HEAD", check=False) == ""
    assert git(repo, "status", "--porcelain") == ""


def test_no_identity_configured_uses_hystate_identity(manager: StateManager, repo: Path) -> None:
    assert git(repo, "log", "-1", "--format=%an <%ae>|%cn <%ce>").strip() == (
        "hystate <hystate@localhost>|hystate <hystate@localhost>"
    )


def test_configured_identity_is_used(repo: Path, episode_id: str) -> None:
    git(repo, "config", "user.name", "Pipeline Bot")
    git(repo, "config", "user.email", "bot@example.org")
    StateManager(cwd=repo).update_state(episode_id, "downloading")
    assert git(repo, "log", "-1", "--format=%an <%ae>").strip() == "Pipeline Bot <bot@example.org>"


def test_works_in_a_brand_new_repository_with_no_commits(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    manager = StateManager(cwd=tmp_path)
    manager.add_episode("hooting-yard-live", title="An Evening", date="2008-01-01")
    assert len(commits(tmp_path)) == 1
    assert files_in(tmp_path) == ["processed/2008/hooting-yard-live.yaml"]


def test_refused_while_a_merge_is_in_progress(
    manager: StateManager, repo: Path, episode_id: str
) -> None:
    head = git(repo, "rev-parse", "HEAD").strip()
    (repo / ".git" / "MERGE_HEAD").write_text(head + "\n")
    path = manager.path_of(episode_id)
    before = path.read_bytes()
    with pytest.raises(GitError, match="middle of a merge"):
        manager.update_state(episode_id, "downloading")
    assert path.read_bytes() == before
    assert git(repo, "rev-parse", "HEAD").strip() == head


def test_no_op_advance_makes_no_commit(manager: StateManager, repo: Path, episode_id: str) -> None:
    manager.update_state(episode_id, "downloading", worker="w1")
    before = commits(repo)
    result = manager.update_state(episode_id, "downloading", worker="w1")
    assert not result.changed
    assert commits(repo) == before


def test_uncommitted_hand_edit_blocks_the_transition(
    manager: StateManager, repo: Path, episode_id: str
) -> None:
    path = manager.path_of(episode_id)
    path.write_text(path.read_text().replace("status_message: null", "status_message: hand edit"))
    before = commits(repo)
    with pytest.raises(GitError, match="not committed"):
        manager.update_state(episode_id, "downloading")
    assert commits(repo) == before
    assert "hand edit" in path.read_text()


def test_head_moved_by_the_user_in_between_is_kept(
    manager: StateManager, repo: Path, episode_id: str
) -> None:
    manager.update_state(episode_id, "downloading")
    (repo / "other.txt").write_text("x\n")
    git(repo, "add", "other.txt")
    git(repo, "-c", "user.name=u", "-c", "user.email=u@x", "commit", "-qm", "user commit")
    user_commit = git(repo, "rev-parse", "HEAD").strip()
    result = manager.update_state(episode_id, "downloaded", fields={"files.audio_file": "a.mp3"})
    assert git(repo, "rev-parse", "HEAD~1").strip() == user_commit
    assert git(repo, "rev-parse", "HEAD").strip() == result.commit
    assert git(repo, "status", "--porcelain") == ""


@pytest.mark.parametrize(
    "setting",
    [
        ("index.version", "4"),
        ("core.splitIndex", "true"),
        ("index.recordEndOfIndexEntries", "true"),
    ],
)
def test_other_index_formats_fall_back_or_patch_correctly(
    manager: StateManager, repo: Path, episode_id: str, setting: tuple[str, str]
) -> None:
    git(repo, "config", *setting)
    git(repo, "update-index", "--really-refresh", check=False)
    if setting[0] == "core.splitIndex":
        git(repo, "update-index", "--split-index")
    if setting[0] == "index.version":  # the config alone only applies to a new index
        git(repo, "update-index", "--index-version", "4")
        assert _index_version(repo) == 4
    full_walk(manager, episode_id)
    assert git(repo, "status", "--porcelain") == ""
    assert git(repo, "fsck", "--strict", "--no-progress") == ""
    if setting[0] == "index.version":
        assert _index_version(repo) == 4  # still v4: patched as v4 or rewritten by git


def _index_version(repo: Path) -> int:
    header = (repo / ".git" / "index").read_bytes()[:8]
    assert header[:4] == b"DIRC"
    return int.from_bytes(header[4:8], "big")


def test_packed_objects_after_gc_are_read(
    manager: StateManager, repo: Path, episode_id: str
) -> None:
    git(repo, "gc", "--quiet", "--prune=now")
    assert not list((repo / ".git" / "objects").glob("??/*"))
    full_walk(manager, episode_id)
    assert git(repo, "status", "--porcelain") == ""
    assert git(repo, "fsck", "--strict", "--no-progress") == ""


def test_cache_tree_is_invalidated_so_a_later_git_commit_keeps_the_transition(
    manager: StateManager, repo: Path, episode_id: str
) -> None:
    git(repo, "read-tree", "HEAD")  # fills the cache-tree extension
    manager.update_state(episode_id, "downloading")
    (repo / "x.txt").write_text("x\n")
    git(repo, "add", "x.txt")
    git(repo, "-c", "user.name=u", "-c", "user.email=u@x", "commit", "-qm", "user")
    rel = manager.store.name(manager.path_of(episode_id))
    assert "stage: downloading" in git(repo, "show", f"HEAD:{rel}")


def test_detached_head_is_refused_unless_opted_in(
    manager: StateManager, repo: Path, episode_id: str
) -> None:
    git(repo, "checkout", "-q", "--detach")
    before = git(repo, "rev-parse", "HEAD").strip()
    with pytest.raises(GitError, match="HEAD is detached"):
        manager.update_state(episode_id, "downloading")
    assert git(repo, "rev-parse", "HEAD").strip() == before
    assert git(repo, "status", "--porcelain") == ""
    git(repo, "config", "hystate.allowDetachedHead", "true")
    result = manager.update_state(episode_id, "downloading")
    assert git(repo, "rev-parse", "HEAD").strip() == result.commit


def test_linked_worktree(repo: Path, tmp_path: Path) -> None:
    other = tmp_path / "wt"
    git(repo, "worktree", "add", "-q", "-b", "side", str(other))
    manager = StateManager(cwd=other)
    eid = sorted(p.stem for p in manager.store.iter_paths())[0]
    result = manager.update_state(eid, "downloading")
    assert git(repo, "rev-parse", "side").strip() == result.commit
    assert git(other, "status", "--porcelain") == ""


def test_not_a_repository(tmp_path: Path) -> None:
    with pytest.raises(GitError, match="not in a git repository"):
        GitRepo.discover(tmp_path)


def test_commit_subprocess_git_sees_reflog(
    manager: StateManager, repo: Path, episode_id: str
) -> None:
    manager.update_state(episode_id, "downloading")
    reflog = git(repo, "reflog", "-1", "--format=%gs")
    assert reflog.strip() == f"commit: {episode_id}: discovered -> downloading"


def _index_checksum_ok(repo: Path) -> bool:
    import hashlib

    data = (repo / ".git" / "index").read_bytes()
    return hashlib.sha1(data[:-20]).digest() == data[-20:]


def test_index_memo_survives_git_rewriting_the_index_in_between(
    manager: StateManager, repo: Path
) -> None:
    """The long-lived API process re-uses the index it wrote only while it is still the
    file on disk; a user's git command in between (new inode) makes it read the file again."""
    ids = sorted(p.stem for p in manager.store.iter_paths())
    for n, eid in enumerate(ids[:12]):
        manager.update_state(eid, "downloading")
        assert _index_checksum_ok(repo)
        if n % 3 == 0:
            (repo / f"user-{n}.txt").write_text("x\n")
            git(repo, "add", f"user-{n}.txt")  # rewrites the index behind hystate's back
        if n % 4 == 1:
            git(repo, "status", "--porcelain")
    assert git(repo, "fsck", "--strict", "--no-progress") == ""
    staged = git(repo, "diff", "--cached", "--name-only").split()
    assert staged == ["user-0.txt", "user-3.txt", "user-6.txt", "user-9.txt"]
    assert git(repo, "status", "--porcelain", "--", "processed") == ""


def test_large_index_checkpoints_give_the_right_checksum(manager: StateManager, repo: Path) -> None:
    """An index over 1 MiB: SHA-1 states saved per MiB are resumed from; the result must be
    byte-for-byte what a full hash gives (git fsck checks it too)."""
    for folder in ("aaa-bulk", "zzz-bulk"):
        (repo / folder).mkdir()
        for i in range(7000):
            (repo / folder / f"file-{i:05d}.txt").write_text(f"{i}\n")
    git(repo, "add", "aaa-bulk", "zzz-bulk")
    # 14,000 loose objects start git's background `gc --auto`, whose pruning raced the `git
    # fsck` below ("unable to mmap ... No such file": packed meanwhile, not lost)
    quiet = ("-c", "gc.auto=0", "-c", "user.name=u", "-c", "user.email=u@x")
    git(repo, *quiet, "commit", "-qm", "bulk")
    assert (repo / ".git" / "index").stat().st_size > 1 << 20
    ids = sorted(p.stem for p in manager.store.iter_paths())
    for eid in ids[:6]:
        manager.update_state(eid, "downloading")
        assert _index_checksum_ok(repo)
    (repo / "zzz-bulk" / "file-06999.txt").write_text("changed\n")
    git(repo, "add", "zzz-bulk/file-06999.txt")
    for eid in ids[6:9]:
        manager.update_state(eid, "downloading")
        assert _index_checksum_ok(repo)
    assert git(repo, "fsck", "--strict", "--no-progress") == ""
    assert git(repo, "diff", "--cached", "--name-only").split() == ["zzz-bulk/file-06999.txt"]
