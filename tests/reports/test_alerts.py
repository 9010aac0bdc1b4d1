"""Alerts: one POST per streak of consecutive failures, to a real HTTP server on 127.0.0.1;
a failed delivery is logged and never fails the transition."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from hystate.manager import StateManager


class Hook:
    def __init__(self, status: int = 200, delay: float = 0.0) -> None:
        self.status, self.delay = status, delay
        self.received: list[dict[str, object]] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                import time

                length = int(self.headers["Content-Length"])
                hook.received.append(json.loads(self.rfile.read(length)))
                time.sleep(hook.delay)
                self.send_response(hook.status)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def hook() -> Iterator[Hook]:
    server = Hook()
    yield server
    server.server.shutdown()


def configure(repo: Path, url: str, threshold: int = 3) -> StateManager:
    (repo / "hystate.yaml").write_text(
        f"state_management:\n  monitoring:\n    alert_threshold: {threshold}\n    webhook_url: {url}\n"
    )
    return StateManager(cwd=repo, worker="w")


def fail_some(manager: StateManager, ids: list[str]) -> None:
    for eid in ids:
        manager.update_state(eid, "downloading")
        manager.fail(eid, f"HTTP 503 for {eid}")


def test_one_post_per_streak(repo: Path, hook: Hook) -> None:
    manager = configure(repo, hook.url)
    ids = sorted(p.stem for p in manager.store.iter_paths())
    fail_some(manager, ids[:2])
    assert hook.received == []
    fail_some(manager, ids[2:5])  # third, fourth and fifth consecutive failure: one alert
    assert len(hook.received) == 1
    alert = hook.received[0]
    assert alert["event"] == "hystate.failure_streak" and alert["consecutive_failures"] == 3
    assert [f["episode_id"] for f in alert["recent_failures"]] == ids[:3]  # type: ignore[index]
    manager.update_state(ids[5], "downloading")  # entering a stage does not end it...
    manager.update_state(
        ids[5], "downloaded", fields={"files.audio_file": "a.mp3"}
    )  # ...finishing one does
    fail_some(manager, ids[6:9])
    assert len(hook.received) == 2


@pytest.mark.parametrize("kind", ["http-500", "no-server", "timeout"])
def test_failed_delivery_is_logged_and_never_fails_the_transition(repo: Path, kind: str) -> None:
    server = Hook(status=500, delay=5.0 if kind == "timeout" else 0.0)
    url = {
        "http-500": server.url,
        "timeout": server.url,
        "no-server": "http://127.0.0.1:9/hook",
    }[kind]
    try:
        manager = configure(repo, url, threshold=1)
        eid = sorted(p.stem for p in manager.store.iter_paths())[0]
        manager.update_state(eid, "downloading")
        result = manager.fail(eid, "boom")
    finally:
        server.server.shutdown()
    assert result.changed
    log = (manager.state_dir / "reports" / "alerts.log").read_text()
    assert "FAILED alert" in log
