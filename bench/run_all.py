"""`make bench`: run every benchmark and rewrite docs/BENCHMARKS.md with the figures, the
machine, and the command for each.

    python bench/run_all.py [--quick]     # --quick: 1,000 / 10,000 episodes, 50 kills
    python bench/run_all.py --scale-only  # only the user's path at 10,000 and 100,000 (~15 min)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
DOC = HERE.parent / "docs" / "BENCHMARKS.md"


def run(script: str, *args: str) -> dict[str, object]:
    target = OUT / f"{Path(script).stem}.json"
    command = [sys.executable, str(HERE / script), *args, "--json", str(target)]
    print("$", " ".join(["python", f"bench/{script}", *args]), file=sys.stderr, flush=True)
    subprocess.run(command, check=True)
    data: dict[str, object] = json.loads(target.read_text())
    data["command"] = " ".join(["python", f"bench/{script}", *args])
    target.write_text(json.dumps(data, indent=2) + "\n")
    return data


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--render-only", action="store_true", help="rewrite the doc from bench/out/*.json"
    )
    parser.add_argument(
        "--scale-only",
        action="store_true",
        help="only bench/scale.py: run it (or with --render-only, read bench/out/scale.json) "
        "and rewrite its section of the doc",
    )
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    if args.scale_only:
        if args.render_only:
            scale = json.loads((OUT / "scale.json").read_text())
        else:
            scale = run(
                "scale.py", "--sizes", *(["1000", "10000"] if args.quick else ["10000", "100000"])
            )
        text = DOC.read_text()
        start = text.find(SCALE_HEADING)
        DOC.write_text(
            (text[:start] if start >= 0 else text.rstrip() + "\n\n") + render_scale(scale)
        )
        return
    if args.render_only:
        saved = [
            json.loads((OUT / f"{name}.json").read_text())
            for name in ("transitions", "queries", "faults", "scale")
        ]
        DOC.write_text(render(*saved))
        return
    sizes = ["1000", "10000"] if args.quick else ["1000", "100000"]
    transitions = run("transitions.py", "--sizes", *sizes, "--split-index")
    queries = run("queries.py", "--episodes", "10000" if args.quick else "100000")
    faults = run("faults.py", "--kills", "50" if args.quick else "200")
    scale = run("scale.py", "--sizes", *(["1000", "10000"] if args.quick else ["10000", "100000"]))
    DOC.write_text(render(transitions, queries, faults, scale))
    print(f"wrote {DOC}", file=sys.stderr)


def render(transitions: dict, queries: dict, faults: dict, scale: dict) -> str:  # type: ignore[type-arg]
    rows = "\n".join(
        f"| {r['episodes']:,} | {'yes' if r['split_index'] else 'no'} | {r['hystate_ms']} (p90 {r['hystate_p90_ms']}) "
        f"| {r['naive_ms']} | **{r['speedup']}x** | {r['first_after_index_rewrite_ms']} | {r['cli_advance_ms']} | {r['index_kb']:,} |"
        for r in transitions["results"]  # type: ignore[union-attr]
    )
    q = queries
    refresh = q["refresh_after_one_transition"]
    return f"""# Benchmarks

Written by `make bench` (`python bench/run_all.py`) on {datetime.now(UTC).date().isoformat()}.
Machine: {transitions["machine"]}. The machines are shared and noisy (file creation alone swings
10x between runs here), so each comparison is made within one run, interleaved, and figures are
medians. No test asserts a timing.

## One transition (issue: core engine)

`{transitions["command"]}`

Through the Python API (`StateManager.update_state`, a long-lived worker), against the naive loop
`git add <file> && git commit -- <file>` on an identical repository, one of each in turn, with a
staged change of the user present throughout. Both do the same read, validation and fsynced
atomic write of the episode file; only the commit differs.

| episodes | split index | hystate ms | naive ms | speed-up | first after git rewrote the index, ms | `hystate advance` process, ms | index KB |
|---|---|---|---|---|---|---|---|
{rows}

Cost at 100,000 / cost at 1,000 (no split index): **{transitions.get("growth")}x**.

Where the time goes at 100,000 (profile): git's index is 11.7 MB; git's lock protocol means
writing all of it anew (plus its SHA-1) for every change, as `git update-index` does, ~15-30 ms
on this disk. hystate patches the one entry in place, resumes SHA-1 from a state saved before the
first changed byte, and re-uses the bytes it wrote last time while the file is still the same
inode — but cannot avoid writing the file. The year folder's tree (5,000 entries, ~340 KB) is the
other size-dependent cost. Split index (`core.splitIndex=true`, an opt-in hystate never sets:
libgit2 cannot read it) makes the index small; hystate then hands the index update to
`git update-index`, which is why its figures are not better.

## Reading commands and caches (issue: caches)

`{q["command"]}` — {q["episodes"]:,} episodes in mixed stages, warm cache, whole processes.
Absolute figures moved by up to a third between runs on this shared machine (the baseline of
reading every file took 23 to 32 s on the same day); the ratio within one run is the stable figure.

| what | figure |
|---|---|
| `hystate status` | {q["status_warm_ms"]} ms |
| `hystate list --stage failed` | {q["list_failed_warm_ms"]} ms |
| reading every YAML file instead (C loader) | {q["read_every_yaml_s"]} s → status is **{q["status_speedup"]}x** faster |
| `hystate rebuild` (full, parallel) | {q["rebuild_s"]} s, peak {q["rebuild_peak_mb"]} MB (all processes) |
| refresh after one transition | {refresh["files_reread"]} file re-read, {refresh["ms"]} ms |
| `hystate status` after one transition | {q["status_after_one_transition_ms"]} ms |
| `hystate report` (HTML) | {q["report_html_s"]} s, peak {q["report_html_peak_mb"]} MB |
| `hystate report --format csv` | {q["report_csv_s"]} s |
| `hystate metrics` | {q["metrics_ms"]} ms |

## Crash safety (issue: recovery)

`{faults["command"]}` — worker processes killed with SIGKILL at random moments, `fsck --repair`
between rounds, then: every acknowledged transition in HEAD's history with the right trailer,
every file valid, HEAD/index/work tree in agreement, `git fsck --strict` clean, caches equal to
the tree.

| kills | rounds | transitions acknowledged | commits | repairs by fsck | problems |
|---|---|---|---|---|---|
| {faults["kills"]} | {faults["rounds"]} | {faults["acknowledged_transitions"]} | {faults["commits"]} | {faults["repairs"]} | {len(faults["problems"])} |

{render_scale(scale)}"""  # type: ignore[index]


SCALE_HEADING = "## The user's path at scale (issue 17)"


def render_scale(scale: dict) -> str:  # type: ignore[type-arg]
    sizes = scale["sizes"]
    large = scale["results"][-1]
    notes = [
        f"- {r['episodes']:,}: {r['discover_workaround']}"
        for r in scale["results"]
        if r.get("discover_workaround")
    ]
    workaround = (
        "\n\n**Workaround in this run** (discover left git's index out of step; the benchmark "
        "repaired it before going on):\n" + "\n".join(notes)
        if notes
        else ""
    )
    return f"""{SCALE_HEADING}

`{scale["command"]}` — a fresh repository per size, driven only through real `hystate`
processes: `init`, `discover --from` a JSON-lines catalog, then the everyday commands. Each cell
is wall seconds / CPU seconds (user + system, the process and the workers and git processes it
waited for), best of {scale["runs"]} for the quick steps, with the peak memory of the process and
its children in brackets. Growth is the figure at {sizes[-1]:,} over the figure at {sizes[0]:,}:
10x the episodes, so a linear step grows ≤ 10x (a step dominated by the ~0.2 s of process
start-up much less), a quadratic one 100x. The naive alternative reads every YAML file with
PyYAML's C loader (for validate: and checks each against the JSON Schema with `jsonschema`).

**The machine is shared with five other agents** (2 cores; load average 2-5 during the run
below, 6-13 during earlier runs of the same code, whose wall times were up to 2x these): wall
times swing between runs; CPU seconds hardly depend on the load and are the figures to read for
growth. After discover git's index was in step with HEAD:
{"yes" if large["discover_index_ok"] else "no"}; every episode file committed:
{"yes" if large["discover_files_ok"] else "no"}.{workaround}

{scale["table"]}

- The refresh after one transition (in-process, `StateManager.refresh`) is git's scan of the
  work tree (`git status` of the state folder: it stats every file, so that a hand edit shows
  up) plus the cache work: tree diff, one file re-read, the SQLite update, and index.json
  spliced instead of regenerated (before: ~0.3-0.5 s at 100,000 for index.json alone). The cache
  work fits in 50 ms; the scan does not, and cannot without a file-system monitor (git's
  `core.fsmonitor`, which `git status` honours when a user configures it). Reading commands
  start the scan in the background while Python starts, which hides most of it.
- `rebuild` was 749 s at 100,000 before (the quadratic commit attribution); it is now parsing
  100,000 YAML files on two cores (~0.25 ms of CPU each) plus ~3 s of SQLite.
- `status` warm at 100,000 is at the edge of its goal: 0.33 s (three runs at load average ~2),
  0.4-0.6 s in benchmark runs under more load. Its ~0.4 s of CPU: Python start-up and imports
  (~0.2 s), git's scan (in parallel with them), the forecast's groups query (75 ms; 240 ms
  before cache format 4 gave it a covering index).
- `list --json` of every episode holds them all in memory (1.2 GB at 100,000): linear, but
  streaming the output would be the next step. `discover` peaks at ~1 GB at 100,000 (the
  parent and its two worker processes together; not profiled here).
"""


if __name__ == "__main__":
    main()
