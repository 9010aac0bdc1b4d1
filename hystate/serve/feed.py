"""The live feed: one background task, shared by every client, watches HEAD (a few small file
reads every 200 ms, no git process) and, when it moves, reads the new commits with one
``git log`` and hands each client its Server-Sent Events.

An event's id is its commit's sha, so a client that reconnects with ``Last-Event-ID`` is sent
the commits after that one (``git log <id>..<position>``), then the live ones: the position is
read and the client registered in one step of the event loop, so nothing is missed or sent
twice. Each client has a bounded queue of encoded events (the same bytes for everyone); a
client too slow to keep up is dropped and, reconnecting, resumes from its last id; so is the
oldest client when ``MAX_CLIENTS`` are connected and another comes. A history
that was rewritten (the old position is no ancestor) or a gap too long to replay is a
``reset`` event: the page reloads its data.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from hystate.git import GitRepo
from hystate.serve.readmodel import COMMIT_FIELDS, COMMIT_KEYS, commit_dict

QUEUE_SIZE = 512  # events a client may lag behind before it is dropped
MAX_CLIENTS = 500
MAX_REPLAY = 5000  # commits replayed on a reconnect; more is a reset
KEEP_ALIVE = 15.0
_SHA = re.compile(r"^[0-9a-f]{40}$")
_DROP = b""  # the sentinel a dropped client's stream ends on


def encode(event: str, data: Any, event_id: str | None = None) -> bytes:
    """One SSE event. JSON never holds a raw newline, so ``data`` is one line."""
    head = f"id: {event_id}\n" if event_id else ""
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"{head}event: {event}\ndata: {body}\n\n".encode()


def commit_event(row: tuple[Any, ...]) -> bytes:
    data = commit_dict(row)
    return encode("commit", data, data["sha"])


@dataclass(eq=False)
class Client:
    queue: asyncio.Queue[bytes] = field(default_factory=lambda: asyncio.Queue(QUEUE_SIZE))
    dropped: bool = False
    serial: int = 0  # the order clients came in: the oldest makes room for a new one


class CommitFeed:
    def __init__(
        self,
        repo: GitRepo,
        *,
        interval: float = 0.2,
        on_move: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.repo = repo
        self.interval = interval
        self.on_move = on_move
        self.position: str | None = repo.head().sha
        self.clients: set[Client] = set()
        self.dropped = 0  # clients dropped for being slow, since start
        self.recent: deque[str] = deque(maxlen=MAX_REPLAY)  # shas published, oldest first
        self.closed = False  # the server is stopping: every stream ends
        self._serial = 0

    def close(self) -> None:
        """End every stream now (the server stops: uvicorn waits for open responses, and an
        event stream never ends by itself); streams opened later end at once."""
        self.closed = True
        for client in list(self.clients):
            self.clients.discard(client)
            while not client.queue.empty():
                client.queue.get_nowait()
            client.queue.put_nowait(_DROP)

    # -- the one watcher -------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                head = self.repo.head().sha
            except Exception:  # a ref being rewritten this instant: look again next time
                continue
            if head != self.position:
                await self.moved(head)

    async def moved(self, head: str | None) -> None:
        old = self.position
        events = await asyncio.to_thread(self._between, old, head)
        self.position = head  # with the publishing below, in one step of the loop
        for event in events:
            self.publish(event)
        if head is not None:
            self.recent.append(head)
        if self.on_move is not None:
            await self.on_move()

    def _between(self, old: str | None, new: str | None) -> list[bytes]:
        if new is None:
            return [encode("reset", {"head": None})]
        if old is not None and not self.repo.is_ancestor(old, new):
            return [encode("reset", {"head": new}, new)]
        rev = f"{old}..{new}" if old else new
        rows = self.repo.log(rev, COMMIT_FIELDS, trailer_keys=COMMIT_KEYS, limit=MAX_REPLAY + 1)
        if len(rows) > MAX_REPLAY:
            return [encode("reset", {"head": new}, new)]
        return [commit_event(row) for row in reversed(rows)]

    def publish(self, event: bytes) -> None:
        for client in list(self.clients):
            try:
                client.queue.put_nowait(event)
            except asyncio.QueueFull:
                self._drop(client)

    def _drop(self, client: Client) -> None:
        """A client that fell ``QUEUE_SIZE`` events behind: its queue is emptied (its memory
        freed) and its stream ends; the browser reconnects with its Last-Event-ID."""
        self.clients.discard(client)
        client.dropped = True
        self.dropped += 1
        while not client.queue.empty():
            client.queue.get_nowait()
        client.queue.put_nowait(_DROP)

    # -- one client ------------------------------------------------------------------------

    def has_sent(self, sha: str | None) -> bool:
        """Whether the clients have been sent commit ``sha`` (or it is where the feed began)."""
        return sha is None or sha == self.position or sha in self.recent

    def subscribe(self) -> tuple[Client, str | None]:
        """A new client and the position its live events start after. With ``MAX_CLIENTS``
        already, the oldest stream ends to make room (its browser reconnects and resumes):
        streams that never read are never behind, and would otherwise keep every new client
        out for as long as they are held open."""
        while len(self.clients) >= MAX_CLIENTS:
            self._drop(min(self.clients, key=lambda c: c.serial))
        self._serial += 1
        client = Client(serial=self._serial)
        self.clients.add(client)
        return client, self.position

    def unsubscribe(self, client: Client) -> None:
        self.clients.discard(client)

    def replay(self, last_id: str | None, position: str | None) -> list[bytes]:
        """The events a client that saw ``last_id`` missed up to ``position``."""
        if not last_id or last_id == position:
            return []
        if position is None or not _SHA.match(last_id):
            return [encode("reset", {"head": position}, position)]
        return self._between(last_id, position)

    async def stream(self, last_id: str | None) -> AsyncIterator[bytes]:
        """One client's events: those it missed since ``last_id`` (replayed from git), a
        ``hello`` naming where it now is, then the live ones. The client is registered when
        the stream starts and forgotten when it ends (however it ends)."""
        client, position = self.subscribe()
        if self.closed:
            self.unsubscribe(client)
            return
        try:
            yield b"retry: 1000\n\n"
            for event in await asyncio.to_thread(self.replay, last_id, position):
                yield event
            yield encode("hello", {"head": position}, position)
            while True:
                try:
                    event = await asyncio.wait_for(client.queue.get(), KEEP_ALIVE)
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
                if event == _DROP:
                    return
                yield event
        finally:
            self.unsubscribe(client)
