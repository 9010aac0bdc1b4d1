"""Git objects written and read in-process: loose objects, trees rewritten along one path.

A transition changes one blob and the trees above it (root, state dir, year folder), written
here (well under a millisecond at 1,000 episodes; a git process costs ~1.2 ms on its own).
Packed objects (``git gc``, a clone) are read through one long-lived ``git cat-file``
(``catfile.py``). Parsed trees are kept (LRU).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import threading
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from hystate.core.errors import GitError, cannot_write, is_cannot_write
from hystate.core.paths import fsync_dir, write_all
from hystate.git import shared as shared_mod
from hystate.git.catfile import CatFile
from hystate.git.trees import TREE_MODE, Tree, warm

FILE_MODE = b"100644"
EXEC_MODE = b"100755"
KINDS = {b"120000": "a symlink", b"160000": "a submodule", b"40000": "a folder"}
REPAIR = "`hystate fsck --repair` mends what a power cut leaves"
FLUSH_EACH = "each"  # ObjectStore.defer: each deferred object fsynced, one after another
FLUSH_SYNC = "sync"  # one os.sync() for all of them (docs/INDEX_FLOOR.md, section 7)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
EMPTY_TREE = bytes.fromhex("4b825dc642cb6eb9a060e54bf8d69288fbee4904")


def object_id(kind: bytes, data: bytes) -> bytes:
    """Binary SHA-1 of a git object of ``kind`` with content ``data``."""
    h = hashlib.sha1(b"%s %d\x00" % (kind, len(data)))
    h.update(data)
    return h.digest()


def intact(raw: bytes, sha: bytes) -> bool:
    """Whether ``raw`` (a loose object file's bytes) inflates to a well-formed object ``sha``."""
    try:
        body = zlib.decompress(raw)
    except zlib.error:
        return False
    nul = body.find(b"\x00")
    if nul < 0:
        return False
    _, _, size = body[:nul].partition(b" ")
    if not size.isdigit() or int(size) != len(body) - nul - 1:
        return False
    return hashlib.sha1(body).digest() == sha


class ObjectStore:
    """Reads and writes objects of one repository's object database."""

    def __init__(self, objects_dir: Path, worktree: Path) -> None:
        self.dir = objects_dir
        self.worktree = worktree
        self._trees: dict[bytes, Tree] = {}
        self._commit_trees: dict[bytes, bytes] = {}
        self._prefix = str(objects_dir)
        self.env: Callable[[], dict[str, str]] | None = None  # git's environment (GitRepo.env)
        self.shared: Callable[[], int] = lambda: 0  # core.sharedRepository (shared.parse)
        # "fsync" or "fdatasync": each object written is synced, then its folder; None: not
        # (``GitSettings.fsync`` decides, per commit)
        self.fsync: str | None = None
        # Between ``defer`` and ``publish``: the objects written by the thread that deferred,
        # object file -> (open temp file, its name, the sync call it needs, made its folder)
        self._deferred: dict[str, tuple[int, str, str | None, bool]] | None = None
        self._deferring = 0  # that thread
        self._flush = FLUSH_EACH
        self._catfile = CatFile(worktree)

    def _path(self, sha: bytes) -> str:
        hexsha = sha.hex()
        return f"{self._prefix}/{hexsha[:2]}/{hexsha[2:]}"

    def read(self, sha: bytes, start: int | None = None) -> tuple[bytes, bytes]:
        """(kind, content) of object ``sha``; ``start``: only about that many bytes of a loose
        one are inflated (a discovery's commit is megabytes at 100,000; its tree is line 1)."""
        try:
            with open(self._path(sha), "rb") as fh:
                if start is None:
                    raw = zlib.decompress(fh.read())
                else:
                    raw = zlib.decompressobj().decompress(fh.read(start + 960), start + 64)
        except FileNotFoundError:
            return self._read_packed(sha)
        except zlib.error as exc:
            raise GitError(f"corrupt loose object {sha.hex()}", hint=REPAIR) from exc
        nul = raw.find(b"\x00")
        if nul < 0:
            raise GitError(f"corrupt loose object {sha.hex()}", hint=REPAIR)
        kind, _, _size = raw[:nul].partition(b" ")
        return kind, raw[nul + 1 :]

    def _read_packed(self, sha: bytes) -> tuple[bytes, bytes]:
        found = self._catfile.read(sha, self.env)  # (one long-lived git process: catfile.py)
        if found is None:
            raise GitError(f"git object {sha.hex()} is missing", hint=REPAIR)
        return found

    def read_blobs(self, shas: Sequence[bytes]) -> list[bytes | None]:
        """The content of each blob (None: missing, or not a blob): loose ones read here,
        packed ones through one ``git cat-file --batch`` for all of them."""
        found: list[bytes | None] = [None] * len(shas)
        packed = []
        for i, sha in enumerate(shas):
            try:
                with open(self._path(sha), "rb") as fh:
                    raw = zlib.decompress(fh.read())
            except (FileNotFoundError, zlib.error):
                packed.append(i)
                continue
            nul = raw.find(b"\x00")
            if raw.startswith(b"blob ") and nul > 0:
                found[i] = raw[nul + 1 :]
        if packed:
            proc = subprocess.run(
                ["git", "cat-file", "--batch"],
                input=b"".join(shas[i].hex().encode() + b"\n" for i in packed),
                capture_output=True,
                cwd=self.worktree,
                env=self.env() if self.env else None,
                check=False,
            )
            out, pos = proc.stdout, 0
            for i in packed:
                end = out.find(b"\n", pos)
                if end < 0:
                    break
                parts = out[pos:end].split()
                pos = end + 1
                if len(parts) != 3:  # "<sha> missing"
                    continue
                size = int(parts[2])
                if parts[1] == b"blob":
                    found[i] = out[pos : pos + size]
                pos += size + 1
        return found

    def write(self, kind: bytes, data: bytes) -> bytes:
        """Store an object (if absent) and return its binary sha."""
        sha = object_id(kind, data)
        path = self._path(sha)
        deferred = self._deferred if self._deferring == threading.get_ident() else None
        if deferred is not None and path in deferred:
            return sha
        try:
            with open(path, "rb") as fh:
                existing = fh.read()
        except FileNotFoundError:
            pass
        except PermissionError:
            return sha
        else:
            # Never trusted unread: a power cut can leave an object file empty or torn (a commit
            # on it would be lost). An intact one is freshened, as git does, so that a concurrent
            # `git gc` keeps what we refer to; a broken one is written again.
            if intact(existing, sha):
                with contextlib.suppress(OSError):
                    os.utime(path)
                return sha
        folder = path[:-38]  # ".../objects/ab/"
        tmp = f"{folder}tmp_obj_{os.getpid()}_{path[-38:-30]}"  # fsck/tempfiles reads the pid
        if deferred and any(entry[1] == tmp for entry in deferred.values()):
            self.publish()  # two deferred objects would share a temp file: the first goes first
        body = zlib.compress(b"%s %d\x00" % (kind, len(data)) + data, 1)
        try:
            self._store(tmp, path, body, deferred)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            if is_cannot_write(exc):
                raise cannot_write(exc, f"the git object {path}") from exc
            raise
        return sha

    def _store(
        self,
        tmp: str,
        path: str,
        body: bytes,
        deferred: dict[str, tuple[int, str, str | None, bool]] | None = None,
    ) -> None:
        folder = path[:-38]
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _CLOEXEC
        made = False
        try:
            fd = os.open(tmp, flags, 0o444)
        except FileNotFoundError:
            shared_mod.makedirs(folder, self.shared())
            made = True
            fd = os.open(tmp, flags, 0o444)
        kept = False
        try:
            shared_mod.adjust(tmp, self.shared())
            write_all(fd, body)
            if deferred is not None:  # synced and renamed by ``publish``, with the others
                deferred[path] = (fd, tmp, self.fsync, made)
                kept = True
                return
            if self.fsync:
                getattr(os, self.fsync)(fd)
        finally:
            if not kept:
                os.close(fd)
        os.replace(tmp, path)
        if self.fsync and made:
            fsync_dir(self.dir)  # a new fan-out folder: its entry, once

    def defer(self, flush: str = FLUSH_EACH) -> None:
        """Until ``publish`` (or ``abandon``), objects this thread writes are written to their
        temp files and kept open, not synced nor put in place one by one: ``publish`` syncs
        them together (``flush``: each fsynced in turn, or one ``os.sync()``) and then renames
        each into place, so an object is still never in place before it is on disk. For the
        few objects of one commit (each an open file meanwhile)."""
        if self._deferred is None:
            self._deferred, self._deferring = {}, threading.get_ident()
            self._flush = flush

    def publish(self) -> None:
        """Make every deferred object durable, then put each in place (call it before a ref
        names them); deferring goes on for the objects written next."""
        pending = self._deferred
        if not pending or self._deferring != threading.get_ident():
            return
        calls = {call for _, _, call, _ in pending.values() if call}
        made = any(entry[3] for entry in pending.values())
        try:
            if calls and self._flush == FLUSH_SYNC:
                os.sync()  # one flush of the machine's dirty data: every temp file with it
            elif calls:
                for fd, _, call, _ in pending.values():
                    if call:
                        getattr(os, call)(fd)
            for path, (fd, tmp, _, _) in list(pending.items()):
                pending[path] = (-1, tmp, None, False)  # closed: never closed twice
                os.close(fd)
                os.replace(tmp, path)
                del pending[path]
        except OSError as exc:
            self.abandon()
            if is_cannot_write(exc):
                raise cannot_write(exc, f"the git objects in {self.dir}") from exc
            raise
        if calls and made:
            fsync_dir(self.dir)  # a new fan-out folder: its entry

    def abandon(self) -> None:
        """Stop deferring; objects not published are dropped (temp files removed): unnamed."""
        if self._deferring != threading.get_ident():
            return  # another thread's batch (or none)
        pending, self._deferred, self._deferring = self._deferred, None, 0
        for fd, tmp, _, _ in (pending or {}).values():
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)

    def tree(self, sha: bytes) -> Tree:
        if (cached := self._trees.pop(sha, None)) is not None:
            self._trees[sha] = cached  # the most recently used last: dropped last
            return cached
        if (cached := warm(self._prefix, sha, self._path(sha))) is not None:  # warm server's
            return cached
        if sha == EMPTY_TREE:
            return Tree([])
        kind, data = self.read(sha)
        if kind != b"tree":
            raise GitError(f"object {sha.hex()} is a {kind.decode()}, not a tree")
        tree = Tree.parse(data)
        self._remember(sha, tree)
        return tree

    def forget_trees(self) -> None:
        """Drop the parsed trees kept for the next lookups (a large listing is done)."""
        self._trees.clear()

    def _remember(self, sha: bytes, tree: Tree) -> None:
        if len(self._trees) > 64:  # the least recently used (a year folder's tree at 100,000
            self._trees.pop(next(iter(self._trees)), None)  # is 5,000 entries: ~4 ms to parse)
        self._trees[sha] = tree

    def write_tree(self, tree: Tree, replaces: bytes | None = None) -> bytes:
        sha = self.write(b"tree", tree.serialize())
        self._trees.pop(replaces or b"", None)  # superseded (HEAD's next commit names ``sha``)
        self._remember(sha, tree)
        return sha

    def commit_tree(self, commit: bytes) -> bytes:
        """The root tree sha of ``commit``."""
        tree = self._commit_trees.get(commit)
        if tree is None:
            kind, data = self.read(commit, start=64)
            if kind != b"commit" or not data.startswith(b"tree "):
                raise GitError(f"object {commit.hex()} is not a commit")
            tree = self.remember_commit(commit, bytes.fromhex(data[5:45].decode()))
        return tree

    def remember_commit(self, commit: bytes, tree: bytes) -> bytes:
        if len(self._commit_trees) > 256:
            self._commit_trees.clear()
        self._commit_trees[commit] = tree
        return tree

    def lookup(self, root: bytes | None, path: str) -> tuple[bytes, bytes] | None:
        """(mode, sha) of ``path`` in tree ``root``, or None."""
        if root is None:
            return None
        *dirs, name = os.fsencode(path).split(b"/")
        sha = root
        for part in dirs:
            entry = self.tree(sha).get(part)
            if entry is None or entry[0] != TREE_MODE:
                return None
            sha = entry[1]
        return self.tree(sha).get(name)

    def diff(self, old: bytes | None, new: bytes | None, prefix: str = "") -> list[str]:
        """Paths of the blobs that differ between trees ``old`` and ``new`` (either may be
        None). Only subtrees whose shas differ are read, so one changed file costs the trees
        along its path, whatever the size of the rest."""
        if old == new:
            return []
        a = self.tree(old).entries() if old is not None else {}
        b = self.tree(new).entries() if new is not None else {}
        changed = []
        for name in a.keys() | b.keys():
            x, y = a.get(name), b.get(name)
            if x == y:
                continue
            path = prefix + name.decode("utf-8", "surrogateescape")
            x_tree = x[:-20] if x is not None and x[:-20] == TREE_MODE else None
            y_tree = y[:-20] if y is not None and y[:-20] == TREE_MODE else None
            if x_tree or y_tree:
                changed.extend(
                    self.diff(
                        x[-20:] if x_tree and x is not None else None,
                        y[-20:] if y_tree and y is not None else None,
                        path + "/",
                    )
                )
            if (x is not None and not x_tree) or (y is not None and not y_tree):
                changed.append(path)
        return changed

    def rewrite(self, root: bytes | None, blobs: Mapping[str, tuple[bytes, bytes]]) -> bytes:
        """New root tree: ``root`` with each path set to its (mode, blob sha), folders made as
        needed. A path that would replace something that is not a plain file or folder
        (a symlink, a submodule) is refused: that is not a file hystate may write."""
        grouped = {tuple(path.encode().split(b"/")): entry for path, entry in blobs.items()}
        return self._rewrite(root, grouped, b"")

    def _rewrite(
        self,
        sha: bytes | None,
        changes: dict[tuple[bytes, ...], tuple[bytes, bytes]],
        prefix: bytes,
    ) -> bytes:
        tree = self.tree(sha) if sha is not None else Tree([])
        direct: dict[bytes, tuple[bytes, bytes] | None] = {}
        nested: dict[bytes, dict[tuple[bytes, ...], tuple[bytes, bytes]]] = {}
        for parts, entry in changes.items():
            if len(parts) == 1:
                old = tree.get(parts[0])
                if old is not None and old[0] not in (FILE_MODE, EXEC_MODE):
                    _refuse(prefix + parts[0], old[0])
                direct[parts[0]] = entry
            else:
                nested.setdefault(parts[0], {})[parts[1:]] = entry
        for name, sub in nested.items():
            old = tree.get(name)
            if old is not None and old[0] != TREE_MODE:
                _refuse(prefix + name, old[0])
            base = old[1] if old is not None else None
            direct[name] = (TREE_MODE, self._rewrite(base, sub, prefix + name + b"/"))
        return self.write_tree(tree.with_changes(direct), replaces=sha)


def _refuse(path: bytes, mode: bytes) -> None:
    what = KINDS.get(mode, f"an entry of mode {mode.decode(errors='replace')}")
    raise GitError(
        f"{path.decode(errors='replace')} is {what} in HEAD, not a file or folder hystate writes",
        hint="fix the repository's layout first (see `hystate validate`)",
    )
