"""A commit of many new files made from their blob ids (a discovery): each file's blob is
written as the file is, and the commit reads nothing but the ids it was told, so no file's
bytes are held until the commit. The same guarantees as ``GitRepo.commit``: every file read
back and compared (by its blob id) under ``index.lock``, git's attributes applied or refused,
the executable bit kept, HEAD moved compare-and-swap, the index updated last."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from hystate.git import commit as commit_mod
from hystate.git import hooks
from hystate.git import index as index_mod
from hystate.git.objects import object_id

if TYPE_CHECKING:
    from hystate.git.base import RepoBase


class BulkCommit:
    """``add(rel, data)`` for each file as it is written to the work tree (its blob written
    without an fsync), then ``commit(message)`` once: one commit of them all."""

    def __init__(self, repo: RepoBase) -> None:
        repo.check_writable()
        repo.settings.refresh()
        self.repo = repo
        self.sync = commit_mod.durability(repo)
        self.shas: dict[str, bytes] = {}  # rel -> the blob id of what was written there
        self.stored = True  # every blob is in the object store (no attribute applied)

    def add_batch(self, files: list[tuple[str, bytes]]) -> None:
        """Files just written to the work tree with exactly this content: their blob ids are
        kept (their blobs written when no git attribute converts them), their bytes are not."""
        repo = self.repo
        plain = repo.plain_attributes(rel for rel, _ in files)
        self.stored = self.stored and plain
        saved, repo.objects.fsync = repo.objects.fsync, None  # synced once, by ``sync``
        try:
            for rel, data in files:
                self.shas[rel] = (
                    repo.objects.write(b"blob", data) if plain else object_id(b"blob", data)
                )
        finally:
            repo.objects.fsync = saved

    def discard(self, rels: list[str]) -> None:
        for rel in rels:
            self.shas.pop(rel, None)

    def commit(self, message: str) -> str | None:
        """One commit of every file added (see ``GitRepo.commit``); the caller has synced the
        files and blobs (one ``os.sync()`` for the batch). None when HEAD already had them."""
        repo = self.repo
        repo.check_writable()
        repo.objects.fsync = self.sync.get("loose-object")  # the trees and the commit
        with repo.index_lock() as lock:
            stats = {rel: read_back(repo, rel, sha) for rel, sha in self.shas.items()}
            if not (self.stored and repo.plain_attributes(self.shas)):
                commit_mod.store_with_git(repo, self.shas)
            entries = commit_mod.with_modes(repo, self.shas)
            updates = [
                index_mod.Update(rel.encode(), sha, int(mode, 8), stats.pop(rel))
                for rel, (mode, sha) in entries.items()
            ]
            del stats
            lock.stage(updates, repo.root)
            del updates
            sha = commit_mod._commit_head(repo, entries, message, {}, self.sync.get("reference"))
            try:
                lock.commit(self.sync.get("index"))
                hooks.run_hook(repo, "post-index-change", ["0", "0"])
            except OSError as exc:  # HEAD has moved: the discovery is done; say what is not
                repo.warnings.append(f"the commit is made, but git's index was not updated: {exc}")
        return sha


def read_back(repo: RepoBase, rel: str, sha: bytes) -> os.stat_result:
    """The stat data of work-tree file ``rel``, whose content must still have blob id ``sha``
    (read and hashed now); GitError when it does not: nothing is committed."""
    return commit_mod.read_back(repo, rel, b"", lambda content: object_id(b"blob", content) == sha)
