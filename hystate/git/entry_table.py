"""Where the index's entries start, kept beside it so that a fresh process (a `hystate advance`,
or a worker after another one rewrote the index) finds an entry without walking them all.

Walking the 100,000 entries of a 12 MB index in Python costs ~45 ms; the first transition of
every process paid it. When hystate writes the index itself (``index.IndexLock``), it also writes
``<git dir>/hystate/index.table``, still under ``index.lock`` and before the index takes effect:

    "HYIX" version:u32 checksum:20 size:u32 ext_start:u32 count:u32 nsamples:u32 nracy:u32
    samples:u32*nsamples          (ascending entry offsets, about every STEP-th entry)
    nracy:u32 racy:u32*nracy      (offsets of entries that may be racy, a superset)
    crc32:u32                     (of everything before)

The table describes exactly one index: the one whose trailing SHA-1 and size it names. Any other
index (git wrote it, the rename failed, the table is torn or from an older hystate) does not
match and the reader walks the index as before, so a stale table can cost time, never
correctness. An index written with ``index.skipHash`` (a zero checksum) is never matched.

An entry is found by bisecting the sampled entries by name (the index is sorted by name, as git
compares them: bytes, then length) and walking at most ``step`` entries from there, each read
from its own header (exact names, never a byte search).
"""

from __future__ import annotations

import os
import stat
import struct
import sys
import zlib
from array import array
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Protocol

MAGIC = b"HYIX"
VERSION = 1
STEP = 32
# magic, version, checksum, size, ext_start, count, nsamples, nracy
_HEAD = struct.Struct(">4sI20s5I")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
# never through a symlink, never blocked by a FIFO made there: only a regular file is used
_ANY = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
_WRITE = os.O_WRONLY | os.O_CREAT | _ANY
_READ = os.O_RDONLY | _ANY
_EXTENDED = 0x4000
_ZERO = bytes(20)


def _packed(values: Sequence[int]) -> bytes:
    """Big-endian u32s (the table's byte order on every machine)."""
    out = array("I", values)
    if sys.byteorder == "little":
        out.byteswap()
    return out.tobytes()


def _unpacked(raw: bytes) -> array[int]:
    out = array("I")
    out.frombytes(raw)
    if sys.byteorder == "little":
        out.byteswap()
    return out


def table_path(git_dir: Path) -> Path:
    return git_dir / "hystate" / "index.table"


def entry_name(data: bytes | bytearray, pos: int) -> bytes:
    """The name of the entry that starts at ``pos``."""
    flags = _U16.unpack_from(data, pos + 60)[0]
    start = pos + (64 if flags & _EXTENDED else 62)
    size = flags & 0xFFF
    if size == 0xFFF:
        size = data.index(b"\x00", start) - start
    return bytes(data[start : start + size])


def next_entry(data: bytes | bytearray, pos: int) -> int:
    """Where the entry after the one at ``pos`` starts."""
    flags: int = _U16.unpack_from(data, pos + 60)[0]
    head = 64 if flags & _EXTENDED else 62
    size = flags & 0xFFF
    if size == 0xFFF:
        size = data.index(b"\x00", pos + head) - pos - head
    return pos + ((head + size + 8) & ~7)


class SampledOffsets(Mapping[bytes, int]):
    """name -> offset of an index's entries, from every ``step``-th entry's offset."""

    def __init__(
        self, data: bytes | bytearray, samples: Sequence[int], count: int, ext_start: int
    ) -> None:
        self.data = data  # patched in place later: names and offsets never change
        self.samples = samples
        self.count = count
        self.ext_start = ext_start

    def __getitem__(self, name: bytes) -> int:
        data, samples = self.data, self.samples
        lo, hi = 0, len(samples)
        while lo < hi:  # the last sample whose name is <= name
            mid = (lo + hi) // 2
            if entry_name(data, samples[mid]) <= name:
                lo = mid + 1
            else:
                hi = mid
        if lo == 0:
            raise KeyError(name)
        pos = samples[lo - 1]
        stop = samples[lo] if lo < len(samples) else self.ext_start
        found = -1
        while pos < stop:
            here = entry_name(data, pos)
            if here == name:
                found = pos  # the last one: a conflict's stages share a name, as in _walk
            elif here > name:
                break
            pos = next_entry(data, pos)
        if found < 0:
            raise KeyError(name)
        return found

    def __iter__(self) -> Iterator[bytes]:
        pos = 12
        for _ in range(self.count):
            yield entry_name(self.data, pos)
            pos = next_entry(self.data, pos)

    def __len__(self) -> int:
        return self.count


class Memo(Protocol):
    """What ``index.IndexMemo`` knows of the index it patched."""

    offsets: Mapping[bytes, int]
    samples: Sequence[int]
    ext_start: int
    racy: list[int]


def save(git_dir: Path, new: bytes | bytearray, memo: Memo) -> None:
    """Write the table of the index ``new`` (call it under ``index.lock``, before the rename).
    Best effort: a table that cannot be written is only a slower next process."""
    if not memo.samples:  # once per walk: every STEP-th entry's offset, in index order
        offsets = memo.offsets
        if isinstance(offsets, SampledOffsets):
            memo.samples = offsets.samples
        else:
            memo.samples = array("I", list(offsets.values())[::STEP])
    samples, racy, ext_start = memo.samples, memo.racy, memo.ext_start
    count = _U32.unpack_from(new, 8)[0]
    checksum = bytes(new[-20:])
    head = _HEAD.pack(MAGIC, VERSION, checksum, len(new), ext_start, count, len(samples), len(racy))
    if array("I").itemsize != 4:
        return
    body = head + _packed(samples) + _packed(racy)
    body += _U32.pack(zlib.crc32(body))
    # Rewritten in place (one writer at a time: index.lock is held), no temporary file and
    # rename per commit: a reader that meets it half written, or a power cut that tears it,
    # finds a CRC or checksum that does not match, and walks the index.
    try:
        fd = os.open(table_path(git_dir), _WRITE, 0o644)
    except OSError:
        return
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            os.pwrite(fd, body, 0)
            os.ftruncate(fd, len(body))
    except OSError:
        pass  # a torn table names its index and carries its CRC: it never passes for one
    finally:
        os.close(fd)


def load(git_dir: Path, data: bytes | bytearray) -> tuple[int, SampledOffsets, list[int]] | None:
    """(where the extensions start, the entries' offsets, entries that may be racy) of the
    index ``data`` if the table describes exactly it, else None."""
    checksum = bytes(data[-20:])
    if checksum == _ZERO or len(data) < 32:
        return None
    try:
        with open(os.open(table_path(git_dir), _READ), "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                return None
            raw = fh.read()
    except OSError:
        return None
    if array("I").itemsize != 4 or len(raw) < _HEAD.size + 4:
        return None
    if zlib.crc32(raw[:-4]) != _U32.unpack_from(raw, len(raw) - 4)[0]:
        return None
    magic, version, named, size, ext_start, count, nsamples, nracy = _HEAD.unpack_from(raw)
    if (
        magic != MAGIC
        or version != VERSION
        or named != checksum
        or size != len(data)
        or count != _U32.unpack_from(data, 8)[0]
        or len(raw) != _HEAD.size + 4 * (nsamples + nracy) + 4
    ):
        return None
    samples = _unpacked(raw[_HEAD.size : _HEAD.size + 4 * nsamples])
    racy = _unpacked(raw[_HEAD.size + 4 * nsamples : len(raw) - 4])
    return ext_start, SampledOffsets(data, samples, count, ext_start), list(racy)
