"""The ASGI application: routes, security headers, and the background tasks started with it
(the commit feed, the status it publishes after each move of HEAD, the reports' schedule)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hystate.serve.api import Api
from hystate.serve.console import Console
from hystate.serve.feed import CommitFeed, encode
from hystate.serve.gql import ReadOnlyGraphQL
from hystate.serve.limits import BodyLimit
from hystate.serve.pages import Pages
from hystate.serve.readmodel import ReadModel
from hystate.serve.scheduler import ReportScheduler

if TYPE_CHECKING:
    from hystate.manager import StateManager

STATIC = Path(__file__).parent / "static"
# Scripts and styles only from this server; no inline script, no framing, no plug-ins.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
]
LOCAL_HOSTS = ["127.0.0.1", "localhost", "::1", "[::1]"]


class SecurityHeaders:
    """Adds ``HEADERS`` to every HTTP response (streams included)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)


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
        self.console = Console(self)
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

    def app(self) -> Starlette:
        api, pages = Api(self), Pages(self)
        console = self.console
        routes = [
            Route("/", pages.dashboard),
            Route("/episodes/{episode_id}", pages.episode),
            Route("/events", api.events),
            Route("/api/status", api.status),
            Route("/api/episodes", api.episodes),
            Route("/api/episodes/{episode_id}", api.episode),
            Route("/api/episodes/{episode_id}/history", api.history),
            Route("/api/actions/{action}/{episode_id}", api.action, methods=["POST"]),
            Route("/graphql", ReadOnlyGraphQL(self.model), methods=["GET", "POST"]),
            Route("/login", console.login_page),
            Route("/login", console.login, methods=["POST"]),
            Route("/logout", console.logout, methods=["POST"]),
            Route("/console/{action}/{episode_id}", console.action, methods=["POST"]),
            Route("/api/in-progress", console.in_progress),
            Route("/api/workers", console.timeline),
            Route("/workers", console.workers_page),
            Route("/metrics", console.metrics),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ]
        return Starlette(
            routes=routes,
            middleware=[
                Middleware(SecurityHeaders),
                Middleware(TrustedHostMiddleware, allowed_hosts=self.hosts),
                Middleware(BodyLimit),
            ],
            lifespan=self.lifespan,
        )
