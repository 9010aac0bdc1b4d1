"""Cost of one transition through the Python API vs the naive git loop, same run, same repos.

For each size, three identical state repositories are built (one commit of N episode files,
spread over 20 year folders, as `hystate init` configures them). Then the same transitions
(discovered -> downloading of distinct episodes) are made, interleaved:
  - hystate: ``StateManager.update_state`` (validate, atomic write, in-process commit);
  - naive:   the same file write, then ``git add <file> && git commit -- <file>``;
  - pygit2:  the same file write, then libgit2 in-process: index add + write, write_tree,
             create_commit on HEAD (libgit2 fsyncs nothing by default; it commits whatever
             is staged, so its repository has no staged change of the user).
A staged change of the user is present in the hystate and naive repos throughout, to catch
sweeping. Prints per-transition medians and the ratios; ``--json`` writes them for
docs/BENCHMARKS.md. Without pygit2 (the ``dev`` extra) its row says it could not be imported.

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

try:
    import pygit2
except ImportError as exc:  # the row says so; never dropped silently
    pygit2 = None
    PYGIT2_MISSING = f"pygit2 not importable: {exc}"
else:
    PYGIT2_MISSING = ""


def add_user_change(root: Path) -> None:
    (root / "user-notes.txt").write_text("a staged change of the user\n")
    git(root, "add", "user-notes.txt")


def hystate_step(manager: StateManager, eid: str) -> float:
    started = time.perf_counter()
    manager.update_state(eid, "downloading")
    return time.perf_counter() - started


def write_change(root: Path, store: EpisodeStore, eid: str) -> str:
    """The same read, validation and atomic write as hystate's; the file's path in the repo."""
    path = store.find(eid)
    assert path is not None
    _, episode = store.read(path)
    change = Change(ProcessingStage.DOWNLOADING, now_utc(), "bench", worker="bench")
    store.write(path, dump(apply_change(episode, change)))
    return path.relative_to(root).as_posix()


def naive_step(root: Path, store: EpisodeStore, eid: str) -> float:
    """The same read, validation and atomic write, then `git add f && git commit -- f`."""
    env = {**os.environ, **IDENT}
    started = time.perf_counter()
    rel = write_change(root, store, eid)
    subprocess.run(["git", "add", rel], cwd=root, check=True, env=env)
    message = f"{eid}: discovered -> downloading"
    subprocess.run(["git", "commit", "-q", "-m", message, "--", rel], cwd=root, check=True, env=env)
    return time.perf_counter() - started


class Pygit2Loop:
    """The library loop: the same write, then libgit2's index add + write, write_tree and
    create_commit on HEAD, one long-lived ``Repository`` (as the manager is long-lived)."""

    def __init__(self, root: Path) -> None:
        assert pygit2 is not None
        self.root = root
        self.repo = pygit2.Repository(str(root))
        self.store = EpisodeStore(root / "processed", root)
        self.sig = pygit2.Signature(IDENT["GIT_AUTHOR_NAME"], IDENT["GIT_AUTHOR_EMAIL"])

    def step(self, eid: str) -> float:
        started = time.perf_counter()
        rel = write_change(self.root, self.store, eid)
        index = self.repo.index
        index.read()
        index.add(rel)
        index.write()
        tree = index.write_tree()
        parent = self.repo.head.target
        message = f"{eid}: discovered -> downloading"
        self.repo.create_commit("HEAD", self.sig, self.sig, message, tree, [parent])
        return time.perf_counter() - started


def interleaved(
    ours: Path, naive: Path, lib: Path | None, ids: list[str]
) -> tuple[list[float], list[float], list[float]]:
    """Alternate the approaches so all see the same (noisy) disk and CPU."""
    manager = StateManager(cwd=ours, worker="bench")
    store = EpisodeStore(naive / "processed", naive)
    loop = Pygit2Loop(lib) if lib is not None else None
    t_ours, t_naive, t_lib = [], [], []
    for eid in ids:
        t_ours.append(hystate_step(manager, eid))
        t_naive.append(naive_step(naive, store, eid))
        if loop is not None:
            t_lib.append(loop.step(eid))
    return t_ours, t_naive, t_lib


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
    print(f"[{label}] building the repos of {n:,} episodes...", file=sys.stderr, flush=True)
    ours, naive = workdir / f"ours-{n}-{split}", workdir / f"naive-{n}-{split}"
    lib = workdir / f"pygit2-{n}-{split}" if pygit2 is not None else None
    started = time.perf_counter()
    for root in (ours, naive):
        build_repo(root, n, config=config)
        add_user_change(root)
    if lib is not None:
        build_repo(lib, n, config=config)
    build_s = time.perf_counter() - started
    time.sleep(2.1)  # config and attributes older than any racy window, as in real use
    ids = episode_ids(n)[:: max(1, n // (count + 30))][: count + 30]
    warm, measured = ids[:5], ids[5 : count + 5]
    interleaved(ours, naive, lib, warm)
    print(f"[{label}] {count} transitions each, interleaved...", file=sys.stderr, flush=True)
    t_ours, t_naive, t_lib = interleaved(ours, naive, lib, measured)
    check_sound(ours, count + 5)
    check_sound(naive, count + 5)
    if lib is not None:
        assert int(git(lib, "rev-list", "--count", "HEAD")) == count + 6
        assert not git(lib, "status", "--porcelain", "--untracked-files=no")
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
        "pygit2_ms": ms(t_lib) if t_lib else PYGIT2_MISSING,
        # above 1: hystate is ahead of the library loop
        "vs_pygit2": round(statistics.median(t_lib) / statistics.median(t_ours), 2)
        if t_lib
        else None,
        "first_after_index_rewrite_ms": ms(cold),
        "cli_advance_ms": ms(cli),
        "index_kb": index_kb,
        "build_s": round(build_s, 1),
    }
    print(
        f"[{label}] hystate {result['hystate_ms']} ms (p90 {result['hystate_p90_ms']}), "
        f"naive {result['naive_ms']} ms -> {result['speedup']}x; pygit2 {result['pygit2_ms']}"
        f"{' ms -> ' + str(result['vs_pygit2']) + 'x' if t_lib else ''};"
        f" CLI advance {result['cli_advance_ms']} ms",
        file=sys.stderr,
        flush=True,
    )
    for root in (ours, naive, lib):
        if root is not None:
            shutil.rmtree(root)
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
