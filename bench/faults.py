"""The long fault-injection run: worker processes killed with SIGKILL at random moments, 200
times by default, `hystate fsck --repair` between rounds; then the same checks as
tests/engine/test_faults.py. API workers and CLI workers behind `sh -c` wrappers (killed with their whole
process group); every third round a live `git commit` holds index.lock while fsck runs. Prints
kills survived, transitions acknowledged, repairs made, rounds fsck left work for a person, live
git locks removed and problems found (the last three must be 0).

    python bench/faults.py [--kills 200] [--workers 1] [--cli-workers 2]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import emit, isolate_git, machine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hystate.manager import StateManager
from tests.harness.faults import check_sound, run_faults


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kills", type=int, default=200)
    parser.add_argument("--workers", type=int, default=1, help="API worker processes")
    parser.add_argument("--cli-workers", type=int, default=2, help="sh -c wrappers")
    parser.add_argument("--live-git-every", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    isolate_git()
    with tempfile.TemporaryDirectory(prefix="hystate-faults-") as tmp:
        repo = Path(tmp)
        subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
        (repo / "hystate.yaml").write_text("state_management:\n  locks:\n    timeout: 5\n")
        StateManager(cwd=repo).ensure_layout()
        started = time.perf_counter()
        run = run_faults(
            repo,
            kills=args.kills,
            workers=args.workers,
            cli_workers=args.cli_workers,
            live_git_every=args.live_git_every,
            seed=args.seed,
        )
        problems = check_sound(repo, run)
        commits = subprocess.run(
            ["git", "rev-list", "--count", "HEAD"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    result = {
        "machine": machine(),
        "kills": run.kills,
        "kills_of_cli_wrappers": run.cli_kills,
        "rounds": run.rounds,
        "rounds_with_a_live_git_commit": run.live_git_rounds,
        "live_git_locks_removed": run.live_git_lock_removed,
        "rounds_needing_a_person": len(run.manual_steps),
        "acknowledged_transitions": len(run.acks),
        "commits": int(commits),
        "repairs": run.repairs,
        "problems": problems,
        "seconds": round(time.perf_counter() - started, 1),
    }
    emit(result, args.json)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
