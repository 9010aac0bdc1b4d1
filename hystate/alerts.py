"""Failure alerts: after ``alert_threshold`` consecutive failures, one JSON POST to
``webhook_url`` per streak. Delivery has a short timeout; a failed delivery is logged to
``<state_dir>/reports/alerts.log`` and never fails the transition that triggered it."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

TIMEOUT = 3.0
FINISHED = ("downloaded", "converted", "uploaded", "scheduled", "published")


class AlertStreak:
    """The streak, kept in ``.locks/alert-streak.json``; update it under the repo lock."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / ".locks" / "alert-streak.json"
        self.log = state_dir / "reports" / "alerts.log"

    def _load(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.path.read_text())
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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.path)

    def deliver(self, url: str, alert: dict[str, Any], repository: str) -> bool:
        """POST the alert; True when the server answered 2xx. Failures are logged, not raised."""
        body = json.dumps({**alert, "repository": repository}).encode()
        try:
            request = urllib.request.Request(
                url, data=body, method="POST", headers={"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
                ok = 200 <= response.status < 300
                detail = f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            ok, detail = False, f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError, ValueError) as exc:
            ok, detail = False, str(getattr(exc, "reason", exc))
        self._log(
            f"{'sent' if ok else 'FAILED'} alert ({alert['consecutive_failures']} failures)"
            f" to {url}: {detail}"
        )
        return bool(ok)

    def _log(self, line: str) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "a", encoding="utf-8") as fh:
            fh.write(f"{datetime.now(UTC).isoformat(timespec='seconds')} {line}\n")
