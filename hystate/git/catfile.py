"""Packed objects read through one long-lived ``git cat-file --batch`` per object store.

A git process costs a few milliseconds of CPU here (docs/SYNC.md "What a claim costs"); a node
claiming in ``sync.claims: refs`` reads several packed objects per claim (the episode files and
trees of the clone's pack, looked at by each branch flush), one process each before this. The
process is started at the first packed read and kept for the next ones; git looks for packs made
since (a fetch, a ``git gc``) when an object is not in those it knows, so it never answers
"missing" for an object that arrived after it started. It is closed with its store (or at
exit), started again in a forked child (the parent's pipes let go of there at the fork: a
child living on would keep the parent's reader from ending), and any failure of it
falls back to one ``git cat-file`` for that object.
"""

from __future__ import annotations

import os
import subprocess
import threading
import weakref
from collections.abc import Callable
from pathlib import Path

from hystate.core.errors import GitError

Env = Callable[[], dict[str, str]] | None


_LIVE: weakref.WeakSet[CatFile] = weakref.WeakSet()  # (their pipes let go of in a forked child)


class CatFile:
    """``read(sha)``: (kind, content) of a packed (or loose) object, None when git has none."""

    def __init__(self, cwd: Path) -> None:
        self._cwd = cwd
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._pid = 0  # the process that started ``_proc``
        self._finalizer: weakref.finalize[[subprocess.Popen[bytes]], CatFile] | None = None
        _LIVE.add(self)

    def _forked(self) -> None:
        """In a forked child: the parent's pipes pointed at /dev/null (the file numbers stay
        the stream objects', closed with them; anything buffered goes nowhere), so a child
        that lives on does not keep the parent's reader from seeing its stdin end; the lock
        new (a thread of the parent may have held it at the fork)."""
        self._lock = threading.Lock()
        proc, finalizer = self._proc, self._finalizer
        self._proc, self._finalizer, self._pid = None, None, 0
        if finalizer is not None:
            finalizer.detach()
        if proc is None:
            return
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                try:
                    null = os.open(os.devnull, os.O_RDWR)
                    os.dup2(null, stream.fileno())
                    os.close(null)
                except (OSError, ValueError):
                    pass

    def read(self, sha: bytes, env: Env) -> tuple[bytes, bytes] | None:
        """``env``: git's environment for the repository (asked when a process starts)."""
        with self._lock:
            try:
                return self._ask(sha, env)
            except (OSError, ValueError, GitError):
                self.close()
        return _once(sha, self._cwd, env)

    def _ask(self, sha: bytes, env: Env) -> tuple[bytes, bytes] | None:
        proc = self._running(env)
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(sha.hex().encode() + b"\n")
        proc.stdin.flush()
        parts = proc.stdout.readline().split()
        if len(parts) == 2 and parts[1] == b"missing":
            return None
        if len(parts) != 3:
            raise GitError("git cat-file --batch stopped answering")
        size = int(parts[2])
        data = proc.stdout.read(size + 1)
        if len(data) != size + 1:
            raise GitError("git cat-file --batch stopped answering")
        return parts[1], data[:size]

    def _running(self, env: Env) -> subprocess.Popen[bytes]:
        if self._proc is not None and self._pid == os.getpid() and self._proc.poll() is None:
            return self._proc
        if self._pid == os.getpid():
            self.close()
        self._proc = subprocess.Popen(
            ["git", "cat-file", "--batch"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=self._cwd,
            env=env() if env else None,
        )
        self._pid = os.getpid()
        self._finalizer = weakref.finalize(self, _close, self._proc)
        return self._proc

    def close(self) -> None:
        """End the process (its stdin closed: it exits at once) if this process started it."""
        if self._finalizer is not None and self._pid == os.getpid():
            self._finalizer()
        self._proc = None
        self._finalizer = None


def _close(proc: subprocess.Popen[bytes]) -> None:
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            try:
                stream.close()
            except OSError:
                pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _once(sha: bytes, cwd: Path, env: Env) -> tuple[bytes, bytes] | None:
    proc = subprocess.run(
        ["git", "cat-file", "--batch"],
        input=sha.hex().encode() + b"\n",
        capture_output=True,
        cwd=cwd,
        env=env() if env else None,
        check=False,
    )
    header, _, rest = proc.stdout.partition(b"\n")
    parts = header.split()
    if proc.returncode != 0 or len(parts) != 3:
        return None
    return parts[1], rest[: int(parts[2])]


def _after_fork() -> None:
    for catfile in list(_LIVE):
        catfile._forked()


os.register_at_fork(after_in_child=_after_fork)
