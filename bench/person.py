"""A person in the same checkout as running workers, longer than tests/git/test_person.py: worker
processes advance episodes at 20,000 episodes while a person commits (some commits with
--no-verify), stashes, runs `git status` and `git gc --auto` with plain git; then `hystate fsck
--repair`. Prints acknowledged transitions, the person's commits, the hook's refusals, the
reverts fsck found and re-applied, index entries reset, and problems (lost or reverted
transitions: must be 0). Also times the pre-commit hook's check at that size.

    python bench/person.py [--episodes 20000] [--workers 4] [--seconds 180] [--bypass 0.2]
    python bench/person.py --no-hook     # the same person without the guard (for comparison)
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import emit, isolate_git, machine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.harness.person import HYSTATE, build, check_person, run_person


def hook_ms(repo: Path, runs: int = 7) -> float:
    """Median wall time of `hystate validate --staged` (what the hook runs) in ``repo``."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([*HYSTATE, "validate", "--staged"], cwd=repo, capture_output=True)
        times.append(time.perf_counter() - started)
    return round(statistics.median(times) * 1000, 1)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--episodes", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--per-worker", type=int, default=60)
    parser.add_argument("--seconds", type=float, default=180)
    parser.add_argument("--bypass", type=float, default=0.2, help="share of --no-verify commits")
    parser.add_argument("--no-hook", action="store_true", help="every commit bypasses the hook")
    parser.add_argument("--seed", type=int, default=10)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    isolate_git()
    with tempfile.TemporaryDirectory(prefix="hystate-person-") as tmp:
        repo = Path(tmp) / "repo"
        started = time.perf_counter()
        ids = build(repo, args.episodes)
        built = time.perf_counter() - started
        hook = hook_ms(repo)
        run = run_person(
            repo,
            ids,
            workers=args.workers,
            per_worker=args.per_worker,
            seconds=args.seconds,
            bypass=1.0 if args.no_hook else args.bypass,
            seed=args.seed,
        )
        problems = check_person(repo, run)
    result = {
        "machine": machine(),
        "episodes": args.episodes,
        "workers": args.workers,
        "build_seconds": round(built, 1),
        "hook_check_ms_median": hook,
        **run.figures(),
        "lost_or_reverted": len(problems),
        "problems": problems[:20],
    }
    emit(result, args.json)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
