"""The git repository holding the state: discovery, identity, state checks, and the commit.

This package is the only place that talks to git. The commit path is plumbing done in-process
(objects, trees along the changed path, HEAD compare-and-swap, the index entries patched) so a
transition costs a few milliseconds and never sweeps in anything else the user staged.
GitPython serves the porcelain-level work where its cost does not matter: creating a
repository, reading history.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from hystate.errors import GitError
from hystate.gitrepo import index as git_index
from hystate.gitrepo.objects import ObjectStore
from hystate.gitrepo.refs import Head, Refs, StaleHead

FALLBACK_NAME = "hystate"
FALLBACK_EMAIL = "hystate@localhost"
_IN_PROGRESS = {
    "MERGE_HEAD": "a merge",
    "rebase-merge": "a rebase",
    "rebase-apply": "a rebase or am",
    "CHERRY_PICK_HEAD": "a cherry-pick",
    "REVERT_HEAD": "a revert",
}


@dataclass(frozen=True)
class Identity:
    name: str
    email: str

    def line(self, when: int | None = None) -> bytes:
        stamp = int(time.time()) if when is None else when
        return f"{self.name} <{self.email}> {stamp} +0000".encode()


class GitRepo:
    """A non-bare repository: ``root`` is its work tree."""

    def __init__(self, root: Path, git_dir: Path, common_dir: Path) -> None:
        self.root = root
        self.git_dir = git_dir
        self.common_dir = common_dir
        self.refs = Refs(git_dir, common_dir)
        self.objects = ObjectStore(common_dir / "objects", root)
        self._identity: Identity | None = None
        self._index_memo = git_index.IndexMemo()
        self.lock_wait = 10.0

    # -- finding and making repositories ---------------------------------------------------

    @classmethod
    def discover(cls, start: Path) -> GitRepo:
        """The repository containing ``start``, found like git does (upwards)."""
        here = start.resolve()
        for folder in (here, *here.parents):
            dotgit = folder / ".git"
            if dotgit.is_dir():
                return cls._open(folder, dotgit)
            if dotgit.is_file():
                text = dotgit.read_text().strip()
                if not text.startswith("gitdir: "):
                    raise GitError(f"{dotgit} is not a gitdir link")
                return cls._open(folder, (folder / text[8:]).resolve())
        raise GitError(
            f"not in a git repository: {start}", hint="run `hystate init` to make one here"
        )

    @classmethod
    def _open(cls, root: Path, git_dir: Path) -> GitRepo:
        root = root.resolve()
        common = git_dir
        commondir = git_dir / "commondir"
        if commondir.is_file():
            common = (git_dir / commondir.read_text().strip()).resolve()
        if (common / "reftable").exists():
            raise GitError(f"{root}: reftable repositories are not supported")
        return cls(root, git_dir, common)

    @classmethod
    def init(cls, path: Path) -> GitRepo:
        """``git init`` at ``path`` (through GitPython) and open it."""
        import git  # GitPython; imported here so the everyday commands do not pay for it

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
        proc = subprocess.run(["git", *args], cwd=self.root, capture_output=True, check=False)
        if proc.returncode == 0:
            return proc.stdout
        if check:
            message = proc.stderr.decode(errors="replace").strip().splitlines()
            raise GitError(f"git {args[0]} failed: {message[-1] if message else proc.returncode}")
        return b""

    def identity(self) -> Identity:
        """The repo's git identity (environment, then config), else hystate's own."""
        if self._identity is None:
            name = os.environ.get("GIT_COMMITTER_NAME") or os.environ.get("GIT_AUTHOR_NAME")
            email = os.environ.get("GIT_COMMITTER_EMAIL") or os.environ.get("GIT_AUTHOR_EMAIL")
            if not (name and email):
                found = dict(
                    line.split("\n", 1)
                    for line in self.git(
                        "config", "-z", "--get-regexp", r"^user\.(name|email)$", check=False
                    ).split("\0")
                    if "\n" in line
                )
                name = name or found.get("user.name")
                email = email or found.get("user.email")
            self._identity = Identity(
                _clean_ident(name) or FALLBACK_NAME, _clean_ident(email) or FALLBACK_EMAIL
            )
        return self._identity

    def configure(self) -> list[str]:
        """Repository settings hystate relies on; returns those it changed.

        ``index.recordEndOfIndexEntries`` makes git keep the EOIE index extension (an optional
        one; every reader, libgit2 included, may ignore it), so hystate finds where the index
        entries end without walking them all. Split index is never switched on here: libgit2
        cannot read it (docs/BENCHMARKS.md has the figures for those who opt in)."""
        import shlex
        import sys

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

    def check_writable(self) -> None:
        """Refuse to commit while git is in the middle of something."""
        for name, what in _IN_PROGRESS.items():
            if (self.git_dir / name).exists():
                raise GitError(
                    f"{self.root} is in the middle of {what}",
                    hint="finish or abort it first, then run the command again",
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

    def dirty_paths(self, rel_dir: str) -> list[str]:
        """Files under ``rel_dir`` whose work-tree state differs from HEAD (modified, added,
        deleted or untracked), as git status sees them; without taking git's locks. A scan
        started by ``prefetch_status`` for this repository is used (once) when there is one."""
        started = _PREFETCHED.pop(self.root, None)
        if started is not None:
            raw, _ = started.communicate()
            if started.returncode == 0:
                prefix = "" if rel_dir in ("", ".") else rel_dir.rstrip("/") + "/"
                return _status_paths(raw.decode(errors="replace"), prefix)
        return _status_paths(self.git(*_STATUS, "--", rel_dir), "")

    def transition_commits(self, since: str | None) -> list[tuple[str, str, str | None, str]]:
        """(sha, episode, from, to) of hystate's commits after ``since`` (all when None),
        oldest first, read from the audit trailers; a discovery batch names each episode."""
        if self.refs.head().sha is None:
            return []
        fields = [
            "%H",
            *(
                f"%(trailers:key=Hystate-{k},valueonly,separator=)"
                for k in ("Episode", "From", "To")
            ),
            "%b",
        ]
        rev = f"{since}..HEAD" if since else "HEAD"
        out = self.git("log", "--reverse", f"--format={'%x1f'.join(fields)}%x1e", rev, check=False)
        found = []
        for record in out.split("\x1e"):
            parts = record.strip("\n").split("\x1f")
            if len(parts) != 5 or not parts[3]:
                continue
            sha, episode, old, new, body = parts
            if episode:
                found.append((sha, episode, old or None, new))
            elif new == "discovered":
                ids = [
                    line
                    for line in body.splitlines()
                    if line and ":" not in line and " " not in line
                ]
                found.extend((sha, eid, None, new) for eid in ids)
        return found

    def file_log(self, rel: str) -> list[CommitInfo]:
        """Every commit that touched ``rel``, oldest first (through GitPython)."""
        import git  # GitPython

        if self.refs.head().sha is None:
            return []
        repo = git.Repo(self.root)
        try:
            commits = list(repo.iter_commits("HEAD", paths=rel))
        finally:
            repo.close()
        return [
            CommitInfo(
                c.hexsha,
                c.author.name or "",
                c.author.email or "",
                c.authored_datetime.isoformat(),
                c.summary if isinstance(c.summary, str) else c.summary.decode(),
                {k: v for k, v in _trailers(c.message)},
            )
            for c in reversed(commits)
        ]

    def relpath(self, path: Path) -> str:
        """``path`` (absolute, under the resolved work tree) relative to the repo root."""
        return path.relative_to(self.root).as_posix()

    # -- the commit ------------------------------------------------------------------------

    def commit(self, files: Mapping[str, bytes], message: str) -> str | None:
        """One commit setting each repo-relative path to its content; nothing else changes.

        The files must already be written to the work tree with exactly that content.
        Returns the new commit sha, or None when HEAD already had that content.
        HEAD moves compare-and-swap: if another process moved it meanwhile, the trees are
        rebuilt on the new HEAD and the swap tried again.
        """
        self.check_writable()
        blobs = {rel: self.objects.write(b"blob", data) for rel, data in files.items()}
        patch = git_index.prepare(self.git_dir, self.lock_wait, self._index_memo)
        try:
            sha = self._commit_head(blobs, message)
            if sha is not None:
                self._update_index(patch, blobs)
                patch = None
        finally:
            if patch is not None:
                patch.release()
        return sha

    def _commit_head(self, blobs: Mapping[str, bytes], message: str) -> str | None:
        ident = self.identity().line()
        subject = message.split("\n", 1)[0]
        for _ in range(50):
            head = self.refs.head()
            base = self.head_tree(head)
            tree = self.objects.rewrite(base, blobs)
            if tree == base:
                return None
            body = b"tree %s\n" % tree.hex().encode()
            if head.sha:
                body += b"parent %s\n" % head.sha.encode()
            body += b"author %s\ncommitter %s\n\n%s" % (ident, ident, message.encode())
            commit = self.objects.write(b"commit", body)
            self.objects.remember_commit(commit, tree)
            sha = commit.hex()
            try:
                self.refs.update(head, sha, ident, f"commit: {subject}")
            except StaleHead:
                continue
            return sha
        raise GitError("HEAD kept moving while hystate tried to commit; try again")

    def _update_index(self, patch: git_index.IndexPatch | None, blobs: Mapping[str, bytes]) -> None:
        updates = [
            git_index.Update(rel.encode(), sha, os.stat(self.root / rel))
            for rel, sha in blobs.items()
        ]
        found = patch.locate(updates) if patch is not None else None
        if patch is not None and found is not None:
            patch.commit(updates, found)
            return
        if patch is not None:
            patch.release()
        paths: Sequence[str] = list(blobs)
        self.git("update-index", "--add", "--", *paths)


@dataclass(frozen=True)
class CommitInfo:
    sha: str
    author: str
    email: str
    time: str
    subject: str
    trailers: dict[str, str]


def _trailers(message: str | bytes) -> list[tuple[str, str]]:
    text = message if isinstance(message, str) else message.decode(errors="replace")
    last = text.strip().rsplit("\n\n", 1)[-1]
    pairs = []
    for line in last.splitlines():
        key, sep, value = line.partition(": ")
        if sep and key.startswith("Hystate-"):
            pairs.append((key, value.strip()))
    return pairs


_STATUS = (
    "--no-optional-locks", "status", "--porcelain=v1", "-z", "--untracked-files=all",
    "--no-renames", "--ignored=no",
)  # fmt: skip
_PREFETCHED: dict[Path, subprocess.Popen[bytes]] = {}


def prefetch_status(start: Path) -> None:
    """Start git's scan of the work tree now, in the background: a reading command spends the
    same time starting up, and the scan is the slowest part of checking the caches are fresh
    (~0.2 s at 100,000 files). Used once by ``GitRepo.dirty_paths``."""
    try:
        repo = GitRepo.discover(start)
    except GitError:
        return
    if repo.root not in _PREFETCHED:
        _PREFETCHED[repo.root] = subprocess.Popen(
            ["git", *_STATUS, "--", "."],
            cwd=repo.root,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )


def _status_paths(out: str, prefix: str) -> list[str]:
    paths = {entry[3:] for entry in out.split("\0") if len(entry) > 3}
    return sorted(p for p in paths if p.startswith(prefix))


def _clean_ident(value: str | None) -> str | None:
    # git strips these from identities; a stray "<" or newline would corrupt the commit header
    if value is None:
        return None
    cleaned = "".join(c for c in value if c not in "<>\n\r\0").strip()
    return cleaned or None


def merge_file(ours: bytes, base: bytes, theirs: bytes, labels: tuple[str, str, str]) -> bytes:
    """git's three-way text merge of three contents, with conflict markers where they differ."""
    import tempfile

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
    return f"{socket.gethostname()}:{os.getpid() if pid is None else pid}"
