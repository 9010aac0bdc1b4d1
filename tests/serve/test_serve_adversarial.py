"""``hystate serve`` under attack: odd parameters answer 400 without a traceback in the
server's output, a port in use is one line and exit 2, and a stop with event streams open
ends at once, exit 130, without a traceback."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx

from tests.conftest import git
from tests.harness.serve import HYSTATE, EventReader, serving


def test_odd_numbers_and_bad_graphql_arguments_are_400_without_traceback(repo: Path) -> None:
    with serving(repo, "--reports-every", "0") as srv, srv.client() as http:
        # superscript two and Arabic-Indic one are digits to str.isdigit(); int() refuses
        # the first and takes the second
        for value in ("\u00b2", "\u0661", "1e3", "-0", " 1", "1" * 30):
            answer = http.get("/api/episodes", params={"page": value})
            assert answer.status_code == 400, (value, answer.text)
            assert answer.json()["exit_code"] == 2
        for query in (
            "{ episodes(page: -1) { total } }",
            '{ episodes(year: "20a4") { total } }',
            '{ episode(episode_id: "../../etc/passwd") { title } }',
        ):
            answer = http.post("/graphql", json={"query": query})
            assert answer.status_code == 200 and answer.json()["errors"], answer.text
        time.sleep(0.5)  # the log is written by the server's threads
        assert "Traceback" not in srv.output(), srv.output()
        assert "Exception in ASGI" not in srv.output(), srv.output()


def test_port_in_use_is_one_line_and_exit_2(repo: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run(
            [*HYSTATE, "serve", "--port", str(port)],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert proc.returncode == 2, proc
    assert proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        f"hystate: error: cannot listen on 127.0.0.1:{port}: Address already in use"
    ]


def test_stop_with_open_event_streams_is_clean(repo: Path) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        with serving(repo, "--reports-every", "0") as srv:
            ended: list[str] = []

            def listen(ended: list[str] = ended) -> None:
                with (
                    httpx.Client(base_url=srv.url, timeout=60) as http,
                    http.stream("GET", "/events") as stream,
                ):
                    reader = EventReader(stream)
                    reader.next(1)  # hello
                    ended.append("open")
                    reader.next(1)  # nothing more: the stream ends when the server stops
                    ended.append("closed")

            listeners = [threading.Thread(target=listen) for _ in range(3)]
            for thread in listeners:
                thread.start()
            deadline = time.monotonic() + 60
            while ended.count("open") < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
            srv.proc.send_signal(sig)
            srv.proc.wait(timeout=60)
            for thread in listeners:
                thread.join(timeout=60)
            out = srv.output()
            assert srv.proc.returncode == 130, out
            assert ended.count("closed") == 3
            assert "Traceback" not in out and "ERROR" not in out, out
            assert out.strip().splitlines()[-1] == "hystate: interrupted"


def test_symlinked_episode_file_is_a_problem_not_a_500(repo: Path) -> None:
    episode = sorted((repo / "processed").glob("*/*.yaml"))[0]
    secret = repo.parent / "secret.env"
    secret.write_text("API_TOKEN=SECRET-never-shown\n")
    episode.unlink()
    episode.symlink_to(secret)
    with serving(repo, "--reports-every", "0") as srv, srv.client() as http:
        answer = http.get(f"/api/episodes/{episode.stem}")
        assert answer.status_code == 200, answer.text
        data = answer.json()
        assert "symlink" in data["problem"] and data["file"] == ""
        page = http.get(f"/episodes/{episode.stem}")
        assert page.status_code == 200 and "symlink" in page.text
        for text in (answer.text, page.text):
            assert "SECRET-never-shown" not in text
        time.sleep(0.5)
        assert "Traceback" not in srv.output(), srv.output()


def test_cache_deleted_under_the_server_is_rebuilt(repo: Path) -> None:
    with serving(repo, "--reports-every", "0") as srv, srv.client() as http:
        before = http.get("/api/episodes").json()
        for db in (repo / ".git" / "hystate").rglob("state.db"):
            db.unlink()  # the file only: sqlite makes an empty one
        assert http.get("/api/episodes").json() == before
        shutil.rmtree(repo / ".git" / "hystate" / "cache")  # the folder too
        assert http.get("/api/episodes").json() == before
        assert http.get("/api/episodes", params={"q": "hy"}).status_code == 200
        time.sleep(0.5)
        assert "Traceback" not in srv.output(), srv.output()


def test_repository_moved_away_and_back(repo: Path) -> None:
    away = repo.with_name("moved-away")
    with serving(repo, "--reports-every", "0") as srv, srv.client() as http:
        eid = http.get("/api/episodes").json()["items"][0]["episode_id"]
        repo.rename(away)
        try:
            for path in ("/", "/api/status", "/api/episodes", f"/episodes/{eid}"):
                answer = http.get(path, params={"q": "x"} if path == "/api/episodes" else None)
                assert answer.status_code >= 400, (path, answer.text)
                if path.startswith("/api/"):
                    assert answer.json()["error"], answer.text
        finally:
            away.rename(repo)
        assert http.get("/api/episodes").status_code == 200
        time.sleep(0.5)
        assert "Traceback" not in srv.output(), srv.output()


def _raw(port: int, data: bytes, *, timeout: float = 60) -> bytes:
    """Send ``data`` on a new connection and read until the server closes it (or answers a
    whole head and 2 KiB of body): what a client that is not httpx sees."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        got = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(4096)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            got += chunk
            if b"\r\n\r\n" in got and len(got.partition(b"\r\n\r\n")[2]) >= 2048:
                break
        return got


def test_request_bodies_are_bounded_before_they_are_read(repo: Path) -> None:
    """A body is read by the server into memory (Strawberry, the actions): 400 MB sent to
    /graphql made the server 900 MB large, with no token needed. Now a body over the limit is
    refused (413) whether it says its length or is chunked, and a normal query still runs."""
    token = "t" * 32
    with (
        serving(
            repo, "--reports-every", "0", "--allow-actions", env={"HYSTATE_SERVE_TOKEN": token}
        ) as srv,
        srv.client() as http,
    ):
        said = _raw(
            srv.port,
            b"POST /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 400000000\r\n\r\n{",
        )
        assert said.startswith(b"HTTP/1.1 413 "), said[:200]
        assert b"content-security-policy" in said.lower()
        piece = b"x" * 16384
        chunked = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for _ in range(12))
        said = _raw(
            srv.port,
            b"POST /api/actions/skip/x?dry_run=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Authorization: Bearer " + token.encode() + b"\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked,
        )
        assert said.startswith(b"HTTP/1.1 413 "), said[:200]
        answer = http.post("/graphql", json={"query": "{ status { total } }"})
        assert answer.json() == {"data": {"status": {"total": 20}}}, answer.text
        time.sleep(0.5)
        assert "Traceback" not in srv.output(), srv.output()


def test_slow_clients_are_cut_off(repo: Path) -> None:
    """Slowloris: a connection that never finishes its request head, or drips its body,
    was held forever (one file descriptor each, uvicorn has no such timeout); now it is
    closed after ``HEAD_TIMEOUT`` seconds, while an event stream stays open."""
    from hystate.serve.limits import HEAD_TIMEOUT

    with serving(repo, "--reports-every", "0") as srv:
        with (
            httpx.Client(base_url=srv.url, timeout=120) as http,
            http.stream("GET", "/events") as stream,
        ):
            reader = EventReader(stream)
            assert reader.next(1)[0]["event"] == "hello"
            results: dict[str, bytes] = {}

            def hold(name: str, data: bytes) -> None:
                results[name] = _raw(srv.port, data, timeout=HEAD_TIMEOUT * 6)

            heads = {
                "nothing": b"",
                "half a head": b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n",
                "half a body": b"POST /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
            }
            started = time.monotonic()
            threads = [threading.Thread(target=hold, args=item) for item in heads.items()]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            waited = time.monotonic() - started
            assert waited < HEAD_TIMEOUT * 5, (waited, results)
            assert results["nothing"] == b"" and results["half a head"] == b"", results
            assert results["half a body"].startswith(b"HTTP/1.1 408 "), results
            # the stream opened before is still served
            assert srv.proc.poll() is None
            assert httpx.get(f"{srv.url}/api/status", timeout=30).status_code == 200
        time.sleep(0.5)
        assert "Traceback" not in srv.output(), srv.output()


def test_a_huge_episode_file_is_shown_bounded(repo: Path) -> None:
    """An episode file of 100 MB (committed by someone) was read whole, twice, into the page
    and the JSON, with its diff: a 100 MB page and a server 725 MB large for one request. Now
    the page says the file is too large to read and shows its first part and bounded diffs."""
    from hystate.serve.readmodel import SHOWN_BYTES

    episode = sorted((repo / "processed").glob("*/*.yaml"))[0]
    huge = 40 * 1024 * 1024
    episode.write_bytes(episode.read_bytes() + b"#" + b"A" * huge + b"\n")
    git(repo, "add", str(episode))
    git(repo, "-c", "user.name=P", "-c", "user.email=p@example.invalid", "commit", "-qm", "huge")
    with serving(repo, "--reports-every", "0") as srv, srv.client() as http:
        page = http.get(f"/episodes/{episode.stem}")
        data = http.get(f"/api/episodes/{episode.stem}")
        for answer in (page, data):
            assert answer.status_code == 200, answer.text[:300]
            assert len(answer.content) < 4 * SHOWN_BYTES, len(answer.content)
        assert "bytes" in data.json()["problem"] and len(data.json()["file"]) <= SHOWN_BYTES + 200
        assert "bytes" in page.text
        time.sleep(0.5)
        assert "Traceback" not in srv.output(), srv.output()


def test_forged_commits_are_bounded_and_checked_in_every_view(repo: Path) -> None:
    """A person's commit with a 3 MB subject, a 100 KB author and worker, and trailers that
    name no episode or stage went whole into every commit event, every status pushed to every
    client, /api/status and the episode page (3.2 MB each); the page's script counted its
    made-up stages. Now text fields are bounded single lines and trailers are checked."""
    from hystate.events.source import LIMITS

    episode = sorted((repo / "processed").glob("*/*.yaml"))[0]
    with serving(repo, "--reports-every", "0") as srv, srv.client() as http:
        head = http.get("/api/status").json()["head"]
        episode.write_bytes(episode.read_bytes() + b"# hand edit\n")
        git(repo, "add", str(episode))
        message = (
            "S" * 3_000_000
            + "\x1b[2J\n\nHystate-Episode: <img src=x>\nHystate-From: __proto__\n"
            + "Hystate-To: constructor\nHystate-Worker: "
            + "W" * 100_000
            + "\nHystate-Count: 99999999999\n"
        )
        (repo.parent / "message.txt").write_text(message)
        git(
            repo, "-c", f"user.name={'A' * 100_000}", "-c", "user.email=p@example.invalid",
            "commit", "-q", "-F", str(repo.parent / "message.txt"),
        )  # fmt: skip
        with http.stream("GET", "/events", params={"last_event_id": head}) as stream:
            reader = EventReader(stream)  # the commit, replayed or live (after a hello)
            event = reader.next(1)[0]
            event = reader.next(1)[0] if event["event"] == "hello" else event
        assert event["event"] == "commit" and len(event["data"]) < 2000, len(event["data"])
        commit = json.loads(event["data"])
        assert commit["subject"].startswith("SSS") and len(commit["subject"]) <= 300
        assert len(commit["author"]) <= LIMITS["worker"] and len(commit["worker"]) <= 200
        assert [commit[k] for k in ("episode_id", "from", "to", "count")] == [None] * 4
        deadline = time.monotonic() + 60
        while (status := http.get("/api/status")).json()["head"] == head:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert len(status.content) < 100_000, len(status.content)
        page = http.get(f"/episodes/{episode.stem}")
        assert page.status_code == 200 and len(page.content) < 100_000, len(page.content)
        history = http.get(f"/api/episodes/{episode.stem}/history").json()
        assert max(len(row["subject"] or "") for row in history) <= 300


def test_deeply_nested_json_is_400_without_traceback(repo: Path) -> None:
    """JSON nested 3,000 deep (6 KB, in a GraphQL body, its ``variables`` in a GET, or an
    action's body) overflowed the parser's recursion: a 500 with a traceback in the log."""
    token = "t" * 32
    deep = "[" * 3000 + "]" * 3000
    query = "query Q($s: String) { episodes(search: $s) { total } }"
    with (
        serving(
            repo, "--reports-every", "0", "--allow-actions", env={"HYSTATE_SERVE_TOKEN": token}
        ) as srv,
        srv.client() as http,
    ):
        answers = [
            http.post(
                "/graphql",
                content=f'{{"query": "{query}", "variables": {{"s": {deep}}}}}',
                headers={"content-type": "application/json"},
            ),
            http.get("/graphql", params={"query": query, "variables": deep}),
            http.post(
                "/api/actions/skip/x",
                content=deep,
                headers={"content-type": "application/json", "authorization": f"Bearer {token}"},
            ),
        ]
        for answer in answers:
            assert answer.status_code == 400, (answer.status_code, answer.text[:200])
        # a lone surrogate (JSON can say one; UTF-8 cannot) is the client's error: not
        # logged as the server's
        answer = http.post(
            "/graphql",
            content='{"query": "' + query + '", "variables": {"s": "\\ud800"}}',
            headers={"content-type": "application/json"},
        )
        assert "search" in answer.json()["errors"][0]["message"], answer.text
        time.sleep(0.5)
        assert "graphql:" not in srv.output(), srv.output()
        assert "Traceback" not in srv.output(), srv.output()


def test_a_dry_run_asked_any_way_writes_nothing(repo: Path) -> None:
    """``?dry_run`` without a value (as curl users write it) and ``{"dry_run": true}`` in the
    body were taken as "not a dry run": the action was done, a commit made. Now a dry run
    asked any way writes nothing, an unclear value or an unknown body key is a 400, and only
    ``dry_run=0`` (or none) acts."""
    from hystate.manager import StateManager

    token = "t" * 32
    manager = StateManager(cwd=repo, worker="w1")
    eid = sorted(p.stem for p in manager.store.iter_paths())[0]
    manager.update_state(eid, "downloading")
    manager.fail(eid, "HTTP 503")
    before = git(repo, "rev-parse", "HEAD")
    auth = {"Authorization": f"Bearer {token}"}
    with (
        serving(
            repo, "--reports-every", "0", "--allow-actions", env={"HYSTATE_SERVE_TOKEN": token}
        ) as srv,
        srv.client() as http,
    ):
        for query in ("dry_run", "dry_run=", "dry_run=true", "dry_run=YES", "dry_run=on"):
            answer = http.post(f"/api/actions/retry/{eid}?{query}", headers=auth)
            assert answer.status_code == 200 and answer.json()["dry_run"] is True, query
        answer = http.post(f"/api/actions/retry/{eid}", headers=auth, json={"dry_run": True})
        assert answer.status_code == 200 and answer.json()["dry_run"] is True, answer.text
        for query, body in (("dry_run=maybe", None), ("", {"dryrun": True}), ("", {"dry_run": 1})):
            answer = http.post(f"/api/actions/retry/{eid}?{query}", headers=auth, json=body)
            assert answer.status_code == 400, (query, body, answer.text)
        # a reason longer than a file may hold is the request's fault (422), not the server's
        answer = http.post(f"/api/actions/skip/{eid}", headers=auth, json={"reason": "r" * 12_000})
        assert answer.status_code == 422 and answer.json()["exit_code"] == 5, answer.text[:200]
        assert git(repo, "rev-parse", "HEAD") == before
        assert git(repo, "status", "--porcelain") == ""
        done = http.post(f"/api/actions/retry/{eid}?dry_run=0", headers=auth).json()
        assert done["dry_run"] is False and git(repo, "rev-parse", "HEAD").strip() == done["commit"]


def test_idle_streams_cannot_lock_the_feed_out(repo: Path) -> None:
    """500 connections to /events that never read (one process can open them) filled the
    feed for good: an idle stream is never behind, so never dropped, and every new client,
    the operator's browser too, was answered 503. Now a new stream makes room by ending the
    oldest one, which (a browser) reconnects and resumes from its Last-Event-ID."""
    import asyncio

    from hystate.git import GitRepo
    from hystate.serve import feed

    async def main() -> None:
        commit_feed = feed.CommitFeed(GitRepo.discover(repo))
        hogs = [commit_feed.subscribe()[0] for _ in range(feed.MAX_CLIENTS)]
        stream = commit_feed.stream(None)
        assert await anext(stream) == b"retry: 1000\n\n"  # the new client is registered
        assert len(commit_feed.clients) == feed.MAX_CLIENTS
        assert hogs[0].dropped and hogs[0] not in commit_feed.clients
        assert not any(hog.dropped for hog in hogs[1:])
        newest = commit_feed.subscribe()[0]
        assert hogs[1].dropped and newest in commit_feed.clients
        await stream.aclose()

    asyncio.run(main())


def test_a_graphql_body_that_is_not_utf8_or_not_an_object_is_400(repo: Path) -> None:
    """A body that is not UTF-8 (\\xff\\xfe: json.loads guessed UTF-16 and failed) or a JSON
    value that is no object (null, 5, "x") was a 500 with a traceback in the log."""
    with serving(repo, "--reports-every", "0") as srv, srv.client() as http:
        for body in (b"\xff\xfe{", b"\x80{}", b"null", b"5", b'"x"', b"true"):
            answer = http.post(
                "/graphql", content=body, headers={"content-type": "application/json"}
            )
            assert answer.status_code == 400, (body, answer.status_code, answer.text[:200])
        assert http.post("/graphql", json={"query": "{ status { total } }"}).status_code == 200
        time.sleep(0.5)
        assert "Traceback" not in srv.output(), srv.output()
