"""Start-up of whole `hystate` processes (issue 29): `advance`, `status`, `list`, `show`, `next`
in a repository of n episodes, optionally A/B against another checkout of hystate, the two
interleaved run by run so the shared machine's drift hits both alike.

    python bench/startup.py --sizes 1000                      # this checkout
    python bench/startup.py --sizes 1000 100000 --base /tmp/main-checkout --keep /tmp/repos

Each figure: the median over --runs of the process's wall time and its CPU (user + system of
the process and the git processes it waited for), and the modules it imported. `advance` moves
a different discovered episode to downloading each run; the reads run on a fresh cache, and
`status after a transition` right after another episode's `advance` (nothing kept for that
tree yet: the cache's answers are computed again, see hystate/cache/memo.py). The
repositories (stages mixed as bench/common.build_repo makes them) are kept with --keep and
reused when present: a 100,000 build takes minutes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import IDENT, build_repo, episode_ids, isolate_git, machine

HERE = Path(__file__).resolve().parent.parent
RUN = "import sys; sys.path.insert(0, sys.argv.pop(1)); from hystate.cli import main; sys.argv[0] = 'hystate'; main()"
COUNT = (
    "import sys, atexit; sys.path.insert(0, sys.argv.pop(1)); "
    "atexit.register(lambda: sys.stderr.write(f'\\nMODULES {len(sys.modules)}\\n')); "
    "from hystate.cli import main; sys.argv[0] = 'hystate'; main()"
)


def one(tree: Path, args: list[str], cwd: Path) -> tuple[float, float]:
    """(wall, CPU) seconds of one process running hystate from ``tree``."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", RUN, str(tree), *args],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{args} failed: {proc.stderr.read().decode() if proc.stderr else ''}")
    return wall, usage.ru_utime + usage.ru_stime


def modules(tree: Path, args: list[str], cwd: Path) -> int:
    proc = subprocess.run(
        [sys.executable, "-c", COUNT, str(tree), *args], cwd=cwd, capture_output=True, text=True
    )
    return int(proc.stderr.rpartition("MODULES ")[2].split()[0])


def commands(n: int) -> dict[str, list[str]]:
    ids = episode_ids(n)
    return {
        "status": ["status"],
        "list": ["list", "--stage", "failed"],
        "show": ["show", ids[1]],
        "next": ["next", "downloading"],
    }


def discovered(root: Path, n: int) -> list[str]:
    """Ids still discovered (build_repo(mixed=True) leaves 70 of every 100 so), last first."""
    found = []
    for i, eid in enumerate(episode_ids(n)):
        path = root / "processed" / eid[17:21] / f"{eid}.yaml"
        if i % 100 < 70 and b"\nstage: discovered\n" in path.read_bytes():
            found.append(eid)
    return found[::-1]


def run_size(root: Path, n: int, trees: dict[str, Path], runs: int) -> dict[str, object]:
    if not root.exists():
        print(f"building {n:,} episodes in {root}...", file=sys.stderr, flush=True)
        build_repo(root, n, mixed=True)
    fresh = next(iter(trees.values()))
    one(fresh, ["status"], root)  # a fresh cache, HEAD's
    todo = discovered(root, n)
    figures: dict[str, object] = {"episodes": n}
    for name, args in {"advance": None, **commands(n), "status after a transition": None}.items():
        times: dict[str, list[tuple[float, float]]] = {label: [] for label in trees}
        for _ in range(runs + 1):  # the first round warms the page cache, not counted
            for label, tree in trees.items():
                if name == "status after a transition":  # what was kept is of another tree
                    one(fresh, ["advance", todo.pop(), "downloading"], root)
                    times[label].append(one(tree, ["status"], root))
                    continue
                argv = args or ["advance", todo.pop(), "downloading"]
                times[label].append(one(tree, argv, root))
                if name == "advance":
                    one(fresh, ["status"], root)  # the cache follows, so reads stay fresh
        if name == "status after a transition":
            args = ["status"]
        row: dict[str, object] = {}
        for label, values in times.items():
            counted = values[1:]
            row[label] = {
                "wall_ms": round(statistics.median(w for w, _ in counted) * 1000, 1),
                "cpu_ms": round(statistics.median(c for _, c in counted) * 1000, 1),
                "modules": modules(
                    trees[label], args or ["advance", todo.pop(), "downloading"], root
                ),
            }
        if len(trees) == 2:
            a, b = (times[label][1:] for label in trees)
            row["cpu_ratio"] = round(
                statistics.median(x[1] / y[1] for x, y in zip(a, b, strict=True)), 2
            )
            row["wall_ratio"] = round(
                statistics.median(x[0] / y[0] for x, y in zip(a, b, strict=True)), 2
            )
        figures[name] = row
        print(f"[{n:,}] {name}: {row}", file=sys.stderr, flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--base", type=Path, help="another checkout of hystate to compare with")
    parser.add_argument("--keep", type=Path, help="folder to keep (and reuse) the repositories")
    args = parser.parse_args()
    isolate_git()
    os.environ.update(IDENT)
    # as an installed package runs: with its bytecode (PYTHONDONTWRITEBYTECODE costs ~40 ms)
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    trees = {"this": HERE}
    if args.base is not None:
        trees = {"this": HERE, "base": args.base.resolve()}
    import compileall

    for tree in trees.values():
        compileall.compile_dir(tree / "hystate", quiet=1)
    keep = args.keep or Path(os.environ.get("TMPDIR", "/tmp")) / "hystate-startup"
    print(machine(), f"load {os.getloadavg()[0]:.1f}", file=sys.stderr)
    results = [run_size(keep / f"repo-{n}", n, trees, args.runs) for n in args.sizes]
    print({"load_after": round(os.getloadavg()[0], 1), "sizes": results})


if __name__ == "__main__":
    main()
