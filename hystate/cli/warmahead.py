"""What the warm fork server (issue 29) prepares ahead for the commands it forks, per
repository: the trees of HEAD parsed, the index read, the answer of ``git config --list``.

A command served by a child of the server reports, once it has ended (its client has its exit
code already), the repositories it found (``hystate.git.locate.FOUND``) and the git config it
read, in a file ``<socket>.ahead/<pid>`` the server takes when it reaps the child (so the
command holds no descriptor of the server's). Between requests the server, a step at a time
(one tree parsed, one MiB of an index read or hashed: a command arriving waits for one step at
most), prepares for the next child, which has it all by fork:

- the trees HEAD names (root, state folder, year folders: at 100,000 episodes a year folder
  holds 5,000 entries, ~2 ms to parse), in ``hystate.git.trees.WARM``. A tree is the content
  of its sha: a child can never find one stale or wrong; one read from a loose object is used
  only while that file is there (``trees.LOOSE``: deleted, it is missing as it would be in a
  new process). Those HEAD no longer names are dropped when the walk ends.
- the index, as ``hystate.git.index.IndexLock`` keeps the memo of an index it wrote (its
  bytes, where its entries start, which may be racy) with SHA-1 states at every MiB, in
  ``index.WARM``; a command's ``IndexLock`` uses it only while the index's stamp (inode, size,
  mtime, ctime) is the one read, as it does with its own memo. Else it reads the index anew.
- the ``git config --list`` a child's command ran (``hystate.git.settings.READ``), keyed by
  repository, GIT_* and PATH variables and the settled stamps of every config file git read
  (never one with includes: their files are not stamped), in ``settings.WARM``; a command uses
  it only if its own key, taken then, is the same.

A child still reads HEAD, its refs and every file itself: nothing kept could answer otherwise
than a new process would.
"""

from __future__ import annotations

import contextlib
import hashlib
import marshal
import os
import stat
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, cast

from hystate.core.errors import HystateError
from hystate.git import entry_table, settings
from hystate.git import index as index_mod
from hystate.git.locate import FOUND
from hystate.git.objects import ObjectStore
from hystate.git.refs import Refs
from hystate.git.trees import LOOSE, TREE_MODE, WARM

REPORT = b"W"  # a report's message kinds (then 4 bytes of length): the paths of a repository
CONFIG = b"C"  # marshal of (key, values): a git config --list answer
MAX_REPORT = 1 << 20  # bytes of a child's report read
MAX_CONFIGS = 16  # git config answers kept
MAX_REPOSITORIES = 4  # kept warm at once: the ones reported last
MAX_TREES = 256  # kept per repository (a hystate layout at 100,000 episodes has ~22)
MAX_ENTRIES = 500_000  # their entries, per repository (~25 MB at 100,000 episodes' 100,000)
MAX_INDEX = 64 << 20  # bytes of an index read ahead (100,000 episodes: 12 MB)
CHUNK = index_mod._CHUNK  # IndexLock keeps a SHA-1 state at every MiB

Repo = tuple[str, str, str, str]  # git dir, common dir, objects folder, index (as git found them)


def prepare(folder: str) -> str | None:
    """The server's folder of reports (beside its socket, 0700, emptied), or None if it
    cannot have one (then nothing is prepared ahead)."""
    try:
        os.mkdir(folder, 0o700)
    except FileExistsError:
        pass
    except OSError:
        return None
    try:
        st = os.lstat(folder)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
            return None
        for name in os.listdir(folder):  # a killed server's
            os.unlink(os.path.join(folder, name))
    except OSError:
        return None
    return folder


def report(folder: str) -> None:
    """In a child, once its command has ended (its client has its exit code): write the
    repositories the command found and the git config it read to ``folder``/<pid>, which the
    server reads when it reaps this process."""
    messages = [
        REPORT
        + b"\0".join(os.fsencode(str(p)) for p in (w.git_dir, w.common_dir, w.objects, w.index))
        for w in dict.fromkeys(FOUND)
    ]
    messages += [CONFIG + marshal.dumps(cast(Any, item)) for item in settings.READ.items()]
    data = b"".join(m[:1] + (len(m) - 1).to_bytes(4, "little") + m[1:] for m in messages)
    if not data or len(data) > MAX_REPORT:
        return
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(f"{folder}/{os.getpid()}", flags, 0o600)
    except OSError:
        return
    try:
        os.write(fd, data)
    except OSError:
        pass
    finally:
        os.close(fd)


def messages(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """(kind, payload) of each whole message of a report."""
    i = 0
    while len(data) - i >= 5:
        size = int.from_bytes(data[i + 1 : i + 5], "little")
        if len(data) - i - 5 < size:
            return
        yield data[i : i + 1], data[i + 5 : i + 5 + size]
        i += 5 + size


def repository(payload: bytes) -> Repo | None:
    parts = [os.fsdecode(part) for part in payload.split(b"\0")]
    return (parts[0], parts[1], parts[2], parts[3]) if len(parts) == 4 and all(parts) else None


def keep_config(payload: bytes) -> None:
    """Hand on a child's ``git config --list`` (``settings.WARM``), the last ones kept."""
    try:
        key, values = marshal.loads(payload)
    except (EOFError, ValueError, TypeError):
        return
    if not isinstance(key, tuple) or not isinstance(values, dict):
        return
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in values.items()):
        return
    settings.WARM.pop(key, None)
    settings.WARM[key] = values
    while len(settings.WARM) > MAX_CONFIGS:
        del settings.WARM[next(iter(settings.WARM))]


class Warmer:
    """The server's side: repositories to walk, one tree parsed per ``step``."""

    def __init__(self) -> None:
        self.repos: OrderedDict[Repo, None] = OrderedDict()  # the last reported last
        self.todo: list[Repo] = []
        self.walk: Iterator[None] | None = None
        self.subtrees: dict[tuple[str, bytes], list[bytes]] = {}

    def take(self, folder: str, pid: int) -> None:
        """Read (and remove) the report of child ``pid``, once it has ended."""
        path = f"{folder}/{pid}"
        try:
            with open(path, "rb") as fh:
                data = fh.read(MAX_REPORT)
        except OSError:
            return
        with contextlib.suppress(OSError):
            os.unlink(path)
        for kind, payload in messages(data):
            repo = repository(payload) if kind == REPORT else None
            if repo is not None:
                self.want(repo)
            elif kind == CONFIG:
                keep_config(payload)

    def want(self, repo: Repo) -> None:
        self.repos.pop(repo, None)
        self.repos[repo] = None
        while len(self.repos) > MAX_REPOSITORIES:
            old, _ = self.repos.popitem(last=False)
            self._drop(old[2], set())
            index_mod.WARM.pop(old[3], None)
        if repo not in self.todo:
            self.todo.append(repo)

    def busy(self) -> bool:
        return self.walk is not None or bool(self.todo)

    def step(self) -> None:
        """Parse at most one tree, or read or hash one MiB of an index."""
        while True:
            if self.walk is None:
                if not self.todo:
                    return
                self.walk = self._walk(self.todo.pop(0))
            if next(self.walk, StopIteration) is None:
                return
            self.walk = None

    def _walk(self, repo: Repo) -> Iterator[None]:
        yield from self._trees(repo)
        if repo in self.repos:
            try:
                yield from _index(Path(repo[0]), repo[3])
            except (HystateError, OSError, ValueError):
                index_mod.WARM.pop(repo[3], None)

    def _trees(self, repo: Repo) -> Iterator[None]:
        git_dir, common, objects, _ = repo
        keep: set[bytes] = set()
        entries = 0
        try:
            head = Refs(Path(git_dir), Path(common)).head()
            store = ObjectStore(Path(objects), Path(git_dir))
            store.env = lambda: _git_env(common)
            if head.sha is not None:
                todo = [store.commit_tree(bytes.fromhex(head.sha))]
                while todo and len(keep) < MAX_TREES and entries < MAX_ENTRIES:
                    sha = todo.pop()
                    if sha in keep:
                        continue
                    keep.add(sha)
                    key = (objects, sha)
                    if key not in WARM:
                        tree = store.tree(sha)
                        WARM[key] = tree
                        if os.path.exists(store._path(sha)):  # else packed: packs are kept whole
                            LOOSE.add(key)
                        found = tree.entries().values()
                        self.subtrees[key] = [e[-20:] for e in found if e[:-20] == TREE_MODE]
                        yield None
                    entries += len(WARM[key])
                    todo.extend(self.subtrees.get(key, ()))
        except (HystateError, OSError, ValueError):
            keep = set()  # gone, or not what it was: nothing kept of it
            self.repos.pop(repo, None)
        self._drop(objects, keep)

    def _drop(self, objects: str, keep: set[bytes]) -> None:
        for key in [key for key in WARM if key[0] == objects and key[1] not in keep]:
            del WARM[key]
            LOOSE.discard(key)
            self.subtrees.pop(key, None)


def _index(git_dir: Path, path: str) -> Iterator[None]:
    """Read the index at ``path`` into a memo as ``IndexLock`` makes one (its bytes, where
    its entries start, which may be racy) with SHA-1 states at every MiB, so that a command's
    update hashes only from its first change. Kept only if the index did not change meanwhile;
    a command uses it only if its stamp is still the memo's key (``IndexLock._read``)."""
    st = os.stat(path)
    old = index_mod.WARM.get(path)
    if old is not None and old.key == index_mod._key(st):
        return
    index_mod.WARM.pop(path, None)
    if st.st_size > MAX_INDEX:
        return
    with open(path, "rb") as fh:
        data = bytearray(fh.read())
    yield None
    if len(data) != st.st_size or not index_mod._patchable(data):
        return
    walked: tuple[int, Mapping[bytes, int], list[int]] | None
    walked = entry_table.load(git_dir.resolve(), data)
    if walked is None:
        walked = index_mod._walk(bytes(data), int(st.st_mtime))
        yield None
    if walked is None:
        return
    memo = index_mod.IndexMemo(buf=data)
    memo.ext_start, memo.offsets, memo.racy = walked
    state, pos, view = hashlib.sha1(), 0, memoryview(data)
    while pos + CHUNK <= memo.ext_start:
        state.update(view[pos : pos + CHUNK])
        pos += CHUNK
        memo.checkpoints.append((pos, state.copy()))
        yield None
    view.release()
    if index_mod._key(os.stat(path)) == index_mod._key(st):
        memo.key = index_mod._key(st)
        index_mod.WARM[path] = memo


def _git_env(common: str) -> dict[str, str]:
    """The environment of a ``git cat-file`` the server runs (packed trees): its own, the
    repository named, nothing of anyone's GIT_* (the server's were the starter's)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env["GIT_DIR"] = common
    return env
