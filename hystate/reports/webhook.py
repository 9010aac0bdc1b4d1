"""Webhook delivery: one POST within a total deadline that covers name resolution, connect,
send and the first line of the answer; redirects are returned, never followed. Imported only
when an alert is sent (http.client brings ssl and email, ~5 ms)."""

from __future__ import annotations

import base64
import http.client
import socket
import threading
import time
from urllib.parse import unquote, urlsplit

DEADLINE = 5.0  # seconds for the whole delivery: resolve, connect, send, first line of the answer


class DeliveryTimeout(Exception):
    pass


def post(url: str, body: bytes, deadline: float = DEADLINE) -> int:
    """POST ``body`` as JSON; the HTTP status. Raises DeliveryTimeout past ``deadline`` seconds
    in all (a watchdog shuts the socket down, so no slow server can hold the caller), OSError or
    http.client.HTTPException otherwise. Redirects are returned, never followed."""

    parts = urlsplit(url)
    host = parts.hostname or ""
    https = parts.scheme == "https"
    port = parts.port or (443 if https else 80)
    started = time.monotonic()
    addresses = resolve(host, port, deadline)
    deadline -= time.monotonic() - started
    if deadline <= 0:
        raise DeliveryTimeout
    kind = _PinnedTLS if https else _Pinned
    conn = kind(host, parts.port, timeout=deadline)
    conn.addresses = addresses
    expired = threading.Event()

    def cut_off() -> None:
        expired.set()
        sock = conn.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    watchdog = threading.Timer(deadline, cut_off)
    watchdog.daemon = True
    headers = {"Content-Type": "application/json", "User-Agent": "hystate"}
    if parts.username is not None:
        login = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(login.encode()).decode()
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    watchdog.start()
    try:
        conn.request("POST", target, body=body, headers=headers)
        status = conn.getresponse().status
    except (OSError, http.client.HTTPException):
        if expired.is_set() or time.monotonic() - started >= deadline:
            raise DeliveryTimeout from None
        raise
    finally:
        watchdog.cancel()
        conn.close()
    if expired.is_set():
        raise DeliveryTimeout
    return status


def resolve(host: str, port: int, deadline: float) -> list[tuple[str, int]]:
    """The addresses to connect to (in the resolver's order), found within ``deadline``
    seconds. The name is resolved in a worker thread: ``getaddrinfo`` has no timeout of its
    own, and a resolver that never answers would hold the caller for as long as the system's
    resolver retries; the thread is left behind if it takes longer. Raises DeliveryTimeout, or
    OSError when the name does not resolve."""
    found: list[tuple[str, int]] = []
    failed: list[OSError] = []
    done = threading.Event()

    def lookup() -> None:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            found.extend((str(info[4][0]), int(info[4][1])) for info in infos)
        except OSError as exc:
            failed.append(exc)
        finally:
            done.set()

    threading.Thread(target=lookup, name="hystate-resolve", daemon=True).start()
    if not done.wait(max(deadline, 0.0)):
        raise DeliveryTimeout
    if failed:
        raise failed[0]
    if not found:
        raise OSError(f"{host} has no address")
    return found


class _Pinned(http.client.HTTPConnection):
    """Connects to the first of ``addresses`` that answers (resolved beforehand, within the
    deadline); the Host header keeps the name from the URL."""

    addresses: list[tuple[str, int]]

    def connect(self) -> None:
        error: OSError | None = None
        for address in self.addresses:
            try:
                self.sock = socket.create_connection(address, self.timeout)
                return
            except OSError as exc:
                error = exc
        raise error or OSError("no address to connect to")


class _PinnedTLS(http.client.HTTPSConnection, _Pinned):
    """The same over TLS: ``HTTPSConnection.connect`` wraps the socket ``_Pinned.connect``
    opened, with the URL's name for SNI and the certificate check."""
