"""The cluster test: a real ``git daemon``, 3 clones, 2 worker processes per clone, 202 real
episodes (2004-2009) through the first claim, one in five through every stage, ~10% failures;
faults: the server killed and restarted mid-run, a node's worker killed -9 while it pushes, a
node offline for a while.

Beside CPU burners and with short leases, so leases of live workers really expire and are taken
over. Invariants afterwards: only the holder of a lease finishes it, no episode completed twice
within one attempt, no acknowledged transition lost (a pending one dropped is told to its
worker), every file's history legal, every clone equal to the remote, ``git fsck`` clean everywhere.

It runs in both claim modes: ``sync.claims: branch`` (the default) and ``refs`` (a claim
acknowledged by its ticket ``refs/hystate/claims/<id>``, the branch following), on the same
episodes and deadline, its worker killed while it pushes tickets or
the branch; there, in addition, every acknowledged claim is in its episode's ticket on the server
and every ticket's move on the branch after the last syncs.
"""

from __future__ import annotations

import itertools
import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from hystate.core.model import ProcessingStage
from hystate.core.rules import legal_move
from tests.conftest import REPO_ROOT, git, run_hystate
from tests.harness.sync import GitServer, clone_node, free_port, fsck_clean, seed_remote

YEARS = range(2004, 2010)  # the project's own episodes of 2004-2009: 202 of the 525, so the
# run (bounded by the claims the one branch can take per second) stays a few minutes long
LEASE = 12.0  # short, beside CPU burners: leases of live workers do expire, and are recovered
# elsewhere (auto_resume); fencing then refuses the late holder, and the killed worker's
# episodes come back
BURNERS = 2  # processes spinning on the CPU for the whole run
CONFIG = {
    "sync": {"remote": "origin", "push": "batch"},
    "recovery": {
        "retry_delay": 0,
        "stage_timeouts": {"downloading": LEASE, "converting": LEASE, "uploading": LEASE},
    },
}
REFS_CLAIMS = "refs/hystate/claims/"
REFS = {**CONFIG, "sync": {**CONFIG["sync"], "claims": "refs"}}  # type: ignore[dict-item]
MODES = {"branch": (CONFIG, YEARS, 600), "refs": (REFS, YEARS, 600)}  # config, years, deadline
NODES, WORKERS = 3, 2
SUBSET = 5  # every episode through the first claim, one in SUBSET through every stage
S = ProcessingStage

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("heavy")]


class Cluster:
    def __init__(self, tmp: Path, mode: str = "branch") -> None:
        config, years, seconds = MODES[mode]
        self.tmp = tmp
        self.refs = mode == "refs"
        self.server = GitServer(tmp / "srv")
        self.server.start()
        catalog = tmp / "catalog"  # a copy of the project's state folder, read as a catalog
        for year in years:
            shutil.copytree(REPO_ROOT / "processed" / str(year), catalog / str(year))
        self.episodes = sum(1 for _ in catalog.glob("*/*.yaml"))
        seed_remote(self.server, tmp / "seed", catalog, config)
        self.nodes = [clone_node(self.server, tmp / f"node{i}", f"n{i}") for i in range(NODES)]
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.deaths: dict[str, float] = {}  # worker -> time it was killed
        self.burners: list[subprocess.Popen[bytes]] = []
        self.deadline = time.time() + seconds

    def log(self, worker: str) -> Path:
        return self.tmp / f"{worker}.jsonl"

    def start(self, node: int, number: int, seed: int) -> str:
        name = f"n{node}w{number}s{seed}"
        args = [
            str(self.nodes[node]),
            name,
            str(self.log(name)),
            str(seed),
            "0.1",
            str(self.deadline),
            str(SUBSET),
        ]
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "tests.harness.sync_worker", *args],
            cwd=Path(__file__).parents[2],
            stdout=subprocess.DEVNULL,
            stderr=open(self.tmp / f"{name}.err", "wb"),  # noqa: SIM115
        )
        return name

    def kill_while_pushing(self, node: int) -> str:
        """SIGKILL one worker of ``node`` at a moment its `git push` child runs; when none is
        seen pushing within a minute (a loaded machine, a node backing off after the outage),
        at whatever moment it is then: a kill -9 the cluster must survive either way."""
        prefix = f"n{node}w"
        until = time.time() + 60
        while True:
            live = [
                (n, p) for n, p in self.procs.items() if n.startswith(prefix) and p.poll() is None
            ]
            if not live:
                raise AssertionError(f"the workers of node {node} ended before any kill")
            pushing = [(n, p) for n, p in live if _pushing(p.pid, self.refs)]
            if pushing or time.time() >= until:
                name, proc = (pushing or live)[0]
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                self.deaths[name] = time.time()
                return name
            time.sleep(0.005)

    def wait(self) -> None:
        for name, proc in self.procs.items():
            if name in self.deaths:
                continue
            try:
                code = proc.wait(timeout=max(self.deadline - time.time(), 1) + 30)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGUSR1)  # (sync_worker: its threads' stacks, stderr)
                time.sleep(2)
                stacks = (self.tmp / f"{name}.err").read_text()[-4000:]
                last = self.log(name).read_text().splitlines()[-3:]
                raise AssertionError(
                    f"{name} runs 30 s past its deadline: {last}\n{stacks}"
                ) from None
            assert code == 0, name

    def events(self) -> list[dict[str, object]]:
        found = []
        for name in self.procs:
            if self.log(name).exists():
                found += [json.loads(line) for line in self.log(name).read_text().splitlines()]
        return sorted(found, key=lambda e: float(e["t"]))  # type: ignore[arg-type]


def _pushing(pid: int, tickets: bool = False) -> bool:
    """Whether a child of ``pid`` pushes the branch (``tickets``: or claim tickets), not a
    lease table alone."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return False
    for child in children:
        try:
            cmd = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"push" not in cmd:  # (after git's pinned `-c` settings)
            continue
        if not any(b"refs/hystate" in part for part in cmd):
            return True
        if tickets and any(b"refs/hystate/claims/" in part for part in cmd):
            return True
    return False


def _after(seconds: float, action: object) -> threading.Timer:
    timer = threading.Timer(seconds, action)  # type: ignore[arg-type]
    timer.start()
    return timer


@pytest.mark.parametrize("claims", ["branch", "refs"])
def test_cluster_of_three_nodes_with_faults(tmp_path: Path, claims: str) -> None:
    cluster = Cluster(tmp_path, claims)
    try:
        _run_and_check(cluster)
    finally:
        for proc in [*cluster.procs.values(), *cluster.burners]:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        cluster.server.kill()


def _run_and_check(cluster: Cluster) -> None:
    burn = "import time\nend = time.time() + 900\nwhile time.time() < end: pass"
    cluster.burners = [subprocess.Popen([sys.executable, "-c", burn]) for _ in range(BURNERS)]
    for node in range(NODES):
        for number in range(WORKERS):
            cluster.start(node, number, seed=node * 10 + number)
    server = cluster.server
    started = time.time()

    # the server dies for a few seconds
    time.sleep(4)
    server.kill()
    time.sleep(3)
    server.start()
    # a worker of node 1 is killed -9 while it pushes; its node goes on with a new one
    killed = cluster.kill_while_pushing(1)
    cluster.start(1, 0, seed=99)
    # node 2 goes offline (its remote points at a dead port), then comes back
    url = server.url
    time.sleep(2)
    git(cluster.nodes[2], "remote", "set-url", "origin", f"git://127.0.0.1:{free_port()}/state.git")
    time.sleep(5)
    git(cluster.nodes[2], "remote", "set-url", "origin", url)
    cluster.wait()
    elapsed = time.time() - started

    for node in cluster.nodes:  # everyone catches up
        proc = run_hystate(node, "sync", "--json", timeout=300)
        assert proc.returncode == 0, proc.stderr
    for node in cluster.nodes:
        proc = run_hystate(node, "sync", timeout=300)
        assert proc.returncode == 0, proc.stderr
    tip = server.tip()
    docs = _remote_docs(server)
    events = cluster.events()
    claims = [e for e in events if e["ev"] == "claim"]
    offline = [e for e in events if e["ev"] == "offline"]
    print(
        f"\n{len(docs)} episodes, {len(claims)} acknowledged claims, {len(offline)} refused"
        f" while offline, {elapsed:.0f} s, killed {killed} (claims: {'refs' if cluster.refs else 'branch'})",
        file=sys.stderr,
    )

    # every clone equal to the remote, clean, fsck-clean
    for node in [*cluster.nodes, server.bare]:
        assert git(node, "rev-parse", "main").strip() == tip
        fsck_clean(node)
    for node in cluster.nodes:
        assert git(node, "status", "--porcelain", "--untracked-files=no") == ""
        assert run_hystate(node, "validate").returncode == 0

    # every history legal
    for eid, doc in docs.items():
        stage, failed = S.DISCOVERED, None
        for entry in doc["history"][1:]:
            to = S(entry["to"])
            assert legal_move(stage, failed, to), (eid, stage, to)
            failed = stage if to is S.FAILED and stage is not S.FAILED else failed
            stage = to

    # no acknowledged transition lost: every claim and step logged is in its file's history
    entries = {
        eid: {(h["at"], h["to"], h["by"]) for h in doc["history"]} for eid, doc in docs.items()
    }
    # (a pending step of sync.push: batch may be dropped, but then its worker was told so)
    told = " ".join(str(e["error"]) for e in events if e["ev"] == "told")
    # (a drop after its worker's last call, or in the last syncs, is in the node's journal)
    journaled = set()
    for node in cluster.nodes:
        path = node / ".git" / "hystate" / "dropped.jsonl"
        for line in path.read_text().splitlines() if path.exists() else []:
            row = json.loads(line)
            journaled.add((row["id"], row["from"], row["to"], row["worker"]))
    for e in events:
        if e["ev"] == "claim" or (e["ev"] == "step" and not e.get("pending")):
            assert (e["at"], e["to"], e["w"]) in entries[str(e["id"])], e
        elif e["ev"] == "step" and (e["at"], e["to"], e["w"]) not in entries[str(e["id"])]:
            said = f"{e['id']}: {e['frm']} -> {e['to']} by {e['w']} was dropped" in told
            assert said or (e["id"], e["frm"], e["to"], e["w"]) in journaled, e

    # no episode completed by two workers: each attempt left its stage once, under its lease
    for eid, doc in docs.items():
        history = doc["history"]
        for before, after in itertools.pairwise(history):
            if before["to"] in ("downloading", "converting", "uploading"):
                assert before.get("lease"), (eid, before)
                assert after.get("lease") == before["lease"] or after.get("took_over"), (eid, after)

    # only the holder finishes: a step that left an active stage, acknowledged to its worker,
    # was made by the worker the lease was issued to (leases expire under load and episodes
    # are taken over; the late holder's steps are then refused or dropped, never kept)
    holders = {
        (eid, h["lease"]): h["by"]
        for eid, doc in docs.items()
        for h in doc["history"]
        if h.get("lease") and h["to"] in ("downloading", "converting", "uploading")
    }
    for eid, doc in docs.items():
        for h in doc["history"]:
            if h.get("lease") and h["from"] in ("downloading", "converting", "uploading"):
                assert holders[(eid, h["lease"])] == h["by"], (eid, h)

    if cluster.refs:
        _check_tickets(server, docs, claims)

    # all the way through, when the workers ran out of work before their deadline; beside the
    # CPU burners on a busy shared machine they may not: then the work must have gone on
    total = cluster.episodes
    assert len(docs) == total
    done = sum(doc["stage"] in ("published", "skipped") for doc in docs.values())
    exits = [float(e["t"]) for e in events if e["ev"] == "exit"]
    if exits and max(exits) < cluster.deadline - 5:
        stages = {doc["stage"] for doc in docs.values()}
        assert stages <= {"published", "skipped"}, stages
        published = sum(doc["stage"] == "published" for doc in docs.values())
        assert published > total / SUBSET * 0.6, published
        assert all(len(doc["history"]) > 2 for doc in docs.values())  # every one was claimed
    else:
        print(f"the workers' deadline came first: {done} of {total} finished", file=sys.stderr)
        assert done > total / 4 and len(claims) > total / 2, (done, len(claims))


def _check_tickets(
    server: GitServer, docs: dict[str, dict[str, object]], claims: list[dict[str, object]]
) -> None:
    """``sync.claims: refs``: every acknowledged claim is in its episode's ticket on the server
    (the ticket, set compare-and-swap, builds on every earlier move that took it), every
    ticket's move is on the branch, and no history entry was acknowledged as a claim twice."""
    out = git(
        server.bare, "for-each-ref", "--format=%(refname:lstrip=3) %(objectname)", REFS_CLAIMS
    )
    held = dict(line.split(" ", 1) for line in out.splitlines())
    claimed = {str(e["id"]) for e in claims}
    assert claimed <= set(held), sorted(claimed - set(held))[:5]
    paths = _paths(server)
    at_ticket = _docs_at(server, [(held[eid], paths[eid]) for eid in sorted(held)])
    tickets = dict(zip(sorted(held), at_ticket, strict=True))
    for eid, doc in tickets.items():
        made = doc["history"][-1]  # type: ignore[index]
        assert made in docs[eid]["history"], (eid, held[eid], made)  # type: ignore[operator]
    seen = set()
    for e in claims:
        key = (str(e["id"]), e["at"], e["to"], e["w"])
        assert key not in seen, e  # one claim, one acknowledgement
        seen.add(key)
        history = tickets[str(e["id"])]["history"]
        assert any((h["at"], h["to"], h["by"]) == key[1:] for h in history), e  # type: ignore[attr-defined]


def _docs_at(server: GitServer, files: list[tuple[str, str]]) -> list[dict[str, object]]:
    """The episode files ``(commit, path)`` as YAML, read in one ``git cat-file --batch``."""
    batch = subprocess.run(
        ["git", "cat-file", "--batch"],
        input="".join(f"{sha}:{path}\n" for sha, path in files).encode(),
        cwd=server.bare,
        capture_output=True,
        check=True,
    ).stdout
    docs, pos = [], 0
    for _ in files:
        header_end = batch.index(b"\n", pos)
        size = int(batch[pos:header_end].split()[2])
        docs.append(yaml.safe_load(batch[header_end + 1 : header_end + 1 + size]))
        pos = header_end + 1 + size + 1
    return docs


def _paths(server: GitServer) -> dict[str, str]:
    """Episode id -> its file's path on the server's branch."""
    out = git(server.bare, "ls-tree", "-r", "--name-only", "main", "--", "processed")
    return {Path(n).stem: n for n in out.split() if n.endswith(".yaml")}


def _remote_docs(server: GitServer) -> dict[str, dict[str, object]]:
    paths = _paths(server)
    found = _docs_at(server, [("main", path) for path in paths.values()])
    return dict(zip(paths, found, strict=True))
