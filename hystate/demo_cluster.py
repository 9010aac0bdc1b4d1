"""``make demo-cluster``: the simulated migration on three machines sharing one git remote.

A bare repository served by ``git daemon`` on 127.0.0.1 (a free port) plays the shared server;
three clones play three machines, each running two of ``make demo``'s workers (claims are
acknowledged only once pushed; other transitions go with the node's next claim,
``sync.push: batch``). Everything lives in the scratch folder;
the daemon is stopped at the end. Prints what each node did and checks every clone equals the
remote.

    python -m hystate.demo_cluster --dir ../hystate-demo-cluster [--catalog processed]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from hystate import demo

NODES, WORKERS = 3, 2
CONFIG = """state_management:
  recovery:
    retry_delay: 0.5
  sync:
    remote: origin
    push: batch
"""


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout


def start_daemon(base: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``git-daemon`` serving ``base`` on a free port of 127.0.0.1, in its own process group
    (kill the group); the process and the URL of ``base/state.git``. It is run itself, not
    through ``git daemon`` (which would run it as its child), so the process returned is the
    server (``bench/sync.py`` reads the CPU it and its children used)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    path = subprocess.run(["git", "--exec-path"], capture_output=True, text=True).stdout.strip()
    proc = subprocess.Popen(
        [f"{path}/git-daemon", "--export-all", "--enable=receive-pack", "--reuseaddr",
         f"--base-path={base}", "--listen=127.0.0.1", f"--port={port}", str(base)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own group: the connections it forks go with it
    )  # fmt: skip
    for _ in range(600):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, f"git://127.0.0.1:{port}/state.git"
        except OSError:
            time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    raise RuntimeError("git daemon did not start")


def setup(target: Path, catalog: Path) -> tuple[subprocess.Popen[bytes], list[Path], int]:
    if target.exists():
        if not (target / demo.MARKER).exists():
            sys.exit(f"hystate demo-cluster: {target} exists and is not a demo folder")
        shutil.rmtree(target)
    target.mkdir(parents=True)
    (target / demo.MARKER).write_text("made by `make demo-cluster`; safe to delete\n")
    server = target / "server"
    subprocess.run(
        ["git", "init", "-q", "--bare", "-b", "main", str(server / "state.git")], check=True
    )
    try:
        daemon, url = start_daemon(server)
    except RuntimeError as exc:
        sys.exit(f"hystate demo-cluster: {exc}")
    seed = target / "seed"
    count = demo.prepare(seed, catalog)
    (seed / "hystate.yaml").write_text(CONFIG)
    _git(seed, "add", "hystate.yaml")
    _git(
        seed,
        "-c",
        "user.name=demo",
        "-c",
        "user.email=demo@localhost",
        "commit",
        "-qm",
        "sync through origin",
    )
    _git(seed, "remote", "add", "origin", url)
    _git(seed, "push", "-q", "origin", "main")
    nodes = []
    for i in range(NODES):
        node = target / f"node{i}"
        subprocess.run(["git", "clone", "-q", url, str(node)], check=True)
        _git(node, "config", "hystate.node", f"node{i}")
        nodes.append(node)
    return daemon, nodes, count


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dir", type=Path, required=True, help="scratch folder (made anew)")
    parser.add_argument(
        "--catalog", type=Path, default=Path(__file__).resolve().parent.parent / "processed"
    )
    parser.add_argument("--failure-rate", type=float, default=0.10)
    parser.add_argument("--seed", type=int, default=2004)
    args = parser.parse_args(argv)
    from hystate import StateManager

    target = args.dir.resolve()
    daemon, nodes, count = setup(target, args.catalog)
    try:
        print(f"{count} episodes; server {target / 'server/state.git'} (git daemon); nodes:")
        for node in nodes:
            print(f"  {node}")
        ranked = sorted(
            StateManager(cwd=nodes[0]).list_episodes(), key=lambda e: (e.date, e.episode_id)
        )
        demo._ORDER.update({e.episode_id: i for i, e in enumerate(ranked)})
        context = multiprocessing.get_context("fork")
        procs = [
            context.Process(
                target=demo.worker, args=(str(node), 10 * n + k, args.failure_rate, args.seed, 8)
            )
            for n, node in enumerate(nodes)
            for k in range(WORKERS)
        ]
        started = time.monotonic()
        for proc in procs:
            proc.start()
        watcher = StateManager(cwd=nodes[0])
        while any(p.is_alive() for p in procs):
            time.sleep(3)
            print(demo.progress_line(watcher, started), "(node0's view)", flush=True)
        for proc in procs:
            proc.join()
        died = [
            f"node{i // WORKERS} worker {i % WORKERS} (exit {proc.exitcode})"
            for i, proc in enumerate(procs)
            if proc.exitcode != 0
        ]
        print(
            f"\nall workers finished in {time.monotonic() - started:.0f}s;"
            " a last `hystate sync` on each node:"
        )
        hystate = [sys.executable, "-m", "hystate.cli"]
        for node in nodes + nodes:
            subprocess.run([*hystate, "sync"], cwd=node, check=True, capture_output=True)
        ok = report(nodes, target / "server" / "state.git")
    finally:
        os.killpg(daemon.pid, signal.SIGKILL)
        daemon.wait()
    if died:  # a worker that died is a failed demo, whatever the rest did
        sys.exit(f"hystate demo-cluster: FAILED: {', '.join(died)} died (see its traceback above)")
    if not ok:
        sys.exit("hystate demo-cluster: FAILED: a clone differs from the remote or git fsck failed")


def report(nodes: list[Path], bare: Path) -> bool:
    """Print what each node did (its claims first); True when every clone equals the remote
    and is git fsck clean."""
    tip = _git(bare, "rev-parse", "main").strip()
    keys = ("Hystate-Worker", "Hystate-To")
    fmt = "%x1f".join(f"%(trailers:key={k},valueonly,separator=%x2c)" for k in keys) + "%x1e"
    log = _git(bare, "log", f"--format={fmt}", "main")
    per_node: dict[str, Counter[str]] = {}
    for record in log.split("\x1e"):
        worker, _, to = record.strip("\n").partition("\x1f")
        worker, to = worker.strip(), to.strip()
        if not worker.startswith("worker-"):
            continue
        node = f"node{int(worker.split('-')[1]) // 10}"
        kind = "claims" if to in ("downloading", "converting", "uploading") else "other transitions"
        per_node.setdefault(node, Counter())[kind] += 1
    print(f"\n{'node':<8}{'claims':>8}{'other transitions':>20}  equal to the remote  git fsck")
    ok = True
    for i, path in enumerate(nodes):
        counts = per_node.get(f"node{i}", Counter())
        same = "yes" if _git(path, "rev-parse", "HEAD").strip() == tip else "NO"
        # (dangling objects are no damage: each node's turns table, refs/hystate/turns/<node>,
        # is replaced at every publish and leaves its old commit behind until a gc)
        fsck = subprocess.run(
            ["git", "fsck", "--no-progress", "--no-dangling"], cwd=path, capture_output=True
        )
        clean = "clean" if fsck.returncode == 0 and not fsck.stdout.strip() else "PROBLEMS"
        ok = ok and same == "yes" and clean == "clean"
        print(
            f"node{i:<4}{counts['claims']:>8}{counts['other transitions']:>20}  {same:<20}{clean}"
        )
    final = subprocess.run(
        [sys.executable, "-m", "hystate.cli", "status"],
        cwd=nodes[0],
        capture_output=True,
        text=True,
    )
    print("\n`hystate status` on node0:\n" + "\n".join(final.stdout.splitlines()[:15]))
    claims = [per_node.get(f"node{i}", Counter())["claims"] for i in range(len(nodes))]
    print(f"claims per node: {', '.join(f'node{i} {n}' for i, n in enumerate(claims))}")
    return ok


if __name__ == "__main__":
    main()
