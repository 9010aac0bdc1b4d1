"""What ``fsck`` finds in the work tree that is not hystate's: media files no episode points to
(listed; removed only when asked, never a tracked file, never through a symlink, never inside
another repository) and cache-named files in the state folder that hystate did not make (its
caches live in ``.git/hystate/cache/``); lock paths that are not lock files."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from hystate.core.foreign_locks import foreign_lock_files, remove_foreign_lock
from hystate.core.model import EpisodeState, ProcessingStage
from hystate.engine import leases
from hystate.fsck.findings import Finding
from hystate.review import validate

if TYPE_CHECKING:
    from hystate.engine.workspace import Workspace
S = ProcessingStage
ORPHAN_GRACE = 6 * 3600  # seconds: a media file no episode points to is removed only when older


def orphans(ws: Workspace, episodes: Iterable[EpisodeState], *, remove: bool) -> list[Finding]:
    """Media files no episode points to. The folders were confined when the config was
    loaded (inside the work tree, not its root, .git or the state folder); here nothing is
    followed through a symlink, nested repositories and tracked files are never removed."""
    root = ws.repo.root
    folders = [root / d for d in ws.config.get("media.directories")]
    if not folders:
        return []
    referenced: set[str] = set()
    found = []
    for episode in episodes:
        for key in ("audio_file", "video_file", "transcript_file"):
            value = episode.data["files"][key]
            if not value:
                continue
            target = Path(os.path.normpath(root / value))
            referenced.add(str(target))
            inside = any(_is_within(target, f) for f in folders)
            if (
                inside
                and not os.path.lexists(target)
                and episode.stage not in (S.PUBLISHED, S.SKIPPED)
            ):
                found.append(
                    Finding(
                        "missing-media", value, f"{episode.episode_id} points to a missing file"
                    )
                )
    working = _working(ws, episodes) if remove else {}
    opened = _open_files() if remove else None
    now = time.time()
    for folder in folders:
        if not folder.is_dir() or folder.is_symlink():
            continue
        tracked = _tracked(ws, folder)
        for media in _media_files(folder):
            if str(media) in referenced:
                continue
            rel = ws.repo.relpath(media)
            finding = Finding("orphan", rel, "media file of no episode")
            kept = _not_removable(media)
            if kept:
                finding.message += f" ({kept})"
            elif rel in tracked:
                finding.message += " (tracked in git: not removed)"
            elif remove:
                busy = _in_use(media, working, opened, now)
                if busy:
                    finding.message += f" ({busy})"
                else:
                    media.unlink()
                    finding.repaired, finding.action = True, "removed"
            found.append(finding)
    return found


def _working(ws: Workspace, episodes: Iterable[EpisodeState]) -> dict[str, str]:
    """Episode id -> its worker, for every episode in an active stage under a live lease: a
    file named for one of them is what that worker is writing (it points to it only when it
    advances), never an orphan."""
    now = datetime.now(UTC)
    live = {}
    for episode in episodes:
        if episode.stage.is_active and leases.stuck_reason(ws, episode, now) is None:
            live[episode.episode_id] = episode.worker or "its worker"
    return live


def _open_files() -> set[tuple[int, int]] | None:
    """(st_dev, st_ino) of every file a process has open (Linux's /proc, looked at once per
    sweep); None without /proc (then every file counts as open)."""
    proc = Path("/proc")
    if not (proc / "self" / "fd").is_dir():
        return None
    found = set()
    for pid_dir in proc.iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            links = list((pid_dir / "fd").iterdir())
        except OSError:
            continue  # gone, or not ours to look at
        for link in links:
            try:
                st = os.stat(link)
            except OSError:
                continue
            found.add((st.st_dev, st.st_ino))
    return found


def _in_use(
    path: Path, working: dict[str, str], opened: set[tuple[int, int]] | None, now: float
) -> str:
    """Why a media file no episode points to is kept all the same ("" when it may go): it is
    named for an episode a live worker holds, a process has it open, or it is younger than
    ``ORPHAN_GRACE`` (by its date: one dated in the future counts as young)."""
    for episode_id, worker in working.items():
        if episode_id in path.name:
            return f"{episode_id} is being worked on by {worker} under a live lease: kept"
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return "gone"
    if opened is None or (info.st_dev, info.st_ino) in opened:
        return "open in a running process: kept"
    if now - info.st_mtime < ORPHAN_GRACE:
        return f"younger than {ORPHAN_GRACE // 3600} hours: kept"
    return ""


def _not_removable(path: Path) -> str:
    """Why ``--remove-orphans`` leaves ``path`` alone ("" when it may go): only a regular file
    of the user running hystate is ever removed; a symlink is never followed, a FIFO, socket
    or device never touched."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return "gone"
    if stat.S_ISLNK(info.st_mode):
        return "a symlink: never followed, never removed"
    if not stat.S_ISREG(info.st_mode):
        what = "a FIFO" if stat.S_ISFIFO(info.st_mode) else "a socket or device"
        return f"{what}, not a regular file: never removed"
    if info.st_uid != os.geteuid():
        return f"owned by uid {info.st_uid}, not this user: not removed"
    return ""


def _tracked(ws: Workspace, folder: Path) -> set[str]:
    out = ws.repo.git("ls-files", "-z", "--", ws.repo.relpath(folder), check=False)
    return set(filter(None, out.split("\0")))


def foreign_locks(ws: Workspace, *, repair: bool) -> list[Finding]:
    """Lock paths that are folders, FIFOs or symlinks: no hystate made them, and each refuses
    work on its episode (exit 6) until it is gone. ``repair`` removes an empty folder or a FIFO
    no live process has open; anything else is listed for a person."""
    found = []
    for lock, what in foreign_lock_files(ws.locks_dir):
        finding = Finding("foreign-lock", ws.repo.relpath(lock), f"is {what}, not a lock")
        if repair:
            kept = remove_foreign_lock(lock)
            if kept is None:
                finding.repaired, finding.action = True, "removed"
            else:
                finding.message += f"; kept: {kept}"
        found.append(finding)
    return found


def foreign_caches(ws: Workspace, *, repair: bool) -> list[Finding]:
    """Cache-named files in the state folder: hystate never made them (its caches live in
    .git/hystate/cache/) and never opens them. Links and tracked files are reported by
    validate; a plain untracked one (planted, or left by an older hystate) is listed, and
    removed with --repair (only the name: nothing is written through it)."""
    database = str(ws.config.get("database_file"))
    names = [database, *(f"{database}-{s}" for s in ("wal", "shm", "journal")), "index.json"]
    tracked = validate.tracked_caches(ws)
    found = []
    for name in names:
        path = ws.store.state_dir / name
        rel = ws.store.name(path)
        if path.is_symlink() or not path.is_file() or any(p.file == rel for p in tracked):
            continue
        finding = Finding(
            "cache", rel, "not hystate's cache (those live in .git/hystate/cache/); never read"
        )
        if repair:
            path.unlink(missing_ok=True)
            finding.repaired, finding.action = True, "removed"
        found.append(finding)
    return found


def _media_files(folder: Path) -> list[Path]:
    """Files (and symlinks) under ``folder``, never descending through a symlink, into ``.git``
    or into another repository."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        here = Path(dirpath)
        keep = []
        for name in dirnames:
            sub = here / name
            if sub.is_symlink():
                filenames.append(name)  # listed as a symlink, never entered
            elif name.casefold() != ".git" and not os.path.lexists(sub / ".git"):
                keep.append(name)
        dirnames[:] = keep
        found += [here / n for n in filenames if n.casefold() != ".git"]
    return sorted(found)


def _is_within(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
    except ValueError:
        return False
    return True
