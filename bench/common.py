"""What the benchmarks share: building synthetic state repositories, timing processes."""

from __future__ import annotations

import copy
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hystate.core.model import EpisodeState, ProcessingStage, new_episode, now_utc
from hystate.core.rules import Change, apply_change
from hystate.core.store import GITATTRIBUTES, GITIGNORE, dump

IDENT = {
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@localhost",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@localhost",
}
YEARS = 20  # 2004-2023: 5,000 episodes a year folder at 100,000
S = ProcessingStage


def isolate_git() -> None:
    os.environ.update({"GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"})


def git(root: Path, *args: str) -> str:
    env = {**os.environ, **IDENT}
    return subprocess.run(
        ["git", *args], cwd=root, capture_output=True, text=True, env=env, check=True
    ).stdout


def episode_ids(n: int) -> list[str]:
    return [f"hy0_hooting_yard_{2004 + i % YEARS}-{1 + i % 12:02d}-{i:06d}" for i in range(n)]


def _walk(stages: list[tuple[S, dict[str, Any]]]) -> dict[str, Any]:
    episode = EpisodeState(
        new_episode("template", title="t", date="2004-01-01", at=now_utc(), by="bench")
    )
    for stage, fields in stages:
        change = Change(
            stage,
            now_utc(),
            "bench",
            worker="bench",
            fields=[(tuple(k.split(".")), v) for k, v in fields.items()],
        )
        if stage is S.FAILED:
            change.error = "HTTP 503 Service Unavailable"
        episode = EpisodeState(apply_change(episode, change))
    return episode.data


def stage_templates() -> list[dict[str, Any]]:
    """One valid document per stage of a realistic mix (walked through the real rules)."""
    audio = {"files.audio_file": "audio/x.mp3", "metrics.audio_size": 28_000_000}
    return [
        _walk([]),
        _walk([(S.DOWNLOADING, {}), (S.DOWNLOADED, audio)]),
        _walk([(S.DOWNLOADING, {}), (S.FAILED, {})]),
        _walk([(S.DOWNLOADING, {}), (S.DOWNLOADED, audio), (S.CONVERTING, {}), (S.CONVERTED, {"files.video_file": "video/x.mp4"}),
               (S.UPLOADING, {}), (S.UPLOADED, {"youtube.video_id": "abcDEF12345"}),
               (S.SCHEDULED, {"youtube.scheduled_date": "2027-01-01T18:00:00+00:00"}),
               (S.PUBLISHED, {"youtube.published_date": "2027-01-01T18:00:00+00:00"})]),
        _walk([(S.SKIPPED, {})]),
    ]  # fmt: skip


def build_repo(
    root: Path, n: int, *, mixed: bool = False, config: list[tuple[str, str]] = ()
) -> None:  # type: ignore[assignment]
    """A state repository of ``n`` episodes in one commit, configured as `hystate init` does.
    ``mixed``: stages spread (70% discovered, 10% downloaded, 1% failed, 15% published, 4%
    skipped); otherwise all discovered."""
    root.mkdir(parents=True)
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "index.recordEndOfIndexEntries", "true")
    for key, value in config:
        git(root, "config", key, value)
    state = root / "processed"
    state.mkdir()
    (state / ".gitignore").write_text(GITIGNORE)
    (state / ".gitattributes").write_text(GITATTRIBUTES)
    templates = stage_templates()
    weights = [70, 10, 1, 15, 4] if mixed else [100, 0, 0, 0, 0]
    cycle = [t for t, w in zip(templates, weights, strict=True) for _ in range(w)]
    for i, eid in enumerate(episode_ids(n)):
        year = eid[17:21]
        doc = copy.deepcopy(cycle[i % len(cycle)])
        doc.update(
            episode_id=eid,
            archive_identifier=eid,
            date=f"{year}-01-01",
            title=f"Hooting Yard On The Air: {eid}",
        )
        folder = state / year
        folder.mkdir(exist_ok=True)
        (folder / f"{eid}.yaml").write_bytes(dump(doc))
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", f"{n} episodes")


def _tree_rss_kb(root_pid: int) -> int:
    """Resident memory of a process and all its descendants, from /proc."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as fh:
                fields = dict(line.split(":", 1) for line in fh if ":" in line)
        except OSError:
            continue
        parents[int(entry)] = int(fields.get("PPid", "0"))
        rss[int(entry)] = int(fields.get("VmRSS", "0 kB").split()[0])
    tree, frontier = {root_pid}, [root_pid]
    while frontier:
        pid = frontier.pop()
        for child, parent in parents.items():
            if parent == pid and child not in tree:
                tree.add(child)
                frontier.append(child)
    return sum(rss.get(pid, 0) for pid in tree)


def run_measured(args: list[str], cwd: Path, *, sample: bool = False) -> tuple[float, int]:
    """(wall seconds, peak MB) of one command. Peak: the process's own maximum RSS, or with
    ``sample`` the largest sum over the process and its children, sampled every 20 ms."""
    started = time.perf_counter()
    proc = subprocess.Popen(args, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak_kb = 0
    while sample and proc.poll() is None:
        peak_kb = max(peak_kb, _tree_rss_kb(proc.pid))
        time.sleep(0.02)
    _, status, usage = os.wait4(proc.pid, 0) if proc.returncode is None else (0, 0, None)
    code = proc.returncode if proc.returncode is not None else os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    if code != 0:
        raise RuntimeError(f"{args} failed: {proc.stderr.read().decode() if proc.stderr else ''}")
    own_kb = usage.ru_maxrss if usage is not None else 0
    return wall, max(peak_kb, own_kb) // 1024


def emit(result: dict[str, Any], path: Path | None) -> None:
    """Print a benchmark's figures, and save them where `--json` says."""
    import json

    print(json.dumps(result, indent=2))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")


def median_ms(values: list[float]) -> float:
    return round(statistics.median(values) * 1000, 1)


def machine() -> str:
    git_version = subprocess.run(
        ["git", "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, {git_version}"


def hystate_exe() -> str:
    import shutil

    return shutil.which("hystate", path=str(Path(sys.executable).parent)) or "hystate"
