"""What syncing hystate's objects and branch costs per transition (issue 26), same run, same
repositories: transitions (discovered -> downloading of distinct episodes) through the Python
API with

  - none:     ``core.fsync=none`` (only the episode file is fsynced, as before);
  - default:  hystate's default (its loose objects and the branch it moves are fsynced);
  - all:      ``core.fsync=all`` (the index too).

The three are interleaved transition by transition so that the machine's load falls on each
alike. Prints per-transition medians (ms) and the extra cost over ``none``.

    python bench/durability.py                  # 1,000 episodes, 150 transitions each
    python bench/durability.py --sizes 1000 10000 --json out.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from common import build_repo, emit, episode_ids, git, isolate_git, machine, median_ms

from hystate.manager import StateManager

SETTINGS = {"none": "none", "default": None, "all": "all"}


def run(size: int, count: int, base: Path) -> dict[str, float]:
    managers = {}
    for name, value in SETTINGS.items():
        root = base / f"{name}-{size}"
        build_repo(root, size)
        if value is not None:
            git(root, "config", "core.fsync", value)
        managers[name] = StateManager(cwd=root, worker="bench")
    times: dict[str, list[float]] = {name: [] for name in SETTINGS}
    for eid in episode_ids(size)[:count]:
        for name, manager in managers.items():
            start = time.perf_counter()
            manager.update_state(eid, "downloading")
            times[name].append(time.perf_counter() - start)
    medians = {name: median_ms(values) for name, values in times.items()}
    return {
        **{f"{name}_ms": value for name, value in medians.items()},
        "default_extra_ms": round(medians["default"] - medians["none"], 1),
        "all_extra_ms": round(medians["all"] - medians["none"], 1),
    }


def one_fsync(base: Path, count: int = 50) -> float:
    """Median ms of writing a new 200-byte file and fsyncing it: what one synced object costs
    on this disk (the figures above are a handful of these)."""
    import os

    times = []
    for i in range(count):
        path = base / f"probe-{i}"
        start = time.perf_counter()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, b"x" * 200)
        os.fsync(fd)
        os.close(fd)
        times.append(time.perf_counter() - start)
    return median_ms(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000])
    parser.add_argument("--count", type=int, default=150)
    parser.add_argument("--dir", type=Path, help="where to build the repositories (its disk)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    isolate_git()
    result: dict[str, object] = {"machine": machine(), "transitions": args.count}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        result["one_fsync_ms"] = one_fsync(Path(tmp))
        for size in args.sizes:
            result[str(size)] = run(size, args.count, Path(tmp))
            print(f"{size}: {result[str(size)]}", file=sys.stderr)
    emit(result, args.json)


if __name__ == "__main__":
    main()
