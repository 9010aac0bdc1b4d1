"""``hystate status`` right after another episode's transition (issue 29), A/B: this checkout
against another (--base), each in its own process and served by a warm server of its own
(``hystate warm``), the four interleaved run by run so the shared machine's drift hits all
alike. Each checkout works on its own copy of the repository: kept answers are stamped with the
code that computed them (hystate/cache/stamps.py), so two checkouts sharing one cache would
drop each other's answers and never carry any through a transition.

    python bench/status_after.py --base /tmp/main-tree --keep /tmp/repos --sizes 1000 100000

Each run: the checkout moves a discovered episode to downloading (``advance``, not counted),
then ``status`` is timed (wall; CPU of the process and the git processes it waited for, or of
the client and the served child). Medians over --runs, after one round not counted.
"""

from __future__ import annotations

import argparse
import compileall
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import IDENT, build_repo, isolate_git, machine
from startup import HERE, LAUNCH, RUN, Runner, discovered, one, stop_warm


def start_warm(tree: Path, folder: Path) -> str:
    """A warm server running ``tree``'s code (PYTHONPATH: its children inherit it)."""
    path = folder / f"{len(list(folder.iterdir()))}.sock"
    env = {**os.environ, "PYTHONPATH": str(tree)}
    proc = subprocess.run(
        [sys.executable, "-c", LAUNCH, "-", "warm", "start", "--socket", str(path)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    print(proc.stderr.strip(), file=sys.stderr)
    return str(path)


def run_size(keep: Path, n: int, trees: dict[str, Path], runs: int, folder: Path) -> dict:
    roots = {}
    for label in trees:
        root = keep / (f"repo-{n}" if label == "this" else f"repo-{n}-{label}")
        if not root.exists():
            first = keep / f"repo-{n}"
            if not first.exists():
                print(f"building {n:,} episodes in {first}...", file=sys.stderr, flush=True)
                build_repo(first, n, mixed=True)
            if root != first:
                shutil.copytree(first, root, symlinks=True)
        roots[label] = root
    runners: dict[str, tuple[str, Runner, Runner]] = {}
    for label, tree in trees.items():
        env = {"PYTHONPATH": str(tree)}
        socket = start_warm(tree, folder)
        runners[f"{label} in-process"] = (label, Runner(tree, RUN), Runner(tree, RUN))
        runners[f"{label} served"] = (label, Runner(tree, RUN), Runner(tree, LAUNCH, socket, env))
    todo = {label: discovered(root, n) for label, root in roots.items()}
    for tree_label, fresh, _ in runners.values():
        one(fresh, ["status"], roots[tree_label])  # a cache with kept answers
    times: dict[str, list[tuple[float, float]]] = {label: [] for label in runners}
    for _ in range(runs + 1):
        for label, (tree_label, fresh, timed) in runners.items():
            root = roots[tree_label]
            one(fresh, ["advance", todo[tree_label].pop(), "downloading"], root)
            times[label].append(one(timed, ["status"], root))
    row: dict[str, object] = {"episodes": n, "load": round(os.getloadavg()[0], 1)}
    for label, values in times.items():
        counted = values[1:]
        row[label] = {
            "wall_ms": round(statistics.median(w for w, _ in counted) * 1000, 1),
            "cpu_ms": round(statistics.median(c for _, c in counted) * 1000, 1),
        }
    for way in ("in-process", "served"):
        mine, base = times[f"this {way}"][1:], times[f"base {way}"][1:]
        row[f"{way} wall_ratio"] = round(
            statistics.median(x[0] / y[0] for x, y in zip(mine, base, strict=True)), 2
        )
    print(f"[{n:,}] status after a transition: {row}", file=sys.stderr, flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--base", type=Path, required=True, help="the checkout to compare with")
    parser.add_argument("--keep", type=Path, required=True, help="folder of the repositories")
    args = parser.parse_args()
    isolate_git()
    os.environ.update(IDENT)
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)  # as an installed package runs
    trees = {"this": HERE, "base": args.base.resolve()}
    for tree in trees.values():
        compileall.compile_dir(tree / "hystate", quiet=1)
    print(machine(), f"load {os.getloadavg()[0]:.1f}", file=sys.stderr)
    folder = Path(tempfile.mkdtemp(prefix="hw-"))  # a short path: a socket's is <= 107 bytes
    try:
        results = [run_size(args.keep, n, trees, args.runs, folder) for n in args.sizes]
    finally:
        for sock in folder.glob("*.sock"):
            stop_warm(str(sock))
        shutil.rmtree(folder, ignore_errors=True)
    print({"load_after": round(os.getloadavg()[0], 1), "sizes": results})


if __name__ == "__main__":
    main()
