"""``fsck --repair --remove-orphans`` (issue 26) never removes what a live worker is writing: a
file named for an episode in an active stage under a live lease, a file a process has open,
or one younger than the grace period; a real, old orphan still goes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import run_hystate


def old(path: Path, days: float = 2) -> Path:
    when = time.time() - days * 86_400
    os.utime(path, (when, when))
    return path


def test_the_sweep_leaves_a_live_workers_files_alone(repo: Path) -> None:
    (repo / "hystate.yaml").write_text("state_management:\n  media:\n    directories: [audio]\n")
    audio = repo / "audio"
    audio.mkdir()
    claimed = run_hystate(repo, "next", "downloading", "--claim", "--json")
    assert claimed.returncode == 0, claimed.stderr
    eid = json.loads(claimed.stdout)[0]["episode_id"]
    # the worker's download, not yet pointed to (it advances once the file is complete)
    downloading = audio / f"{eid}.mp3.part"
    downloading.write_bytes(b"ID3 half")
    old(downloading)
    # a file another process is still writing, named for no episode
    writer_file = audio / "incoming.mp3"
    writer_file.write_bytes(b"x")
    old(writer_file)
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys,time\nf=open(sys.argv[1],'ab')\nprint('open',flush=True)\ntime.sleep(60)",
            str(writer_file),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "open"
        fresh = audio / "just-arrived.mp3"  # younger than the grace period
        fresh.write_bytes(b"x")
        future = audio / "future.mp3"  # dated in the future (a stepped clock): young too
        future.write_bytes(b"x")
        ahead = time.time() + 86_400
        os.utime(future, (ahead, ahead))
        orphan = audio / "forgotten.mp3"
        orphan.write_bytes(b"x")
        old(orphan)
        swept = run_hystate(repo, "fsck", "--repair", "--remove-orphans")
        assert swept.returncode == 1, swept.stdout + swept.stderr  # the kept ones remain
        assert not orphan.exists(), swept.stdout
        for kept in (downloading, writer_file, fresh, future):
            assert kept.exists(), (kept.name, swept.stdout)
        assert "live lease" in swept.stdout and "open in a running process" in swept.stdout
        assert "younger than" in swept.stdout
    finally:
        writer.kill()
        writer.wait()
    # once the worker is done with it, its file is an orphan like any other (after the grace)
    swept = run_hystate(repo, "fsck", "--repair", "--remove-orphans")
    assert not writer_file.exists(), swept.stdout
    assert downloading.exists()  # the lease still holds
