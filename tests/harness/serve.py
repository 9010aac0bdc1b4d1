"""A real ``hystate serve`` process on a free port of 127.0.0.1, for the serve tests and the
benchmark: started in a repository, ready when /api/status answers, stopped with SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

HYSTATE = [sys.executable, "-m", "hystate.cli"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Served:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.proc = proc
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = log

    def client(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)  # type: ignore[arg-type]

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def serving(
    repo: Path, *args: str, env: dict[str, str] | None = None, ready_timeout: float = 120
) -> Iterator[Served]:
    port = free_port()
    log = repo.parent / f"serve-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*HYSTATE, "serve", "--port", str(port), *args],
            cwd=repo,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
    served = Served(proc, port, log)
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"hystate serve exited {proc.returncode}: {served.output()}")
            try:
                if httpx.get(f"{served.url}/api/status", timeout=10).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"hystate serve not ready: {served.output()}")
            time.sleep(0.1)
        yield served
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class EventReader:
    """Server-Sent Events parsed from a streaming response, read a few at a time."""

    def __init__(self, response: httpx.Response) -> None:
        self.lines = response.iter_lines()

    def next(self, count: int) -> list[dict[str, str]]:
        """The next ``count`` events (comments and the retry field are not events); the
        client's read timeout bounds the wait."""
        events: list[dict[str, str]] = []
        current: dict[str, str] = {}
        for line in self.lines:
            if line == "":
                if "event" in current:
                    events.append(current)
                    if len(events) >= count:
                        return events
                current = {}
            elif not line.startswith(":"):
                key, _, value = line.partition(": ")
                current[key] = value
        return events


def read_events(response: httpx.Response, count: int) -> list[dict[str, str]]:
    """The first ``count`` events of a stream."""
    return EventReader(response).next(count)
