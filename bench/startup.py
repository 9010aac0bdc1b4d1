"""Start-up of whole `hystate` processes (issue 29): `advance`, `status`, `list`, `show`, `next`
in a repository of n episodes, optionally A/B against another checkout of hystate, the two
interleaved run by run so the shared machine's drift hits both alike.

    python bench/startup.py --sizes 1000                      # this checkout
    python bench/startup.py --sizes 1000 100000 --base /tmp/main-checkout --keep /tmp/repos
    python bench/startup.py --sizes 1000 --warm               # in-process vs the warm server

With --warm each command runs both ways, interleaved, through the console script's code
(hystate/launcher.py, this checkout installed in the running venv): in its own process, and
served by a warm server (`hystate warm start`) the benchmark starts and stops. A served
command's CPU is the client's plus its child's (the server's account of the child it reaped,
with the git processes the child waited for); its wall time is the client's.

Each figure: the median over --runs of the process's wall time and its CPU (user + system of
the process and the git processes it waited for), and the modules it imported. `advance` moves
a different discovered episode to downloading each run; the reads run on a fresh cache, and
`status after a transition` right after another episode's `advance` (the refresh carries the
cache's kept answers to the new tree, and the forecast's model is learnt again from the carried
training runs: see hystate/cache/follow.py). The
repositories (stages mixed as bench/common.build_repo makes them) are kept with --keep and
reused when present: a 100,000 build takes minutes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from common import IDENT, build_repo, episode_ids, isolate_git, machine

from hystate.cli.warm import ask

HERE = Path(__file__).resolve().parent.parent
RUN = "import sys; sys.path.insert(0, sys.argv.pop(1)); from hystate.cli import main; sys.argv[0] = 'hystate'; main()"
COUNT = (
    "import sys, atexit; sys.path.insert(0, sys.argv.pop(1)); "
    "atexit.register(lambda: sys.stderr.write(f'\\nMODULES {len(sys.modules)}\\n')); "
    "from hystate.cli import main; sys.argv[0] = 'hystate'; main()"
)
# the console script (hystate/launcher.py) of the installed hystate: argv[1] (a tree) unused
LAUNCH = "import sys; sys.argv.pop(1); sys.argv[0] = 'hystate'; from hystate.launcher import main; main()"


@dataclass
class Runner:
    """One way of running hystate: a checkout's code in-process, or the launcher (served by
    the warm server at ``socket`` when given)."""

    tree: Path
    program: str = RUN
    socket: str | None = None
    env: dict[str, str] = field(default_factory=dict)  # added to the command's environment


def start_warm(folder: Path) -> str:
    path = folder / "warm.sock"
    proc = subprocess.run(
        [sys.executable, "-c", LAUNCH, "-", "warm", "start", "--socket", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    print(proc.stderr.strip(), file=sys.stderr)
    return str(path)


def stop_warm(path: str) -> None:
    env = {**os.environ, "HYSTATE_WARM": path}
    subprocess.run(
        [sys.executable, "-c", LAUNCH, "-", "warm", "stop"], env=env, capture_output=True
    )


def one(runner: Runner, args: list[str], cwd: Path) -> tuple[float, float]:
    """(wall, CPU) seconds of one hystate command (its process, or client and served child)."""
    env = {k: v for k, v in os.environ.items() if k != "HYSTATE_WARM"} | runner.env
    before = None
    if runner.socket is not None:
        env["HYSTATE_WARM"] = runner.socket
        before = ask(runner.socket)
        assert before is not None, "the warm server is gone"
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", runner.program, str(runner.tree), *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{args} failed: {proc.stderr.read().decode() if proc.stderr else ''}")
    cpu = usage.ru_utime + usage.ru_stime
    if runner.socket is not None and before is not None:
        cpu += served_cpu(runner.socket, before)
    return wall, cpu


def served_cpu(socket: str, before: dict[str, object]) -> float:
    """CPU seconds of the one command served since ``before`` (once the server reaped it)."""
    deadline = time.monotonic() + 30
    while True:
        now = ask(socket)
        assert now is not None, "the warm server is gone"
        if now["served"] != before["served"] + 1:  # type: ignore[operator]
            raise RuntimeError("the command was not served (it ran in its own process)")
        if now["done"] == before["done"] + 1:  # type: ignore[operator]
            return float(now["cpu_seconds"]) - float(before["cpu_seconds"])  # type: ignore[arg-type]
        if time.monotonic() > deadline:
            raise RuntimeError("the served command did not end")
        time.sleep(0.001)


def modules(runner: Runner, args: list[str], cwd: Path) -> int:
    if runner.socket is not None:  # what the child has: the server's
        answer = ask(runner.socket)
        assert answer is not None
        return int(answer["modules"])
    proc = subprocess.run(
        [sys.executable, "-c", COUNT, str(runner.tree), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
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


def run_size(root: Path, n: int, trees: dict[str, Runner], runs: int) -> dict[str, object]:
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
    parser.add_argument(
        "--warm", action="store_true", help="in-process against the warm server (hystate warm)"
    )
    args = parser.parse_args()
    if args.warm and args.base is not None:
        parser.error("--warm compares with the warm server, --base with another checkout: one")
    isolate_git()
    os.environ.update(IDENT)
    # as an installed package runs: with its bytecode (PYTHONDONTWRITEBYTECODE costs ~40 ms)
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    trees = {"this": Runner(HERE)}
    if args.base is not None:
        trees = {"this": Runner(HERE), "base": Runner(args.base.resolve())}
    import compileall

    for runner in trees.values():
        compileall.compile_dir(runner.tree / "hystate", quiet=1)
    keep = args.keep or Path(os.environ.get("TMPDIR", "/tmp")) / "hystate-startup"
    print(machine(), f"load {os.getloadavg()[0]:.1f}", file=sys.stderr)
    folder = Path(tempfile.mkdtemp(prefix="hw-"))  # a short path: a socket's is <= 107 bytes
    try:
        if args.warm:
            socket = start_warm(folder)
            trees = {"in-process": Runner(HERE, LAUNCH), "warm": Runner(HERE, LAUNCH, socket)}
        results = [run_size(keep / f"repo-{n}", n, trees, args.runs) for n in args.sizes]
    finally:
        if args.warm:
            stop_warm(str(folder / "warm.sock"))
        shutil.rmtree(folder, ignore_errors=True)
    print({"load_after": round(os.getloadavg()[0], 1), "sizes": results})


if __name__ == "__main__":
    main()
