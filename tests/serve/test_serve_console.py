"""The operator's console, clicked in a real headless Chromium (Debian's /usr/bin/chromium driven
by Playwright): the token login, retry, skip and take-over each shown as its dry run and done
only when confirmed, the work in progress, the workers' timelines, an episode's attempts with
their tracebacks; CSRF and session checks and ``/metrics`` through plain HTTP."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from hystate.manager import StateManager
from tests.conftest import commits
from tests.harness.serve import Served, serving

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
TOKEN = "console-token-0123456789abcdef"
TRACE = 'Traceback (most recent call last):\n  File "w.py", line 3, in <module>\nOSError: 503'


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def ops_repo(repo: Path) -> Path:
    """20 episodes: one failed (with a traceback), one downloading whose worker is gone (its
    lease of 1 s long expired), one converting whose worker is alive (a lease of an hour)."""
    (repo / "hystate.yaml").write_text(
        "state_management:\n  recovery:\n    retry_delay: 0\n"
        "    stage_timeouts: {downloading: 1, converting: 3600, uploading: 3600}\n"
    )
    ids = sorted(p.stem for p in StateManager(cwd=repo).store.iter_paths())
    failed, lost, alive = ids[0], ids[1], ids[2]
    flaky = StateManager(cwd=repo, worker="w-flaky")  # it holds the lease it was issued
    flaky.update_state(failed, "downloading")
    flaky.fail(failed, "HTTP 503 from archive.org", traceback=TRACE)
    StateManager(cwd=repo, worker="w-dead").update_state(lost, "downloading")
    alive_worker = StateManager(cwd=repo, worker="w-alive")
    alive_worker.update_state(alive, "downloading")
    alive_worker.update_state(alive, "downloaded", fields={"files.audio_file": "audio/a.mp3"})
    alive_worker.update_state(alive, "converting")
    alive_worker.heartbeat(alive)
    return repo


def ids_of(repo: Path) -> list[str]:
    return sorted(p.stem for p in StateManager(cwd=repo).store.iter_paths())


@pytest.fixture
def served(ops_repo: Path) -> Iterator[Served]:
    with serving(
        ops_repo, "--reports-every", "0", "--allow-actions", env={"HYSTATE_SERVE_TOKEN": TOKEN}
    ) as srv:
        yield srv


def page_errors(page: Any) -> list[str]:
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    return errors


def log_in(page: Any, srv: Served, token: str = TOKEN) -> None:
    page.goto(srv.url + "/", wait_until="load", timeout=60_000)
    page.click("#login")
    page.fill("#token", token)
    page.click("#login-submit")
    page.wait_for_load_state("load")


def stage_of(repo: Path, eid: str) -> str:
    return StateManager(cwd=repo).episode(eid).stage.value


def test_login_retry_skip_and_take_over_by_clicking(
    browser: Any, served: Served, ops_repo: Path
) -> None:
    failed, lost, alive = ids_of(ops_repo)[:3]
    other = ids_of(ops_repo)[5]
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    errors = page_errors(page)

    # no session: the episode page offers a login, no buttons
    page.goto(f"{served.url}/episodes/{failed}", wait_until="load", timeout=60_000)
    assert page.locator("#actions").count() == 0 and page.locator("#login").count() == 1
    # a wrong token is refused; the right one opens a session
    log_in(page, served, "wrong-token-wrong-token")
    assert page.text_content("#login-error") == "wrong token"
    log_in(page, served)
    expect(page.locator("#operator")).to_have_text("operator")

    # retry: the dry run is shown, Cancel writes nothing, Confirm commits the transition
    page.goto(f"{served.url}/episodes/{failed}", wait_until="load", timeout=60_000)
    head = commits(ops_repo)
    page.click("#act-retry")
    expect(page.locator("#confirm")).to_be_visible()
    assert page.text_content("#confirm-move").startswith("failed → downloading")
    assert "+stage: downloading" in page.text_content("#confirm-diff")
    page.click("#confirm-no")
    assert commits(ops_repo) == head and stage_of(ops_repo, failed) == "failed"
    page.click("#act-retry")
    expect(page.locator("#confirm")).to_be_visible()
    page.click("#confirm-yes")
    expect(page.locator("#episode-stage")).to_have_text("downloading", timeout=30_000)
    assert len(commits(ops_repo)) == len(head) + 1

    # skip: needs a reason (refused, shown), then with one
    page.goto(f"{served.url}/episodes/{other}", wait_until="load", timeout=60_000)
    page.click("#act-skip")
    expect(page.locator("#action-result")).to_contain_text("skip refused: a skip needs a reason")
    page.fill("#skip-reason", "a rebroadcast")
    page.click("#act-skip")
    expect(page.locator("#confirm-move")).to_contain_text("discovered → skipped")
    page.click("#confirm-yes")
    expect(page.locator("#episode-stage")).to_have_text("skipped", timeout=30_000)
    assert StateManager(cwd=ops_repo).episode(other).status_message == "a rebroadcast"

    # take over: refused while the worker's lease is alive, done for the lost one
    page.goto(f"{served.url}/episodes/{alive}", wait_until="load", timeout=60_000)
    page.click("#act-take-over")
    expect(page.locator("#action-result")).to_contain_text("its lease is alive")
    page.goto(f"{served.url}/episodes/{lost}", wait_until="load", timeout=60_000)
    page.click("#act-take-over")
    expect(page.locator("#confirm-move")).to_contain_text("downloading → failed")
    assert "worker lost: lease of worker w-dead expired" in page.text_content("#confirm-diff")
    page.click("#confirm-yes")
    expect(page.locator("#episode-stage")).to_have_text("failed", timeout=30_000)
    assert StateManager(cwd=ops_repo).episode(lost).failed_stage == "downloading"
    # the commits are the server's, one per confirmed action
    assert len(commits(ops_repo)) == len(head) + 3

    # log out: the buttons are gone
    page.click("#logout")
    page.goto(f"{served.url}/episodes/{lost}", wait_until="load", timeout=60_000)
    assert page.locator("#actions").count() == 0
    # the only console errors: the refused login (401), the refused skip and take-over (400)
    assert sorted(re.findall(r"status of (\d+)", " ".join(errors))) == ["400", "400", "401"]
    assert len(errors) == 3, errors
    page.close()


def test_in_progress_workers_and_attempts(browser: Any, served: Served, ops_repo: Path) -> None:
    failed, lost, alive = ids_of(ops_repo)[:3]
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    errors = page_errors(page)
    page.goto(served.url + "/", wait_until="load", timeout=60_000)
    rows = page.locator("#in-progress tr")
    expect(rows).to_have_count(2, timeout=30_000)
    stuck = page.locator(f'#in-progress tr[data-episode="{lost}"]')
    assert stuck.get_attribute("class") == "stuck"
    cells = stuck.locator("td").all_text_contents()
    assert cells[1:3] == ["downloading", "w-dead"]
    assert cells[6].startswith("stuck: lease of worker w-dead expired")
    working = page.locator(f'#in-progress tr[data-episode="{alive}"] td').all_text_contents()
    assert working[1:3] == ["converting", "w-alive"] and working[6] == "working"
    assert re.fullmatch(r"\d+ (s|min)", working[5]), working  # the heartbeat's age

    # each worker's timeline: a bar per run, coloured by its outcome
    page.goto(served.url + "/workers", wait_until="load", timeout=60_000)
    flaky = page.locator('svg.timeline[data-worker="w-flaky"] rect')
    expect(flaky).to_have_count(1)
    assert flaky.get_attribute("class") == "run failed"
    assert page.locator('svg.timeline[data-worker="w-alive"] rect.open').count() == 1
    assert page.locator('svg.timeline[data-worker="w-alive"] rect.done').count() == 1

    # an episode's attempts: the error and its traceback
    page.goto(f"{served.url}/episodes/{failed}", wait_until="load", timeout=60_000)
    attempt = page.locator("#attempts tr.attempt")
    expect(attempt).to_have_count(1)
    assert "HTTP 503 from archive.org" in attempt.text_content()
    attempt.locator("summary").click()
    assert page.locator("#attempts pre.traceback").inner_text() == TRACE
    assert errors == []
    page.close()


def test_csrf_session_and_origin_are_checked(served: Served, ops_repo: Path) -> None:
    failed = ids_of(ops_repo)[0]
    head = commits(ops_repo)
    url = f"/console/retry/{failed}"
    body = json.dumps({"dry_run": False})
    with served.client() as client:
        assert client.post(url, content=body).status_code == 401  # no session
        login = client.post(
            "/login", content=f"token={TOKEN}&next=//evil.example/x", follow_redirects=False
        )
        assert login.status_code == 303 and login.headers["location"] == "/"
        cookie = login.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        assert client.post(url, content=body).status_code == 403  # no CSRF token
        page = client.get(f"/episodes/{failed}").text
        found = re.search(r'name="csrf-token" content="([0-9a-f]+)"', page)
        assert found
        csrf = {"X-CSRF-Token": found.group(1)}
        evil = {**csrf, "Origin": "http://evil.example"}
        assert client.post(url, content=body, headers=evil).status_code == 403
        assert commits(ops_repo) == head
        done = client.post(url, content=body, headers=csrf)
        assert done.status_code == 200, done.text
        assert done.json()["to"] == "downloading" and len(commits(ops_repo)) == len(head) + 1
    # another client (no cookie) cannot reuse the CSRF token
    assert httpx.post(served.url + url, content=body, headers=csrf).status_code == 401


def test_metrics_for_prometheus(served: Served, ops_repo: Path) -> None:
    with served.client() as client:
        reply = client.get("/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert 'hystate_transitions_total{to="discovered"} 20.0' in reply.text
    assert 'hystate_episodes{stage="failed"} 1.0' in reply.text


def test_actions_disabled_without_a_token(repo: Path) -> None:
    with serving(repo, "--reports-every", "0") as srv, srv.client() as client:
        assert client.get("/login").status_code == 403
        reply = client.post(f"/console/retry/{ids_of(repo)[0]}", content="{}")
        assert reply.status_code == 403 and "disabled" in reply.json()["error"]
        assert 'id="login"' not in client.get("/").text
