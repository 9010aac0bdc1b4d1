"""Claims through a shared remote (issue 13): claims per second and the median claim round trip
against a real ``git daemon`` on 127.0.0.1, beside a plain ``git push`` of one small commit
measured in the same run.

    python bench/sync.py [--claims 60] [--parallel-seconds 20] [--json OUT] [--doc]

--doc rewrites the "Several machines" section of docs/BENCHMARKS.md with the figures.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import docfile

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from hystate.demo_cluster import start_daemon  # noqa: E402

# the real catalog beside the project (../shared/data); 525 made-up episodes where it is absent
CATALOG = HERE.parent.parent / "shared" / "data" / "archive-org-search-hooting-yard.json"
HEADING = "## Several machines (issue 13)"
ENV = {
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@localhost",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@localhost",
}


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout


def seed(tmp: Path, url: str) -> None:
    work = tmp / "seed"
    work.mkdir()
    git(work, "init", "-q", "-b", "main")
    config = {
        "state_management": {"sync": {"remote": "origin"}, "recovery": {"auto_resume": False}}
    }
    (work / "hystate.yaml").write_text(json.dumps(config))
    catalog = CATALOG
    if not catalog.is_file():
        rows = [
            {"identifier": f"ep{i}", "title": f"Episode {i}", "date": f"{2004 + i % 16}-01-01"}
            for i in range(525)
        ]
        catalog = tmp / "catalog.json"
        catalog.write_text(json.dumps({"response": {"docs": rows}}))
    for args in (["init"], ["discover", "--from", str(catalog)]):
        subprocess.run(
            [sys.executable, "-m", "hystate.cli", *args], cwd=work, check=True, capture_output=True
        )
    git(work, "add", "hystate.yaml")
    git(work, "commit", "-qm", "config")
    git(work, "remote", "add", "origin", url)
    git(work, "push", "-q", "origin", "main")


def clone(url: str, path: Path, node: str) -> Path:
    subprocess.run(["git", "clone", "-q", url, str(path)], check=True)
    git(path, "config", "hystate.node", node)
    return path


def claims(path: Path, count: int, worker: str) -> list[float]:
    from hystate.manager import StateManager

    manager = StateManager(cwd=path, worker=worker)
    times = []
    for _ in range(count):
        started = time.perf_counter()
        got = manager.claim_next("downloading", 1, worker=worker)
        times.append(time.perf_counter() - started)
        if not got:
            break
    return times


def parallel_claims(path: str, seconds: float, worker: str, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    from hystate.manager import StateManager

    manager = StateManager(cwd=path, worker=worker)
    done = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end and manager.claim_next("downloading", 1, worker=worker):
        done += 1
    out.put(done)


def plain_pushes(path: Path, count: int) -> list[float]:
    times = []
    for i in range(count):
        (path / "note.txt").write_text(f"push {i}\n")
        git(path, "add", "note.txt")
        git(path, "commit", "-qm", f"note {i}")
        started = time.perf_counter()
        git(path, "push", "-q", "origin", "HEAD:refs/heads/bench-notes")
        times.append(time.perf_counter() - started)
    return times


def ms(values: list[float]) -> float:
    return round(statistics.median(values) * 1000, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--claims", type=int, default=60)
    parser.add_argument("--parallel-seconds", type=float, default=20.0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--doc", action="store_true")
    args = parser.parse_args()
    os.environ.update(ENV)
    tmp = Path(tempfile.mkdtemp(prefix="hystate-bench-sync-"))
    daemon, url = start_daemon(tmp)
    try:
        subprocess.run(
            ["git", "init", "-q", "--bare", "-b", "main", str(tmp / "state.git")], check=True
        )
        seed(tmp, url)
        node = clone(url, tmp / "node", "bench-a")
        other = clone(url, tmp / "pusher", "bench-p")
        pushes = plain_pushes(other, args.claims // 2)
        one = claims(node, args.claims, "bench-a")
        pushes += plain_pushes(other, args.claims // 2)  # before and after: same conditions
        nodes = [clone(url, tmp / f"par{i}", f"bench-{i}") for i in range(3)]
        queue: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
        procs = [
            multiprocessing.Process(
                target=parallel_claims, args=(str(n), args.parallel_seconds, f"w{i}", queue)
            )
            for i, n in enumerate(nodes)
        ]
        started = time.perf_counter()
        for p in procs:
            p.start()
        counts = [queue.get() for _ in procs]
        for p in procs:
            p.join()
        wall = time.perf_counter() - started
    finally:
        os.killpg(daemon.pid, signal.SIGKILL)
        daemon.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "git": subprocess.run(["git", "--version"], capture_output=True, text=True).stdout.strip(),
        "episodes": 525,
        "claims": len(one),
        "claim_median_ms": ms(one),
        "claims_per_second_one_node": round(len(one) / sum(one), 1),
        "plain_push_median_ms": ms(pushes),
        "parallel_nodes": len(nodes),
        "parallel_claims": sum(counts),
        "parallel_claims_per_second": round(sum(counts) / wall, 1),
        "command": docfile.command_line("sync.py", sys.argv[1:]),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if args.doc:
        write_doc(result)


def write_doc(r: dict[str, object]) -> None:
    section = f"""{HEADING}

`{r["command"]}` on {r["machine"]}, {r["git"]}; a bare repository served by `git daemon` on
127.0.0.1, the {r["episodes"]} real episodes. A claim on a node with a remote is: fetch, claim
locally (one commit), push (a fast-forward push, compare-and-swap), and it returns only once
the remote has it.

| what | figure |
|---|---|
| one claim, round trip (median of {r["claims"]}, one node) | {r["claim_median_ms"]} ms |
| claims per second, one node, one after another | {r["claims_per_second_one_node"]} |
| plain `git push` of one small commit (to a branch of its own), same server, same run (median) | {r["plain_push_median_ms"]} ms |
| claims per second, {r["parallel_nodes"]} nodes claiming at once ({r["parallel_claims"]} claims) | {r["parallel_claims_per_second"]} |

A claim costs about one fetch plus one push: the push alone is the floor. Nodes claiming at
once share one branch, so a push that lost the race is fetched, replayed and pushed again;
the aggregate rate stays near one node's. Batching (`next --claim --limit N`) pushes N claims
at once.
"""
    docfile.write_section(HEADING, section)


if __name__ == "__main__":
    main()
