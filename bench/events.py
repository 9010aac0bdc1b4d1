"""The event stream against a real redis-server (append-only file, fsync on every write):

- backfill: every event of a history published by one `Publisher.publish()` (events/s), and a
  publish with nothing to do (ms);
- the cost a transition pays for publishing after its commit: `update_state` with
  `events.enabled` on and off, interleaved, medians;
- latency commit -> XADD: from the moment HEAD moved (timed in the worker) to the entry's id
  (Redis's own clock, same machine), with the after-commit publish, and with a separate
  `hystate events publish --follow` daemon instead.

    python bench/events.py                           # 1,000 episodes, 4,000 transitions
    python bench/events.py --episodes 100 --transitions 400 --latency 50
    python bench/events.py --doc                     # also rewrite its section of docs/BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import docfile
from common import emit, isolate_git, machine

from hystate.engine import grouping
from hystate.engine.catalog import read_records
from hystate.events import stream as events
from hystate.git import GitRepo
from hystate.manager import StateManager

STEPS: list[tuple[str, dict[str, Any]]] = [
    ("downloading", {}),
    ("downloaded", {"files.audio_file": "audio/x.mp3"}),
    ("converting", {}),
    ("converted", {"files.video_file": "video/x.mp4"}),
    ("uploading", {}),
    ("uploaded", {"youtube.video_id": "dQw4w9WgXcQ"}),
    ("scheduled", {"youtube.scheduled_date": "2027-01-01T18:00:00+00:00"}),
    ("published", {"youtube.published_date": "2027-01-01T18:00:05+00:00"}),
]
HEADING = "## Event stream (issue 14)"


class Redis:
    def __init__(self, folder: Path) -> None:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        exe = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", str(folder)],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        import redis

        self.client = redis.Redis(port=self.port, decode_responses=True)
        for _ in range(200):
            try:
                self.client.ping()
                break
            except redis.RedisError:
                time.sleep(0.05)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.version = self.client.info()["redis_version"]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def make_repo(root: Path, episodes: int, url: str) -> tuple[StateManager, list[str]]:
    root.mkdir()
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True)
    (root / "hystate.yaml").write_text(
        f"state_management:\n  events:\n    enabled: false\n    url: {url}\n"
    )
    manager = StateManager(cwd=root, worker="bench")
    manager.ensure_layout()
    catalog = root.parent / "catalog.jsonl"
    rows = [
        {"identifier": f"hy_{i:05d}", "title": f"Episode {i}", "date": f"{2004 + i % 16}-01-01"}
        for i in range(episodes)
    ]
    catalog.write_text("".join(json.dumps(r) + "\n" for r in rows))
    manager.discover(read_records(catalog), source="catalog.jsonl")
    return manager, [r["identifier"] for r in rows]


class Walker:
    """Advances episodes one step at a time, round robin; records when HEAD moved."""

    def __init__(self, manager: StateManager, ids: list[str]) -> None:
        self.manager, self.ids, self.n = manager, ids, 0
        self.committed: dict[str, float] = {}
        original, grouped = GitRepo.commit, grouping.commit

        def timed(repo: GitRepo, files: Any, message: str) -> str | None:
            return self._moved(original(repo, files, message))

        def timed_group(*args: Any) -> str | None:  # a lone worker leads its own group
            return self._moved(grouped(*args))

        GitRepo.commit = timed  # type: ignore[method-assign]
        grouping.commit = timed_group

    def _moved(self, sha: str | None) -> str | None:
        """When HEAD moved to ``sha``: the start of a publish's latency."""
        if sha:
            self.committed[sha] = time.time()
        return sha

    def _next(self) -> tuple[str, str, dict[str, Any]]:
        eid = self.ids[self.n % len(self.ids)]
        stage, fields = STEPS[(self.n // len(self.ids)) % len(STEPS)]
        self.n += 1
        return eid, stage, fields

    def step(self) -> str:
        eid, stage, fields = self._next()
        result = self.manager.update_state(eid, stage, fields=fields)
        assert result.commit
        return result.commit

    def cli_step(self) -> float:
        """One `hystate advance` process: its wall seconds."""
        eid, stage, fields = self._next()
        sets = [arg for k, v in fields.items() for arg in ("--set", f"{k}={v}")]
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "hystate.cli", "advance", eid, stage, *sets],
            cwd=self.manager.repo.root,
            check=True,
            capture_output=True,
        )
        return time.perf_counter() - started


def latencies_ms(client: Any, stream: str, walker: Walker, shas: list[str]) -> list[float]:
    ids = {f["commit"]: i for i, f in client.xrange(stream)}
    return [int(ids[sha].split("-")[0]) - walker.committed[sha] * 1000 for sha in shas]


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median_ms": round(statistics.median(ordered), 1),
        "p95_ms": round(ordered[int(len(ordered) * 0.95) - 1], 1),
        "max_ms": round(ordered[-1], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--transitions", type=int, default=4000)
    parser.add_argument("--latency", type=int, default=200, help="transitions timed per mode")
    parser.add_argument("--cli", type=int, default=15, help="`hystate advance` runs per mode")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--doc", action="store_true", help="rewrite its section of the doc")
    args = parser.parse_args()
    if args.transitions + 3 * (args.latency + args.cli) > args.episodes * len(STEPS):
        parser.error("more transitions than the episodes have steps: raise --episodes")
    isolate_git()
    with tempfile.TemporaryDirectory(prefix="hystate-bench-events-") as tmp:
        redis = Redis(Path(tmp))
        try:
            result = run(Path(tmp), redis, args)
        finally:
            redis.stop()
    result["command"] = docfile.command_line("events.py", sys.argv[1:])
    emit(result, args.json)
    if args.doc:
        write_doc(result)


def run(tmp: Path, redis: Redis, args: argparse.Namespace) -> dict[str, Any]:
    manager, ids = make_repo(tmp / "repo", args.episodes, redis.url)
    walker = Walker(manager, ids)
    for _ in range(args.transitions):
        walker.step()
    publisher = events.Publisher(manager)
    started = time.perf_counter()
    backfill = publisher.publish()
    took = time.perf_counter() - started
    idle = []
    for _ in range(20):
        started = time.perf_counter()
        assert publisher.publish().published == 0
        idle.append(time.perf_counter() - started)
    publisher.close()

    # a transition with and without its after-commit publish, interleaved
    cost: dict[bool, list[float]] = {True: [], False: []}
    after_commit: list[str] = []
    for i in range(2 * args.latency):
        on = i % 2 == 0
        manager.config.values["events"]["enabled"] = on
        started = time.perf_counter()
        sha = walker.step()
        cost[on].append(time.perf_counter() - started)
        if on:
            after_commit.append(sha)
        else:  # keep the stream current, so the next timed publish has one commit to send
            events.Publisher(manager).publish()
    stream = manager.config.get("events.stream")
    direct = latencies_ms(redis.client, stream, walker, after_commit)

    # `hystate advance` processes: events off, on (the process publishes), interleaved
    config = manager.repo.root / "hystate.yaml"
    text = config.read_text()
    cli: dict[str, list[float]] = {"off": [], "on": [], "daemon": []}
    for i in range(2 * args.cli):
        mode = "on" if i % 2 else "off"
        config.write_text(text.replace("enabled: false", f"enabled: {mode == 'on'}".lower()))
        cli[mode].append(walker.cli_step())
    config.write_text(text.replace("enabled: false", "enabled: true"))

    # a daemon publishes instead; the workers do not
    manager.config.values["events"]["enabled"] = False
    daemon = subprocess.Popen(
        [sys.executable, "-m", "hystate.cli", "events", "publish", "--follow", "--interval",
         "0.05"],
        cwd=manager.repo.root,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(1.0)
    for _ in range(args.cli):  # with the daemon running, a process leaves publishing to it
        cli["daemon"].append(walker.cli_step())
    followed = []
    for _ in range(args.latency):
        followed.append(walker.step())
        time.sleep(0.02)
    deadline = time.time() + 60
    while redis.client.xlen(stream) < args.episodes + walker.n and time.time() < deadline:
        time.sleep(0.05)
    daemon.terminate()
    daemon.wait(30)
    by_daemon = latencies_ms(redis.client, stream, walker, followed)
    total = backfill.published
    return {
        "machine": machine(),
        "redis": redis.version,
        "episodes": args.episodes,
        "transitions": args.transitions,
        "backfill_events": total,
        "backfill_s": round(took, 2),
        "backfill_events_per_s": round(total / took),
        "idle_publish_ms": round(statistics.median(idle) * 1000, 1),
        "transition_ms_events_on": round(statistics.median(cost[True]) * 1000, 1),
        "transition_ms_events_off": round(statistics.median(cost[False]) * 1000, 1),
        "latency_after_commit": summary(direct),
        "latency_follow_daemon": summary(by_daemon),
        "latency_samples": args.latency,
        "cli_advance_ms": {k: round(statistics.median(v) * 1000) for k, v in cli.items()},
        "cli_samples": args.cli,
        "load_average": round(os.getloadavg()[0], 1),
    }


def write_doc(r: dict[str, Any]) -> None:
    a, d, c = r["latency_after_commit"], r["latency_follow_daemon"], r["cli_advance_ms"]
    section = f"""{HEADING}

`{r["command"].strip()}` — redis-server {r["redis"]} on 127.0.0.1 with `appendonly yes`,
`appendfsync always` (every acknowledged append is on disk); {r["episodes"]:,} episodes discovered
in one commit, then {r["transitions"]:,} transitions. Machine: {r["machine"]} (shared with
other agents: load average {r["load_average"]} at the end of the run).

| measure | figure |
|---|---|
| backfill: the whole history in one `hystate events publish` | {r["backfill_events"]:,} events in {r["backfill_s"]} s = **{r["backfill_events_per_s"]:,} events/s** |
| a publish with nothing to send (cursor current) | {r["idle_publish_ms"]} ms |
| one transition (`update_state`), events on / off, interleaved medians | {r["transition_ms_events_on"]} / {r["transition_ms_events_off"]} ms |
| latency commit -> XADD, publish after the commit (in the worker) | median {a["median_ms"]} ms, p95 {a["p95_ms"]} ms, max {a["max_ms"]} ms |
| latency commit -> XADD, `events publish --follow --interval 0.05` daemon | median {d["median_ms"]} ms, p95 {d["p95_ms"]} ms, max {d["max_ms"]} ms |
| one `hystate advance` process: events off / on / on with a daemon running (medians of {r["cli_samples"]}) | {c["off"]} / {c["on"]} / {c["daemon"]} ms |

Latency runs from the moment HEAD moved (timed in the worker) to the entry id Redis gave the
event (its clock, same machine), over {r["latency_samples"]} transitions per mode. The backfill
reads git 500 first-parent commits at a time (`git log`, one `git cat-file --batch` for the
files) and appends 200 events per compare-and-swap script. A process that publishes after its
commit pays for importing redis-py (~0.1 s: it loads asyncio) on top of the publish itself; while
a `--follow` daemon runs, commits leave the publishing to it and pay nothing.

"""
    # before the scale section, as `run_all.py` orders them
    docfile.write_section(HEADING, section, before="## The user's path at scale (issue 17)")


if __name__ == "__main__":
    main()
