"""`hystate serve` at scale: a real server process on a repository of --episodes episodes (the
mixed stages of bench/common.py, built in one commit), measured from outside.

    dashboard first load   headless Chromium (Debian's /usr/bin/chromium through Playwright):
                           a fresh page's navigation until the load event, and GET / alone
    API list page          GET /api/episodes: pages 1 and 1000, a stage, a year, a search
    event latency          commit (from just before StateManager.update_state, in this process) ->
                           the commit shown in the open page's feed (Chromium), and -> the
                           page's counts updated; also -> an SSE client's read of the event
    dashboard recomputed   commit -> GET /api/status answers with that commit's figures (the
                           cache refreshed and the report's figures recomputed, once per HEAD)
    50 SSE clients         the server process's RSS (/proc; the git processes it runs apart) before, while the
                           clients are connected and receive 20 commits, and after they leave:
                           once with 1 client, then with 50 (memory is flat if they match)

    python bench/serve.py                      # 100,000 episodes
    python bench/serve.py --episodes 10000 --repo /tmp/r10k   # reuse a built repository
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import _tree_rss_kb, build_repo, emit, episode_ids, isolate_git, machine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from hystate.manager import StateManager
from tests.harness.serve import free_port
from tests.serve.test_serve_browser import CHROMIUM, FLAGS


def discovered(n: int) -> list[str]:
    """Ids build_repo left discovered (the first 70 of every 100)."""
    return [eid for i, eid in enumerate(episode_ids(n)) if i % 100 < 70]


def start_server(root: Path) -> tuple[Any, str, float]:
    import subprocess

    port = free_port()
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "hystate.cli", "serve", "--port", str(port), "--reports-every", "0"],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    while True:
        try:
            if httpx.get(url + "/api/status", timeout=600).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
        if proc.poll() is not None:
            raise SystemExit("hystate serve exited")
    return proc, url, time.perf_counter() - started


def own_rss_kb(pid: int) -> int:
    """The server process's own resident memory (without the git processes it runs)."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def api_pages(url: str) -> dict[str, Any]:
    queries = {
        "page 1": {"page": 1},
        "page 1000": {"page": 1000},
        "stage=failed": {"stage": "failed"},
        "year=2010, page 20": {"year": "2010", "page": 20},
        "search 'hooting_yard_2015-04'": {"q": "hooting_yard_2015-04"},
    }
    out = {}
    with httpx.Client(base_url=url, timeout=60) as http:
        for name, params in queries.items():
            times = []
            for _ in range(7):
                t = time.perf_counter()
                response = http.get("/api/episodes", params=params)
                times.append(time.perf_counter() - t)
                assert response.status_code == 200, response.text
            out[name] = {"median_ms": ms(statistics.median(times)), "max_ms": ms(max(times))}
    return out


def browser_figures(url: str, root: Path, ids: list[str], commits: int) -> dict[str, Any]:
    from playwright.sync_api import expect, sync_playwright

    manager = StateManager(cwd=root, worker="bench")
    out: dict[str, Any] = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        loads, navs = [], []
        for _ in range(3):
            page = browser.new_page()
            t = time.perf_counter()
            page.goto(url + "/", wait_until="load", timeout=120_000)
            loads.append(time.perf_counter() - t)
            navs.append(
                page.evaluate("performance.getEntriesByType('navigation')[0].loadEventEnd") / 1000
            )
            page.close()
        out["dashboard_load_ms"] = {"first": ms(loads[0]), "median": ms(statistics.median(loads))}
        out["dashboard_load_event_ms (navigation timing)"] = {
            "first": ms(navs[0]),
            "median": ms(statistics.median(navs)),
        }
        with httpx.Client(timeout=60) as http:
            t = time.perf_counter()
            size = len(http.get(url + "/").content)
            out["GET / ms"] = ms(time.perf_counter() - t)
            out["GET / bytes"] = size

        page = browser.new_page()
        page.goto(url + "/", wait_until="load", timeout=120_000)
        page.wait_for_selector("#live.on", timeout=60_000)
        feed, counts = [], []
        for eid in ids[:commits]:
            before = int(page.text_content("#count-downloading"))
            t0 = time.perf_counter()  # before the transition: an upper bound of the latency
            result = manager.update_state(eid, "downloading")
            page.wait_for_selector(f'#feed li[data-sha="{result.commit}"]', timeout=30_000)
            feed.append(time.perf_counter() - t0)
            expect(page.locator("#count-downloading")).to_have_text(str(before + 1), timeout=30_000)
            counts.append(time.perf_counter() - t0)
            time.sleep(0.3)
        out["event_latency_browser_feed_ms"] = {
            "median": ms(statistics.median(feed)),
            "max": ms(max(feed)),
        }
        out["event_latency_browser_counts_ms"] = {
            "median": ms(statistics.median(counts)),
            "max": ms(max(counts)),
        }
        browser.close()
    return out


def recompute_latency(url: str, root: Path, ids: list[str]) -> dict[str, Any]:
    """Commit -> the dashboard's data for that commit (``head`` in /api/status), polled."""
    manager = StateManager(cwd=root, worker="bench")
    times = []
    with httpx.Client(base_url=url, timeout=120) as http:
        for eid in ids:
            t0 = time.perf_counter()
            sha = manager.update_state(eid, "downloading").commit
            while http.get("/api/status").json().get("head") != sha:
                time.sleep(0.02)
            times.append(time.perf_counter() - t0)
            time.sleep(0.3)
    return {"median_ms": ms(statistics.median(times)), "max_ms": ms(max(times)), "n": len(times)}


async def sse_round(url: str, root: Path, pid: int, ids: list[str], clients: int) -> dict[str, Any]:
    """``clients`` SSE clients connected, len(ids) commits made 0.8 s apart; the server's RSS
    (sampled every 0.1 s) before, connected, at its peak while the commits are delivered, and
    5 s after the clients left; the latency commit -> event read, at the first client."""
    manager = StateManager(cwd=root, worker="bench")
    rss = {"before": own_rss_kb(pid)}
    tree_peak = _tree_rss_kb(pid)
    arrivals: list[dict[str, float]] = [{} for _ in range(clients)]
    started: dict[str, float] = {}
    limits = httpx.Limits(max_connections=clients + 5)
    async with httpx.AsyncClient(base_url=url, timeout=None, limits=limits) as http:
        ready = [asyncio.Event() for _ in range(clients)]

        async def listen(n: int) -> None:
            sha = ""
            async with http.stream("GET", "/events") as stream:
                async for line in stream.aiter_lines():
                    if line.startswith("id: "):
                        sha = line[4:]
                    elif line == "event: hello":
                        ready[n].set()
                    elif line == "event: commit" and ready[n].is_set():
                        arrivals[n][sha] = time.perf_counter()
                        if len(arrivals[n]) >= len(ids):
                            return

        tasks = [asyncio.create_task(listen(n)) for n in range(clients)]
        await asyncio.gather(*(r.wait() for r in ready))
        rss["connected"] = peak = own_rss_kb(pid)
        for eid in ids:
            t0 = time.perf_counter()  # before the transition: an upper bound of the latency
            result = await asyncio.to_thread(manager.update_state, eid, "downloading")
            assert result.commit
            started[result.commit] = t0
            for _ in range(8):
                await asyncio.sleep(0.1)
                peak = max(peak, own_rss_kb(pid))
                tree_peak = max(tree_peak, _tree_rss_kb(pid))
        await asyncio.wait_for(asyncio.gather(*tasks), 120)
        rss["during_peak"] = peak
    await asyncio.sleep(5.0)  # the status of the last commit may still be being computed
    rss["after"] = own_rss_kb(pid)
    latencies = [arrivals[0][sha] - t0 for sha, t0 in started.items()]
    received = [set(a) == set(started) for a in arrivals]
    return {
        "clients": clients,
        "commits": len(ids),
        "every_client_got_every_commit": all(received),
        "event_latency_sse_ms": {
            "median": ms(statistics.median(latencies)),
            "max": ms(max(latencies)),
        },
        "server_rss_mb": {k: round(v / 1024, 1) for k, v in rss.items()},
        "peak_with_git_children_mb": round(tree_peak / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--episodes", type=int, default=100_000)
    parser.add_argument("--repo", type=Path, help="build (or reuse) the repository here")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    isolate_git()
    result: dict[str, Any] = {"machine": machine(), "episodes": args.episodes}
    with tempfile.TemporaryDirectory(prefix="hystate-bench-serve-") as tmp:
        root = args.repo or Path(tmp) / "repo"
        if not (root / ".git").exists():
            t = time.perf_counter()
            build_repo(root, args.episodes, mixed=True)
            result["build_repo_s"] = round(time.perf_counter() - t, 1)
        import os

        os.environ.update(
            {
                "GIT_AUTHOR_NAME": "bench",
                "GIT_AUTHOR_EMAIL": "b@localhost",
                "GIT_COMMITTER_NAME": "bench",
                "GIT_COMMITTER_EMAIL": "b@localhost",
            }
        )
        ids = discovered(args.episodes)
        # commits are made to episodes still discovered: skip those an earlier run advanced
        manager = StateManager(cwd=root)
        manager.refresh()
        left = {e.episode_id for e in manager.list_episodes(["discovered"])}
        ids = [e for e in ids if e in left]
        proc, url, startup = start_server(root)
        result["server_ready_s"] = round(startup, 1)
        try:
            result["api"] = api_pages(url)
            result["browser"] = browser_figures(url, root, ids, 10)
            result["dashboard_recomputed"] = recompute_latency(url, root, ids[70:80])
            # the same 20 commits' worth of work with 1 client, then with 50: flat if alike
            result["sse_1_client"] = asyncio.run(sse_round(url, root, proc.pid, ids[10:30], 1))
            result["sse_clients"] = asyncio.run(
                sse_round(url, root, proc.pid, ids[30:50], args.clients)
            )
            # and again: memory kept after the first round is not kept again (no leak)
            result["sse_clients_again"] = asyncio.run(
                sse_round(url, root, proc.pid, ids[50:70], args.clients)
            )
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    emit(result, args.json)


if __name__ == "__main__":
    main()
