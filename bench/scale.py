"""The user's path at scale, through the CLI: real `hystate` processes in a fresh repository.

    hystate init
    hystate discover --from catalog.jsonl        (n records, JSON lines)
    hystate rebuild
    hystate status / hystate list --stage failed  (warm)
    hystate next downloading --claim
    hystate advance ID downloaded --set ...   then   hystate status
    hystate report / hystate validate / hystate fsck

at 10,000 and 100,000 episodes, printing each figure (seconds, peak RSS of the process tree
where memory matters), the 10k -> 100k growth next to it, and the naive alternative where there
is one: reading (and validating) every YAML file with PyYAML's C loader. The refresh of the
caches after one transition is also timed alone, in-process (`StateManager.refresh`), since a
process start (~0.2 s of imports) would hide it.

    python bench/scale.py                       # 10,000 and 100,000 episodes (~15 min)
    python bench/scale.py --sizes 2000 8000     # quicker
    python bench/scale.py --ab OTHER/.venv/bin/hystate   # discover + rebuild only, this
        # checkout's hystate and another's one after the other at each size (peak MB over the
        # process tree, seconds, CPU seconds)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import _tree_rss_kb, emit, git, hystate_exe, isolate_git, machine

YEARS = 20  # 2004-2023: 5,000 episodes a year folder at 100,000

NAIVE_READ = """
import glob, collections, yaml
loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
counts = collections.Counter()
for path in glob.glob("processed/*/*.yaml"):
    with open(path, "rb") as fh:
        counts[yaml.load(fh, Loader=loader)["stage"]] += 1
print(dict(counts))
"""

NAIVE_VALIDATE = """
import glob, json, yaml, jsonschema, sys
loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
schema = json.load(open(sys.argv[1]))
validator = jsonschema.Draft202012Validator(schema)
bad = 0
for path in glob.glob("processed/*/*.yaml"):
    with open(path, "rb") as fh:
        bad += any(True for _ in validator.iter_errors(yaml.load(fh, Loader=loader)))
print(bad)
"""

SCHEMA = Path(__file__).resolve().parent.parent / "schema" / "episode.schema.json"


def catalog(path: Path, n: int) -> list[str]:
    """A JSON-lines catalog of ``n`` episodes, as archive.org's search returns them."""
    ids = []
    with path.open("w", encoding="utf-8") as out:
        for i in range(n):
            year = 2004 + i % YEARS
            date = f"{year}-{1 + i // YEARS % 12:02d}-{1 + i // (YEARS * 12) % 28:02d}"
            eid = f"hy0_hooting_yard_{date}_{i:06d}"
            ids.append(eid)
            record = {"identifier": eid, "title": f"Hooting Yard On The Air: #{i}", "date": date}
            out.write(json.dumps(record) + "\n")
    return ids


def measure(args: list[str], cwd: Path, *, sample: bool = False) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, peak MB) of one command. CPU: user + system time of the
    process and the children it waited for (worker processes included), which, unlike the
    wall time, hardly depends on what else the shared machine is doing. Peak: the process's
    own maximum RSS, or with ``sample`` the largest sum over it and its children (every 20 ms)."""
    started = time.perf_counter()
    proc = subprocess.Popen(args, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak_kb = 0
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG if sample else 0)
        if pid:
            break
        peak_kb = max(peak_kb, _tree_rss_kb(proc.pid))
        time.sleep(0.02)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    errors = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode != 0:
        raise RuntimeError(f"{args} failed: {errors}")
    return wall, usage.ru_utime + usage.ru_stime, max(peak_kb, usage.ru_maxrss) // 1024


def best(
    r: dict[str, Any], key: str, args: list[str], cwd: Path, runs: int = 1, *, sample: bool = False
) -> None:
    """Record ``key``_s (median wall), ``key``_cpu (median CPU) and ``key``_mb (largest peak)
    over ``runs`` runs (medians: the machine is shared, and a best-of hides the load)."""
    results = [measure(args, cwd, sample=sample) for _ in range(runs)]
    r[f"{key}_s"] = statistics.median(w for w, _, _ in results)
    r[f"{key}_cpu"] = statistics.median(c for _, c, _ in results)
    r[f"{key}_mb"] = max(m for _, _, m in results)


def index_in_step(root: Path) -> bool:
    """git's index matches HEAD and the work tree for every episode file."""
    staged = git(root, "diff", "--cached", "--name-only", "--", "processed")
    unstaged = git(root, "--no-optional-locks", "status", "--porcelain", "--", "processed")
    return not staged.strip() and not unstaged.strip()


def stdout_of(args: list[str], cwd: Path) -> str:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=True).stdout


def one_size(n: int, runs: int, tmp: Path) -> dict[str, Any]:
    exe = hystate_exe()
    root = tmp / f"repo-{n}"
    source = tmp / f"catalog-{n}.jsonl"
    ids = catalog(source, n)
    r: dict[str, Any] = {"episodes": n}
    say = lambda what: print(f"[{n:,}] {what}", file=sys.stderr, flush=True)  # noqa: E731

    root.mkdir()
    loads = [os.getloadavg()[0]]
    say("hystate init")
    best(r, "init", [exe, "init"], root)
    say("hystate discover --from catalog.jsonl")
    best(r, "discover", [exe, "discover", "--from", str(source)], root, sample=True)
    r["discover_index_ok"] = index_in_step(root)
    if not r["discover_index_ok"]:
        # WORKAROUND while discover could leave git's index out of step: repair it, say so.
        say("WORKAROUND: git's index was left out of step by discover; `git reset -q`")
        git(root, "reset", "-q")
        r["discover_workaround"] = "git reset -q after discover (index left out of step)"
    files = len(list((root / "processed").glob("*/*.yaml")))
    committed = len(git(root, "ls-files", "--", "processed/*.yaml").split())
    r["discover_files_ok"] = files == committed == n

    say("hystate rebuild")
    best(r, "rebuild", [exe, "rebuild"], root, sample=True)
    say("status, list (warm)")
    best(r, "status", [exe, "status"], root, runs)
    best(r, "list", [exe, "list", "--stage", "failed"], root, runs)
    best(r, "show", [exe, "show", ids[0]], root, runs)
    best(r, "next", [exe, "next", "downloading"], root, runs)
    best(r, "list_all", [exe, "list", "--stage", "discovered", "--json"], root)
    say("naive: reading every YAML file")
    best(r, "naive_read", [sys.executable, "-c", NAIVE_READ], root)

    say("next downloading --claim")
    best(r, "claim", [exe, "next", "downloading", "--claim", "--worker", "bench"], root, runs)
    claimed = json.loads(stdout_of([exe, "list", "--stage", "downloading", "--json"], root))
    say("one transition, then status")
    for episode in claimed[:runs]:
        lease = episode["history"][-1]["lease"]  # the claim's token: only its holder finishes
        advance = [exe, "advance", episode["episode_id"], "downloaded", "--worker", "bench",
                   "--lease", lease, "--set", "files.audio_file=audio/x.mp3"]  # fmt: skip
        moved: dict[str, Any] = {}
        best(moved, "advance", advance, root)
        best(moved, "status_after_transition", [exe, "status"], root)
        for k, v in moved.items():
            r.setdefault(k + "_all", []).append(v)
    for k in [k for k in r if k.endswith("_all")]:
        values = r.pop(k)
        r[k[: -len("_all")]] = max(values) if k.endswith("_mb_all") else statistics.median(values)
    r["refresh_after_transition_ms"], r["refresh_reread"] = refresh_alone(root, ids, 3 * runs)
    say("the scans a refresh no longer runs (git status, git diff-files of the state folder)")
    for key, args in SCANS.items():
        best(r, key, ["git", "--no-optional-locks", *args, "--", "processed"], root, runs)

    say("report, validate, fsck")
    best(r, "report", [exe, "report", "--format", "html"], root, sample=True)
    best(r, "validate", [exe, "validate"], root, sample=True)
    best(r, "fsck", [exe, "fsck"], root, sample=True)
    say("naive: validating every YAML file with jsonschema")
    best(r, "naive_validate", [sys.executable, "-c", NAIVE_VALIDATE, str(SCHEMA)], root)
    loads.append(os.getloadavg()[0])
    r["load_min"], r["load_max"] = min(loads), max(loads)
    index_json = root / ".git" / "hystate" / "cache" / "processed" / "index.json"
    r["index_json_kb"] = index_json.stat().st_size // 1024
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()}


def discover_rebuild(n: int, exes: dict[str, str], tmp: Path) -> dict[str, Any]:
    """``discover`` (peak over the process tree) and ``rebuild`` of ``n`` episodes by each
    hystate of ``exes`` in turn, each in a fresh repository: an A/B in one run."""
    source = tmp / f"catalog-{n}.jsonl"
    catalog(source, n)
    r: dict[str, Any] = {"episodes": n}
    loads = [os.getloadavg()[0]]
    for label, exe in exes.items():
        root = tmp / f"repo-{n}-{label}"
        root.mkdir()
        print(f"[{n:,}] {label}: discover, rebuild", file=sys.stderr, flush=True)
        measure([exe, "init"], root)
        part: dict[str, Any] = {}
        best(part, "discover", [exe, "discover", "--from", str(source)], root, sample=True)
        part["index_ok"] = index_in_step(root)
        part["files_ok"] = len(git(root, "ls-files", "--", "processed/*.yaml").split()) == n
        best(part, "rebuild", [exe, "rebuild"], root, sample=True)
        r.update({f"{label}_{k}": v for k, v in part.items()})
        loads.append(os.getloadavg()[0])
        subprocess.run(["rm", "-rf", str(root)], check=True)
    r["load_min"], r["load_max"] = min(loads), max(loads)
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()}


def refresh_alone(root: Path, ids: list[str], runs: int) -> tuple[float, int]:
    """A worker that reads after every write: transition, then `refresh` (median of ``runs``
    milliseconds, and how many files the last one re-read)."""
    code = f"""
import json, sys, time
sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r})
from hystate.manager import StateManager
manager = StateManager(cwd={str(root)!r}, worker="bench")
manager.refresh()
out = []
for eid in {ids[-runs:]!r}:
    manager.update_state(eid, "downloading")
    started = time.perf_counter()
    result = manager.refresh()
    out.append(((time.perf_counter() - started) * 1000, result.reread))
print(json.dumps(out))
"""
    out = json.loads(stdout_of([sys.executable, "-c", code], root))
    return statistics.median(ms for ms, _ in out), out[-1][1]


# what the refresh ran before the caches followed HEAD only (issue 17): the alternatives' cost
SCANS = {
    "scan_status": ["status", "--porcelain=v1", "-z", "--untracked-files=all"],
    "scan_diff_files": ["diff-files", "--name-only"],
}


# (label, key, show memory, naive alternative's key, goal at 100,000)
STEPS = [
    ("discover", "discover", True, None, "≤ 60 s, ≤ 250 MB"),
    ("rebuild", "rebuild", True, None, "≤ 15 s, growth ≤ 12x"),
    ("status (warm)", "status", True, "naive_read", "≤ 0.06 s"),
    ("list --stage failed (warm)", "list", False, "naive_read", "≤ 0.06 s"),
    ("show (one episode)", "show", False, None, "≤ 0.06 s"),
    ("next downloading (warm)", "next", False, None, "≤ 0.06 s"),
    ("list --stage discovered --json (every episode)", "list_all", True, "naive_read", ""),
    ("next downloading --claim", "claim", False, None, ""),
    ("advance (one transition)", "advance", False, None, "≤ 0.08 s"),
    ("status after one transition", "status_after_transition", False, "naive_read", ""),
    ("report (HTML)", "report", True, None, ""),
    ("validate", "validate", True, "naive_validate", "≤ 60 s"),
    ("fsck", "fsck", True, None, "≤ 60 s"),
    ("(not run any more) `git status` of the state folder", "scan_status", False, None, ""),
    ("(not run any more) `git diff-files` of the state folder", "scan_diff_files", False, None,
     ""),
]  # fmt: skip


def table(results: list[dict[str, Any]]) -> str:
    """Markdown: one row per step, a column per size (wall s / CPU s, peak MB), the growth of
    both from the first size to the last, the naive alternative at the last size."""
    sizes = [r["episodes"] for r in results]
    first, last = results[0], results[-1]
    head = " | ".join(f"{n:,}: wall / CPU s" for n in sizes)
    lines = [
        f"| step | {head} | growth wall / CPU | naive at {sizes[-1]:,}: wall / CPU s | goal |",
        "|---" * (len(sizes) + 4) + "|",
    ]

    def pair(r: dict[str, Any], key: str) -> str:
        return f"{r[key + '_s']:.2f} / {r[key + '_cpu']:.2f}"

    for label, key, memory, naive, goal in STEPS:
        cells = [pair(r, key) + (f" ({r[key + '_mb']} MB)" if memory else "") for r in results]
        growth = " / ".join(
            f"{last[f'{key}{u}'] / max(first[f'{key}{u}'], 0.001):.1f}x" for u in ("_s", "_cpu")
        )
        naive_cell = pair(last, naive) if naive else ""
        lines.append(f"| {label} | {' | '.join(cells)} | {growth} | {naive_cell} | {goal} |")
    refresh = [f"{r['refresh_after_transition_ms']:.0f} ms" for r in results]
    lines.append(
        f"| refresh after one transition (in-process, median) | {' | '.join(refresh)} | "
        f"{last['refresh_after_transition_ms'] / first['refresh_after_transition_ms']:.1f}x | | "
        "≤ 50 ms |"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--runs", type=int, default=5, help="median of RUNS for the quick steps")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--ab", help="another hystate executable: discover + rebuild only, A/B")
    args = parser.parse_args()
    isolate_git()
    # start-up as an installed hystate has it: with its bytecode compiled (pip compiles it at
    # install); PYTHONDONTWRITEBYTECODE (set in some shells) would add ~40 ms to every command
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    import compileall

    compileall.compile_dir(Path(__file__).resolve().parent.parent / "hystate", quiet=1)
    results = []
    with tempfile.TemporaryDirectory(prefix="hystate-scale-") as tmp:
        for n in args.sizes:
            if args.ab:
                exes = {"this": hystate_exe(), "other": args.ab}
                print(json.dumps(discover_rebuild(n, exes, Path(tmp))), flush=True)
                continue
            results.append(one_size(n, args.runs, Path(tmp)))
            print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    if args.ab:
        return
    result = {"machine": machine(), "sizes": args.sizes, "runs": args.runs, "results": results}
    low = min(r["load_min"] for r in results)
    high = max(r["load_max"] for r in results)
    result["load"] = f"1-minute load average {low:.1f} to {high:.1f} at the ends of each size's run"
    result["table"] = table(results)
    print(result["table"], file=sys.stderr)
    emit(result, args.json)


if __name__ == "__main__":
    main()
