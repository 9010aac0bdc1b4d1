"""CPU and wall time of one transition through the API, and where it goes (cProfile).

Builds one state repository (``common.build_repo``), then makes ``--count`` transitions
(discovered -> downloading of distinct episodes) with ``StateManager.update_state``; prints the
median wall time, the CPU per transition (``time.process_time``: this process only, no git
child runs on this path; user and system apart: system time grows with the disk's contention)
and, with ``--profile``, cProfile's top functions by own time.

    python bench/transition_cpu.py                       # 1,000 episodes, core.fsync as is
    python bench/transition_cpu.py --fsync-none --profile 25
    python bench/transition_cpu.py --episodes 100000 --split-index
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import build_repo, episode_ids, git, isolate_git

from hystate.manager import StateManager


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--fsync-none", action="store_true", help="git config core.fsync none")
    parser.add_argument("--profile", type=int, default=0, help="print the top N by own time")
    parser.add_argument(
        "--split-index", action="store_true", help="git config core.splitIndex true"
    )
    args = parser.parse_args()
    isolate_git()
    with tempfile.TemporaryDirectory(prefix="hystate-cpu-") as tmp:
        root = Path(tmp) / "repo"
        build_repo(
            root, args.episodes, config=[("core.splitIndex", "true")] if args.split_index else []
        )
        if args.fsync_none:
            git(root, "config", "core.fsync", "none")
        time.sleep(2.1)  # config and attributes older than any racy window, as in real use
        ids = episode_ids(args.episodes)[:: max(1, args.episodes // (args.count + 10))]
        warm, measured = ids[:5], ids[5 : args.count + 5]
        manager = StateManager(cwd=root, worker="bench")
        for eid in warm:
            manager.update_state(eid, "downloading")
        profiler = cProfile.Profile() if args.profile else None
        walls = []
        cpu_start = time.process_time()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        for eid in measured:
            started = time.perf_counter()
            if profiler is not None:
                profiler.enable()
            manager.update_state(eid, "downloading")
            if profiler is not None:
                profiler.disable()
            walls.append(time.perf_counter() - started)
        cpu = (time.process_time() - cpu_start) / len(measured)
        spent = resource.getrusage(resource.RUSAGE_SELF)
        user = (spent.ru_utime - usage.ru_utime) / len(measured)
        system = (spent.ru_stime - usage.ru_stime) / len(measured)
        print(
            f"{args.episodes:,} episodes, {len(measured)} transitions"
            f"{' (core.fsync none)' if args.fsync_none else ''}"
            f"{' (split index)' if args.split_index else ''}: wall median "
            f"{statistics.median(walls) * 1000:.2f} ms, CPU {cpu * 1000:.2f} ms per transition"
            f" (user {user * 1000:.2f}, system {system * 1000:.2f})"
            + (" (profiled)" if profiler else ""),
            file=sys.stderr,
        )
        if profiler is not None:
            stats = pstats.Stats(profiler, stream=sys.stdout)
            stats.sort_stats("tottime").print_stats(args.profile)


if __name__ == "__main__":
    main()
