"""Backup and restore of the state history as a ``git bundle``.

The bundle holds HEAD, every branch and every tag with their whole history: the committed
episode files and their audit trail. The caches (``state.db``, ``index.json``), locks and
reports are never tracked, so they are never in it; ``restore`` rebuilds them. A backup is
verified before it replaces the target file: the bundle is fetched into a scratch repository with
fsck on and must list exactly the repository's refs and commits.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hystate.core.errors import GitError, UsageError
from hystate.engine.layout import check_output
from hystate.engine.workspace import Workspace
from hystate.git.bundle import (
    BundleInfo,
    clone_bundle,
    commit_list,
    create_bundle,
    list_refs,
    verify_bundle,
)


@dataclass(frozen=True)
class BackupResult:
    path: str
    refs: dict[str, str]
    commits: int
    size: int
    uncommitted: list[str]  # state files whose changes are not in the bundle

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "refs": self.refs,
            "commits": self.commits,
            "bytes": self.size,
            "verified": True,
            "uncommitted": self.uncommitted,
        }


@dataclass(frozen=True)
class RestoreResult:
    path: str
    state_dir: str
    refs: dict[str, str]
    commits: int
    episodes: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "state_dir": self.state_dir,
            "refs": self.refs,
            "commits": self.commits,
            "episodes": self.episodes,
        }


def backup(ws: Workspace, target: Path) -> BackupResult:
    """Write a verified bundle of the state repository to ``target`` (atomically)."""
    repo = ws.repo
    shown, target = str(target), target.absolute()
    if target.is_dir():
        raise UsageError(f"{target} is a directory; name the bundle file to write")
    check_output(ws, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        create_bundle(repo, tmp)
        info = verify_bundle(tmp)
        wanted = list_refs(repo)
        commits = len(commit_list(repo.root))
        if info.refs != wanted or info.commits != commits:
            raise GitError(
                f"the bundle written does not match the repository ({len(info.refs)} refs and "
                f"{info.commits} commits vs {len(wanted)} and {commits}); "
                "was it changed meanwhile? Run the backup again"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    uncommitted = repo.dirty_paths(ws.rel_state_dir)
    return BackupResult(shown, info.refs, info.commits, target.stat().st_size, uncommitted)


def verify(path: Path) -> BundleInfo:
    """Check a backup completely (InvalidData when it is damaged or not a bundle)."""
    return verify_bundle(path)


def restore(bundle: Path, target: Path) -> RestoreResult:
    """A working state repository at ``target`` (new, or an empty folder) from a backup, with
    hystate's repository settings and freshly built caches."""
    shown, target = str(target), target.absolute()
    if target.is_symlink() or (target.exists() and (not target.is_dir() or any(target.iterdir()))):
        raise UsageError(f"{target} exists and is not an empty folder; restore into a new one")
    info = verify_bundle(bundle)
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = target.with_name(f".{target.name}.{os.getpid()}.restoring")
    try:
        clone_bundle(bundle, scratch, info)
        if target.exists():
            target.rmdir()  # empty, checked above
        os.rename(scratch, target)
    except BaseException:
        if scratch.exists():
            shutil.rmtree(scratch)
        raise
    ws = Workspace(cwd=target)
    ws.repo.configure()  # the merge driver and index settings live in .git/config
    ws.refresh(force=True)
    return RestoreResult(
        shown,
        ws.rel_state_dir,
        info.refs,
        info.commits,
        ws.count_all_episodes(),
    )
