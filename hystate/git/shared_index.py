"""A split index's shared part (``<git dir>/sharedindex.<sha1>``): opened once per process,
its entries found by name without walking them all.

git never changes a shared index (its name is its checksum), so what hystate learns of one stays
true: every ``STEP``-th entry's offset, and the entries that may be racy (mtime at or after a
given second). That is kept beside it in ``<git dir>/hystate/shared.<sha1>.table``, so a fresh
process at 100,000 entries bisects the mapped file instead of walking 12 MB in Python:

    "HYSH" version:u32 size:u32 count:u32 end:u32 floor:u32 nsamples:u32 nracy:u32
    samples:u32*nsamples   racy:(ordinal:u32 offset:u32)*nracy   crc32:u32

``racy`` lists every entry whose mtime second is ``floor`` or later; a reader whose index is
older than ``floor`` walks again. A torn or foreign table is never used (size, count, crc).
"""

from __future__ import annotations

import mmap
import os
import struct
import zlib
from array import array
from dataclasses import dataclass
from pathlib import Path

from hystate.core.errors import GitError

STEP = 32
_MAGIC = b"HYSH"
_VERSION = 1
_HEAD = struct.Struct(">4s7I")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_EXTENDED = 0x4000
_OPEN: dict[str, SharedIndex] = {}


def entry_name(data: bytes | bytearray | mmap.mmap, pos: int) -> tuple[bytes, int]:
    """(name, where the next entry starts) of the entry at ``pos`` (index v2/v3)."""
    flags = _U16.unpack_from(data, pos + 60)[0]
    head = 64 if flags & _EXTENDED else 62
    size = flags & 0xFFF
    if size == 0xFFF:
        size = data.find(b"\x00", pos + head) - pos - head
    return bytes(data[pos + head : pos + head + size]), pos + ((head + size + 8) & ~7)


@dataclass
class SharedIndex:
    path: Path
    data: mmap.mmap
    count: int
    end: int  # where the entries end
    samples: array[int]  # offset of entry k * STEP
    floor: int
    racy: list[tuple[int, int]]  # (ordinal, offset) of entries with mtime >= floor

    def seek(self, key: bytes) -> tuple[int, int, bytes] | None:
        """(ordinal, offset, name) of the first entry whose name is >= ``key``, or None."""
        data, samples = self.data, self.samples
        lo, hi = 0, len(samples)
        while lo < hi:  # the first sample whose name is >= key
            mid = (lo + hi) // 2
            if entry_name(data, samples[mid])[0] < key:
                lo = mid + 1
            else:
                hi = mid
        ordinal = max(lo - 1, 0) * STEP
        pos = samples[lo - 1] if lo else 12
        while ordinal < self.count:
            name, after = entry_name(data, pos)
            if name >= key:
                return ordinal, pos, name
            ordinal, pos = ordinal + 1, after
        return None


def open_shared(git_dir: Path, hexname: str, index_sec: int) -> SharedIndex | None:
    """The shared index named ``hexname``, or None if it is missing or not one hystate reads."""
    path = git_dir / f"sharedindex.{hexname}"
    known = _OPEN.get(str(path))
    if known is not None and known.floor <= index_sec:
        return known
    try:
        with open(path, "rb") as fh:
            data = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError):
        return None
    if (
        len(data) < 32
        or data[:4] != b"DIRC"
        or _U32.unpack_from(data, 4)[0] not in (2, 3)
        or data[-20:].hex() != hexname
    ):
        return None
    shared = _load_table(git_dir, path, data, hexname, index_sec)
    if shared is None:
        shared = _walk(path, data, index_sec)
        _save_table(git_dir, hexname, shared)
    _OPEN[str(path)] = shared
    return shared


def _walk(path: Path, data: mmap.mmap, floor: int) -> SharedIndex:
    count = _U32.unpack_from(data, 8)[0]
    samples = array("I")
    racy = []
    pos, limit = 12, len(data) - 20
    u16, u32 = _U16.unpack_from, _U32.unpack_from
    for ordinal in range(count):
        if ordinal % STEP == 0:
            samples.append(pos)
        if u32(data, pos + 8)[0] >= floor:
            racy.append((ordinal, pos))
        flags = u16(data, pos + 60)[0]
        head = 64 if flags & _EXTENDED else 62
        size = flags & 0xFFF
        if size == 0xFFF:
            size = data.find(b"\x00", pos + head) - pos - head
        pos += (head + size + 8) & ~7
        if pos > limit:
            raise GitError(f"{path.name} is corrupt (entries run past its end)", hint="git status")
    return SharedIndex(path, data, count, pos, samples, floor, racy)


def _table(git_dir: Path, hexname: str) -> Path:
    return git_dir / "hystate" / f"shared.{hexname}.table"


def _save_table(git_dir: Path, hexname: str, shared: SharedIndex) -> None:
    """Best effort (a table that cannot be written is only a slower next process); the tables
    of other shared indexes go (git deletes those files once they expire)."""
    racy = array("I", [v for pair in shared.racy for v in pair])
    samples = array("I", shared.samples)
    if samples.itemsize != 4:
        return
    for values in (samples, racy):
        if struct.pack("=I", 1) != struct.pack(">I", 1):
            values.byteswap()
    body = _HEAD.pack(
        _MAGIC,
        _VERSION,
        len(shared.data),
        shared.count,
        shared.end,
        shared.floor,
        len(samples),
        len(shared.racy),
    )
    body += samples.tobytes() + racy.tobytes()
    body += _U32.pack(zlib.crc32(body))
    path = _table(git_dir, hexname)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(exist_ok=True)
        for old in path.parent.glob("shared.*.table"):
            if old.name != path.name:
                old.unlink(missing_ok=True)
        tmp.write_bytes(body)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)


def _load_table(
    git_dir: Path, path: Path, data: mmap.mmap, hexname: str, index_sec: int
) -> SharedIndex | None:
    try:
        raw = _table(git_dir, hexname).read_bytes()
    except OSError:
        return None
    if len(raw) < _HEAD.size + 4 or zlib.crc32(raw[:-4]) != _U32.unpack_from(raw, len(raw) - 4)[0]:
        return None
    magic, version, size, count, end, floor, nsamples, nracy = _HEAD.unpack_from(raw)
    if (
        magic != _MAGIC
        or version != _VERSION
        or size != len(data)
        or count != _U32.unpack_from(data, 8)[0]
        or floor > index_sec
        or len(raw) != _HEAD.size + 4 * (nsamples + 2 * nracy) + 4
        or nsamples != (count + STEP - 1) // STEP
    ):
        return None
    values = array("I")
    if values.itemsize != 4:
        return None
    values.frombytes(raw[_HEAD.size : -4])
    if struct.pack("=I", 1) != struct.pack(">I", 1):
        values.byteswap()
    samples = values[:nsamples]
    pairs = values[nsamples:]
    racy = list(zip(pairs[0::2], pairs[1::2], strict=True))
    return SharedIndex(path, data, count, end, samples, floor, racy)
