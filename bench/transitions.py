"""Cost of one transition through the Python API vs the naive git loop, same run, same repos.

For each size, two identical state repositories are built (one commit of N episode files,
spread over 20 year folders, as `hystate init` configures them). Then the same transitions
(discovered -> downloading of distinct episodes) are made:
  - hystate: ``StateManager.update_state`` (validate, atomic write, in-process commit);
  - naive:   the same file write, then ``git add <file> && git commit -- <file>``.
A staged change of the user is present in both repos throughout, to catch sweeping.
Prints per-transition medians and the ratios; ``--json`` writes them for docs/BENCHMARKS.md.

    python bench/transitions.py                 # 1,000 and 100,000 episodes
    python bench/transitions.py --sizes 1000    # quicker
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
from pathlib import Path

from common import IDENT, build_repo, emit, episode_ids, git, hystate_exe, isolate_git, machine

from hystate.core.model import ProcessingStage, now_utc
from hystate.core.rules import Change, apply_change
from hystate.core.store import EpisodeStore, dump
from hystate.manager import StateManager


def add_user_change(root: Path) -> None:
    (root / "user-notes.txt").write_text("a staged change of the user\n")
    git(root, "add", "user-notes.txt")


def hystate_step(manager: StateManager, eid: str) -> float:
    started = time.perf_counter()
    manager.update_state(eid, "downloading")
    return time.perf_counter() - started


def naive_step(root: Path, store: EpisodeStore, eid: str) -> float:
    """The same read, validation and atomic write, then `git add f && git commit -- f`."""
    env = {**os.environ, **IDENT}
    started = time.perf_counter()
    path = store.find(eid)
    assert path is not None
    _, episode = store.read(path)
    change = Change(ProcessingStage.DOWNLOADING, now_utc(), "bench", worker="bench")
    store.write(path, dump(apply_change(episode, change)))
    rel = path.relative_to(root).as_posix()
    subprocess.run(["git", "add", rel], cwd=root, check=True, env=env)
    message = f"{eid}: discovered -> downloading"
    subprocess.run(["git", "commit", "-q", "-m", message, "--", rel], cwd=root, check=True, env=env)
    return time.perf_counter() - started


def interleaved(ours: Path, naive: Path, ids: list[str]) -> tuple[list[float], list[float]]:
    """Alternate the two approaches so both see the same (noisy) disk and CPU."""
    manager = StateManager(cwd=ours, worker="bench")
    store = EpisodeStore(naive / "processed", naive)
    t_ours, t_naive = [], []
    for eid in ids:
        t_ours.append(hystate_step(manager, eid))
        t_naive.append(naive_step(naive, store, eid))
    return t_ours, t_naive


def check_sound(root: Path, transitions: int) -> None:
    assert git(root, "status", "--porcelain").split("\n")[0].startswith("A  user-notes.txt")
    assert int(git(root, "rev-list", "--count", "HEAD")) == transitions + 1
    assert git(root, "diff", "--cached", "--name-only").split() == ["user-notes.txt"]


def cli_start(root: Path, ids: list[str]) -> list[float]:
    exe = hystate_exe()
    times = []
    for eid in ids:
        started = time.perf_counter()
        subprocess.run(
            [exe, "advance", eid, "downloading"], cwd=root, check=True, capture_output=True
        )
        times.append(time.perf_counter() - started)
    return times


def ms(values: list[float]) -> float:
    return round(statistics.median(values) * 1000, 2)


def run_size(workdir: Path, n: int, count: int, split: bool) -> dict[str, object]:
    config = [("core.splitIndex", "true")] if split else []
    label = f"{n:,}" + (" (split index)" if split else "")
    print(f"[{label}] building two repos of {n:,} episodes...", file=sys.stderr, flush=True)
    ours, naive = workdir / f"ours-{n}-{split}", workdir / f"naive-{n}-{split}"
    started = time.perf_counter()
    for root in (ours, naive):
        build_repo(root, n, config=config)
        add_user_change(root)
    build_s = time.perf_counter() - started
    ids = episode_ids(n)[:: max(1, n // (count + 30))][: count + 30]
    warm, measured = ids[:5], ids[5 : count + 5]
    interleaved(ours, naive, warm)
    print(f"[{label}] {count} transitions each, interleaved...", file=sys.stderr, flush=True)
    t_ours, t_naive = interleaved(ours, naive, measured)
    check_sound(ours, count + 5)
    check_sound(naive, count + 5)
    index_kb = (ours / ".git" / "index").stat().st_size // 1024
    # The first transition after a plain git command rewrote the index without EOIE.
    git(ours, "config", "index.recordEndOfIndexEntries", "false")
    git(ours, "update-index", "--force-write-index") if not split else None
    cold = [hystate_step(StateManager(cwd=ours, worker="bench"), ids[count + 5])]
    cli = cli_start(ours, ids[count + 6 : count + 16])
    result = {
        "episodes": n,
        "split_index": split,
        "transitions": count,
        "hystate_ms": ms(t_ours),
        "hystate_p90_ms": round(sorted(t_ours)[int(len(t_ours) * 0.9)] * 1000, 2),
        "naive_ms": ms(t_naive),
        "speedup": round(statistics.median(t_naive) / statistics.median(t_ours), 1),
        "first_after_index_rewrite_ms": ms(cold),
        "cli_advance_ms": ms(cli),
        "index_kb": index_kb,
        "build_s": round(build_s, 1),
    }
    print(
        f"[{label}] hystate {result['hystate_ms']} ms (p90 {result['hystate_p90_ms']}), "
        f"naive {result['naive_ms']} ms -> {result['speedup']}x; CLI advance {result['cli_advance_ms']} ms",
        file=sys.stderr,
        flush=True,
    )
    shutil.rmtree(ours)
    shutil.rmtree(naive)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 100_000])
    parser.add_argument("--count", type=int, default=200, help="transitions measured per size")
    parser.add_argument(
        "--split-index", action="store_true", help="also measure with core.splitIndex=true"
    )
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    isolate_git()
    # `hystate advance` as installed: bytecode compiled (as bench/scale.py does)
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    import compileall

    compileall.compile_dir(Path(__file__).resolve().parent.parent / "hystate", quiet=1)
    results = []
    with tempfile.TemporaryDirectory(prefix="hystate-bench-") as tmp:
        for n in args.sizes:
            results.append(run_size(Path(tmp), n, args.count, split=False))
            if args.split_index:
                results.append(run_size(Path(tmp), n, args.count, split=True))
    plain = [r for r in results if not r["split_index"]]
    summary: dict[str, object] = {"machine": machine(), "results": results}
    if len(plain) >= 2:
        small, large = plain[0], plain[-1]
        summary["growth"] = round(float(large["hystate_ms"]) / float(small["hystate_ms"]), 2)  # type: ignore[arg-type]
    emit(summary, args.json)


if __name__ == "__main__":
    main()
