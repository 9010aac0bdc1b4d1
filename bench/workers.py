"""Throughput with several worker processes (issue 29): transitions per second with 1 and 4
worker processes on one repository, each worker moving its own episodes (discovered ->
downloading) through a long-lived `StateManager`, one commit per transition.

Each worker makes one transition before the clock starts (its imports, its first read of the
index), then as many as it can in ``--seconds``; the figure is the total over the window. After
each run: exactly one commit per transition (`git rev-list --count`), and git's index in step
with HEAD and the work tree.

    python bench/workers.py                          # 10,000 and 100,000 episodes
    python bench/workers.py --sizes 10000 --seconds 5
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import build_repo, emit, episode_ids, git, isolate_git, machine

WORKER = """
import json, sys, time
sys.path.insert(0, {root!r})
from hystate.manager import StateManager
ids, start, stop = json.loads(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
manager = StateManager(cwd={repo!r}, worker=sys.argv[4])
manager.update_state(ids.pop(), "downloading")  # warm: imports, the first read of the index
while time.time() < start:
    time.sleep(0.001)
done = 0
while ids and time.time() < stop:
    manager.update_state(ids.pop(), "downloading")
    done += 1
print(json.dumps({{"done": done, "warm": 1}}))
"""


TREE = Path(__file__).resolve().parent.parent  # the hystate checkout the workers import


def run(repo: Path, ids: list[str], workers: int, seconds: float) -> dict[str, Any]:
    """``workers`` processes for ``seconds``: transitions per second, and the checks."""
    before = int(git(repo, "rev-list", "--count", "HEAD"))
    code = WORKER.format(root=str(TREE), repo=str(repo))
    share = len(ids) // workers
    start = time.time() + 1.5 + 0.5 * workers  # every worker warmed up by then
    stop = start + seconds
    procs = []
    for i in range(workers):
        mine = json.dumps(ids[i * share : (i + 1) * share])
        args = [sys.executable, "-c", code, mine, str(start), str(stop), f"bench-{i}"]
        procs.append(subprocess.Popen(args, stdout=subprocess.PIPE, text=True))
    outs = [json.loads(p.communicate()[0]) for p in procs]
    if any(p.returncode for p in procs):
        raise RuntimeError("a worker failed")
    done = sum(o["done"] for o in outs)
    commits = int(git(repo, "rev-list", "--count", "HEAD")) - before
    in_step = (
        not git(repo, "diff", "--cached", "--name-only").strip()
        and not git(repo, "--no-optional-locks", "status", "--porcelain", "--", "processed").strip()
    )
    return {
        "workers": workers,
        "transitions": done,
        "per_s": round(done / seconds, 1),
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
    args = parser.parse_args()
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
