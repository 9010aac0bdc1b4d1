"""HEAD read and moved compare-and-swap, with git's own lock-file protocol.

``git update-ref <ref> <new> <old>`` takes ``<ref>.lock`` with O_EXCL, checks the current value,
writes the new one into the lock file and renames it over the ref. Doing the same here keeps
interplay with concurrent git commands exact and saves a process start (~1.2 ms) per commit.
GitPython's ``set_commit`` does not check the old value, so concurrent writers lose commits.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from hystate.core import filestamp
from hystate.core.errors import GitError
from hystate.core.paths import write_all, write_atomic
from hystate.git import shared
from hystate.git.lockfile import LockFile, owners_dir

ZERO = "0" * 40
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
# a FIFO put where a ref goes reads as empty (a broken ref), never blocks (a warm server walks
# the HEADs of the repositories its commands used: it would stop serving every one)
_READ = os.O_RDONLY | _CLOEXEC | getattr(os, "O_NONBLOCK", 0)


class StaleHead(Exception):
    """HEAD moved between reading it and updating it; the caller rebuilds and tries again."""


@dataclass(frozen=True)
class Head:
    ref: str | None  # "refs/heads/main"; None when HEAD is detached
    sha: str | None  # None on an unborn branch


class Refs:
    def __init__(self, git_dir: Path, common_dir: Path) -> None:
        self.git_dir = git_dir
        self.common_dir = common_dir
        self.shared: Callable[[], int] = lambda: 0  # core.sharedRepository (shared.parse)
        # git's reference-transaction hook: (state, "<old> <new> <ref>" lines) -> exit code
        self.transaction_hook: Callable[[str, bytes], int] | None = None
        # HEAD's text, read again whenever its stamp changes (a checkout renames a new HEAD
        # over it) or was not settled (hystate.core.filestamp): a commit asks for HEAD several
        # times; one lstat then, not an open and two reads. A branch's file changes with every
        # commit and is read every time.
        self._head_text = filestamp.FileMemo(_text, limit=4)

    def _ref_path(self, ref: str) -> Path:
        return self.git_dir / ref if ref == "HEAD" else self.common_dir / ref

    def _ref_file(self, ref: str) -> str:
        """``_ref_path`` as a string (read several times per commit: no Path made)."""
        return f"{self.git_dir if ref == 'HEAD' else self.common_dir}/{ref}"

    def set_own(self, ref: str, sha: str) -> None:
        """Point a ref only hystate writes (``refs/hystate/remote-*``, under the node's sync
        lock) at ``sha``: its loose file replaced by rename, no reflog (a loose ref wins over
        packed-refs, as git reads them)."""
        if not ref.startswith("refs/hystate/"):
            raise GitError(f"{ref} is not one of hystate's own refs")
        path = self._ref_path(ref)
        shared.makedirs(path.parent, self.shared())
        write_atomic(path, _check_sha(sha, ref).encode() + b"\n", sync=False)

    def head(self) -> Head:
        text = self._head()
        if text.startswith("ref: "):
            ref = text[5:].strip()
            return Head(ref, self.resolve(ref))
        return Head(None, _check_sha(text, "HEAD"))

    def detached(self) -> bool:
        """Whether HEAD names a commit, not a branch (its branch's file is not read)."""
        return not self._head().startswith("ref: ")

    def _head(self) -> str:
        path = f"{self.git_dir}/HEAD"
        try:
            text = self._head_text.get(path)
            if text is None:  # missing, or a symlink (as very old git made it): followed
                text = _read(path)
        except FileNotFoundError as exc:
            raise GitError(f"{self.git_dir} has no HEAD", hint="is it a git repository?") from exc
        return text.strip()

    def resolve(self, ref: str) -> str | None:
        """The sha a ref points to: its loose file, else packed-refs, else None."""
        try:
            text = _read(self._ref_file(ref)).strip()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return self._packed(ref)
        if text.startswith("ref: "):
            return self.resolve(text[5:].strip())
        return _check_sha(text, ref)

    def under(self, prefix: str) -> list[tuple[str, str]]:
        """``(ref, sha)`` of every ref at or under ``prefix`` (a ref name or a folder of them,
        as ``git for-each-ref`` takes it), sorted by name: the loose files, then packed-refs
        for the names no file holds; a broken ref (empty, not a sha) is left out, as git
        does. Refs of the common dir only (not ``HEAD``, not per-worktree refs)."""
        base = prefix.rstrip("/")
        found: dict[str, str | None] = {}
        top = self.common_dir / base
        if top.is_dir():
            stack = [top]
            while stack:
                with os.scandir(stack.pop()) as entries:
                    for entry in entries:
                        name = entry.name
                        if name.startswith(".") or name.endswith(".lock"):
                            continue
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(Path(entry.path))
                        elif entry.is_file():
                            found[Path(entry.path).relative_to(self.common_dir).as_posix()] = None
        elif top.is_file():
            found[base] = None
        for line in self._packed_lines():
            sha, _, ref = line.partition(" ")
            if line.startswith(("#", "^")) or not (ref == base or ref.startswith(base + "/")):
                continue
            if ref not in found:
                found[ref] = sha
        out = []
        for ref in sorted(found):
            try:
                value = found[ref] or self.resolve(ref)
                if value is not None:
                    out.append((ref, _check_sha(value, ref)))
            except (GitError, OSError, UnicodeDecodeError):
                continue
        return out

    def symref_chain(self, ref: str) -> list[str]:
        """``ref`` and the refs it names in turn while it is a symbolic ref (``main`` ->
        ``trunk``): the last one is where its commits go."""
        chain = [ref]
        while len(chain) < 6:
            try:
                text = _read(self._ref_file(chain[-1])).strip()
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                break
            if not text.startswith("ref: "):
                break
            chain.append(text[5:].strip())
        return chain

    def _packed_lines(self) -> list[str]:
        """packed-refs' lines; a ref name git took that is not UTF-8 (git allows any byte
        but a few) decoded as the file names of loose refs are (surrogateescape): one such
        name, fetched and packed by a ``git gc``, would otherwise make every ref unreadable."""
        try:
            raw = (self.common_dir / "packed-refs").read_bytes()
        except FileNotFoundError:
            return []
        return raw.decode("utf-8", "surrogateescape").splitlines()

    def _packed(self, ref: str) -> str | None:
        suffix = " " + ref
        for line in self._packed_lines():
            if line.endswith(suffix) and not line.startswith(("#", "^")):
                return _check_sha(line[:40], ref)
        return None

    def update(
        self,
        head: Head,
        new: str,
        ident: bytes,
        message: str,
        reflog: Callable[[str], str],
        sync: str | None = None,
        steps: Sequence[tuple[str | None, str, bytes, str]] = (),
    ) -> list[str]:
        """Point HEAD (or its branch) at ``new`` if it still is ``head``; else raise StaleHead.
        ``reflog(ref)`` says, as core.logAllRefUpdates does, whether a missing log is created
        (``create``/``always``) or only an existing one appended to (``existing``). Once the
        ref has moved nothing raises: a reflog that cannot be appended to (a full disk) is
        returned as a warning, as git itself only warns then. ``steps``: the reflog entries
        ``(old, new, committer line, message)`` of a chain of commits moved over at once (a
        group commit: one line per commit, as git would have written them); default one."""
        chain = self.symref_chain(head.ref) if head.ref else ["HEAD"]
        target = chain[-1]  # a branch that is a symbolic ref moves the branch it names
        path = self._ref_path(target)
        lock = path.with_name(path.name + ".lock")
        perm = self.shared()
        shared.makedirs(path.parent, perm)
        held = LockFile(lock, owners_dir(self.common_dir), 5.0, "branch")
        try:
            if self.head() != head:
                raise StaleHead(target)
            names = chain if head.ref else ["HEAD"]
            lines = b"".join(
                b"%s %s %s\n" % ((head.sha or ZERO).encode(), new.encode(), ref.encode())
                for ref in (["HEAD"] if head.ref else []) + names
            )
            if self.transaction_hook and self.transaction_hook("prepared", lines) != 0:
                self.transaction_hook("aborted", lines)
                raise GitError(
                    "the reference-transaction hook refused the update: nothing committed"
                )
            # ``sync`` as core.fsync's "reference" says (hystate's default: on). Without it a
            # power cut may leave the branch on objects that came back empty: `hystate fsck
            # --repair` then puts it back on the last intact commit (hystate.fsck.powercut).
            held.write(new.encode() + b"\n")
            shared.adjust(lock, perm)
            held.commit(path, sync)
        finally:
            held.rollback()
        entry = b"".join(
            b"%s %s %s\t%s\n" % ((old or ZERO).encode(), step.encode(), who, text.encode())
            for old, step, who, text in (steps or [(head.sha, new, ident, message)])
        )
        logs = [("HEAD", self.git_dir / "logs" / "HEAD")]
        if head.ref:  # as git: every ref of the chain gets the entry
            logs += [(ref, self.common_dir / "logs" / ref) for ref in chain]
        warnings = []
        for ref, log in logs:
            try:
                if reflog(ref) == "existing" and not log.is_file():
                    continue
                shared.makedirs(log.parent, perm)
                _append(log, entry)
                shared.adjust(log, perm)
            except OSError as exc:
                warnings.append(
                    f"the commit is made, but its reflog entry could not be written to {log}:"
                    f" {exc.strerror or exc} (free space there; the history itself is complete)"
                )
        if self.transaction_hook:
            self.transaction_hook("committed", lines)
        return warnings


def _read(path: str) -> str:
    """The text of a ref file (``Path.read_text`` without its Path and text wrapper)."""
    fd = os.open(path, _READ)
    try:
        chunks = [os.read(fd, 4096)]
        # a regular file's read is short only at its end: a ref (41 bytes) is one read
        while len(chunks[-1]) == 4096 and (chunk := os.read(fd, 4096)):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode()


def _append(path: Path, data: bytes) -> None:
    """Append ``data`` to ``path`` (made if missing) in O_APPEND writes, as git appends to a
    reflog: no buffered file object (its fstat, seeks and tty probe) per line."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | _CLOEXEC, 0o666)
    try:
        write_all(fd, data)
    finally:
        os.close(fd)


def _text(raw: bytes | None) -> str | None:
    return None if raw is None else raw.decode()


def _check_sha(text: str, ref: str) -> str:
    if len(text) != 40 or any(c not in "0123456789abcdef" for c in text):
        if not text.strip():  # a ref file made since the last sync, emptied by a power cut
            raise GitError(
                f"ref {ref} is empty (a power cut?)",
                hint="`hystate fsck --repair` puts it back from its reflog",
            )
        raise GitError(f"ref {ref} holds {text[:60]!r}, not a sha-1", hint="run `git fsck`")
    return text
