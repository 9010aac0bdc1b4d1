"""Worker processes that are fresh interpreters, not forks of the caller (issue 29).

A forked worker starts as a copy of everything its parent holds; at 100,000 episodes
``discover``'s parent held ~250 MB (records, paths, new files) and each of its two forked
workers counted those pages again in its resident memory. ``multiprocessing``'s own "spawn" and
"forkserver" re-import the caller's ``__main__``, which re-runs a pipeline script that calls
hystate at its top level without an ``if __name__ == "__main__":`` guard. So each worker here is
``python -m hystate.core.pool`` with the caller's import path: it reads pickled ``(fn, chunk)``
from its stdin and writes back pickled ``fn(chunk)`` (or the exception it raised), until EOF.
Workers ignore Ctrl-C (the caller decides, and ends them) and end with their caller's pipes.
"""

from __future__ import annotations

import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")
_LEN = struct.Struct(">Q")


class WorkerDied(RuntimeError):
    """A worker process ended without answering (killed, out of memory)."""


AHEAD = 2  # chunks each worker may have done beyond the one the caller is at


def _send(pipe: IO[bytes], value: Any) -> None:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    pipe.write(_LEN.pack(len(data)) + data)
    pipe.flush()


def _receive(pipe: IO[bytes]) -> Any:
    head = pipe.read(_LEN.size)
    if len(head) < _LEN.size:
        raise EOFError
    size = _LEN.unpack(head)[0]
    data = pipe.read(size)
    if len(data) < size:
        raise EOFError
    return pickle.loads(data)


def _start() -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    return subprocess.Popen(
        [sys.executable, "-m", "hystate.core.pool"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
    )


def imap(
    fn: Callable[[Sequence[T]], R], chunks: Sequence[Sequence[T]], workers: int
) -> Iterator[R]:
    """``fn(chunk)`` for each chunk, in order, computed by ``workers`` fresh processes (``fn``
    must be picklable: a module-level function or a ``partial`` of one)."""
    procs = [_start() for _ in range(min(workers, len(chunks)))]
    results: dict[int, tuple[bool, Any]] = {}
    ready = threading.Condition()
    next_chunk = iter(range(len(chunks)))
    claim = threading.Lock()
    stop = threading.Event()  # the caller is gone (an error, a generator closed)

    taken = [0]  # chunks the caller has taken: a worker stays at most AHEAD chunks ahead
    ahead = AHEAD * len(procs)

    def feed(proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        while True:
            with claim:
                i = next(next_chunk, None)
            if i is None:
                return
            with ready:  # results waiting for a slow caller are held in memory: a few at most
                while i - taken[0] >= ahead and not stop.is_set():
                    ready.wait(0.1)
            if stop.is_set():
                return
            try:
                _send(proc.stdin, (fn, chunks[i]))
                answer = _receive(proc.stdout)
            except (OSError, EOFError, ValueError):  # ValueError: the caller closed the pipes
                answer = (False, WorkerDied("a worker process ended without answering"))
            with ready:
                results[i] = answer
                ready.notify_all()
            if isinstance(answer[1], WorkerDied):
                return

    threads = [threading.Thread(target=feed, args=(p,), daemon=True) for p in procs]
    try:
        for thread in threads:
            thread.start()
        for i in range(len(chunks)):
            with ready:
                while i not in results:
                    if not any(t.is_alive() for t in threads) and i not in results:
                        raise WorkerDied("every worker process ended before the work was done")
                    ready.wait(0.1)
                ok, value = results.pop(i)
                taken[0] = i + 1
                ready.notify_all()
            if not ok:
                raise value
            yield value
    finally:
        stop.set()
        for proc in procs:
            if proc.stdin is not None:
                proc.stdin.close()
        for proc in procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for thread in threads:  # each ends at its closed pipe: none is left reading or writing
            if thread.ident is not None:
                thread.join()
        for proc in procs:
            if proc.stdout is not None:
                proc.stdout.close()


def _serve() -> None:
    """The worker's loop: (fn, chunk) in, (ok, result or exception) out, until EOF."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stdin = sys.stdin.buffer
    stdout = os.fdopen(os.dup(1), "wb")  # the answers' own pipe; a stray print goes to stderr
    os.dup2(2, 1)
    while True:
        try:
            fn, chunk = _receive(stdin)
        except EOFError:
            return
        try:
            answer: tuple[bool, Any] = (True, fn(chunk))
        except Exception as exc:  # sent back and raised in the caller
            answer = (False, exc)
        try:
            try:
                _send(stdout, answer)
            except (pickle.PicklingError, TypeError, AttributeError):
                _send(stdout, (False, RuntimeError(f"{type(answer[1]).__name__}: {answer[1]}")))
        except BrokenPipeError:
            return


if __name__ == "__main__":
    _serve()
