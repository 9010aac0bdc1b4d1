"""The ASGI application of a ``Server``: routes, security headers, limits."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hystate.serve.api import Api
from hystate.serve.console import Console
from hystate.serve.gql import ReadOnlyGraphQL
from hystate.serve.limits import BodyLimit
from hystate.serve.pages import Pages

if TYPE_CHECKING:
    from hystate.serve.server import Server

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


def build(server: Server) -> Starlette:
    """The ASGI application of ``server``: its routes and middleware."""
    console = Console(server)
    api, pages = Api(server), Pages(server, console.context)
    routes = [
        Route("/", pages.dashboard),
        Route("/episodes/{episode_id}", pages.episode),
        Route("/events", api.events),
        Route("/api/status", api.status),
        Route("/api/episodes", api.episodes),
        Route("/api/episodes/{episode_id}", api.episode),
        Route("/api/episodes/{episode_id}/history", api.history),
        Route("/api/actions/{action}/{episode_id}", api.action, methods=["POST"]),
        Route("/graphql", ReadOnlyGraphQL(server.model), methods=["GET", "POST"]),
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
            Middleware(TrustedHostMiddleware, allowed_hosts=server.hosts),
            Middleware(BodyLimit),
        ],
        lifespan=server.lifespan,
    )
