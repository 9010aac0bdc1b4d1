"""Fair turns between nodes (``hystate.cluster.turns``, issue 24): a node contending with another
for the one branch is not starved, and a node alone never pauses. Real claiming processes on
real clones, a real ``git daemon`` on 127.0.0.1; no timing assertions (counts only)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.test_batch_claims import CONFIG, finish, remote_held
from tests.conftest import HYSTATE
from tests.harness.sync import GitServer, clone_nodes, served

EPISODES = 48

# one claiming process: imports, says it is ready, waits for the start (so that no node gets a
# head start from a slower interpreter start), then claims one at a time until nothing is ready
LOOP = """
import json, sys, time
from pathlib import Path
from hystate.manager import StateManager
node, worker, flags = sys.argv[1:]
manager = StateManager(cwd=node, worker=worker)
Path(flags, worker).touch()
while not Path(flags, "go").exists():
    time.sleep(0.01)
while True:
    got = manager.claim_next("downloading", 1, worker=worker)
    if not got:
        break
    print(json.dumps([got[0].episode.episode_id, got[0].lease]), flush=True)
"""


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[GitServer, list[Path]]]:
    with served(tmp_path, CONFIG, EPISODES) as server:
        yield server, clone_nodes(server, tmp_path)


def claim_all(nodes: list[Path], workers: int, flags: Path) -> dict[str, tuple[str, str]]:
    """``workers`` claiming processes on each of ``nodes``, started together, until nothing is
    ready; episode -> (worker, lease), each acknowledged once."""
    flags.mkdir()
    procs = {
        f"n{i}w{j}": subprocess.Popen(
            [*HYSTATE[:1], "-c", LOOP, str(node), f"n{i}w{j}", str(flags)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, node in enumerate(nodes)
        for j in range(workers)
    }
    end = time.monotonic() + 300
    while not all((flags / name).exists() for name in procs):
        assert time.monotonic() < end and all(p.poll() is None for p in procs.values())
        time.sleep(0.02)
    (flags / "go").touch()
    acked: dict[str, tuple[str, str]] = {}
    for name, proc in finish(procs).items():
        assert proc.returncode == 0, proc.stderr
        for line in proc.stdout.splitlines():
            eid, lease = json.loads(line)
            assert eid not in acked, f"{eid} acknowledged to {acked[eid][0]} and {name}"
            acked[eid] = (name, lease)
    return acked


def turns_of(node: Path) -> dict[str, float]:
    path = node / ".git" / "hystate" / "turns.json"
    return json.loads(path.read_text()) if path.exists() else {}


def test_two_contending_nodes_each_get_a_fair_part(
    cluster: tuple[GitServer, list[Path]], tmp_path: Path
) -> None:
    """2 nodes x 2 workers claim every episode: exactly once each, and neither node is starved
    (each gets at least a quarter: half its fair share, a bound that holds on a loaded machine;
    without turns one node took 42 claims to the other's 1)."""
    server, nodes = cluster
    acked = claim_all(nodes, 2, tmp_path / "flags")
    assert len(acked) == EPISODES
    assert remote_held(server, tmp_path) == acked  # each on the remote under that very claim
    per_node = [sum(1 for w, _ in acked.values() if w.startswith(f"n{i}")) for i in range(2)]
    assert min(per_node) >= EPISODES // 4, per_node
    counts = [turns_of(node) for node in nodes]
    assert all(c.get("wins", 0) > 0 for c in counts), counts
    assert sum(c.get("pauses", 0) for c in counts) > 0, counts  # the turns were yielded


def test_a_node_alone_never_pauses(cluster: tuple[GitServer, list[Path]], tmp_path: Path) -> None:
    """One node's three workers claim every episode while the other node is idle: its pushes
    win back to back (it may look for other nodes now and then) and it never pauses."""
    server, (node, idle) = cluster
    acked = claim_all([node], 3, tmp_path / "flags")
    assert len(acked) == EPISODES
    assert remote_held(server, tmp_path) == acked
    counts = turns_of(node)
    assert counts.get("wins", 0) > 1, counts
    assert counts.get("lost_rounds", 0) == 0, counts
    assert counts.get("pauses", 0) == 0, counts
    assert turns_of(idle) == {}
