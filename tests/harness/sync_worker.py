"""One pipeline worker process of the cluster test: claims through the remote, does no real
work, fails ~10% of the time, logs every acknowledged claim and step (JSON lines).

    python -m tests.harness.sync_worker ROOT NAME LOG SEED FAILURE_RATE DEADLINE SUBSET
"""

from __future__ import annotations

import faulthandler
import json
import os
import random
import signal
import sys
import time

NEXT = {"downloading": "downloaded", "converting": "converted", "uploading": "uploaded"}
FIELDS = {
    "downloaded": lambda i: {"files.audio_file": f"audio/{i}.mp3", "metrics.audio_size": 1000},
    "converted": lambda i: {"files.video_file": f"video/{i}.mp4"},
    "uploaded": lambda i: {"youtube.video_id": "dQw4w9WgXcQ"},
}


def main(
    root: str,
    name: str,
    log_path: str,
    seed: int,
    failure_rate: float,
    deadline: float,
    subset: int = 0,
) -> int:
    """``subset`` N > 0: only one episode in N goes on after downloaded (the others are
    skipped there), so a run takes every episode through a claim and some through all."""
    from hystate import StateManager
    from hystate.cluster.acks import TransitionDropped
    from hystate.core.errors import GitError, HystateError, LockBusy

    faulthandler.register(signal.SIGUSR1)  # the stacks, on stderr, of a worker that hangs
    rng = random.Random(seed)
    manager = StateManager(cwd=root, worker=name)
    log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def record(**event: object) -> None:
        os.write(log, (json.dumps({"w": name, "t": time.time(), **event}) + "\n").encode())

    def step(eid: str, frm: str, to: str, **kw: object) -> None:
        result = manager.update_state(eid, to, **kw) if to != "failed" else None
        if to == "failed":
            result = manager.fail(eid, "simulated failure")
        assert result is not None and result.changed
        at = result.episode.history[-1]["at"]
        record(ev="step", id=eid, frm=frm, to=to, at=at, pending=result.pending is not None)

    idle = 0
    stages = ["uploading", "converting", "downloading"]
    while time.time() < deadline and idle < 60:
        did = 0
        for stage in stages:
            try:
                results = manager.claim_next(stage, 6, worker=name)
            except TransitionDropped as exc:  # an earlier pending step was not kept: told
                record(ev="told", error=str(exc))
                continue
            except (GitError, LockBusy) as exc:
                record(ev="offline", stage=stage, error=str(exc)[:200])
                time.sleep(0.2)
                continue
            for r in results:
                eid = r.episode.episode_id
                record(ev="claim", id=eid, to=stage, at=r.episode.history[-1]["at"])
                did += 1
                try:
                    if rng.random() < failure_rate:
                        step(eid, stage, "failed")
                        continue
                    done = NEXT[stage]
                    step(eid, stage, done, fields=FIELDS[done](eid))
                    if done == "downloaded" and subset and sum(eid.encode()) % subset:
                        step(eid, done, "skipped", message="not in this run's subset")
                    if done == "uploaded":
                        when = "2020-01-01T00:00:00+00:00"
                        step(eid, done, "scheduled", fields={"youtube.scheduled_date": when})
                        pub = {"youtube.published_date": "2020-01-01T00:00:01+00:00"}
                        step(eid, "scheduled", "published", fields=pub)
                except TransitionDropped as exc:
                    record(ev="told", error=str(exc))
                except HystateError as exc:  # logged; the invariants are checked afterwards
                    record(ev="error", id=eid, error=str(exc)[:300])
        if did:
            idle = 0
            continue
        counts = manager.count_by_stage()
        if counts["published"] + counts["skipped"] == sum(counts.values()):
            break
        idle += 1
        time.sleep(0.1 + rng.random() * 0.2)
    record(ev="exit")
    return 0


if __name__ == "__main__":
    a = sys.argv[1:]
    sys.exit(main(a[0], a[1], a[2], int(a[3]), float(a[4]), float(a[5]), int(a[6])))
