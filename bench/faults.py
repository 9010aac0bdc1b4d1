"""The long fault-injection run: worker processes killed with SIGKILL at random moments, 200
times by default, `fsck --repair` between rounds; then the same checks as tests/test_faults.py.
Prints kills survived, transitions acknowledged, repairs made and problems found (must be 0).

    python bench/faults.py [--kills 200]
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
from tests.fault_harness import check_sound, run_faults


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kills", type=int, default=200)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    isolate_git()
    with tempfile.TemporaryDirectory(prefix="hystate-faults-") as tmp:
        repo = Path(tmp)
        subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
        (repo / "hystate.yaml").write_text("state_management:\n  locks:\n    timeout: 5\n")
        StateManager(cwd=repo).ensure_layout()
        started = time.perf_counter()
        run = run_faults(repo, kills=args.kills)
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
        "rounds": run.rounds,
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
