"""Failure alerts: after ``alert_threshold`` consecutive failures, one JSON POST to
``webhook_url`` per streak.

Delivery happens after the commit, outside every lock, with a total deadline (a server that
trickles a byte a second is cut off, not waited on), and never follows a redirect (a redirect is
a failed delivery: a POST must not turn into a bodyless GET somewhere else). The outcome is
logged to ``<state_dir>/reports/alerts.log`` with the URL redacted (no credentials, path or
query: webhook URLs carry their token there) and never fails the transition. With no
``webhook_url`` the alert is logged instead of telling nobody."""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from hystate.errors import HystateError
from hystate.paths import ensure_dir, read_bytes, write_atomic

DEADLINE = 5.0  # seconds for the whole delivery: connect, send, first line of the answer
FINISHED = ("downloaded", "converted", "uploaded", "scheduled", "published")


def check_url(url: object) -> str | None:
    """Why ``url`` cannot be a webhook URL, or None. The reason never quotes the URL (it may
    hold a token)."""
    if not isinstance(url, str):
        return "must be a string"
    if len(url) > 2048:
        return "is longer than 2048 characters"
    if any(ord(c) <= 0x20 or 0x7F <= ord(c) <= 0x9F for c in url):
        return "contains spaces or control characters (CR/LF?)"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"is not a URL ({exc})"
    if parts.scheme not in ("http", "https"):
        return "must start with http:// or https://"
    if not parts.hostname:
        return "has no host"
    if port == 0:
        return "has port 0"
    return None


def redact(url: str) -> str:
    """``url`` fit for a log: scheme, host and port only; the rest becomes ``***``."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<invalid URL>"
    if ":" in host:
        host = f"[{host}]"
    hidden = parts.username or parts.password or parts.query or parts.fragment
    hidden = hidden or parts.path.strip("/")
    return f"{parts.scheme}://{host}{port}/" + ("***" if hidden else "")


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


class AlertStreak:
    """The streak, kept in ``.locks/alert-streak.json``; update it under the repo lock."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / ".locks" / "alert-streak.json"
        self.log = state_dir / "reports" / "alerts.log"

    def _load(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(read_bytes(self.path))  # never through a link
            return data
        except (OSError, ValueError):
            return {"count": 0, "alerted": False, "recent": []}

    def record(self, to: str, event: dict[str, Any], threshold: int) -> dict[str, Any] | None:
        """Count one transition; return the alert to send when this one completes a streak.
        A failure extends the streak; finishing a stage ends it; entering a stage, retrying
        or skipping does neither."""
        state = self._load()
        if to in FINISHED:
            if state["count"] or state["alerted"]:
                self._save({"count": 0, "alerted": False, "recent": []})
            return None
        if to != "failed":
            return None
        state["count"] += 1
        state["recent"] = [*state["recent"], event][-threshold:]
        alert = None
        if state["count"] >= threshold and not state["alerted"]:
            state["alerted"] = True
            alert = {
                "event": "hystate.failure_streak",
                "consecutive_failures": state["count"],
                "threshold": threshold,
                "at": datetime.now(UTC).isoformat(timespec="seconds"),
                "recent_failures": state["recent"],
            }
        self._save(state)
        return alert

    def _save(self, state: dict[str, Any]) -> None:
        ensure_dir(self.state_dir, self.path.parent)
        write_atomic(self.path, json.dumps(state).encode())

    def deliver(
        self, url: str, alert: dict[str, Any], repository: str, *, deadline: float = DEADLINE
    ) -> tuple[bool, str]:
        """POST the alert: (delivered, the log line). Failures are logged, never raised."""
        body = json.dumps({**alert, "repository": repository}).encode()
        ok = False
        try:
            status = post(url, body, deadline)
            ok = 200 <= status < 300
            detail = f"HTTP {status}"
            if 300 <= status < 400:
                detail += " (a redirect; not followed)"
        except DeliveryTimeout:
            detail = f"no answer within {deadline:g}s"
        except (OSError, http.client.HTTPException, ValueError) as exc:
            reason = getattr(exc, "strerror", None)
            detail = type(exc).__name__ + (f": {reason}" if reason else "")
        line = (
            f"{'sent' if ok else 'FAILED'} alert ({alert['consecutive_failures']} failures)"
            f" to {redact(url)}: {detail}"
        )
        self._log(line)
        return ok, line

    def record_undelivered(self, alert: dict[str, Any]) -> str:
        """No webhook is configured: the alert goes to the log (and the caller's stderr)."""
        line = (
            f"ALERT {alert['consecutive_failures']} consecutive failures"
            f" (threshold {alert['threshold']}); no monitoring.webhook_url set, not sent"
        )
        self._log(line)
        return line

    def _log(self, line: str) -> None:
        text = f"{datetime.now(UTC).isoformat(timespec='seconds')} {line}\n".encode()
        try:
            ensure_dir(self.state_dir, self.log.parent)
            fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except (HystateError, OSError):
            return  # a linked reports folder or log (validate reports it): never written through
        try:
            os.write(fd, text)
        finally:
            os.close(fd)
