"""1,000 transitions from 4 worker processes, each publishing after its commits, while the real
redis-server is restarted (SIGTERM) and later killed with SIGKILL (append-only file, fsync on
every write): the stream ends with exactly one event per transition, in commit order."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hystate.manager import StateManager
from tests.conftest import catalog_rows, git, run_hystate, write_search_json
from tests.harness.redis import RedisServer, needs_redis

pytestmark = [needs_redis, pytest.mark.slow]

EPISODES, WORKERS, STEPS = 125, 4, 8  # 125 episodes x 8 transitions = 1,000

WORKER = """
import sys
from hystate.manager import StateManager

root, name, ids = sys.argv[1], sys.argv[2], sys.argv[3:]
manager = StateManager(cwd=root, worker=name)
for eid in ids:
    for stage, fields in [
        ("downloading", {}),
        ("downloaded", {"files.audio_file": f"audio/{eid}.mp3"}),
        ("converting", {}),
        ("converted", {"files.video_file": f"video/{eid}.mp4"}),
        ("uploading", {}),
        ("uploaded", {"youtube.video_id": "dQw4w9WgXcQ"}),
        ("scheduled", {"youtube.scheduled_date": "2027-01-01T18:00:00+00:00"}),
        ("published", {"youtube.published_date": "2027-01-01T18:00:05+00:00"}),
    ]:
        manager.update_state(eid, stage, fields=fields)
"""


def commit_count(repo: Path) -> int:
    return int(git(repo, "rev-list", "--count", "HEAD").strip())


def wait_for(condition, what: str, timeout: float = 300.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_1000_transitions_4_workers_broker_restarted_and_killed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        root = tmp_path / "state"
        root.mkdir()
        git(root, "init", "-q", "-b", "main")
        monkeypatch.chdir(root)
        manager = StateManager(cwd=root, worker="setup")
        manager.ensure_layout()
        from hystate.engine.catalog import read_records

        catalog = write_search_json(tmp_path / "catalog.json", catalog_rows(EPISODES))
        manager.discover(read_records(catalog), source="catalog.json")
        (root / "hystate.yaml").write_text(
            f"state_management:\n  events:\n    enabled: true\n    url: {server.url}\n"
            "    timeout: 5\n"
        )
        ids = sorted(p.stem for p in manager.store.iter_paths())
        start = commit_count(root)
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", WORKER, str(root), f"worker-{n}", *ids[n::WORKERS]],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for n in range(WORKERS)
        ]
        # a clean restart a quarter of the way, a kill -9 at 60 %; workers go on committing
        # while the broker is away
        for at, sig in ((250, signal.SIGTERM), (600, signal.SIGKILL)):
            wait_for(lambda at=at: commit_count(root) - start >= at, f"{at} transitions")
            server.stop(sig)
            down = commit_count(root)
            wait_for(lambda down=down: commit_count(root) - down >= 20, "transitions while down")
            server.start()
        for proc in procs:
            _, err = proc.communicate(timeout=600)
            assert proc.returncode == 0, err.decode()[-2000:]
        assert commit_count(root) - start == EPISODES * STEPS
        before = server.client().xlen("hystate:transitions")
        print(f"\nstream before the final publish: {before} of {EPISODES * (STEPS + 1)}")
        proc = run_hystate(root, "events", "publish", timeout=300)
        print(proc.stdout.strip())
        assert proc.returncode == 0, proc.stderr

        stream = server.client().xrange("hystate:transitions")
        events = [fields for _, fields in stream]
        moves = [e for e in events if e["to"] != "discovered"]
        assert len(moves) == EPISODES * STEPS  # none lost, none duplicated
        found = git(
            root,
            "log",
            "--first-parent",
            "--reverse",
            "--format=%H %(trailers:key=Hystate-Episode,valueonly)",
        )
        expected = [line.split()[0] for line in found.splitlines() if len(line.split()) == 2]
        assert [e["commit"] for e in moves] == expected  # in commit order
        assert sorted(e["episode_id"] for e in events if e["to"] == "discovered") == ids
        assert len({(e["episode_id"], e["at"], e["from"], e["to"]) for e in moves}) == len(moves)
        for eid in ids[:10]:  # and so in each episode's own order
            steps = [e["to"] for e in moves if e["episode_id"] == eid]
            history = StateManager(cwd=root).episode(eid).data["history"]
            assert steps == [h["to"] for h in history[1:]]
    finally:
        server.stop(signal.SIGKILL)
