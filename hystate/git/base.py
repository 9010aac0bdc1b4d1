"""The git repository holding the state: discovery, state checks, reads (``repo.py`` commits).

This package is the only place that talks to git. A commit is made the way git makes one, with
the objects and trees along the changed path written in-process (a few milliseconds), never
sweeping in anything else the user staged: ``index.lock`` is held from before the index is read
until after HEAD has moved compare-and-swap (``index.py``); blobs are what ``git add`` stores
(git computes them whenever an attribute could convert the file); identity, dates, timezone,
signing and the reflog follow git's configuration (``settings.py``). GitPython serves the
porcelain-level work where its cost does not matter: creating a repository, reading history."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from hystate.core.errors import GitError
from hystate.git import attributes, gitcmd, locate, lockfile
from hystate.git.objects import ObjectStore
from hystate.git.refs import Head, Refs
from hystate.git.settings import GitSettings, Identity

if TYPE_CHECKING:
    from hystate.git import index as index_mod  # imported by the first commit

DETACHED_OPT_IN = "hystate.allowDetachedHead"  # git config: commit on a detached HEAD too
_SHA256 = re.compile(r"^\s*objectformat\s*=\s*\"?sha256", re.IGNORECASE | re.MULTILINE)
_IN_PROGRESS = {
    "MERGE_HEAD": "a merge",
    "rebase-merge": "a rebase",
    "rebase-apply": "a rebase or am",
    "CHERRY_PICK_HEAD": "a cherry-pick",
    "REVERT_HEAD": "a revert",
    "sequencer": "a cherry-pick or revert of several commits",
    "BISECT_LOG": "a bisect",
}


class RepoBase:
    """A non-bare repository: ``root`` is its work tree; its folders, settings and reads
    (``GitRepo`` adds hystate's commit)."""

    def __init__(
        self,
        root: Path,
        git_dir: Path,
        common_dir: Path,
        index: Path | None = None,
        objects: Path | None = None,
    ) -> None:
        self.root = root
        self.git_dir = git_dir
        self.common_dir = common_dir
        self.index_path = index or git_dir / "index"  # GIT_INDEX_FILE, as git resolved it
        self.refs = Refs(git_dir, common_dir)
        self.objects = ObjectStore(objects or common_dir / "objects", root)  # as git resolved it
        self.objects.env = self.env
        self.settings = GitSettings(root, common_dir, self.env)
        self.objects.shared = self.refs.shared = self.settings.shared_repository
        self.index_memo: index_mod.IndexMemo | None = None  # the index as last written here
        self.lock_wait = 10.0
        self.warnings: list[str] = []  # what went wrong after a commit was made

    def env(self) -> dict[str, str]:
        """The environment of every git process hystate runs: the person's, with the
        repository named explicitly (the one found here, whatever the cwd)."""
        given = os.environ.get("GIT_INDEX_FILE")
        index = str(self.index_path) if given else None
        return gitcmd.child_env(os.environ, str(self.git_dir), str(self.root), index)

    # -- finding and making repositories ---------------------------------------------------

    @classmethod
    def discover(cls, start: Path) -> Self:
        """The repository git finds from ``start`` (``git rev-parse``: upwards, environment
        and ``core.worktree`` included); GitError where git refuses it."""
        where = locate.locate(start)
        return cls._open(where.root, where.git_dir, where.common_dir, where.index, where.objects)

    @classmethod
    def _open(cls, root: Path, git_dir: Path, common: Path, index: Path, objects: Path) -> Self:
        root, git_dir, common = root.resolve(), git_dir.resolve(), common.resolve()
        if (common / "reftable").exists():
            raise GitError(f"{root}: reftable repositories are not supported")
        try:
            config = (common / "config").read_text(errors="replace")
        except OSError:
            config = ""
        if _SHA256.search(config):
            raise GitError(
                f"{root} uses SHA-256 object names, which hystate does not support yet",
                hint="keep the state in a SHA-1 repository (git init --object-format=sha1)",
            )
        return cls(root, git_dir, common, index, objects)

    @classmethod
    def init(cls, path: Path) -> Self:
        """``git init`` at ``path`` (through GitPython) and open it; never inside a git
        directory, never where GIT_DIR names another place."""
        import git  # GitPython; imported here so the everyday commands do not pay for it

        inside = locate.inside_git_dir(path)
        if inside is not None:
            raise GitError(f"{path} is inside the git directory {inside}: not making one there")
        if os.environ.get("GIT_DIR") or os.environ.get("GIT_WORK_TREE"):
            raise GitError(
                "GIT_DIR or GIT_WORK_TREE is set: `hystate init` makes a repository only in the"
                " current folder",
                hint="unset them, or run `git init` yourself",
            )
        try:
            git.Repo.init(path)
        except git.GitCommandError as exc:
            raise GitError(f"git init failed in {path}: {exc.stderr.strip()}") from exc
        return cls.discover(path)

    # -- running git -----------------------------------------------------------------------

    def git(self, *args: str, check: bool = True) -> str:
        """Run a git command in the work tree; its output as text (see ``git_bytes``)."""
        return self.git_bytes(*args, check=check).decode(errors="replace")

    def git_bytes(self, *args: str, check: bool = True) -> bytes:
        """Run a git command in the work tree; its raw output. A failure is a GitError with
        git's message, or (``check=False``) empty output."""
        proc = subprocess.run(
            gitcmd.argv(*args), cwd=self.root, env=self.env(), capture_output=True, check=False
        )
        if proc.returncode == 0:
            return proc.stdout
        if check:
            message = proc.stderr.decode(errors="replace").strip().splitlines()
            raise GitError(f"git {args[0]} failed: {message[-1] if message else proc.returncode}")
        return b""

    def identity(self) -> Identity:
        """Who hystate's commits are by: git's committer identity, else hystate's own."""
        return self.settings.committer()

    def configure(self) -> list[str]:
        """Repository settings hystate relies on; returns those it changed.

        ``index.recordEndOfIndexEntries`` makes git keep the EOIE index extension (an optional
        one; every reader, libgit2 included, may ignore it), so hystate finds where the index
        entries end without walking them all. Split index is never switched on here: libgit2
        cannot read it (docs/BENCHMARKS.md has the figures for those who opt in)."""
        changed = []
        driver = f"{shlex.quote(sys.executable)} -m hystate.cli merge-driver %O %A %B %P"
        wanted = {
            "index.recordEndOfIndexEntries": "true",
            "merge.hystate.name": "hystate: field-by-field merge of episode files",
            "merge.hystate.driver": driver,
        }
        for key, value in wanted.items():
            if self.git("config", "--local", "--get", key, check=False).strip() != value:
                self.git("config", "--local", key, value)
                changed.append(f"{key}={value}")
        return changed

    # -- state -----------------------------------------------------------------------------

    def index_lock(self) -> index_mod.IndexLock:
        """``index.lock`` taken as git takes it (its owner recorded, git's environment and
        shared permissions followed), the index read under it."""
        from hystate.git import index as index_mod  # not imported by a reading command

        if self.index_memo is None:
            self.index_memo = index_mod.memo_for(self.index_path)
        return index_mod.IndexLock(
            self.git_dir,
            lockfile.owners_dir(self.common_dir),
            self.lock_wait,
            self.index_memo,
            index=self.index_path,
            env=self.env,
            settings=self.settings,
        )

    def check_writable(self) -> None:
        """Refuse to commit while git is in the middle of something, or on a detached HEAD
        (a commit there is left behind by the next checkout of a branch) unless the person
        opted in with ``git config hystate.allowDetachedHead true``."""
        try:  # one listing, not a stat per name (twice per transition)
            present = _IN_PROGRESS.keys() & set(os.listdir(self.git_dir))
        except OSError:
            present = set()
        for name, what in _IN_PROGRESS.items():
            if name in present and (self.git_dir / name).exists():
                raise GitError(
                    f"{self.root} is in the middle of {what}",
                    hint="finish or abort it first, then run the command again",
                )
        if not self.refs.detached():  # HEAD's text only: the branch's file is not needed
            return
        head = self.refs.head()
        self.settings.refresh()
        if head.ref is None and not self.settings.flag(DETACHED_OPT_IN):
            raise GitError(
                f"HEAD is detached at {(head.sha or '')[:8]}: a state commit there would be "
                "left behind by the next checkout of a branch",
                hint=f"check out a branch, or `git config {DETACHED_OPT_IN} true` to commit "
                "on a detached HEAD anyway",
            )

    def head(self) -> Head:
        return self.refs.head()

    def head_tree(self, head: Head | None = None) -> bytes | None:
        head = head or self.refs.head()
        return None if head.sha is None else self.objects.commit_tree(bytes.fromhex(head.sha))

    def head_blob(self, rel: str) -> bytes | None:
        """Binary sha of ``rel`` in HEAD, or None when HEAD does not have it."""
        entry = self.objects.lookup(self.head_tree(), rel)
        return None if entry is None else entry[1]

    def subtree(self, rel_dir: str, head: Head | None = None) -> bytes | None:
        """Sha of folder ``rel_dir`` in HEAD's tree (None if HEAD or the folder is missing)."""
        root = self.head_tree(head)
        if root is None or rel_dir in ("", "."):
            return root
        entry = self.objects.lookup(root, rel_dir)
        return None if entry is None or entry[0] != b"40000" else entry[1]

    def head_names(self, rel_dir: str, depth: int) -> list[str]:
        """Paths (relative to ``rel_dir``) of HEAD's files exactly ``depth`` folders below
        ``rel_dir`` plus one: ``depth=1`` lists ``<folder>/<file>``. Trees only, no work tree."""
        found: list[str] = []
        top = self.subtree(rel_dir)

        def walk(sha: bytes, prefix: str, left: int) -> None:
            for name, entry in self.objects.tree(sha).entries().items():
                is_tree = entry[:-20] == b"40000"
                text = name.decode("utf-8", "surrogateescape")
                if left and is_tree:
                    walk(entry[-20:], f"{prefix}{text}/", left - 1)
                elif not left and not is_tree:
                    found.append(prefix + text)

        if top is not None:
            walk(top, "", depth)
        return found

    def dirty_paths(self, rel_dir: str, *, ignored: bool = False) -> list[str]:
        """Files under ``rel_dir`` that differ from HEAD (modified, added, deleted, untracked)
        as git status sees them, without git's locks. ``ignored``: files a person's excludes
        ignore count too (a global excludes of ``*.yaml`` must not hide a leftover file)."""
        which = "--ignored=traditional" if ignored else "--ignored=no"
        out = self.git_bytes(*gitcmd.STATUS, which, "--", rel_dir)  # names as the OS has them
        return gitcmd.status_paths(out.decode("utf-8", "surrogateescape"))

    def log(
        self,
        rev: str,
        fields: Sequence[str],
        *,
        trailer_keys: Sequence[str] = (),
        paths: Sequence[str] = (),
        reverse: bool = False,
        limit: int | None = None,
    ) -> list[tuple[Any, ...]]:
        """``git log rev -- paths``: per commit, the ``fields`` (git format placeholders) and
        last a dict of the values of ``trailer_keys`` ("" where absent), parsed by git.
        ``limit``: at most that many commits (the newest; ``reverse`` applies after)."""
        if self.refs.head().sha is None:
            return []
        specs = [
            *fields,
            *(f"%(trailers:key={key},valueonly,separator=%x2c)" for key in trailer_keys),
        ]
        fmt = "%x1f".join(specs) + "%x1e"
        order = ["--reverse"] if reverse else []
        if limit is not None:
            order.append(f"--max-count={max(limit, 0)}")
        out = self.git("log", *order, f"--format={fmt}", rev, "--", *paths, check=False)
        rows: list[tuple[Any, ...]] = []
        for record in out.split("\x1e"):
            parts = record.lstrip("\n").split("\x1f")
            if len(parts) != len(specs):
                continue  # nothing, or a message carrying the separators
            values = parts[len(fields) :]
            trail = {key: value.strip() for key, value in zip(trailer_keys, values, strict=True)}
            rows.append((*parts[: len(fields)], trail))
        return rows

    def git_prefix(self, *args: str, max_bytes: int) -> tuple[bytes, bool]:
        """The first ``max_bytes`` of a git command's output and whether it had more (git is
        then stopped): a file of any size costs at most that. Empty when git fails."""
        with subprocess.Popen(
            gitcmd.argv(*args),
            cwd=self.root,
            env=self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        ) as proc:
            assert proc.stdout is not None
            data = proc.stdout.read(max_bytes + 1)
            more = len(data) > max_bytes
            if more:
                proc.kill()
        if not more and proc.returncode != 0:
            return b"", False
        return data[:max_bytes], more

    def file_patches(self, rel: str, limit: int = 500, max_bytes: int = 8 << 20) -> dict[str, str]:
        """Commit sha -> the patch that commit made to ``rel`` (one ``git log -p``, newest
        first, at most ``limit`` commits and ``max_bytes`` of patches: the patch cut there
        ends saying so); only that file's part of each commit."""
        if self.refs.head().sha is None:
            return {}
        raw, cut = self.git_prefix(
            "log", "-p", "--no-color", "--no-ext-diff", "--no-textconv", f"--max-count={limit}",
            "--format=%x1e%H", "HEAD", "--", rel, max_bytes=max_bytes,
        )  # fmt: skip
        out = raw.decode(errors="replace")
        patches: dict[str, str] = {}
        last = None
        for record in out.split("\x1e"):
            sha, _, patch = record.partition("\n")
            if len(sha) == 40 and all(c in "0123456789abcdef" for c in sha):
                last = sha
                patches[sha] = patch.strip("\n")
            elif last is not None:  # the separator was inside the file: part of that patch
                patches[last] += "\x1e" + record
        if cut and last is not None:
            patches[last] += f"\n… (cut: the patches of this file are over {max_bytes:,} bytes)"
        return patches

    def is_ancestor(self, older: str, newer: str) -> bool:
        """Whether commit ``older`` is ``newer`` or one of its ancestors (False when either is
        not a commit this repository has)."""
        if not all(
            len(s) == 40 and all(c in "0123456789abcdef" for c in s) for s in (older, newer)
        ):
            return False
        proc = subprocess.run(
            gitcmd.argv("merge-base", "--is-ancestor", older, newer),
            cwd=self.root, env=self.env(), capture_output=True, check=False,
        )  # fmt: skip
        return proc.returncode == 0

    def relpath(self, path: Path) -> str:
        """``path`` (absolute, under the resolved work tree) relative to the repo root."""
        text, top = str(path), str(self.root).rstrip("/") + "/"
        return text[len(top) :] if text.startswith(top) else path.relative_to(self.root).as_posix()

    def run_input(
        self, args: list[str], stdin: bytes, env: Mapping[str, str] | None = None
    ) -> bytes:
        """Run git with ``stdin``; its output. A failure is a GitError with git's message."""
        proc = subprocess.run(
            gitcmd.argv(*args),
            input=stdin,
            cwd=self.root,
            capture_output=True,
            check=False,
            env={**self.env(), **(env or {})},
        )
        if proc.returncode != 0:
            lines = proc.stderr.decode(errors="replace").strip().splitlines()
            raise GitError(f"git {args[0]} failed: {lines[-1] if lines else proc.returncode}")
        return proc.stdout

    def plain_attributes(self, rels: Iterable[str]) -> bool:
        """True when no git attribute can convert these files on their way into git."""
        return attributes.no_conversion(self.root, self.common_dir, rels)

    def git_locks(self) -> list[Path]:
        """git's lock files that exist now: the index's, HEAD's and the branches'."""
        index_lock = self.index_path.with_name(self.index_path.name + ".lock")
        locks = [index_lock, self.git_dir / "HEAD.lock"]
        heads = self.common_dir / "refs" / "heads"
        locks += list(heads.rglob("*.lock")) if heads.exists() else []
        return [lock for lock in locks if lock.exists()]

    def stale_lock_owner(self, lock: Path) -> str | None:
        """``pid.start`` of the gone hystate process that left git lock ``lock``, else None."""
        name = lockfile.stale_owner(lock, lockfile.owners_dir(self.common_dir))
        return None if name is None else name.rsplit(".", 1)[0]

    def break_stale_lock(self, lock: Path) -> bool:
        """Remove git lock ``lock`` if a killed hystate process left it (never git's own, never
        a live process's); also forget owner records of processes that are gone."""
        owners = lockfile.owners_dir(self.common_dir)
        broken = lockfile.break_stale(lock, owners)
        lockfile.clean_owners(owners)
        return broken

    def break_stale_index_lock(self) -> bool:
        return self.break_stale_lock(self.index_path.with_name(self.index_path.name + ".lock"))
