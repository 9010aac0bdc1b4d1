"""``make demo``: the migration of the real catalog, simulated, in a scratch repository.

Four worker processes act like the real pipeline, through hystate's public API only: each
claims the next episodes of a stage, does simulated work (durations and sizes drawn from a
seeded distribution shaped like the real shows: about 30 minutes, 25-75 MB of mp3), records
files, sizes and durations, fails about 10% of the time with the errors the real tools give,
retries with backoff, schedules uploads one per week and publishes them. The project's own
repository is never touched: the scratch repository is made from its ``processed/`` files.

    python -m hystate.demo --dir ../hystate-demo [--catalog processed] [--workers 4]
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

MARKER = ".hystate-demo"
ERRORS = {
    "downloading": [
        "HTTP 503 Service Unavailable from archive.org",
        "connection reset by peer after 18.2 MB",
        "md5 mismatch: archive.org metadata says 7e10053385866b87e64a09314be58618",
    ],
    "converting": [
        "ffmpeg exited with status 1: Invalid data found when processing input",
        "ffmpeg exited with status 234: Error while decoding stream #0:0",
    ],
    "uploading": [
        "YouTube Data API 403: quotaExceeded",
        "YouTube upload endpoint returned HTTP 500",
    ],
}
NEXT_AFTER = {"downloading": "downloaded", "converting": "converted", "uploading": "uploaded"}
FIRST_SLOT = datetime(2027, 1, 1, 18, 0, tzinfo=UTC)


def worker(root: str, number: int, failure_rate: float, seed: int, claim_limit: int = 2) -> None:
    """One pipeline worker: take whatever work is ready, stage by stage, ``claim_limit`` at
    a time (the cluster demo claims more at once: each claim round is a push)."""
    from hystate import HystateError, StateManager

    name = f"worker-{number}"
    rng = random.Random(seed * 100 + number)
    manager = StateManager(cwd=root, worker=name)
    stages = ["uploading", "converting", "downloading"]
    idle = 0
    while idle < 40:
        did = 0
        rng.shuffle(stages)
        for stage in stages:
            for result in manager.claim_next(stage, claim_limit, worker=name):
                try:
                    work(manager, result.episode, stage, rng, failure_rate)
                except HystateError as exc:  # a real worker logs and goes on with the next
                    print(f"{name}: {result.episode.episode_id}: {exc}", file=sys.stderr)
                did += 1
        did += schedule_and_publish(manager, name)
        if number == 0:  # due retries come back through the claims; give up on exhausted ones
            did += give_up_exhausted(manager)
        if did:
            idle = 0
            continue
        done = manager.count_by_stage()
        if done["published"] + done["skipped"] == sum(done.values()):
            return
        idle += 1
        time.sleep(0.25)


def give_up_exhausted(manager) -> int:  # type: ignore[no-untyped-def]
    from hystate import HystateError

    exhausted = [
        e.episode_id
        for e in manager.get_episodes_by_stage("failed")
        if manager.recovery.decide(e).exhausted
    ]
    try:
        return len(manager.retry(exhausted)) if exhausted else 0
    except HystateError:
        return 0  # another worker moved one meanwhile: try again next round


def work(manager, episode, stage: str, rng: random.Random, failure_rate: float) -> None:  # type: ignore[no-untyped-def]
    """Simulated download, conversion or upload of one episode."""
    eid = episode.episode_id
    time.sleep(rng.uniform(0.001, 0.01))
    if rng.random() < failure_rate:
        manager.fail(eid, rng.choice(ERRORS[stage]))
        return
    year = episode.date[:4]
    if stage == "downloading":
        duration = max(600.0, rng.gauss(1800, 300))  # about 30 minutes
        fields = {
            "files.audio_file": f"audio/{year}/{eid}.mp3",
            "metrics.audio_duration": round(duration, 2),
            "metrics.audio_size": int(rng.uniform(25, 75) * 1_000_000),
        }
    elif stage == "converting":
        fields = {
            "files.video_file": f"video/{year}/{eid}.mp4",
            "metrics.video_size": int(rng.uniform(60, 180) * 1_000_000),
            "metrics.processing_time": round(rng.uniform(40, 160), 1),
        }
    else:
        video_id = "".join(
            rng.choice("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")
            for _ in range(11)
        )
        fields = {"youtube.video_id": video_id}
    manager.update_state(eid, NEXT_AFTER[stage], fields=fields)


def schedule_and_publish(manager, name: str) -> int:  # type: ignore[no-untyped-def]
    """Uploaded episodes get the next free weekly slot; scheduled ones are published (in the
    demo, at once)."""
    from hystate import IllegalTransition, LockBusy

    moved = 0
    for episode in manager.get_next_for_processing("scheduled", 3):
        slot = FIRST_SLOT + timedelta(weeks=_ORDER[episode.episode_id])
        try:
            manager.update_state(episode.episode_id, "scheduled", worker=name, lock_timeout=0,
                                 fields={"youtube.scheduled_date": slot.isoformat()})  # fmt: skip
            moved += 1
        except (IllegalTransition, LockBusy):
            continue
    # The slots lie in the future, so `next published` would not offer them yet: the demo's
    # clock jumps, and a scheduled episode is published at once, on its slot.
    for episode in manager.get_episodes_by_stage("scheduled")[:3]:
        slot = episode.data["youtube"]["scheduled_date"]
        try:
            manager.update_state(episode.episode_id, "published", worker=name, lock_timeout=0,
                                 fields={"youtube.published_date": slot})  # fmt: skip
            moved += 1
        except (IllegalTransition, LockBusy):
            continue
    return moved


# One upload a week, in air-date order: an episode's slot is its rank in the catalog (filled
# before the workers are forked, so every worker sees it).
_ORDER: dict[str, int] = {}


def prepare(target: Path, catalog: Path) -> int:
    """A fresh scratch repository with the catalog discovered; returns the episode count."""
    from hystate import StateManager
    from hystate.core.store import EpisodeStore
    from hystate.engine.catalog import Record

    if target.exists():
        if not (target / MARKER).exists():
            sys.exit(
                f"hystate demo: {target} exists and is not a demo repository; choose another --dir"
            )
        shutil.rmtree(target)
    target.mkdir(parents=True)
    (target / MARKER).write_text("made by `make demo`; safe to delete\n")
    subprocess.run(["git", "init", "-q", "-b", "main", str(target)], check=True)
    (target / "hystate.yaml").write_text(
        "state_management:\n  recovery:\n    retry_delay: 0.5\n  locks:\n    timeout: 30\n"
    )
    source = EpisodeStore(catalog.resolve())
    records = []
    for path in source.iter_paths():
        _, episode = source.read(path)
        records.append(Record(episode.episode_id, episode.title, episode.date))
    manager = StateManager(cwd=target, worker="catalog-import")
    manager.ensure_layout()
    manager.discover(records, source=f"{catalog} (the project's own catalog)")
    return len(records)


def progress_line(manager, started: float) -> str:  # type: ignore[no-untyped-def]
    counts = manager.count_by_stage()
    total = sum(counts.values())
    done = counts["published"] + counts["skipped"]
    active = counts["downloading"] + counts["converting"] + counts["uploading"]
    return (
        f"[{time.monotonic() - started:5.1f}s] {done}/{total} done "
        f"(published {counts['published']}, skipped {counts['skipped']}, "
        f"failed {counts['failed']}, "
        f"in progress {active}, waiting {counts['discovered']})"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dir", type=Path, required=True, help="scratch repository (made anew)")
    parser.add_argument(
        "--catalog", type=Path, default=Path(__file__).resolve().parent.parent / "processed"
    )
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--failure-rate", type=float, default=0.10)
    parser.add_argument("--seed", type=int, default=2004)
    args = parser.parse_args(argv)
    from hystate import StateManager

    target = args.dir.resolve()
    print(f"demo repository: {target}")
    count = prepare(target, args.catalog)
    print(f"discovered {count} episodes from {args.catalog}")
    manager = StateManager(cwd=target)
    ranked = sorted(manager.list_episodes(), key=lambda e: (e.date, e.episode_id))
    _ORDER.update({e.episode_id: i for i, e in enumerate(ranked)})
    started = time.monotonic()
    context = multiprocessing.get_context("fork")
    procs = [
        context.Process(target=worker, args=(str(target), n, args.failure_rate, args.seed))
        for n in range(args.workers)
    ]
    for proc in procs:
        proc.start()
    while any(p.is_alive() for p in procs):
        time.sleep(2)
        print(progress_line(manager, started), flush=True)
    for proc in procs:
        proc.join()
    elapsed = time.monotonic() - started
    print(f"\nall workers finished in {elapsed:.0f}s\n")
    hystate = [sys.executable, "-m", "hystate.cli"]
    subprocess.run([*hystate, "status"], cwd=target, check=True)
    print("\nlast commits (git log --oneline):")
    log = subprocess.run(
        ["git", "log", "--oneline", "-8"], cwd=target, capture_output=True, text=True, check=True
    )
    print(log.stdout, end="")
    commits = subprocess.run(
        ["git", "rev-list", "--count", "HEAD"],
        cwd=target,
        capture_output=True,
        text=True,
        check=True,
    )
    print(f"({commits.stdout.strip()} commits in all; `git log` is the audit trail)")
    report = subprocess.run(
        [*hystate, "report", "--format", "html"], cwd=target, capture_output=True, text=True
    )
    if report.returncode == 0 and report.stdout.strip():
        print(f"\nHTML report: {report.stdout.strip().splitlines()[-1]}")


if __name__ == "__main__":
    main()
