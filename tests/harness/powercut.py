"""Power cuts (issue 26): images of a repository (work tree and ``.git``) taken while real worker
processes move episodes, then what a power cut on ext4 with default options leaves applied.

The loss model: after ``sync()`` everything on disk is safe. A file whose path existed then and
was renamed over since (HEAD's branch, the index, an episode file) keeps its new content
(ext4's auto_da_alloc flushes a file renamed over another); a file created since that was never
fsynced comes back empty (recent loose objects, new locks, new cache files). The workers run
with ``core.fsync=none``: nothing they create is fsynced but the episode files (hystate always
syncs those), the worst case a repository can be in. Each image is taken with every worker
stopped (SIGSTOP), so it is one instant, as a power cut is.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.harness.worker_steps import with_steps

WORKER = with_steps(
    """
import sys
from hystate.manager import StateManager
STEPS = ...
repo, name, ids = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
manager = StateManager(cwd=repo, worker=name)
print("ready", flush=True)
while True:
    moved = False
    for eid in ids:
        stage = manager.episode(eid).stage.value
        if stage in STEPS:
            to, fields = STEPS[stage]
            manager.update_state(eid, to, fields=fields)
            moved = True
    if not moved:
        break
print("done", flush=True)
"""
)


def synced_files(repo: Path) -> dict[str, int]:
    """After ``sync()``: every file under ``repo`` (relative path -> inode), all safe on disk."""
    os.sync()
    found = {}
    for folder, _, names in os.walk(repo):
        for name in names:
            path = Path(folder) / name
            found[str(path.relative_to(repo))] = os.lstat(path).st_ino
    return found


def start_workers(repo: Path, groups: list[list[str]]) -> list[subprocess.Popen[str]]:
    workers = []
    for i, ids in enumerate(groups):
        proc = subprocess.Popen(
            [sys.executable, "-c", WORKER, str(repo), f"worker-{i}", ",".join(ids)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        workers.append(proc)
    for proc in workers:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return workers


def commits_since(repo: Path, base: str) -> int:
    out = subprocess.run(
        ["git", "rev-list", "--count", f"{base}..HEAD"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=False,
    )
    return int(out.stdout.strip() or 0)


def take_image(repo: Path, workers: list[subprocess.Popen[str]], image: Path) -> None:
    """A copy of ``repo`` at one instant: every worker stopped while it is made."""
    live = [w for w in workers if w.poll() is None]
    for proc in live:
        os.kill(proc.pid, signal.SIGSTOP)
    try:
        subprocess.run(["cp", "-a", f"{repo}/.", str(image)], check=True)
    finally:
        for proc in live:
            os.kill(proc.pid, signal.SIGCONT)


def cut_power(image: Path, synced: dict[str, int]) -> list[str]:
    """Apply the loss model to ``image``; the files that came back empty. An inode is what
    the disk keeps or loses, not a name: one that also has a name renamed over an old file
    (hystate's lock owner files are hard links of its locks, and so of the ref a lock became)
    keeps its content under every name; a new one loses it under every name."""
    files = []
    for folder, _, names in os.walk(image):
        files += [Path(folder) / name for name in names]
    kept = {
        os.lstat(path).st_ino
        for path in files
        if str(path.relative_to(image)) in synced
        or (path.match("processed/*/*.yaml") and not path.is_symlink())
    }
    emptied = []
    for path in files:
        if path.is_symlink() or os.lstat(path).st_ino in kept:
            continue  # there at the sync, renamed over such a file, or fsynced: kept
        if path.stat().st_size:
            os.chmod(path, 0o644)  # git makes objects read-only; the loss does not care
            os.truncate(path, 0)
            emptied.append(str(path.relative_to(image)))
    return emptied


def images_while_working(
    repo: Path, out: Path, groups: list[list[str]], count: int, every: int
) -> list[Path]:
    """``count`` power-cut images of ``repo`` while workers move ``groups`` of episodes, one
    after about each ``every`` commits; the workers are killed at the end."""
    base = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.strip()
    synced = synced_files(repo)
    workers = start_workers(repo, groups)
    images = []
    try:
        for n in range(count):
            deadline = time.monotonic() + 120
            while commits_since(repo, base) < every * (n + 1) and time.monotonic() < deadline:
                if all(w.poll() is not None for w in workers):
                    break
                time.sleep(0.02)
            image = out / f"image-{n}"
            image.mkdir(parents=True)
            take_image(repo, workers, image)
            images.append(image)
    finally:
        for proc in workers:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    for image in images:
        cut_power(image, synced)
    return images
