"""Work on many files spread over every core, in chunks, for the few jobs that touch them all
(a cache rebuild, a large discovery): parsing and dumping YAML is CPU-bound Python. The workers
are fresh interpreters (``pool.py``), never copies of the caller."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from hystate.core.errors import Problem
    from hystate.core.store import EpisodeStore

T = TypeVar("T")
R = TypeVar("R")

CHUNK = 2_000
PARALLEL_FROM = 4_000  # below this, starting processes costs more than it saves


def chunked_map(
    fn: Callable[[Sequence[T]], R], items: Sequence[T], chunk: int = CHUNK
) -> Iterator[tuple[Sequence[T], R]]:
    """(chunk, fn(chunk)) for consecutive chunks of ``items``, in order; in worker processes
    when there are enough items and cores. ``fn`` must be picklable (module level)."""
    chunks = [items[i : i + chunk] for i in range(0, len(items), chunk)]
    workers = min(os.cpu_count() or 1, len(chunks))
    if len(items) < PARALLEL_FROM or workers < 2:
        for part in chunks:
            yield part, fn(part)
        return
    from hystate.core import pool

    yield from zip(chunks, pool.imap(fn, chunks, workers), strict=True)


def file_problems(store: EpisodeStore, paths: list[Path]) -> Iterator[list[Problem]]:
    """The problems of each file (parsed and validated as every read is), in order: what
    ``validate`` reports, on every core for a large state folder."""
    from functools import partial

    for _, found in chunked_map(partial(_problems, store), paths):
        yield from found


def _problems(store: EpisodeStore, chunk: Sequence[Path]) -> list[list[Problem]]:
    return [store.load(path)[2] for path in chunk]
