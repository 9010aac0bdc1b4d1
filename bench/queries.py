"""Reading commands at scale: warm-cache `status` and `list --stage failed` against reading every
YAML file (what file-per-item tools without an index do), a full `hystate rebuild` (time and
peak memory), and the refresh after one transition.

    python bench/queries.py                   # 100,000 episodes
    python bench/queries.py --episodes 10000  # quicker
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from common import (
    build_repo,
    emit,
    episode_ids,
    hystate_exe,
    isolate_git,
    machine,
    median_ms,
    run_measured,
)

NAIVE = """
import glob, sys, collections
import yaml
loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
counts = collections.Counter()
for path in glob.glob("processed/*/*.yaml"):
    with open(path, "rb") as fh:
        counts[yaml.load(fh, Loader=loader)["stage"]] += 1
print(dict(counts))
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--episodes", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    isolate_git()
    exe = hystate_exe()
    with tempfile.TemporaryDirectory(prefix="hystate-bench-") as tmp:
        root = Path(tmp) / "repo"
        print(
            f"building a repository of {args.episodes:,} episodes (mixed stages)...",
            file=sys.stderr,
            flush=True,
        )
        build_repo(root, args.episodes, mixed=True)
        print("hystate rebuild...", file=sys.stderr, flush=True)
        rebuild_s, rebuild_mb = run_measured([exe, "rebuild"], root, sample=True)
        status = [run_measured([exe, "status"], root)[0] for _ in range(args.runs)]
        report_html = run_measured([exe, "report", "--format", "html"], root, sample=True)
        report_csv = run_measured([exe, "report", "--format", "csv"], root)[0]
        metrics = run_measured([exe, "metrics"], root)[0]
        failed = [
            run_measured([exe, "list", "--stage", "failed"], root)[0] for _ in range(args.runs)
        ]
        print("reading every YAML file...", file=sys.stderr, flush=True)
        naive_s, _ = run_measured([sys.executable, "-c", NAIVE], root)
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from hystate.manager import StateManager

        manager = StateManager(cwd=root, worker="bench")
        manager.refresh()
        manager.update_state(episode_ids(args.episodes)[0], "downloading")
        started = time.perf_counter()
        refreshed = manager.refresh()
        refresh_ms = (time.perf_counter() - started) * 1000
        after = [run_measured([exe, "status"], root)[0] for _ in range(3)]
    result = {
        "machine": machine(),
        "episodes": args.episodes,
        "rebuild_s": round(rebuild_s, 1),
        "rebuild_peak_mb": rebuild_mb,
        "status_warm_ms": median_ms(status),
        "list_failed_warm_ms": median_ms(failed),
        "read_every_yaml_s": round(naive_s, 1),
        "status_speedup": round(naive_s / (median_ms(status) / 1000), 1),
        "refresh_after_one_transition": {
            "files_reread": refreshed.reread,
            "ms": round(refresh_ms, 1),
        },
        "status_after_one_transition_ms": median_ms(after),
        "report_html_s": round(report_html[0], 2),
        "report_html_peak_mb": report_html[1],
        "report_csv_s": round(report_csv, 2),
        "metrics_ms": round(metrics * 1000, 1),
    }
    emit(result, args.json)


if __name__ == "__main__":
    main()
