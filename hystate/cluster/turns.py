"""Fair turns between nodes pushing claims to one branch (docs/SYNC.md, "Claims: what bounds
them").

The node whose push won holds the remote's tip and pushes its next batch without a fetch; a
node that lost must fetch and replay first, so without a pause one node takes nearly every turn
(measured: 42 claims to 1). So a node pushing back to back (its last push won less than
``BACK_TO_BACK`` ago) pauses before its next push (about one of its push rounds for each other
contending node, jittered, at most ``MAX_PAUSE``), but only while it knows another node is
contending: it lost a push itself lately, or a fetch showed another node's new commits or the
ref of another node saying it lost a push lately (a node that loses force-pushes the time, in
steps of 5 s, to its own ``refs/hystate/turns/<node>``, fetched with the lease tables). A node
winning back to back looks (one fetch) at most every ``LOOK`` seconds. Alone, a node never
pauses; and while it pauses, its other workers' claims join the batch the pause delays.

The node's state is one small file (``.git/hystate/turns.json``) written by the holder of the
node's sync lock only.
"""

from __future__ import annotations

import json
import os
import random
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from hystate.cluster import lease_refs
from hystate.cluster.sync import KINDS, TURNS, timeout
from hystate.core.errors import HystateError
from hystate.core.model import parse_time
from hystate.git import remote as gr

if TYPE_CHECKING:
    from hystate.engine.workspace import Workspace

BACK_TO_BACK = 2.0  # seconds: a push this soon after the node's last won push may yield
LOOK = 2.0  # seconds between looks (a fetch) of a node that keeps winning
CONTENDED = 10.0  # seconds a sign of another contending node counts
MAX_PAUSE = 2.0  # seconds a node yields at most before one push
FILE = "turns.json"


def _path(ws: Workspace) -> str:
    return str(ws.repo.git_dir / "hystate" / "turns.json")


def _state(ws: Workspace) -> dict[str, float]:
    try:
        with open(_path(ws), "rb") as fh:
            data = json.loads(fh.read())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: float(v) for k, v in data.items() if isinstance(v, int | float)}


def _save(ws: Workspace, state: dict[str, float]) -> None:
    path = _path(ws)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + ".tmp", "w") as fh:
            fh.write(json.dumps(state))
        os.replace(path + ".tmp", path)
    except OSError:
        pass  # fairness is best effort: a full disk must not fail the claim


def before_push(ws: Workspace, remote: str, branch: str) -> None:
    """Under the node's sync lock, before it pushes its batch: yield a turn if it is pushing
    back to back while another node contends (see the module docstring)."""
    state = _state(ws)
    now = time.time()
    if now - state.get("won", 0.0) >= BACK_TO_BACK:
        return
    if now - state.get("looked", 0.0) >= LOOK:
        state["looked"] = now
        tip = ws.repo.refs.resolve(gr.tracking_ref(remote, branch))
        try:
            fetched = gr.fetch(ws.repo, remote, branch, timeout(ws), kinds=KINDS)
        except HystateError:
            fetched = tip  # the push that follows tells what is wrong
        others = _contending(ws, lease_refs.node_name(ws))
        if fetched != tip or others:
            state["contended"] = now
            state["others"] = max(others, 1)
        _save(ws, state)
    if now - state.get("contended", 0.0) < CONTENDED:  # about one turn for each other node
        turns = min(max(state.get("others", 1.0), 1.0), 8.0)  # (any node can publish a table)
        pause = min(random.uniform(0.5, 1.5) * turns * state.get("round", 0.0), MAX_PAUSE)
        time.sleep(pause)
        _count(ws, pauses=1, paused=pause)


def after_push(ws: Workspace, rounds: int, seconds: float) -> None:
    """The node's push won after ``rounds`` rounds in ``seconds``."""
    state = _state(ws)
    state["won"] = time.time()
    state["round"] = min(seconds / max(rounds, 1), 2.0)
    if rounds > 1:
        state["contended"] = state["won"]
    state["wins"] = state.get("wins", 0.0) + 1
    state["lost_rounds"] = state.get("lost_rounds", 0.0) + rounds - 1
    _save(ws, state)


def _count(ws: Workspace, **add: float) -> None:
    """Add to the node's counters (wins, lost rounds, pauses, seconds paused: what
    ``bench/sync.py`` reports per node)."""
    state = _state(ws)
    for key, value in add.items():
        state[key] = state.get(key, 0.0) + value
    _save(ws, state)


def lost(ws: Workspace, remote: str, timeout: float) -> None:
    """A push of the node lost to another node's: remember it and tell the other nodes."""
    state = _state(ws)
    state["contended"] = time.time()
    _save(ws, state)
    node = lease_refs.node_name(ws)
    step = datetime.fromtimestamp(time.time() // 5 * 5, UTC).isoformat()
    stamp = ws.repo.git_dir / "hystate" / "turns-published"
    try:
        if stamp.read_text() == f"{remote} {step}":
            return  # told within these 5 s
    except OSError:
        pass
    data = json.dumps({"node": node, "lost_at": step}).encode()
    try:
        sha = gr.publish_blob_ref(ws.repo, data, FILE)
        if gr.push(ws.repo, remote, sha, f"refs/hystate/{TURNS}/{node}", timeout, force=True):
            stamp.write_text(f"{remote} {step}")
    except (HystateError, OSError):
        return  # best effort: the push that lost is retried all the same


def _contending(ws: Workspace, node: str) -> int:
    """How many other nodes said (as last fetched) they lost a push in the last ``CONTENDED``
    seconds (a clock skew between hosts shortens or stretches that)."""
    now = datetime.now(UTC)
    count = 0
    for other, raw in gr.ref_files(ws.repo, f"refs/hystate/remote-{TURNS}/", FILE).items():
        if other == node or len(raw) > 4096:
            continue
        try:
            text = json.loads(raw).get("lost_at")
            when = parse_time(text) if isinstance(text, str) and len(text) < 64 else None
        except (ValueError, AttributeError, RecursionError, TypeError):
            continue
        if when is not None and when.tzinfo and abs((now - when).total_seconds()) < CONTENDED:
            count += 1
    return count
