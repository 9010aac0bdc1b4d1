"""Webhooks against real HTTP servers on 127.0.0.1: delivery happens after the commit and
outside every lock, within a total deadline (a server trickling a byte a second holds
nothing), never follows a redirect, never writes a credential or token to alerts.log or
stderr; bad URLs are refused when the config is read; with no URL the alert is logged."""

from __future__ import annotations

import base64
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.hostile.checks import HYSTATE, accepted, assert_one_line, episode_files, refused, run


class Server:
    """A webhook receiver: ``mode`` is an HTTP status ("200", "500", "302"...) or "trickle"."""

    def __init__(self, mode: str = "200", location: str = "") -> None:
        self.mode, self.location = mode, location
        self.requests: list[dict[str, str]] = []
        self.got_request = threading.Event()
        self.client_gone = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                server.requests.append({"path": self.path, **dict(self.headers.items())})
                server.got_request.set()
                if server.mode == "trickle":
                    try:
                        for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"." * 120:
                            self.wfile.write(bytes([byte]))
                            self.wfile.flush()
                            time.sleep(1.0)
                    except OSError:
                        pass
                    server.client_gone.set()
                    return
                self.send_response(int(server.mode))
                if server.location:
                    self.send_header("Location", server.location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    made: list[Server] = []
    yield made
    for server in made:
        server.close()


def serve(servers: list[Server], mode: str = "200", location: str = "") -> Server:
    server = Server(mode, location)
    servers.append(server)
    return server


def configure(repo: Path, url: str | None, threshold: int = 1, extra: str = "") -> None:
    shown = "null" if url is None else '"' + url.replace("\r", "\\r").replace("\n", "\\n") + '"'
    (repo / "hystate.yaml").write_text(
        "state_management:\n  monitoring:\n    alert_on_failure: true\n"
        f"    alert_threshold: {threshold}\n    webhook_url: {shown}\n{extra}"
    )


def alert_log(repo: Path) -> str:
    path = repo / "processed" / "reports" / "alerts.log"
    return path.read_text() if path.exists() else ""


def fail_one(repo: Path, index: int = 0) -> tuple[str, subprocess.CompletedProcess[str]]:
    eid = episode_files(repo)[index].stem
    began = run(repo, "advance", eid, "downloading", "--json")
    assert began.code == 0
    proc = subprocess.run(
        [
            *HYSTATE,
            "fail",
            eid,
            "--error",
            "HTTP 503",
            "--lease",
            json.loads(began.stdout)["lease"],
        ],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return eid, proc


def test_a_delivered_alert_is_logged_and_quiet(repo: Path, servers: list[Server]) -> None:
    server = serve(servers, "200")
    configure(repo, server.base + "/hook")
    _, proc = fail_one(repo)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert len(server.requests) == 1
    assert "sent alert" in alert_log(repo)


@pytest.mark.parametrize("status", ["500", "404", "204-no", "refused"])
def test_a_failed_delivery_is_one_line_and_never_fails_the_transition(
    repo: Path, servers: list[Server], status: str
) -> None:
    if status == "refused":
        url = "http://127.0.0.1:9/hook"
    elif status == "204-no":
        url = serve(servers, "204").base + "/hook"
    else:
        url = serve(servers, status).base + "/hook"
    configure(repo, url)
    eid, proc = fail_one(repo)
    if status == "204-no":  # 2xx is a delivery
        assert proc.returncode == 0 and proc.stderr == ""
        return
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and "Traceback" not in proc.stderr
    assert "FAILED alert" in alert_log(repo)
    assert run(repo, "show", eid, "--json").stdout.count('"stage": "failed"') == 1


@pytest.mark.parametrize("status", ["301", "302", "303", "307", "308"])
def test_redirects_are_not_followed(repo: Path, servers: list[Server], status: str) -> None:
    target = serve(servers, "200")
    hook = serve(servers, status, location=target.base + "/elsewhere")
    configure(repo, hook.base + "/hook")
    _, proc = fail_one(repo)
    assert proc.returncode == 0
    assert len(proc.stderr.splitlines()) == 1
    assert target.requests == []
    assert len(hook.requests) == 1
    log = alert_log(repo)
    assert "FAILED" in log and "redirect" in log and "sent" not in log


SECRET_URLS = [
    "http://alice:S3CRETPW@{host}/hook",
    "http://{host}/hooks/T000/B000/S3CRETTOKEN",
    "http://{host}/hook?token=S3CRETTOKEN",
    "http://{host}/hook#S3CRETFRAG",
]


@pytest.mark.parametrize("template", SECRET_URLS)
@pytest.mark.parametrize("status", ["200", "500"])
def test_credentials_and_tokens_are_never_logged_or_printed(
    repo: Path, servers: list[Server], template: str, status: str
) -> None:
    server = serve(servers, status)
    configure(repo, template.format(host=server.base.removeprefix("http://")))
    _, proc = fail_one(repo)
    assert proc.returncode == 0
    assert len(server.requests) == 1
    for text in (alert_log(repo), proc.stderr, proc.stdout):
        assert "S3CRET" not in text and "alice" not in text, text
    assert ("sent" if status == "200" else "FAILED") in alert_log(repo)


def test_credentials_in_the_url_are_sent_as_basic_auth(repo: Path, servers: list[Server]) -> None:
    server = serve(servers, "200")
    configure(repo, f"http://alice:S3CRETPW@{server.base.removeprefix('http://')}/hook")
    fail_one(repo)
    expected = "Basic " + base64.b64encode(b"alice:S3CRETPW").decode()
    assert server.requests[0].get("Authorization") == expected


def test_a_trickling_server_holds_no_lock_and_is_cut_off(repo: Path, servers: list[Server]) -> None:
    """Before: the episode lock was held for 20 s and a parallel advance got exit 6."""
    server = serve(servers, "trickle")
    configure(repo, server.base + "/hook", extra="  locks:\n    timeout: 1\n")
    eid = episode_files(repo)[0].stem
    began = run(repo, "advance", eid, "downloading", "--json")
    assert began.code == 0
    failing = subprocess.Popen(
        [
            *HYSTATE,
            "fail",
            eid,
            "--error",
            "HTTP 503",
            "--lease",
            json.loads(began.stdout)["lease"],
        ],
        cwd=repo,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.got_request.wait(30), "the alert was never sent"
        # while the alert trickles in: the same episode and the repository are free (checked
        # in this process: two more interpreters starting up can outlast the 5 s delivery on a
        # loaded machine, and then prove nothing)
        from hystate.manager import StateManager

        manager = StateManager(cwd=repo, worker="second")
        again = manager.update_state(eid, "downloading", force=True, lock_timeout=1)
        other = manager.update_state(episode_files(repo)[1].stem, "downloading", lock_timeout=1)
        still_delivering = not server.client_gone.is_set()
        _out, err = failing.communicate(timeout=60)  # the deadline ends it, not the server
    finally:
        failing.kill()
    assert again.changed and again.commit and other.changed and other.commit
    assert still_delivering, "the second commands ran after the delivery ended"
    assert failing.returncode == 0, err
    assert len(err.splitlines()) == 1 and "no answer within" in err
    assert "no answer within" in alert_log(repo)


BAD_URLS = [
    "http://example.invalid/hook\r\nX-Injected: 1",
    "http://example.invalid/ho ok",
    "http://example.invalid/\thook",
    "ftp://alice:S3CRETPW@example.invalid/hook",
    "file:///etc/passwd",
    "javascript:alert(1)",
    "http://",
    "http://[::1/hook",
    "http://example.invalid:99999/hook",
    "https://example.invalid:0/hook",
]


@pytest.mark.parametrize("url", BAD_URLS)
def test_bad_urls_are_refused_when_the_config_is_read(repo: Path, url: str) -> None:
    configure(repo, url)
    eid = episode_files(repo)[0].stem
    outcome = refused(repo, ["advance", eid, "downloading"], 5, contains="webhook_url")
    assert "S3CRET" not in outcome.stderr


def test_no_webhook_url_logs_the_alert_instead_of_telling_nobody(repo: Path) -> None:
    configure(repo, None, threshold=2)
    _, first = fail_one(repo, 0)
    assert first.returncode == 0 and first.stderr == ""  # one failure: no streak yet
    _, second = fail_one(repo, 1)
    assert second.returncode == 0
    assert len(second.stderr.splitlines()) == 1
    assert "2 consecutive failures" in second.stderr
    assert "alerts.log" in second.stderr
    assert "2 consecutive failures" in alert_log(repo)


def test_no_alert_when_alert_on_failure_is_off(repo: Path) -> None:
    (repo / "hystate.yaml").write_text(
        "state_management:\n  monitoring:\n    alert_on_failure: false\n    alert_threshold: 1\n"
    )
    _, proc = fail_one(repo)
    assert proc.returncode == 0 and proc.stderr == ""
    assert alert_log(repo) == ""


def test_config_command_shows_a_good_url(repo: Path) -> None:
    configure(repo, "https://hooks.example.invalid/x")
    out = accepted(repo, ["config", "monitoring.webhook_url"])
    assert out.stdout.strip() == "https://hooks.example.invalid/x"


def test_one_line_helper_agrees(repo: Path) -> None:
    configure(repo, "ftp://x")
    outcome = run(repo, "status")
    assert_one_line(outcome, 5, contains="webhook_url")


# -- name resolution is inside the deadline ------------------------------------------------------


def test_a_resolver_that_never_answers_is_cut_off_by_the_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """getaddrinfo has no timeout: a resolver that never answers held the delivery for as long
    as the system's resolver retried. The 5 s deadline now covers the name lookup too."""
    import socket

    from hystate.reports import webhook

    release = threading.Event()
    asked: list[str] = []

    def hanging(host: str, *args: object, **kwargs: object) -> object:
        asked.append(host)
        release.wait(120)  # a resolver that never answers (released when the test ends)
        raise socket.gaierror(socket.EAI_AGAIN, "temporary failure")

    monkeypatch.setattr(socket, "getaddrinfo", hanging)
    outcome: list[BaseException] = []

    def deliver() -> None:
        try:
            webhook.post("http://hooks.example.test/x", b"{}", deadline=0.5)
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=deliver, daemon=True)
    worker.start()
    worker.join(60)  # generous: it ends at the deadline, not when the resolver gives up
    release.set()
    assert not worker.is_alive(), "the delivery waited on the resolver past its deadline"
    assert asked == ["hooks.example.test"]
    assert len(outcome) == 1 and isinstance(outcome[0], webhook.DeliveryTimeout)


def test_a_name_that_does_not_resolve_is_a_logged_failure(repo: Path) -> None:
    configure(repo, "http://no-such-host.invalid/hook")
    _eid, proc = fail_one(repo)
    assert proc.returncode == 0, proc.stderr  # a failed delivery never fails the transition
    assert "FAILED alert" in alert_log(repo) and "no-such-host.invalid" in alert_log(repo)


def test_the_host_header_keeps_the_name_after_resolving_it(
    repo: Path, servers: list[Server]
) -> None:
    server = serve(servers)
    port = server.httpd.server_port
    configure(repo, f"http://localhost:{port}/hook")
    _eid, proc = fail_one(repo)
    assert proc.returncode == 0, proc.stderr
    assert server.got_request.wait(30)
    assert server.requests[0]["Host"] == f"localhost:{port}"
    assert "sent alert" in alert_log(repo)
