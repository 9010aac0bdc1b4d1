"""``Server``: everything one ``hystate serve`` holds (the read model, the commit feed, the token,
the reports' schedule) and the background tasks started with it: the feed, the status it
publishes after each move of HEAD, the schedule."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from hystate.serve.feed import CommitFeed, encode
from hystate.serve.readmodel import ReadModel
from hystate.serve.scheduler import ReportScheduler

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from hystate.manager import StateManager

LOCAL_HOSTS = ["127.0.0.1", "localhost", "::1", "[::1]"]


class Server:
    """Everything one ``hystate serve`` holds: the read model, the feed, the token (None:
    actions disabled), the reports' schedule (``reports_every`` seconds; 0: never)."""

    def __init__(
        self,
        manager: StateManager,
        *,
        token: str | None = None,
        reports_every: float = 3600.0,
        poll: float = 0.2,
        hosts: list[str] | None = None,
    ) -> None:
        self.model = ReadModel(manager)
        self.token = token
        self.feed = CommitFeed(manager.repo, interval=poll, on_move=self._moved)
        self.scheduler = ReportScheduler(self.model, reports_every) if reports_every > 0 else None
        self.hosts = hosts or LOCAL_HOSTS
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    def stop_streams(self) -> None:
        """End every event stream (from a signal handler, in the event loop's thread)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.feed.close)

    async def _moved(self) -> None:
        self._wake.set()

    async def _publish_status(self) -> None:
        """After HEAD moves: refresh the cache, compute the dashboard once, send it to every
        client. Moves during the computation are coalesced into the next one."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                data = await asyncio.to_thread(self.model.dashboard)
            except Exception as exc:  # the next move tries again; the page keeps its data
                data = {"error": f"{type(exc).__name__}: {exc}", "counts": {}, "total": 0}
            # A status describes a HEAD the clients were already sent (pages add the commits
            # that came after it to its counts): HEAD may have moved past the feed meanwhile.
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 5.0
            while not self.feed.has_sent(data.get("head")) and loop.time() < deadline:
                await asyncio.sleep(0.02)
            self.feed.publish(encode("status", data))

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self.model.dashboard)  # warm: the first page is served at once
        self._tasks = [
            asyncio.create_task(self.feed.run()),
            asyncio.create_task(self._publish_status()),
        ]
        if self.scheduler is not None:
            self._tasks.append(asyncio.create_task(self.scheduler.run()))
        try:
            yield
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
