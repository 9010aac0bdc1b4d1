"""Running the server: the listening socket is bound before anything is announced (a port in
use or an address that is not this machine's is one line and exit 2, not uvicorn's log and
exit 3), and a stop (Ctrl-C, SIGTERM) first ends the event streams, which never end by
themselves, so uvicorn's graceful shutdown finds no open response to cancel."""

from __future__ import annotations

import socket
from types import FrameType
from typing import TYPE_CHECKING

import uvicorn

from hystate.core.errors import UsageError
from hystate.serve import app
from hystate.serve.limits import protocol_options

if TYPE_CHECKING:
    from hystate.serve.server import Server


def listen_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host``:``port``; UsageError (exit 2) when it cannot be."""
    shown = f"[{host}]" if ":" in host else host
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except (OSError, UnicodeError) as exc:
        raise UsageError(f"cannot listen on {shown}:{port}: {_why(exc)}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {shown}:{port}: {_why(exc)}") from None
    return sock


def _why(exc: BaseException) -> str:
    return (exc.strerror if isinstance(exc, OSError) else None) or str(exc) or type(exc).__name__


class _Uvicorn(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, server: Server) -> None:
        super().__init__(config)
        self.hystate = server

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        self.hystate.stop_streams()


def run(server: Server, sock: socket.socket) -> None:
    """Serve on ``sock`` until a signal; the signal is raised again once the server has
    stopped (KeyboardInterrupt: the CLI's exit 130)."""
    config = uvicorn.Config(
        app.build(server),
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=2,  # a client that reads nothing may still hold a stream
        **protocol_options(),  # slow request heads are cut off
    )
    _Uvicorn(config, server).run(sockets=[sock])
