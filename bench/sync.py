"""Claims through a shared remote (issue 13): claims per second and the median claim round trip
against a real ``git daemon`` on 127.0.0.1, beside a plain ``git push`` of one small commit
measured in the same run.

    python bench/sync.py [--claims 40] [--seconds 15] [--workers 3] [--nodes 1,2,4] [--json OUT]
        [--doc]

Prints, in one run: the claim round trip beside a plain push, and the aggregate claims per
second with 1, 2 and 4 nodes claiming at once (a fresh server each time), with each node's count
and the lowest node's share of the mean: once with one claiming process per node, once with
``--workers`` processes per node (a node's workers share its pushes: ``hystate.cluster.batch``).
Before each timed window the nodes sync once (they know one another, as nodes in service do)
and every claiming process builds its node's state cache; only the claims of the window count.
Each node count's CPU per claim (ms, user + system: the claiming processes with their git
children, and the server with what it ran) and, from it, the most the machine's cores allow
4 nodes over 1 node (``cpu_bound_four_over_one``). Each node's fair-turn counters
(``hystate.cluster.turns``: pushes won, rounds lost, pauses, seconds paused, looks, its measured
push, fetch and lost-round times) are in the JSON too.

--doc rewrites the "Several machines" section of docs/BENCHMARKS.md with the figures.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import docfile

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from hystate.demo_cluster import start_daemon  # noqa: E402

# the real catalog beside the project (../shared/data); made-up episodes where it is absent, or
# with --episodes (a window long enough for a fair turn of 4 nodes claims more than 525)
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


def seed(tmp: Path, url: str, mode: str, episodes: int = 0) -> None:
    work = tmp / "seed"
    work.mkdir()
    git(work, "init", "-q", "-b", "main")
    config = {
        "state_management": {
            "sync": {"remote": "origin", "claims": mode},
            "recovery": {"auto_resume": False},
        }
    }
    (work / "hystate.yaml").write_text(json.dumps(config))
    catalog = CATALOG
    if episodes or not catalog.is_file():
        rows = [
            {"identifier": f"ep{i}", "title": f"Episode {i}", "date": f"{2004 + i % 16}-01-01"}
            for i in range(episodes or 525)
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


def node_claims(path: str, worker: str, window: Any, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    """One node's claiming process: its state cache built first (as a node in service has it),
    then, once every process is ready, claims one at a time until the window's end; reports
    its claims and the CPU it and its git children used in the window."""
    from hystate.manager import StateManager

    manager = StateManager(cwd=path, worker=worker)
    manager.get_next_for_processing("downloading", 1)
    out.put(("ready", worker))
    window["go"].wait()
    until = window["until"].value
    before = process_cpu()
    done = 0
    while time.time() < until and manager.claim_next("downloading", 1, worker=worker):
        done += 1
    out.put((worker, (done, process_cpu() - before)))


def process_cpu() -> float:
    """CPU seconds of this process and of its children that ended."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime + children_cpu()


def daemon_cpu(pid: int) -> float:
    """CPU seconds of a child process and of its children it waited for (``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


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


def children_cpu() -> float:
    """CPU seconds (user + system) of this process's children that ended and were waited for,
    and of theirs in turn."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def stop(daemon: subprocess.Popen[bytes]) -> None:
    daemon.terminate()
    try:
        daemon.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(daemon.pid, signal.SIGKILL)
        daemon.wait()


def ms(values: list[float]) -> float:
    return round(statistics.median(values) * 1000, 1)


def cluster(
    tmp: Path, nodes: int, seconds: float, mode: str, workers: int, episodes: int
) -> dict[str, object]:
    """``nodes`` clones of a fresh server, ``workers`` claiming processes each, all at once
    (``episodes``: made-up ones, 0 for the real catalog)."""
    base = tmp / f"{mode}-nodes{nodes}x{workers}"
    base.mkdir()
    daemon, url = start_daemon(base)
    try:
        subprocess.run(
            ["git", "init", "-q", "--bare", "-b", "main", str(base / "state.git")], check=True
        )
        seed(base, url, mode, episodes)
        paths = [clone(url, base / f"n{i}", f"bench-{i}") for i in range(nodes)]
        # nodes in service: each synced once after every node published its lease table, so
        # they know one another (the stripes, the turns to push the branch) from the start
        for path in paths + paths[:-1]:
            subprocess.run(
                [sys.executable, "-m", "hystate.cli", "sync"], cwd=path, check=True,
                capture_output=True,
            )  # fmt: skip
        queue: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
        # all start together once every process imported and built its node's state cache;
        # only the claims made in the window count
        window: dict[str, Any] = {
            "go": multiprocessing.Event(),
            "until": multiprocessing.Value("d", 0.0),
        }
        procs = [
            multiprocessing.Process(target=node_claims, args=(str(p), f"w{i}-{j}", window, queue))
            for i, p in enumerate(paths)
            for j in range(workers)
        ]
        for proc in procs:
            proc.start()
        for _ in procs:
            queue.get()
        time.sleep(0.3)  # (the last one's git processes reaped)
        before = daemon_cpu(daemon.pid)
        started = time.time()
        window["until"].value = started + seconds
        window["go"].set()
        answers = dict(queue.get() for _ in procs)
        wall = time.time() - started
        time.sleep(0.3)
        server = daemon_cpu(daemon.pid) - before
        for proc in procs:
            proc.join()
    finally:
        stop(daemon)
    counts = {w: done for w, (done, _) in answers.items()}
    clients = sum(cpu for _, cpu in answers.values())
    per_node = [sum(counts[f"w{i}-{j}"] for j in range(workers)) for i in range(nodes)]
    turns = [_turns(p) for p in paths]
    total = sum(per_node)
    mean = total / nodes
    return {
        "nodes": nodes,
        "workers_per_node": workers,
        "claims": total,
        "claims_per_second": round(total / wall, 1),
        "per_node": per_node,
        "lowest_share_of_mean": round(min(per_node) / mean, 2) if mean else 0.0,
        # CPU per claim in the window (ms): the claiming processes and their git children,
        # and the server (git-daemon and what it ran: receive-pack, upload-pack)
        "cpu_ms_per_claim": {
            "nodes": round(clients * 1000 / total, 1) if total else 0.0,
            "server": round(server * 1000 / total, 1) if total else 0.0,
        },
        "turns": turns,
    }


def _turns(node: Path) -> dict[str, float]:
    """The node's fair-turn counters (``cluster/turns.py``): pushes won, rounds lost, pauses
    and seconds paused, looks, and its measured push round and catch-up (lost round) times."""
    try:
        state = json.loads((node / ".git" / "hystate" / "turns.json").read_text())
    except (OSError, ValueError):
        return {}
    keep = ("wins", "lost_rounds", "pauses", "paused", "polls", "round", "fetch", "lost_cycle")
    return {k: round(float(state[k]), 3) for k in keep if k in state}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--claims", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=15.0, help="claiming time per node count")
    parser.add_argument("--workers", type=int, default=3, help="claiming processes per node")
    parser.add_argument("--nodes", default="1,2,4", help="node counts, first is the base")
    parser.add_argument(
        "--modes", default="branch,refs", help="sync.claims modes to measure, each in turn"
    )
    parser.add_argument(
        "--episodes", type=int, default=0, help="made-up episodes instead of the real 525"
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument("--doc", action="store_true")
    args = parser.parse_args()
    os.environ.update(ENV)
    load_start = round(os.getloadavg()[0], 1)
    result: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "load_average_start": load_start,
        "git": subprocess.run(["git", "--version"], capture_output=True, text=True).stdout.strip(),
        "episodes": args.episodes or 525,
        "catalog": "made-up" if args.episodes or not CATALOG.is_file() else "real",
        "workers_per_node": args.workers,
        "modes": {m: measure(args, m) for m in args.modes.split(",")},
        "load_average": round(os.getloadavg()[0], 1),  # the machine is shared: say how busy
        "command": docfile.command_line("sync.py", sys.argv[1:]),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if args.doc:
        write_doc(result)


def measure(args: argparse.Namespace, mode: str) -> dict[str, Any]:
    """One ``sync.claims`` mode: the claim round trip beside a plain push, then the nodes."""
    tmp = Path(tempfile.mkdtemp(prefix=f"hystate-bench-sync-{mode}-"))
    try:
        daemon, url = start_daemon(tmp)
        try:
            subprocess.run(
                ["git", "init", "-q", "--bare", "-b", "main", str(tmp / "state.git")], check=True
            )
            seed(tmp, url, mode, args.episodes)
            node = clone(url, tmp / "node", "bench-a")
            other = clone(url, tmp / "pusher", "bench-p")
            pushes = plain_pushes(other, args.claims // 2)
            one = claims(node, args.claims, "bench-a")
            pushes += plain_pushes(other, args.claims // 2)  # before and after: same conditions
        finally:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait()
        counts = [int(n) for n in args.nodes.split(",")]
        scaling = [cluster(tmp, n, args.seconds, mode, 1, args.episodes) for n in counts]
        batched = [cluster(tmp, n, args.seconds, mode, args.workers, args.episodes) for n in counts]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def ratio(a: dict[str, Any], b: dict[str, Any]) -> float:
        return (
            round(a["claims_per_second"] / b["claims_per_second"], 2)
            if b["claims_per_second"]
            else 0.0
        )

    cores = os.cpu_count() or 1
    one_node: dict[str, Any] = scaling[0]
    four_cpu = sum(dict(scaling[-1]["cpu_ms_per_claim"]).values())  # type: ignore[call-overload]
    return {
        "claims": len(one),
        "claim_median_ms": ms(one),
        "plain_push_median_ms": ms(pushes),
        "claim_over_push": round(ms(one) / ms(pushes), 2),
        "scaling": scaling,
        "four_over_one": ratio(scaling[-1], scaling[0]),
        # what the cores hold at the CPU a claim costs with 4 nodes, over one node's rate:
        # the ratio 4 nodes / 1 node cannot pass this on this machine
        "cpu_bound_four_over_one": round(cores * 1000 / four_cpu / one_node["claims_per_second"], 2)
        if four_cpu and one_node["claims_per_second"]
        else 0.0,
        "scaling_workers": batched,
        "four_over_one_workers": ratio(batched[-1], batched[0]),
        "four_nodes_over_one_worker": ratio(batched[-1], scaling[0]),
    }


def _rows(scaling: list[dict[str, Any]]) -> str:
    return "\n".join(
        f"| {c['nodes']} | {c['claims']} | {c['claims_per_second']} | "
        f"{', '.join(str(n) for n in c['per_node'])} | {c['lowest_share_of_mean']} |"
        for c in scaling
    )


MODES = {
    "branch": "`sync.claims: branch` (the default): a claim is committed locally, then waits "
    "until a push of the node carries it to the branch (the worker that gets the node's sync "
    "lock pushes every claim the node's workers made meanwhile, compare-and-swap); only a push "
    "that lost is fetched, replayed and pushed again.",
    "refs": "`sync.claims: refs`: a claim is committed locally, then its ticket "
    "`refs/hystate/claims/<id>` is set to that commit, compare-and-swap (the worker that gets "
    "the node's sync lock pushes the tickets of every claim the node made meanwhile, each on "
    "its own); the branch follows about once a second, atomically with any move not ticketed "
    "yet.",
}


def _mode(name: str, r: dict[str, Any], workers: int) -> str:
    return f"""### `sync.claims: {name}`

{MODES.get(name, "")} Either way a claim returns only once the remote has it.

| what | figure |
|---|---|
| one claim, round trip (median of {r["claims"]}, one node, one worker, back to back) | {r["claim_median_ms"]} ms |
| plain `git push` of one small commit (its own branch), same server, same run (median) | {r["plain_push_median_ms"]} ms |
| claim / push | {r["claim_over_push"]}x |

Nodes claiming at once, one claiming process per node (one claim at a time, a fresh server
each):

| nodes | claims | claims/s | per node | lowest node / mean |
|---|---|---|---|---|
{_rows(r["scaling"])}

The same with {workers} claiming processes per node:

| nodes | claims | claims/s | per node | lowest node / mean |
|---|---|---|---|---|
{_rows(r["scaling_workers"])}

4 nodes / 1 node: **{r["four_over_one"]}x** with one worker each, {r["four_over_one_workers"]}x
with {workers} each; 4 nodes of {workers} workers / 1 node of one:
{r["four_nodes_over_one_worker"]}x.
"""


def write_doc(r: dict[str, Any]) -> None:
    modes = "\n".join(_mode(n, m, r["workers_per_node"]) for n, m in r["modes"].items())
    section = f"""{HEADING}

`{r["command"]}` on {r["machine"]}, {r["git"]}; a bare repository served by `git daemon` on
127.0.0.1, the {r["episodes"]} {r["catalog"]} episodes, each mode measured in turn in one run. Every
node, the server and the claiming processes share the same {r["machine"].split(", ")[1]} (load
average {r.get("load_average_start", "?")} at the start, {r.get("load_average", "?")} at the
end of the run). See docs/SYNC.md ("Claims: what bounds them", "Claims on their own refs").

{modes}"""
    docfile.write_section(HEADING, section)


if __name__ == "__main__":
    main()
