"""How to make a transition's five loose objects durable before the branch moves: cost of the
alternatives on this machine's disk (docs/INDEX_FLOOR.md, section 7).

Each round writes five small objects into fan-out folders (as a transition does: a blob, three
trees, a commit) and then a branch file (written, synced, renamed), interleaving the variants
round by round so that all see the same disk:
  - each:     per object open, write, fsync, close, rename (hystate before this change)
  - deferred: all five opened and written, then each fsynced, closed, renamed
  - sync:     all five opened and written, one os.sync(), then closed and renamed
  - syncfs:   as sync, with syncfs(2) of the objects' file system only (Linux, through ctypes)
  - locked-first: as deferred, with the branch's lock file made and written first (every
              file created before the first flush)

    python bench/fsync_batch.py --rounds 100
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


def _objects(root: str, round_no: int) -> list[tuple[str, str, bytes]]:
    out = []
    for i in range(5):
        name = os.urandom(20).hex()
        folder = f"{root}/{name[:2]}"
        os.makedirs(folder, exist_ok=True)
        body = os.urandom(200 + 150 * i)
        out.append((f"{folder}/tmp_obj_{round_no}_{i}", f"{folder}/{name[2:]}", body))
    return out


def _open_write(tmp: str, body: bytes) -> int:
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o444)
    os.write(fd, body)
    return fd


def each(root: str, objs: list[tuple[str, str, bytes]]) -> None:
    for tmp, path, body in objs:
        fd = _open_write(tmp, body)
        os.fsync(fd)
        os.close(fd)
        os.replace(tmp, path)


def deferred(root: str, objs: list[tuple[str, str, bytes]]) -> None:
    fds = [_open_write(tmp, body) for tmp, _, body in objs]
    for fd, (tmp, path, _) in zip(fds, objs, strict=True):
        os.fsync(fd)
        os.close(fd)
        os.replace(tmp, path)


def sync(root: str, objs: list[tuple[str, str, bytes]]) -> None:
    fds = [_open_write(tmp, body) for tmp, _, body in objs]
    os.sync()
    for fd, (tmp, path, _) in zip(fds, objs, strict=True):
        os.close(fd)
        os.replace(tmp, path)


def syncfs(root: str, objs: list[tuple[str, str, bytes]]) -> None:
    fds = [_open_write(tmp, body) for tmp, _, body in objs]
    if _libc.syncfs(fds[0]) != 0:
        raise OSError(ctypes.get_errno(), "syncfs")
    for fd, (tmp, path, _) in zip(fds, objs, strict=True):
        os.close(fd)
        os.replace(tmp, path)


def branch(root: str, fd: int | None = None) -> None:
    lock = f"{root}/main.lock"
    if fd is None:
        fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, os.urandom(20).hex().encode() + b"\n")
    os.fsync(fd)
    os.close(fd)
    os.replace(lock, f"{root}/main")


def locked_first(root: str, objs: list[tuple[str, str, bytes]]) -> int:
    """As deferred, with the branch's lock made and written before any object is synced
    (every file created first, then every flush)."""
    lock = os.open(f"{root}/main.lock", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(lock, os.urandom(20).hex().encode() + b"\n")
    deferred(root, objs)
    return lock


VARIANTS: dict[str, Callable[[str, list[tuple[str, str, bytes]]], int | None]] = {
    "each": each,
    "deferred": deferred,
    "sync": sync,
    "syncfs": syncfs,
    "locked-first": locked_first,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--dir", default=None, help="where (default: a temp folder)")
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="hystate-fsync-", dir=args.dir) as tmp:
        for name in VARIANTS:
            os.makedirs(f"{tmp}/{name}")
        for r in range(args.rounds):
            for name, fn in VARIANTS.items():
                root = f"{tmp}/{name}"
                objs = _objects(root, r)
                started = time.perf_counter()
                lock = fn(root, objs)
                branch(root, lock if isinstance(lock, int) else None)
                times[name].append(time.perf_counter() - started)
    load = os.getloadavg()[0]
    print(f"{args.rounds} rounds, load {load:.2f}: five objects + the branch, ms per round")
    for name, values in times.items():
        values.sort()
        print(
            f"  {name:9s} median {statistics.median(values) * 1000:6.2f}"
            f"  p90 {values[int(len(values) * 0.9)] * 1000:6.2f}",
            file=sys.stdout,
        )


if __name__ == "__main__":
    main()
