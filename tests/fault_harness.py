"""kill -9 at random moments, many times, with `fsck --repair` between rounds; then check that
nothing acknowledged was lost and the repository is sound. Used by tests/test_faults.py (50
kills) and bench/faults.py (the long version)."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

WORKER = r"""
import sys
from hystate import StateManager, IllegalTransition, LockBusy, InvalidData, GitError
STEPS = {
    "discovered": ("downloading", {}),
    "downloading": ("downloaded", {"files.audio_file": "audio/x.mp3", "metrics.audio_size": 1}),
    "downloaded": ("converting", {}),
    "converting": ("converted", {"files.video_file": "video/x.mp4"}),
    "converted": ("uploading", {}),
    "uploading": ("uploaded", {"youtube.video_id": "abcDEF12345"}),
    "uploaded": ("scheduled", {"youtube.scheduled_date": "2027-01-01T18:00:00+00:00"}),
    "scheduled": ("published", {"youtube.published_date": "2027-01-01T18:00:00+00:00"}),
}
manager = StateManager(cwd=sys.argv[1])
ids = sys.argv[2:]
while ids:
    for eid in list(ids):
        episode = manager.get_episode_state(eid)
        stage = episode.stage.value
        try:
            if stage == "failed":
                result = manager.update_state(eid, episode.failed_stage, force=True)
            elif stage in STEPS:
                to, fields = STEPS[stage]
                result = manager.update_state(eid, to, fields=fields)
            else:
                ids.remove(eid)
                continue
        except IllegalTransition:  # out of retries: give up on it
            manager.retry([eid], now=True)
            continue
        except (LockBusy, GitError) as exc:
            continue
        print(f"ACK {eid} {result.episode.stage.value} {result.commit}", flush=True)
"""


@dataclass
class FaultRun:
    kills: int = 0
    rounds: int = 0
    acks: list[tuple[str, str, str]] = field(default_factory=list)
    repairs: int = 0


def _pending(repo: Path, batch: int) -> list[str]:
    """Episodes with work left; when none, a fresh batch is discovered so workers stay busy."""
    from hystate.discover import Record
    from hystate.manager import StateManager

    manager = StateManager(cwd=repo, worker="harness")
    left = [
        e.episode_id
        for e in manager.list_episodes()
        if e.stage.value not in ("published", "skipped")
    ]
    if left:
        return left
    start = manager.count_all_episodes()
    records = [
        Record(f"fault-{n:05d}", f"Fault batch episode {n}", "2012-06-06")
        for n in range(start, start + batch)
    ]
    return manager.discover(records).added


def run_faults(
    repo: Path, *, kills: int, workers: int = 2, batch: int = 20, seed: int = 7
) -> FaultRun:
    from hystate.manager import StateManager
    from hystate.recovery import RecoveryManager

    rng = random.Random(seed)
    run = FaultRun()
    while run.kills < kills:
        ids = _pending(repo, batch)
        groups = [ids[i::workers] for i in range(workers)]
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", WORKER, str(repo), *group], stdout=subprocess.PIPE, text=True
            )
            for group in groups
        ]
        time.sleep(rng.uniform(0.1, 0.6))
        victims = [p for p in procs if rng.random() < 0.8] or procs[:1]
        for proc in victims:
            proc.kill()  # SIGKILL: no cleanup at all
        for proc in procs:
            if proc not in victims:
                proc.kill()
            out, _ = proc.communicate()
            for line in out.splitlines():
                if line.startswith("ACK "):
                    _, eid, stage, commit = line.split()
                    run.acks.append((eid, stage, commit))
            if proc.returncode == -9:
                run.kills += 1
        run.rounds += 1
        findings = RecoveryManager(StateManager(cwd=repo)).fsck(repair=True)
        run.repairs += sum(1 for f in findings if f.repaired and f.kind != "cache")
    return run


def check_sound(repo: Path, run: FaultRun) -> list[str]:
    """Every problem found; empty when everything the suite promises holds."""
    from hystate.manager import StateManager

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=False)

    problems = []
    for eid, stage, commit in run.acks:
        if git("merge-base", "--is-ancestor", commit, "HEAD").returncode != 0:
            problems.append(f"acknowledged {eid} -> {stage} ({commit}) is not in HEAD's history")
            continue
        trailers = git(
            "log", "-1", "--format=%(trailers:key=Hystate-To,valueonly)", commit
        ).stdout.strip()
        if trailers != stage:
            problems.append(f"commit {commit} records {trailers!r}, acknowledged {stage}")
    manager = StateManager(cwd=repo)
    problems += [f"invalid: {p}" for p in manager.validate()]
    status = git("status", "--porcelain", "--", "processed").stdout
    if status:
        problems.append(f"work tree or index differs from HEAD: {status[:200]}")
    if git("diff", "--cached", "--name-only").stdout:
        problems.append("index differs from HEAD")
    # dangling objects are expected: a worker killed after writing a commit object but
    # before moving HEAD leaves it unreachable (git gc prunes it); anything else is a problem
    fsck = git("fsck", "--strict", "--no-progress", "--no-dangling")
    if fsck.returncode != 0 or fsck.stdout.strip():
        problems.append(f"git fsck: {fsck.stdout or fsck.stderr}")
    cached = sorted(e.data["episode_id"] + e.data["stage"] for e in manager.list_episodes())
    fresh = sorted(e.data["episode_id"] + e.data["stage"] for e in manager.iter_episodes())
    if cached != fresh:
        problems.append("caches differ from the tree")
    return problems
