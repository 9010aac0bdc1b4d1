"""``GitRepo``: the repository holding the state, with hystate's commit (``commit.py``) and its
hooks notice (``hooks.py``) on top of ``RepoBase``'s discovery, checks and reads."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

from hystate.core.errors import GitError
from hystate.core.locks import HOST
from hystate.git.base import RepoBase


class GitRepo(RepoBase):
    """A non-bare repository: ``root`` is its work tree."""

    def __init__(
        self,
        root: Path,
        git_dir: Path,
        common_dir: Path,
        index: Path | None = None,
        objects: Path | None = None,
    ) -> None:
        super().__init__(root, git_dir, common_dir, index, objects)
        # git runs it for every ref update, plumbing included: so does hystate's
        self.refs.transaction_hook = self._transaction_hook

    def _transaction_hook(self, state: str, lines: bytes) -> int:
        from hystate.git import hooks as hooks_mod

        return hooks_mod.run_hook(self, "reference-transaction", [state], lines)

    # -- the commit ------------------------------------------------------------------------

    def commit(
        self,
        files: Mapping[str, bytes],
        message: str,
        expect: Mapping[str, bytes | None] | None = None,
    ) -> str | None:
        """One commit setting each repo-relative path to its content; nothing else changes.

        The files must already be written to the work tree with exactly that content. Git's
        order is kept: ``index.lock`` is taken first and held while the new index is staged
        and HEAD moves compare-and-swap (rebuilt on the new HEAD if another process moved it),
        then the index is put in effect. Returns the new commit sha, or None when HEAD already
        had that content. Once HEAD has moved nothing raises: a transition is never reported
        as "not done" after it is in the history. ``expect``: the blob (binary sha, None for
        none) each file must still have in HEAD, else nothing is committed (GitError).
        """
        # the commit machinery (index, trees, hooks) is imported by the first commit: a
        # reading command needs none of it
        from hystate.git import commit as commit_mod

        return commit_mod.make_commit(self, files, message, expect)

    def blob_id(self, rel: str, data: bytes) -> bytes:
        """The sha git would store for ``data`` at ``rel`` (its attributes applied)."""
        from hystate.git import commit as commit_mod

        return commit_mod.blob_id(self, rel, data)

    def unrun_hooks(self) -> list[str]:
        """Commit hooks of this repository that a hystate commit does not run."""
        from hystate.git import hooks as hooks_mod

        return hooks_mod.unrun_hooks(self)


def merge_file(ours: bytes, base: bytes, theirs: bytes, labels: tuple[str, str, str]) -> bytes:
    """git's three-way text merge of three contents, with conflict markers where they differ."""
    import tempfile  # a merge is rare: tempfile and shutil cost ~5 ms to import

    with tempfile.TemporaryDirectory(prefix="hystate-merge-") as tmp:
        paths = []
        for name, data in zip(("ours", "base", "theirs"), (ours, base, theirs), strict=True):
            path = Path(tmp) / name
            path.write_bytes(data)
            paths.append(str(path))
        args = ["git", "merge-file", "-p"]
        for label in labels:
            args += ["-L", label]
        proc = subprocess.run([*args, *paths], capture_output=True, check=False)
        if proc.returncode < 0:
            raise GitError("git merge-file failed")
        return proc.stdout


def default_worker(pid: int | None = None) -> str:
    """``host:pid`` of the process doing the work."""
    return f"{HOST}:{os.getpid() if pid is None else pid}"
