"""core/pool.py (issue 29): chunks computed by fresh interpreters, in order; a worker's
exception is raised in the caller; a worker that dies is an error, never a hang or a gap."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from functools import partial

import pytest

from hystate.core import parallel, pool


def total(chunk: Sequence[int]) -> int:
    return sum(chunk)


def who(chunk: Sequence[int]) -> tuple[str, int, bool]:
    """The worker's main module, its parent, and whether this test module's caller state is
    there (it never is: the worker imported this module afresh)."""
    main = sys.modules["__main__"]
    return getattr(main.__spec__, "name", ""), os.getppid(), bool(CALLER_STATE)


def fail(chunk: Sequence[int]) -> int:
    if 13 in chunk:
        raise ValueError(f"unlucky chunk {list(chunk)}")
    return len(chunk)


def die(chunk: Sequence[int]) -> int:
    if 13 in chunk:
        os._exit(3)
    return len(chunk)


def noisy(chunk: Sequence[int]) -> int:
    print("a stray line on stdout")  # must not corrupt the answers
    return sum(chunk)


CALLER_STATE: list[int] = []


def test_chunks_in_order_by_fresh_interpreters() -> None:
    chunks = [list(range(i, i + 10)) for i in range(0, 500, 10)]
    assert list(pool.imap(total, chunks, 2)) == [sum(c) for c in chunks]
    CALLER_STATE.append(1)
    try:
        for main, parent, seen in pool.imap(who, [[1], [2], [3]], 2):
            assert main == "hystate.core.pool" and parent == os.getpid() and not seen
    finally:
        CALLER_STATE.clear()


def test_a_workers_exception_is_raised_in_the_caller() -> None:
    chunks = [[1, 2], [12, 13], [3]]
    with pytest.raises(ValueError, match="unlucky chunk"):
        list(pool.imap(fail, chunks, 2))


def test_a_worker_that_dies_is_an_error() -> None:
    chunks = [[1], [13], [2], [3]]
    with pytest.raises(pool.WorkerDied):
        list(pool.imap(die, chunks, 2))


def test_stdout_of_a_worker_does_not_corrupt_answers() -> None:
    chunks = [[1, 2], [3, 4], [5]]
    assert list(pool.imap(noisy, chunks, 2)) == [3, 7, 5]


def test_chunked_map_uses_the_workers_from_its_threshold() -> None:
    items = list(range(parallel.PARALLEL_FROM))
    got = list(parallel.chunked_map(partial(map_len), items, chunk=700))
    assert [len(c) for c, _ in got] == [r for _, r in got]
    assert sum(r for _, r in got) == len(items)


def map_len(chunk: Sequence[int]) -> int:
    return len(chunk)


def until_the_caller_closes(chunk: Sequence[int]) -> int:
    """Chunk [1] answers only once the caller closed the worker's pipe (nothing else is sent
    before this answer is read, so the pipe becomes readable only at its end)."""
    if list(chunk) == [1]:
        import select

        select.select([sys.stdin.fileno()], [], [])
    return len(chunk)


def test_a_caller_that_stops_early_leaves_no_thread_traceback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ctrl-C in discover's checking phase printed "Exception in thread ... ValueError: write
    to closed file" twice: a feeding thread sent the next chunk down a pipe the caller had
    closed."""
    import threading

    raised: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: raised.append(args.exc_value))
    before = set(threading.enumerate())
    results = pool.imap(until_the_caller_closes, [[0], [1], [2], [3]], 1)
    assert next(results) == 1
    results.close()  # what KeyboardInterrupt does to the generator in discover
    assert raised == []
    assert set(threading.enumerate()) <= before  # no feeding thread left behind
