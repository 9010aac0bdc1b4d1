"""git's EWAH compressed bitmaps (``ewah/ewah_bitmap.c``, ``ewah/ewah_io.c``), as the split
index's ``link`` extension stores its delete and replace bitmaps.

A bitmap is a sequence of 64-bit words: each *running length word* (RLW) says how many clean
words (all 0 or all 1, bit 0 of the RLW) come first (bits 1-32) and how many literal words
follow it (bits 33-63). Serialized: bit count (u32), word count (u32), the words (u64 each),
the position of the last RLW (u32), all big-endian. ``encode`` replays git's ``ewah_set`` for
ascending positions, so the bytes are the ones git writes for the same bits.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from hystate.core.errors import GitError

_WORD = 64
_U32 = struct.Struct(">I")
_RUN_MAX = (1 << 32) - 1
_LIT_MAX = (1 << 31) - 1
_ALL = (1 << 64) - 1


def _run_bit(w: int) -> int:
    return w & 1


def _run_len(w: int) -> int:
    return (w >> 1) & _RUN_MAX


def _literals(w: int) -> int:
    return w >> 33


def _with_run_len(w: int, n: int) -> int:
    return (w & ~(_RUN_MAX << 1)) | (n << 1)


def _with_literals(w: int, n: int) -> int:
    return (w & ((1 << 33) - 1)) | (n << 33)


class _Bitmap:
    """git's ``struct ewah_bitmap`` while bits are set in ascending order."""

    def __init__(self) -> None:
        self.buffer = [0]
        self.rlw = 0
        self.bit_size = 0

    def _push_rlw(self, value: int) -> None:
        self.buffer.append(value)
        self.rlw = len(self.buffer) - 1

    def _add_literal(self, word: int) -> None:
        current = _literals(self.buffer[self.rlw])
        if current >= _LIT_MAX:
            self._push_rlw(0)
            self.buffer[self.rlw] = _with_literals(self.buffer[self.rlw], 1)
            self.buffer.append(word)
            return
        self.buffer[self.rlw] = _with_literals(self.buffer[self.rlw], current + 1)
        self.buffer.append(word)

    def _add_empty_words(self, number: int) -> None:  # of zeros (v = 0)
        rlw = self.buffer[self.rlw]
        if _run_bit(rlw) != 0 and _run_len(rlw) + _literals(rlw) == 0:
            self.buffer[self.rlw] = rlw & ~1
        elif _literals(rlw) != 0 or _run_bit(rlw) != 0:
            self._push_rlw(0)
        runlen = _run_len(self.buffer[self.rlw])
        can_add = min(number, _RUN_MAX - runlen)
        self.buffer[self.rlw] = _with_run_len(self.buffer[self.rlw], runlen + can_add)
        number -= can_add
        while number >= _RUN_MAX:
            self._push_rlw(_with_run_len(0, _RUN_MAX))
            number -= _RUN_MAX
        if number > 0:
            self._push_rlw(_with_run_len(0, number))

    def _add_empty_one(self) -> None:  # git's add_empty_word(self, 1)
        rlw = self.buffer[self.rlw]
        no_literal = _literals(rlw) == 0
        run_len = _run_len(rlw)
        if no_literal and run_len == 0:
            rlw |= 1
            self.buffer[self.rlw] = rlw
        if no_literal and _run_bit(rlw) == 1 and run_len < _RUN_MAX:
            self.buffer[self.rlw] = _with_run_len(rlw, run_len + 1)
            return
        self._push_rlw(_with_run_len(0, 1) | 1)

    def set(self, i: int) -> None:
        if i < self.bit_size:
            raise ValueError("EWAH bits are set in ascending order")
        dist = (i + 1 + _WORD - 1) // _WORD - (self.bit_size + _WORD - 1) // _WORD
        self.bit_size = i + 1
        bit = 1 << (i % _WORD)
        if dist > 0:
            if dist > 1:
                self._add_empty_words(dist - 1)
            self._add_literal(bit)
            return
        rlw = self.buffer[self.rlw]
        if _literals(rlw) == 0:
            self.buffer[self.rlw] = _with_run_len(rlw, _run_len(rlw) - 1)
            self._add_literal(bit)
            return
        self.buffer[-1] |= bit
        if self.buffer[-1] == _ALL:
            self.buffer.pop()
            rlw = self.buffer[self.rlw]
            self.buffer[self.rlw] = _with_literals(rlw, _literals(rlw) - 1)
            self._add_empty_one()


def encode(positions: Iterable[int]) -> bytes:
    """The serialized bitmap with exactly ``positions`` set (ascending)."""
    bitmap = _Bitmap()
    for pos in positions:
        bitmap.set(pos)
    words = bitmap.buffer
    return (
        _U32.pack(bitmap.bit_size)
        + _U32.pack(len(words))
        + struct.pack(f">{len(words)}Q", *words)
        + _U32.pack(bitmap.rlw)
    )


def decode(data: bytes | bytearray, start: int, end: int) -> tuple[list[int], int]:
    """(the set positions, where the bitmap ends) of the bitmap serialized at ``start``."""
    if start + 8 > end:
        raise GitError("the index's split-index bitmap is corrupt", hint="git status")
    bit_size, count = struct.unpack_from(">II", data, start)
    stop = start + 8 + 8 * count + 4
    if stop > end:
        raise GitError("the index's split-index bitmap is corrupt", hint="git status")
    words = struct.unpack_from(f">{count}Q", data, start + 8)
    out: list[int] = []
    pos = 0
    pointer = 0
    while pointer < count:
        word = words[pointer]
        run = _run_len(word) * _WORD
        if _run_bit(word):
            out.extend(range(pos, pos + run))
        pos += run
        pointer += 1
        for _ in range(_literals(word)):
            if pointer >= count:
                raise GitError("the index's split-index bitmap is corrupt", hint="git status")
            literal = words[pointer]
            while literal:
                low = literal & -literal
                out.append(pos + low.bit_length() - 1)
                literal ^= low
            pos += _WORD
            pointer += 1
    del bit_size  # git reads it, and so does nothing with it here
    return out, stop
