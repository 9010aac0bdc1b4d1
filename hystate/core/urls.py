"""URLs from configuration (the alert webhook, the event broker): checked when the config is read,
and never quoted in the reason, since they may carry a token or a password."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

WEBHOOK_SCHEMES = ("http", "https")
BROKER_SCHEMES = ("redis", "rediss", "unix")


def check_url(url: object, schemes: Sequence[str]) -> str | None:
    """Why ``url`` cannot be used with one of ``schemes``, or None. A ``unix`` URL needs only a
    socket path; any other needs a host and, when it names one, a port other than 0."""
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
    if parts.scheme not in schemes:
        *others, last = [f"{scheme}://" for scheme in schemes]
        return "must start with " + (f"{', '.join(others)} or {last}" if others else last)
    if parts.scheme == "unix":
        return None if parts.path else "names no socket path"
    if not parts.hostname:
        return "has no host"
    if port == 0:
        return "has port 0"
    return None


def check_webhook_url(url: object) -> str | None:
    """Why ``url`` cannot be a webhook URL, or None (never quoting it: it may hold a token)."""
    return check_url(url, WEBHOOK_SCHEMES)


def check_broker_url(url: object) -> str | None:
    """Why ``url`` cannot be a broker URL, or None (never quoting it: it may hold a password)."""
    problem = check_url(url, BROKER_SCHEMES)
    if problem or not isinstance(url, str):
        return problem
    parts = urlsplit(url)
    db = parts.path.strip("/") if parts.scheme != "unix" else ""
    if db and not (db.isdigit() and int(db) < 100_000):
        return "has a database that is not a number"
    return None
