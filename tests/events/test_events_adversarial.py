"""The event stream under attack: entries that hystate did not write (someone else's XADD,
garbage, hostile text) in the stream it publishes to and prints."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

from hystate.events import stream as events
from hystate.manager import StateManager
from tests.conftest import commits, run_hystate
from tests.harness.redis import RedisServer, needs_redis

pytestmark = needs_redis
STREAM = "hystate:transitions"


def enable(repo: Path, url: str) -> StateManager:
    (repo / "hystate.yaml").write_text(
        f"state_management:\n  events:\n    enabled: true\n    url: {url}\n"
    )
    return StateManager(cwd=repo, worker="w1")


def test_foreign_entries_print_one_safe_line_and_publishing_goes_on(
    repo: Path, broker: RedisServer
) -> None:
    """A foreign entry whose fields hold a newline forged a second line in `events tail`
    and `events status` (a fake entry id, a fake field), and its 3,000-character field was
    printed whole. Now every entry and every status field is one bounded line; the publisher
    goes on after it, each transition once."""
    manager = enable(repo, broker.url)
    assert events.Publisher(manager).publish().published == 20
    forged = "evil\n9999-0  2026-01-01T00:00:00+00:00 fake_episode  failed -> published"
    broker.client().xadd(
        STREAM,
        {
            "episode": forged,
            "to": "published\x1b]0;owned\x07",
            "at": "x" * 3000,
            "commit": "\x1b[2J",
        },
    )
    tail = run_hystate(repo, "events", "tail")
    assert tail.returncode == 0, tail.stderr
    lines = tail.stdout.splitlines()
    assert len(lines) == 21, tail.stdout[-600:]
    assert not any(line.startswith("9999-0") for line in lines)
    assert all(len(line) < 400 and "\x1b" not in line for line in lines), lines[-1][:400]
    status = run_hystate(repo, "events", "status")
    assert status.returncode == 0, status.stderr
    assert all(line.partition(":")[0].isidentifier() for line in status.stdout.splitlines()), (
        status.stdout
    )
    assert "\x1b" not in status.stdout
    eid = sorted(p.stem for p in manager.store.iter_paths())[0]
    manager.update_state(eid, "downloading")  # published after its commit
    assert events.Publisher(manager).publish().published == 0
    fields = [f for _, f in broker.client().xrange(STREAM)]
    assert len(fields) == 22
    assert (fields[-1]["episode_id"], fields[-1]["to"]) == (eid, "downloading")


def test_tail_refuses_an_id_redis_cannot_hold(repo: Path, broker: RedisServer) -> None:
    """An id past 64 bits matched the option's pattern and reached Redis, which refused it:
    exit 7 and "the broker is unavailable, the transitions are kept in git". It is a usage
    error (exit 2); the largest id Redis holds is fine."""
    manager = enable(repo, broker.url)
    assert events.Publisher(manager).publish().published == 20
    top = 2**64 - 1
    for bad in (f"{top + 1}-0", f"0-{top + 1}", "9" * 20):
        proc = run_hystate(repo, "events", "tail", "--from-id", bad)
        assert proc.returncode == 2, (bad, proc.stderr)
        assert "broker" not in proc.stderr
    proc = run_hystate(repo, "events", "tail", "--from-id", f"{top}-{top}")
    assert proc.returncode == 0 and proc.stdout == "", proc.stderr
    first = run_hystate(repo, "events", "tail", "--limit", "1")
    commit = first.stdout.split()[-1]  # the commit column: its first 10 hex digits
    assert len(commit) == 10 and all(c in "0123456789abcdef" for c in commit), first.stdout


class DrippingBroker:
    """A "broker" that accepts, starts an answer and then sends one byte every 0.2 s forever:
    every read gets data within the socket timeout, so no timeout ever fires."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._drip, args=(conn,), daemon=True).start()

    def _drip(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(65536)
                conn.sendall(b"*2\r\n*1\r\n*2\r\n$3\r\n1-0\r\n*2\r\n$1\r\na\r\n$")
                while not self.stop.is_set():
                    conn.sendall(b"9")
                    time.sleep(0.2)
            except OSError:
                return

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


def test_a_broker_that_answers_forever_does_not_hold_a_transition(repo: Path) -> None:
    """A broker (or a proxy before it) that trickles its answer byte by byte never trips the
    socket timeout: `hystate advance` made its commit and then hung for good, and so did
    `events status`. Now each broker call has a deadline (twice ``events.timeout``): the
    transition ends with its one notice, the status with exit 7."""
    broker = DrippingBroker()
    try:
        (repo / "hystate.yaml").write_text(
            "state_management:\n  events:\n    enabled: true\n"
            f"    url: redis://127.0.0.1:{broker.port}/0\n    timeout: 1\n"
        )
        eid = sorted(p.stem for p in (repo / "processed").glob("*/*.yaml"))[0]
        before = commits(repo)
        started = time.monotonic()
        done = run_hystate(repo, "advance", eid, "downloading", timeout=120)
        took = time.monotonic() - started
        assert done.returncode == 0, done.stderr
        assert "events not published yet" in done.stderr and len(commits(repo)) == len(before) + 1
        status = run_hystate(repo, "events", "status", timeout=120)
        assert status.returncode == 7 and "within" in status.stderr, status.stderr
        assert took < 60, took
    finally:
        broker.close()
