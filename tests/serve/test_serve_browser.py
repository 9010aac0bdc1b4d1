"""The dashboard in a real headless Chromium (Debian's /usr/bin/chromium driven by Playwright):
the counts, an advance from another process showing within 1 s, an episode page's history, a
hostile title shown as text. With HYSTATE_SCREENSHOT=path, a screenshot of the dashboard."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from hystate.manager import StateManager
from tests.conftest import commits, run_hystate, write_search_json
from tests.harness.serve import serving

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
HOSTILE = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)"
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        # Playwright gives every launch a fresh temporary --user-data-dir
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def live_repo(repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """21 episodes (one with a hostile title) and nine days of history: 3 hours between
    transitions (a fake clock), so the chart, the throughput and the ETA have something."""
    from hystate.engine.catalog import read_records
    from tests.conftest import full_walk

    manager = StateManager(cwd=repo, worker="w1")
    catalog = write_search_json(
        tmp_path / "hostile.json",
        [{"identifier": "hy0_hostile", "title": HOSTILE, "date": "2001-01-01T00:00:00Z"}],
    )
    manager.discover(read_records(catalog))
    ids = [e for e in _ids(repo) if e != "hy0_hostile"]
    ticks = iter(range(1000))
    start = datetime.now(UTC) - timedelta(days=10)
    monkeypatch.setattr(
        "hystate.engine.steps.now_utc",
        lambda: (start + timedelta(hours=3 * next(ticks))).isoformat(timespec="seconds"),
    )
    for n, eid in enumerate(ids[3:14]):
        if n < 7:
            full_walk(manager, eid)
        else:
            for stage, fields in STEPS[: 2 + n % 3]:
                manager.update_state(eid, stage, fields=fields)
    full_walk(manager, ids[0])
    manager.update_state(ids[1], "downloading")
    manager.fail(ids[1], "HTTP 503 <i>gateway</i>")
    monkeypatch.undo()
    return repo


STEPS: list[tuple[str, dict[str, object]]] = [
    ("downloading", {}),
    ("downloaded", {"files.audio_file": "audio/a.mp3", "metrics.audio_size": 28_000_000}),
    ("converting", {}),
    ("converted", {"files.video_file": "video/a.mp4"}),
]


def page_errors(page: Any) -> list[str]:
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    return errors


def test_dashboard_counts_live_update_and_hostile_title(browser: Any, live_repo: Path) -> None:
    expected = StateManager(cwd=live_repo).count_by_stage()
    with serving(live_repo, "--reports-every", "0") as srv:
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        errors = page_errors(page)
        page.goto(srv.url + "/", wait_until="load", timeout=60_000)
        page.wait_for_selector("#live.on", timeout=60_000)  # the event stream is connected
        shown = {s: int(page.text_content(f"#count-{s}")) for s in expected}
        assert shown == expected
        assert page.text_content("#total") == "21"

        # the hostile title is text, in the list and nowhere as markup; nothing ran
        row = page.locator('#episodes tr[data-id="hy0_hostile"] .title')
        assert row.text_content() == HOSTILE
        assert page.locator("#episodes script, #episodes img").count() == 0
        assert page.evaluate("window.__pwned") is None
        assert "<i>gateway</i>" in page.text_content("#failures")

        # an advance from another process shows within 1 s of its commit
        target = [e for e in _ids(live_repo) if e != "hy0_hostile"][2]
        done = run_hystate(live_repo, "advance", target, "downloading")
        committed = time.monotonic()
        assert done.returncode == 0, done.stderr
        sha = commits(live_repo)[0]
        page.wait_for_selector(f'#feed li[data-sha="{sha}"]', timeout=_left(committed))
        # (waits through locators: the page's CSP forbids the eval a function predicate needs)
        expect(page.locator("#count-downloading")).to_have_text(
            str(expected["downloading"] + 1), timeout=_left(committed)
        )
        latency = time.monotonic() - committed
        assert latency <= 1.0, latency
        stage_cell = page.locator(f'#episodes tr[data-id="{target}"] .stage')
        expect(stage_cell).to_have_text("downloading", timeout=10_000)

        # commits in a burst: the counts move with each, and the status computed after them
        # (for one HEAD, plus the commits the page got after it) agrees: nothing counted twice
        manager = StateManager(cwd=live_repo, worker="burst")
        for eid in [e for e in _ids(live_repo) if e != "hy0_hostile"][14:17]:
            manager.update_state(eid, "downloading")
        head = commits(live_repo)[0]
        expect(page.locator("#count-downloading")).to_have_text(
            str(expected["downloading"] + 4), timeout=10_000
        )
        expect(page.locator("#head")).to_have_text(head[:12], timeout=30_000)
        assert page.text_content("#count-downloading") == str(expected["downloading"] + 4)
        assert page.text_content("#count-discovered") == str(expected["discovered"] - 4)

        # the search filters the list (through the API, drawn with textContent)
        page.fill("#search", "hostile")
        expect(page.locator("#episodes tr")).to_have_count(1, timeout=10_000)
        assert page.locator("#episodes tr .title").text_content() == HOSTILE
        page.fill("#search", "")
        expect(page.locator("#episodes tr")).to_have_count(21, timeout=10_000)
        assert page.evaluate("window.__pwned") is None
        assert errors == []

        target_path = os.environ.get("HYSTATE_SCREENSHOT")
        if target_path:
            page.screenshot(path=target_path, full_page=True)
        page.close()


def test_episode_page_history(browser: Any, live_repo: Path) -> None:
    manager = StateManager(cwd=live_repo)
    eid = sorted(e for e in _ids(live_repo) if e != "hy0_hostile")[0]
    history = manager.history(eid)
    with serving(live_repo, "--reports-every", "0") as srv:
        page = browser.new_page()
        errors = page_errors(page)
        page.goto(f"{srv.url}/episodes/{eid}", wait_until="load", timeout=60_000)
        assert page.text_content("#episode-stage") == "published"
        rows = page.locator("#history tr.history-row")
        assert rows.count() == len(history) == 9
        shas = page.locator("#history code.sha").all_text_contents()
        assert shas == [row["commit"][:10] for row in history]
        assert page.locator("#history pre.diff").count() == 9
        page.locator("#history details").nth(8).locator("summary").click()
        assert "+stage: published" in page.locator("#history pre.diff").nth(8).inner_text()
        assert page.text_content("#file") == manager.path_of(eid).read_text()

        page.goto(f"{srv.url}/episodes/hy0_hostile", wait_until="load", timeout=60_000)
        assert page.text_content("#episode-title") == HOSTILE
        assert page.locator("main script, main img").count() == 0
        assert page.evaluate("window.__pwned") is None
        assert json.dumps(errors) == "[]"
        page.close()


def _ids(repo: Path) -> list[str]:
    return sorted(p.stem for p in StateManager(cwd=repo).store.iter_paths())


def _left(since: float) -> float:
    """Milliseconds left of the 1 s allowed from the commit (at least 1 ms)."""
    return max(1.0, 1000 * (1.0 - (time.monotonic() - since)))
