"""Throughput with several worker processes (issue 29): transitions per second with 1 and 4
worker processes on one repository, each worker moving its own episodes (discovered ->
downloading) through a long-lived `StateManager`, one commit per transition.

Each worker makes one transition before the clock starts (its imports, its first read of the
index), then as many as it can in ``--seconds``; the figure is the total over the window. After
each run: exactly one commit per transition (`git rev-list --count`), and git's index in step
with HEAD and the work tree.

    python bench/workers.py                          # 10,000 and 100,000 episodes
    python bench/workers.py --sizes 10000 --seconds 5
    python bench/workers.py --sizes 10000 --ab /work/main . --rounds 3   # A/B, interleaved
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import build_repo, emit, episode_ids, git, isolate_git, machine

WORKER = """
import json, os, sys, time
sys.path.insert(0, {root!r})
from hystate.manager import StateManager
with open(sys.argv[1]) as fh:  # a file: 100,000 ids do not fit in a command line
    ids = json.load(fh)
start, stop = float(sys.argv[2]), float(sys.argv[3])
manager = StateManager(cwd={repo!r}, worker=sys.argv[4])
manager.update_state(ids.pop(), "downloading")  # warm: imports, the first read of the index
while time.time() < start:
    time.sleep(0.001)
done, last, cpu = 0, start, os.times()
while ids and time.time() < stop:
    manager.update_state(ids.pop(), "downloading")
    done += 1
    last = time.time()
used = [b - a for a, b in zip(cpu, os.times())]  # user, system: this process's CPU seconds
print(json.dumps({{"done": done, "warm": 1, "elapsed": last - start, "cpu": used[0] + used[1]}}))
"""


TREE = Path(__file__).resolve().parent.parent  # the hystate checkout the workers import


def run(
    repo: Path, ids: list[str], workers: int, seconds: float, tree: Path | None = None
) -> dict[str, Any]:
    """``workers`` processes for ``seconds``: transitions per second, and the checks."""
    before = int(git(repo, "rev-list", "--count", "HEAD"))
    code = WORKER.format(root=str(tree or TREE), repo=str(repo))
    share = len(ids) // workers
    start = time.time() + 1.5 + 0.5 * workers  # every worker warmed up by then
    stop = start + seconds
    procs = []
    for i in range(workers):
        mine = repo.parent / f"ids-{i}.json"
        mine.write_text(json.dumps(ids[i * share : (i + 1) * share]))
        args = [sys.executable, "-c", code, str(mine), str(start), str(stop), f"bench-{i}"]
        procs.append(subprocess.Popen(args, stdout=subprocess.PIPE, text=True))
    outs = [json.loads(p.communicate()[0]) for p in procs]
    if any(p.returncode for p in procs):
        raise RuntimeError("a worker failed")
    done = sum(o["done"] for o in outs)
    window = max([o["elapsed"] for o in outs] + [1e-9])  # a worker may run out of episodes
    commits = int(git(repo, "rev-list", "--count", "HEAD")) - before
    in_step = (
        not git(repo, "diff", "--cached", "--name-only").strip()
        and not git(repo, "--no-optional-locks", "status", "--porcelain", "--", "processed").strip()
    )
    return {
        "workers": workers,
        "transitions": done,
        "per_s": round(done / min(seconds, window), 1),
        # CPU (user + system) of the workers per transition: what 2 cores can afford
        "cpu_ms": round(1000 * sum(o["cpu"] for o in outs) / max(done, 1), 2),
        "tree": str(tree or TREE),
        "one_commit_each": commits == done + sum(o["warm"] for o in outs),
        "index_in_step": in_step,
    }


def one_size(tmp: Path, n: int, seconds: float, counts: list[int]) -> dict[str, Any]:
    print(f"[{n:,}] building a repository...", file=sys.stderr, flush=True)
    repo = tmp / f"repo-{n}"
    build_repo(repo, n)
    pool = episode_ids(n)[::-1]
    runs = []
    for workers in counts:
        take, pool = pool[: n // (2 * len(counts))], pool[n // (2 * len(counts)) :]
        result = run(repo, take, workers, seconds)
        print(f"[{n:,}] {result}", file=sys.stderr, flush=True)
        runs.append(result)
    one = runs[0]["per_s"] or 1
    return {
        "episodes": n,
        "runs": runs,
        "speedup": {str(r["workers"]): round(r["per_s"] / one, 2) for r in runs},
    }


def ab(
    tmp: Path, n: int, seconds: float, counts: list[int], trees: list[Path], rounds: int
) -> dict[str, Any]:
    """Each tree's workers on one repository, interleaved (tree A, tree B, A, B...) for
    ``rounds``: the ratios of one run on a shared machine."""
    print(f"[{n:,}] building a repository...", file=sys.stderr, flush=True)
    repo = tmp / f"repo-{n}"
    build_repo(repo, n)
    pool = episode_ids(n)[::-1]
    share = n // (rounds * len(trees) * len(counts) + 1)
    runs: dict[str, dict[str, list[float]]] = {str(t): {str(c): [] for c in counts} for t in trees}
    cpu: dict[str, dict[str, list[float]]] = {str(t): {str(c): [] for c in counts} for t in trees}
    loads = []
    for _ in range(rounds):
        for workers in counts:
            for tree in trees:
                take, pool = pool[:share], pool[share:]
                loads.append(os.getloadavg()[0])
                result = run(repo, take, workers, seconds, tree)
                print(f"[{n:,}] {result}", file=sys.stderr, flush=True)
                if not (result["one_commit_each"] and result["index_in_step"]):
                    raise RuntimeError(f"a run broke the repository: {result}")
                runs[str(tree)][str(workers)].append(result["per_s"])
                cpu[str(tree)][str(workers)].append(result["cpu_ms"])
    medians = {t: {c: statistics.median(v) for c, v in by.items()} for t, by in runs.items()}
    one = str(counts[0])
    return {
        "episodes": n,
        "runs": runs,
        "median_per_s": medians,
        "median_cpu_ms_per_transition": {
            t: {c: statistics.median(v) for c, v in by.items()} for t, by in cpu.items()
        },
        "speedup": {
            t: {c: round(m / (by[one] or 1), 2) for c, m in by.items()} for t, by in medians.items()
        },
        "load": [min(loads), max(loads)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--tree", type=Path, help="another hystate checkout for the workers (an A/B comparison)"
    )
    parser.add_argument(
        "--ab", type=Path, nargs="+", help="checkouts to compare, interleaved on one repository"
    )
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.ab:
        isolate_git()
        os.environ.update({"HYSTATE_WORKER": "bench"})
        trees = [t.resolve() for t in args.ab]
        with tempfile.TemporaryDirectory(prefix="hystate-workers-") as tmp:
            results = [
                ab(Path(tmp), n, args.seconds, args.workers, trees, args.rounds) for n in args.sizes
            ]
        emit({"machine": machine(), "results": results}, args.json)
        return
    global TREE
    TREE = (args.tree or TREE).resolve()
    isolate_git()
    os.environ.update({"HYSTATE_WORKER": "bench"})
    loads = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="hystate-workers-") as tmp:
        results = [one_size(Path(tmp), n, args.seconds, args.workers) for n in args.sizes]
    loads.append(os.getloadavg()[0])
    emit({"machine": machine(), "load": loads, "results": results}, args.json)


if __name__ == "__main__":
    main()
