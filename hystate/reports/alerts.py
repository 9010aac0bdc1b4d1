"""Failure alerts: after ``alert_threshold`` consecutive failures, one JSON POST to
``webhook_url`` per streak.

Delivery happens after the commit, outside every lock, with a total deadline (a server that
trickles a byte a second is cut off, not waited on), and never follows a redirect (a redirect is
a failed delivery: a POST must not turn into a bodyless GET somewhere else). The outcome is
logged to ``<state_dir>/reports/alerts.log`` with the URL redacted (no credentials, path or
query: webhook URLs carry their token there) and never fails the transition. With no
``webhook_url`` the alert is logged instead of telling nobody."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from hystate.core.errors import HystateError
from hystate.core.paths import ensure_dir, read_bytes, write_atomic

if TYPE_CHECKING:
    from hystate.core.rules import Change
    from hystate.engine.workspace import Workspace

FINISHED = ("downloaded", "converted", "uploaded", "scheduled", "published")


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
        self, url: str, alert: dict[str, Any], repository: str, *, deadline: float | None = None
    ) -> tuple[bool, str]:
        """POST the alert: (delivered, the log line). Failures are logged, never raised."""
        import http.client

        from hystate.reports.webhook import DEADLINE, DeliveryTimeout, post

        within = DEADLINE if deadline is None else deadline
        body = json.dumps({**alert, "repository": repository}).encode()
        ok = False
        try:
            status = post(url, body, within)
            ok = 200 <= status < 300
            detail = f"HTTP {status}"
            if 300 <= status < 400:
                detail += " (a redirect; not followed)"
        except DeliveryTimeout:
            detail = f"no answer within {within:g}s"
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


def on_commit(ws: Workspace, doc: dict[str, Any], change: Change) -> Callable[[], None] | None:
    """The subscriber under the repository lock: count the transition, and return the alert's
    delivery, to run once every lock is released, when it completes a streak."""
    alert = count(ws, doc, change)
    return None if alert is None else (lambda: send(ws, alert))


def counts(ws: Workspace, change: Change) -> bool:
    """Whether ``count`` would change the streak for ``change`` (a failure; a finish while a
    streak runs): that transition commits under the repository lock itself, so the streak
    follows the commits' order. Any other transition may be committed in a group."""
    if not ws.config.get("monitoring.alert_on_failure"):
        return False
    if change.to.value == "failed":
        return True
    if change.to.value not in FINISHED:
        return False
    state = AlertStreak(ws.state_dir)._load()
    return bool(state["count"] or state["alerted"])


def count(ws: Workspace, doc: dict[str, Any], change: Change) -> dict[str, Any] | None:
    """Count one committed transition in the streak (call it under the repo lock); the alert
    to deliver when it completes a streak, else None. Nothing when alerts are off."""
    if not ws.config.get("monitoring.alert_on_failure"):
        return None
    event = {
        "episode_id": doc["episode_id"],
        "stage": doc["failed_stage"],
        "error": change.error,
        "at": change.at,
    }
    threshold = int(ws.config.get("monitoring.alert_threshold"))
    return AlertStreak(ws.state_dir).record(change.to.value, event, threshold)


def send(ws: Workspace, alert: dict[str, Any]) -> None:
    """Deliver ``alert`` to the webhook (or log it when there is none), outside every lock; a
    failed delivery is logged and told through ``manager.notice``, never raised."""
    url = ws.config.get("monitoring.webhook_url")
    streak = AlertStreak(ws.state_dir)
    where = f"{ws.rel_state_dir}/reports/alerts.log"
    if url:
        ok, line = streak.deliver(url, alert, str(ws.repo.root))
        if not ok:
            ws.notice(f"alert not delivered: {line} (logged in {where})")
    else:
        ws.notice(f"{streak.record_undelivered(alert)}; logged in {where}")
