"""The event stream (ids are commit shas; a reconnect with Last-Event-ID resumes without gaps;
a slow client is dropped) and the actions (refused without the token, a dry run commits
nothing, an action is exactly one commit)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from hystate.manager import StateManager
from tests.conftest import commits, git, run_hystate
from tests.harness.serve import EventReader, read_events, serving

TOKEN = "s3cret-token-for-tests-0123456789"


def ids(repo: Path) -> list[str]:
    return sorted(p.stem for p in StateManager(cwd=repo).store.iter_paths())


def test_events_live_and_resumed(repo: Path) -> None:
    eids = ids(repo)
    with serving(repo, "--reports-every", "0") as srv, srv.client() as http:
        with http.stream("GET", "/events") as stream:
            events = EventReader(stream)
            (hello,) = events.next(1)
            assert hello["event"] == "hello" and hello["id"] == commits(repo)[0]
            done = run_hystate(repo, "advance", eids[0], "downloading")
            assert done.returncode == 0, done.stderr
            commit, status = events.next(2)
            sha = commits(repo)[0]
            assert (commit["event"], commit["id"]) == ("commit", sha)
            data = json.loads(commit["data"])
            assert (data["episode_id"], data["from"], data["to"]) == (
                eids[0],
                "discovered",
                "downloading",
            )
            assert status["event"] == "status" and "id" not in status
            assert json.loads(status["data"])["counts"]["downloading"] == 1
        # while nobody listens: three more commits; a reconnect from `sha` gets exactly them
        for eid in eids[1:4]:
            assert run_hystate(repo, "advance", eid, "downloading").returncode == 0
        missed = list(reversed(commits(repo)[:3]))
        with http.stream("GET", "/events", headers={"Last-Event-ID": sha}) as stream:
            events = EventReader(stream)
            got: list[dict[str, str]] = []
            while sum(e["event"] == "commit" for e in got) < 3 or not any(
                e["event"] == "hello" for e in got
            ):
                got += events.next(1)
        # replayed from git, then live (the server may not have seen the newest one yet):
        # each exactly once, in order, whichever way it came
        assert [e["event"] for e in got].count("hello") == 1
        replayed = [e for e in got if e["event"] == "commit"]
        assert [e["id"] for e in replayed] == missed
        assert [json.loads(e["data"])["episode_id"] for e in replayed] == eids[1:4]
        # the same from the query string (a page's first connection names its HEAD so)
        with http.stream("GET", "/events", params={"last_event_id": missed[1]}) as stream:
            got = read_events(stream, 2)
        assert [(e["event"], e["id"]) for e in got] == [("commit", missed[2]), ("hello", missed[2])]
        # an id the server cannot place (garbage, or not in this history) resets the page
        for bad in ("not-a-sha", "0" * 40):
            with http.stream("GET", "/events", headers={"Last-Event-ID": bad}) as stream:
                first = read_events(stream, 1)[0]
            assert (first["event"], first["id"]) == ("reset", missed[-1])


def test_a_rewound_history_is_a_reset(repo: Path) -> None:
    eid = ids(repo)[0]
    assert run_hystate(repo, "advance", eid, "downloading").returncode == 0
    with (
        serving(repo, "--reports-every", "0") as srv,
        srv.client() as http,
        http.stream("GET", "/events") as stream,
    ):
        events = EventReader(stream)
        events.next(1)
        git(repo, "reset", "-q", "--hard", "HEAD~1")
        event = events.next(1)[0]
        assert (event["event"], event["id"]) == ("reset", commits(repo)[0])


def test_fifty_clients_each_get_the_commit(repo: Path) -> None:
    eid = ids(repo)[0]

    async def main(url: str) -> list[str]:
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            ready: list[asyncio.Event] = [asyncio.Event() for _ in range(50)]

            async def listen(n: int) -> str:
                async with http.stream("GET", "/events") as stream:
                    async for line in stream.aiter_lines():
                        if line.startswith("event: hello"):
                            ready[n].set()
                        if line.startswith("id: ") and ready[n].is_set():
                            return line[4:]
                return ""

            tasks = [asyncio.create_task(listen(n)) for n in range(50)]
            await asyncio.wait_for(asyncio.gather(*(r.wait() for r in ready)), 60)
            done = await asyncio.to_thread(run_hystate, repo, "advance", eid, "downloading")
            assert done.returncode == 0
            return await asyncio.wait_for(asyncio.gather(*tasks), 60)

    with serving(repo, "--reports-every", "0") as srv:
        got = asyncio.run(main(srv.url))
    assert got == [commits(repo)[0]] * 50


def test_a_slow_client_is_dropped(repo: Path) -> None:
    from hystate.git import GitRepo
    from hystate.serve import feed

    async def main() -> None:
        commit_feed = feed.CommitFeed(GitRepo.discover(repo))
        slow_stream = commit_feed.stream(None)
        assert await anext(slow_stream) == b"retry: 1000\n\n"  # registered now
        (slow,) = commit_feed.clients
        fast, _ = commit_feed.subscribe()
        for n in range(feed.QUEUE_SIZE + 1):
            commit_feed.publish(feed.encode("commit", {"n": n}, f"{n:040x}"))
            if n < feed.QUEUE_SIZE:
                fast.queue.get_nowait()  # this one keeps up
        assert slow.dropped and not fast.dropped
        assert slow.queue.qsize() == 1  # its backlog is freed; only the end mark is left
        assert commit_feed.clients == {fast}
        rest = [chunk async for chunk in slow_stream]  # its hello, then the stream ends
        assert len(rest) == 1 and b"event: hello" in rest[0]
        assert commit_feed.dropped == 1

    asyncio.run(main())


@pytest.fixture
def failed_repo(repo: Path) -> Path:
    manager = StateManager(cwd=repo, worker="w1")
    eid = ids(repo)[0]
    manager.update_state(eid, "downloading")
    manager.fail(eid, "HTTP 503")
    return repo


def test_actions_refused_without_token(failed_repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    eid = ids(failed_repo)[0]
    before = commits(failed_repo)
    with serving(failed_repo, "--reports-every", "0") as srv, srv.client() as http:
        disabled = http.post(
            f"/api/actions/retry/{eid}", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert disabled.status_code == 403
    monkeypatch.setenv("HYSTATE_SERVE_TOKEN", TOKEN)
    with (
        serving(failed_repo, "--allow-actions", "--reports-every", "0") as srv,
        srv.client() as http,
    ):
        for headers in (
            {},
            {"Authorization": "Bearer wrong-token-0123456789"},
            {"Authorization": TOKEN},
        ):
            refused = http.post(f"/api/actions/retry/{eid}", headers=headers)
            assert refused.status_code == 401, headers
            assert refused.headers["www-authenticate"].startswith("Bearer")
        assert http.get(f"/api/actions/retry/{eid}").status_code == 405
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert http.post(f"/api/actions/delete/{eid}", headers=auth).status_code == 404
        assert (
            http.post(f"/api/actions/retry/{ids(failed_repo)[1]}", headers=auth).status_code == 409
        )
        assert http.post(f"/api/actions/skip/{eid}", headers=auth).status_code == 400  # no reason
    assert commits(failed_repo) == before


def test_dry_run_then_action(failed_repo: Path, tmp_path: Path) -> None:
    eid = ids(failed_repo)[0]
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    before = commits(failed_repo)
    args = ("--allow-actions", "--token-file", str(token_file), "--reports-every", "0")
    with serving(failed_repo, *args) as srv, srv.client() as http:
        plan = http.post(f"/api/actions/retry/{eid}?dry_run=1", headers=auth).json()
        assert commits(failed_repo) == before
        assert (plan["dry_run"], plan["from"], plan["to"]) == (True, "failed", "downloading")
        assert "-stage: failed" in plan["diff"] and "+stage: downloading" in plan["diff"]
        assert plan["commit_message"].startswith(f"{eid}: failed -> downloading\n")
        assert plan["commit"] is None

        done = http.post(f"/api/actions/retry/{eid}", headers=auth).json()
        after = commits(failed_repo)
        assert after[1:] == before and done["commit"] == after[0]
        assert (done["dry_run"], done["from"], done["to"]) == (False, "failed", "downloading")
        assert "+stage: downloading" in done["diff"]
        message = git(failed_repo, "log", "-1", "--format=%B")
        assert (
            message.startswith(f"{eid}: failed -> downloading")
            and "Hystate-Worker: hystate-serve" in message
        )
        assert git(failed_repo, "show", "--name-only", "--format=", "HEAD").split() == [
            StateManager(cwd=failed_repo).repo.relpath(StateManager(cwd=failed_repo).path_of(eid))
        ]

        other = ids(failed_repo)[2]
        plan = http.post(
            f"/api/actions/skip/{other}?dry_run=1", headers=auth, json={"reason": "not <ours>"}
        ).json()
        assert (plan["from"], plan["to"]) == ("discovered", "skipped")
        assert commits(failed_repo)[0] == done["commit"]
        skipped = http.post(f"/api/actions/skip/{other}?reason=not%20ours", headers=auth).json()
        assert commits(failed_repo)[1:] == after and skipped["commit"] == commits(failed_repo)[0]
    assert StateManager(cwd=failed_repo).episode(other).stage.value == "skipped"
