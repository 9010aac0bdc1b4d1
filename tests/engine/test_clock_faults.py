"""Stepped and frozen clocks (issue 26), with libfaketime on real processes: ``log`` shows every
transition even when several share one second; a lock's age is never read from the wall
clock, so an empty lock dated in the future (a crash, then the clock stepped back) neither
blocks its episode nor passes ``fsck`` unseen."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from tests.conftest import HYSTATE, holder_lease
from tests.harness.faketime import faketime_env


def hystate(
    repo: Path, *args: str, spec: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*HYSTATE, *args],
        cwd=repo,
        env=faketime_env(spec),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def first_id(repo: Path) -> str:
    return sorted(p.stem for p in (repo / "processed").rglob("*.yaml"))[0]


def test_log_shows_every_transition_within_one_second(repo: Path) -> None:
    eid = first_id(repo)
    # every process sees this very second (a day ahead: after the discovery's own entry)
    frozen = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(time.time() + 86_400))
    steps = [
        ("advance", eid, "downloading"),
        ("fail", eid, "--error", "HTTP 503"),
        ("retry", eid, "--now"),
        ("fail", eid, "--error", "HTTP 503 again"),
        ("retry", eid, "--now"),
    ]
    for step in steps:
        lease = holder_lease(repo, eid) if step[0] == "fail" else []
        done = hystate(repo, *step, *lease, spec=frozen)
        assert done.returncode == 0, (step, done.stderr)
    history = json.loads(hystate(repo, "history", eid, "--json", spec=frozen).stdout)
    shown = hystate(repo, "log", "--episode", eid, "--json", spec=frozen)
    assert shown.returncode == 0, shown.stderr
    events = [json.loads(line) for line in shown.stdout.splitlines()]
    assert len(history) == 6  # discovered + the five steps
    assert [(e["from"], e["to"]) for e in events] == [(h["from"], h["to"]) for h in history]
    plain = hystate(repo, "log", "--episode", eid, spec=frozen).stdout.splitlines()
    assert len(plain) == 6, plain


def test_an_empty_lock_dated_in_the_future_neither_blocks_nor_hides(repo: Path) -> None:
    eid = first_id(repo)
    lock = repo / "processed" / ".locks" / f"{eid}.lock"
    lock.parent.mkdir(exist_ok=True)
    lock.write_bytes(b"")  # a crash between create and write; then the clock stepped back
    found = hystate(repo, "fsck", "--json", spec="-3600")
    assert found.returncode == 1, found.stdout + found.stderr
    assert any(
        f["kind"] == "stale-lock" and f["path"].endswith(f"{eid}.lock")
        for f in json.loads(found.stdout)["findings"]
    ), found.stdout
    moved = hystate(repo, "advance", eid, "downloading", spec="-3600", timeout=60)
    assert moved.returncode == 0, moved.stderr
    assert not lock.exists()


def test_a_future_dated_lock_of_a_live_process_still_holds(repo: Path) -> None:
    """The other side: a lock whose owner runs is never broken, whatever its date."""
    eid = first_id(repo)
    holder = subprocess.Popen(
        [
            *HYSTATE[:1],
            "-c",
            "import sys, time\n"
            "from hystate.core.locks import StateLock\n"
            "lock = StateLock(sys.argv[1], timeout=5)\nlock.acquire()\n"
            "print('held', flush=True)\ntime.sleep(60)\n",
            str(repo / "processed" / ".locks" / f"{eid}.lock"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        lock = repo / "processed" / ".locks" / f"{eid}.lock"
        future = time.time() + 86_400
        os.utime(lock, (future, future))
        config = repo / "hystate.yaml"
        config.write_text("state_management:\n  locks:\n    timeout: 1\n")
        busy = hystate(repo, "advance", eid, "downloading", spec="-3600", timeout=60)
        assert busy.returncode == 6, busy.stderr
        assert lock.exists()
    finally:
        holder.kill()
        holder.wait()
