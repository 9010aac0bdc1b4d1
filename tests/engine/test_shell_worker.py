"""A pipeline worker written in shell, calling hystate through `sh -c` for every step, while
`hystate fsck --repair` runs every second: a live worker is never marked lost; a killed one's
episode is marked lost and claimed again once its lease runs out."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from hystate.core.model import ProcessingStage, parse_time
from hystate.engine.leases import current_lease
from hystate.manager import StateManager

LEASE = 6  # seconds: the stage timeouts of the test config
HYSTATE = f"{shlex.quote(sys.executable)} -m hystate.cli"

# One episode through every stage. Every hystate call goes through its own `sh -c`, so the
# process that enters a stage has exited long before the stage is done. The work of each
# active stage outlasts the lease; a heartbeat loop renews it every second.
WORKER = """\
set -e
id="$1"; name="$2"; work="$3"
hy() { sh -c "$HYSTATE $*"; }
stage() {  # stage ACTIVE DONE [--set ...]
    active="$1"; done_stage="$2"; shift 2
    out=$(hy advance "$id" "$active" --worker "$name")
    export HYSTATE_LEASE="${out##*lease }"   # the stage's token, for the heartbeats and the end
    ( while sleep 1; do hy heartbeat "$id" --worker "$name" >/dev/null || exit 0; done ) &
    beat=$!
    sleep "$work"                      # the download, conversion or upload
    kill "$beat"; wait "$beat" 2>/dev/null || true
    hy advance "$id" "$done_stage" "$@" >/dev/null
}
stage downloading downloaded --set files.audio_file=audio/"$id".mp3
stage converting converted --set files.video_file=video/"$id".mp4
stage uploading uploaded --set youtube.video_id=dQw4w9WgXcQ
hy advance "$id" scheduled --set youtube.scheduled_date=2020-01-01T18:00:00+00:00 >/dev/null
hy advance "$id" published --set youtube.published_date=2020-01-01T18:00:05+00:00 >/dev/null
echo "worker $name: $id published"
"""


class FsckLoop(threading.Thread):
    """`hystate fsck --repair --json` once a second; keeps every stuck finding it repaired."""

    def __init__(self, repo: Path) -> None:
        super().__init__(daemon=True)
        self.repo = repo
        self.stop = threading.Event()
        self.lost: list[dict[str, Any]] = []
        self.runs = 0

    def run(self) -> None:
        while not self.stop.is_set():
            proc = subprocess.run(
                [sys.executable, "-m", "hystate.cli", "fsck", "--repair", "--json"],
                cwd=self.repo, capture_output=True, text=True, timeout=120, check=False,
            )  # fmt: skip
            if proc.stdout.strip():
                findings = json.loads(proc.stdout)["findings"]
                self.lost += [f for f in findings if f["kind"] == "stuck" and f["repaired"]]
            self.runs += 1
            self.stop.wait(1.0)


def start_worker(
    repo: Path, script: Path, eid: str, name: str, work: float
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["sh", str(script), eid, name, str(work)],
        cwd=repo,
        env={**os.environ, "HYSTATE": HYSTATE},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, so the kill takes the heartbeats too
    )


@pytest.mark.slow
def test_shell_worker_with_fsck_repair_every_second(repo: Path, tmp_path: Path) -> None:
    (repo / "hystate.yaml").write_text(
        "state_management:\n  recovery:\n    auto_resume: true\n    retry_delay: 0\n"
        f"    stage_timeouts: {{downloading: {LEASE}, converting: {LEASE}, uploading: {LEASE}}}\n"
    )
    script = tmp_path / "worker.sh"
    script.write_text(WORKER)
    manager = StateManager(cwd=repo)
    oldest, steady = [e.episode_id for e in manager.list_episodes()][:2]
    fsck = FsckLoop(repo)
    fsck.start()
    try:
        # 1. a live worker, each active stage 1.5 leases long: never marked lost
        worker = start_worker(repo, script, steady, "sh-worker-1", LEASE * 1.5)
        out, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err
        assert f"{steady} published" in out
        episode = manager.episode(steady)
        assert episode.stage is ProcessingStage.PUBLISHED and episode.error_history == []
        # (fsck ran during the lease-long stages: at least twice, however loaded the machine)
        assert fsck.lost == [] and fsck.runs >= 2

        # 2. a worker killed mid-download: lost once its lease ran out, then claimed again
        for other in [e.episode_id for e in manager.list_episodes(["discovered"])]:
            if other != oldest:
                manager.skip(other, "not part of this test")  # the lost one is the only work
        doomed = start_worker(repo, script, oldest, "sh-worker-2", 600)
        while manager.episode(oldest).stage is not ProcessingStage.DOWNLOADING:
            assert doomed.poll() is None, doomed.stderr.read() if doomed.stderr else ""
            time.sleep(0.1)
        time.sleep(2.5)  # a couple of heartbeats
        os.killpg(doomed.pid, signal.SIGKILL)
        doomed.wait()
        killed = time.time()
        # the lease as the dead worker left it (its last renewal: how long ago depends on the
        # machine's load, so the checks below count from its expiry, not from the kill)
        lease = current_lease(manager, manager.episode(oldest))
        assert lease is not None and lease.worker == "sh-worker-2"
        expires = parse_time(lease.expires_at).timestamp()
        claimed = None
        while claimed is None and time.time() - killed < 10 * LEASE:
            proc = subprocess.run(
                ["sh", "-c", f"{HYSTATE} next downloading --claim --worker sh-worker-3 --json"],
                cwd=repo, capture_output=True, text=True, timeout=120, check=False,
            )  # fmt: skip
            assert proc.returncode == 0, proc.stderr
            got = [e["episode_id"] for e in json.loads(proc.stdout)]
            claimed = time.time() if got == [oldest] else None
            assert got in ([], [oldest]), got
            time.sleep(0.5)
    finally:
        fsck.stop.set()
        fsck.join()
    assert claimed is not None, "the killed worker's episode was never claimed again"
    episode = manager.episode(oldest)
    assert episode.stage is ProcessingStage.DOWNLOADING and episode.worker == "sh-worker-3"
    assert episode.attempts["download"] == 2
    [lost] = episode.error_history
    assert lost["error"].startswith("worker lost: lease of worker sh-worker-2 expired")
    # The lease was honoured to its end, and the episode was marked lost and claimed again
    # within one more lease of its expiry (slack for the 1 s fsck period, the claim loop and
    # the second-resolution stamps of the file).
    marked = parse_time(lost["at"]).timestamp()
    assert expires - 1 <= marked <= expires + LEASE + 1, (marked - expires, marked - killed)
    assert claimed - expires <= LEASE + 2, claimed - expires
