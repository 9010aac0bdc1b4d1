"""Fair turns between nodes pushing claims to one branch (docs/SYNC.md, "Fair turns").

The node whose push won holds the remote's tip and pushes its next batch without a fetch; a
node that lost must fetch, replay and push again, which takes it several push round trips. So
without a pause one node takes nearly every turn (measured: 42 claims to 1), and a pause of one
push round trip is still shorter than the loser's catch-up (measured: a pause of 100-160 ms
against 250-520 ms per lost round; the lowest node at 0.29 of the mean).

So a node that won its last push less than ``BACK_TO_BACK`` ago, while it knows other nodes
contend, yields its turn: before its next push it waits until the other nodes have landed about
as many commits as its own last push carried, each, the last of them any push (``need``: a node
that landed waits in turn, so with two nodes one push of the other, whatever it carried, is its
whole turn). It looks (one fetch) a little before they had landed the last times (``gap``,
learnt; at first one catch-up of theirs per other node), then every third of a catch-up until
some landed, then every catch-up; it stops waiting when they landed enough, when what they
landed stopped growing for two catch-ups (they wait for its turn in their turn), or after
``POLLS`` looks or ``MAX_PAUSE`` seconds. A catch-up (fetch, replay, push) is measured per node,
not a constant, and each node publishes its own. When a look shows their commits, the node's
push follows on that fresh tip (replayed first) instead of losing to them: the waiting replaces
a lost round rather than adding one. When nobody landed in two whole waits in a row, nobody
contends any more (until a new sign).

A node knows others contend when it lost a push itself lately, when a look showed other nodes'
commits, or when another node's ``refs/hystate/turns/<node>`` says it lost a push or waited for
a turn in the last ``CONTENDED`` seconds (those refs come with the lease tables, by every sync
and by the first look of a wait; later looks fetch the branch only): a node that loses or
yields force-pushes the time and its catch-up there, at most every ``PUBLISH`` seconds. A node
winning back to back with no such sign looks at its second push, then at intervals doubling
from ``FIRST_LOOK`` up to ``LOOK`` seconds. Alone, a node never pauses (nobody else lands,
nobody publishes); while it pauses, its other workers' claims join the batch the pause delays.
No node ever gives up: losers retry until their deadline.

The node's state is one small file (``.git/hystate/turns.json``) written by the holder of the
node's sync lock only; it also counts wins, lost rounds, pauses and looks (``bench/sync.py``).
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from hystate.cluster import landed as landed_tip
from hystate.cluster import lease_refs
from hystate.cluster.sync import KINDS, TURNS, timeout
from hystate.core.errors import GitError, HystateError
from hystate.core.model import parse_time
from hystate.git import remote as gr

if TYPE_CHECKING:
    from hystate.engine.workspace import Workspace

BACK_TO_BACK = 2.0  # seconds: a push this soon after the node's last won push may yield
FIRST_LOOK = 0.25  # seconds: the first look of a run of won pushes with no sign of others
LOOK = 2.0  # seconds between looks at most (each look that finds no sign doubles the interval)
CONTENDED = 10.0  # seconds a sign of another contending node counts
PUBLISH = 3.0  # seconds between two publications of the node's own turns ref
MAX_PAUSE = 2.0  # seconds a node yields at most before one push
MAX_CYCLE = 1.0  # seconds: a catch-up longer than this (own or published) counts as this
POLLS = 8  # looks at most during one pause
WALK = 64  # commits walked back from the remote's tip to the node's own last one
FILE = "turns.json"


def _path(ws: Workspace) -> str:
    return str(ws.repo.git_dir / "hystate" / "turns.json")


def _state(ws: Workspace) -> dict[str, Any]:
    try:
        with open(_path(ws), "rb") as fh:
            data = json.loads(fh.read())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, int | float | str)}


def _save(ws: Workspace, state: dict[str, Any]) -> None:
    path = _path(ws)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + ".tmp", "w") as fh:
            fh.write(json.dumps(state))
        os.replace(path + ".tmp", path)
    except OSError:
        pass  # fairness is best effort: a full disk must not fail the claim


def _num(state: dict[str, Any], key: str) -> float:
    value = state.get(key, 0.0)
    return float(value) if isinstance(value, int | float) else 0.0


def _add(state: dict[str, Any], key: str, value: float) -> None:
    state[key] = _num(state, key) + value


def _ewma(state: dict[str, Any], key: str, sample: float) -> None:
    old = _num(state, key)
    state[key] = sample if old <= 0 else 0.7 * old + 0.3 * sample


def cycle(state: dict[str, Any]) -> float:
    """This node's catch-up, measured: a fetch, a replay and a push (or one lost round)."""
    mine = max(_num(state, "fetch") + _num(state, "round"), _num(state, "lost_cycle"))
    return min(max(mine, 0.05), MAX_CYCLE)


def before_push(ws: Workspace, remote: str, branch: str) -> None:
    """Under the node's sync lock, before it pushes its batch: yield the turn while it is
    pushing back to back and other nodes contend (see the module docstring). The tracking ref
    a look fetched is fresh: the push that follows replays onto it first."""
    state = _state(ws)
    now = time.time()
    won = _num(state, "won")
    if now - won >= BACK_TO_BACK:
        if _num(state, "look_every") != FIRST_LOOK:
            state["look_every"] = FIRST_LOOK  # (a new run of pushes: others may start too)
            _save(ws, state)
        return
    node = lease_refs.node_name(ws)
    landed = -1  # not looked yet
    if now - _num(state, "contended") >= CONTENDED:
        every = min(max(_num(state, "look_every"), FIRST_LOOK), LOOK)
        if now - _num(state, "looked") < every:
            return
        state["looked"] = now
        landed = _look(ws, remote, branch, state, node)
        if time.time() - _num(state, "contended") >= CONTENDED:
            state["look_every"] = every * 2
            _save(ws, state)
            return  # no sign of another node: no pause
    others = int(min(max(_num(state, "others"), 1.0), 8.0))  # (any node can publish a ref)
    catch_up = max(cycle(state), min(_num(state, "their_cycle"), MAX_CYCLE))
    need = (others - 1) * max(int(_num(state, "carried")), 1) + 1  # (the last one: any push)
    if landed >= need:
        _save(ws, state)
        return  # they had their turns already: push on the fresh tip
    gap = _num(state, "gap")  # how long after its push the others had landed, lately
    end = won + min(max((others + 1) * catch_up * 1.5, gap * 2), MAX_PAUSE)
    at = won + (gap * 0.75 if gap else others * catch_up) * random.uniform(0.9, 1.1)
    _publish(ws, remote, state, node)  # (while it waits: it says it contends too)
    began = time.time()
    seen, moved = 0, began
    for poll in range(POLLS):
        wait = min(at, end) - time.time()
        if wait > 0:
            time.sleep(wait)
        looked = time.time()
        landed = _look(ws, remote, branch, state, node, full=poll == 0 and landed < 0)
        if landed >= need:
            _ewma(state, "gap", min(looked - won, MAX_PAUSE))
            break
        now = time.time()
        if landed > seen:
            seen, moved = landed, now
        if now >= end or (seen and now - moved >= 2 * catch_up):
            break  # (they landed, then stopped: they wait for this node's turn too)
        at = now + (catch_up * 0.8 if seen else max(catch_up / 3, _num(state, "fetch")))
    _add(state, "pauses", 1)
    _add(state, "paused", time.time() - began)
    if landed > 0:
        state["empty"] = 0.0
    elif _num(state, "empty") >= 1:  # twice nobody took the turn: nobody contends any more
        state.update(contended=0.0, quiet=time.time(), others=0.0, empty=0.0)
    else:
        _add(state, "empty", 1)  # (once may be a slow catch-up on a busy machine)
    _save(ws, state)


def _look(
    ws: Workspace, remote: str, branch: str, state: dict[str, Any], node: str, full: bool = True
) -> int:
    """One fetch: how many commits other nodes landed since this node's last push (the
    contention signs updated in ``state``; ``full``: the nodes' refs too, else the branch)."""
    began = time.time()
    try:
        tip = gr.fetch(ws.repo, remote, branch, timeout(ws), kinds=KINDS if full else ())
    except HystateError:
        return 0  # the push that follows tells what is wrong
    _ewma(state, "fetch", time.time() - began)
    _add(state, "polls", 1)
    mine = landed_tip.last(ws)
    landed = _between(ws, tip, mine) if mine else 0
    others = 0
    if full:
        others, state["their_cycle"] = _contending(ws, node, _num(state, "quiet"))
    if landed or others:
        state["contended"] = time.time()
        state["others"] = float(max(others, 1)) if full else max(_num(state, "others"), 1.0)
    return landed


def _between(ws: Workspace, tip: str | None, mine: str | None) -> int:
    """Commits from ``tip`` back to ``mine`` (first parents, no git process; ``WALK`` at most)."""
    count = 0
    sha = tip
    while sha is not None and sha != mine and count < WALK:
        count += 1
        try:
            parents = gr.commit_info(ws.repo, sha).parents
        except GitError:
            break
        sha = parents[0] if parents else None
    return count


def after_push(
    ws: Workspace,
    rounds: int,
    seconds: float,
    tip: str | None = None,
    base: str | None = None,
) -> None:
    """The node's push of ``base..tip`` won after ``rounds`` rounds in ``seconds``."""
    state = _state(ws)
    state["won"] = time.time()
    if rounds == 1:
        _ewma(state, "round", min(seconds, MAX_CYCLE))
        state["lost_cycle"] = _num(state, "lost_cycle") * 0.8  # (the early chaos fades)
    else:
        state["contended"] = state["won"]
        lost = (seconds - _num(state, "round")) / (rounds - 1)
        _ewma(state, "lost_cycle", min(max(lost, 0.0), MAX_CYCLE))
    if tip is not None:
        state["carried"] = float(min(_between(ws, tip, base), 16))
    _add(state, "wins", 1)
    _add(state, "lost_rounds", rounds - 1)
    _save(ws, state)


def lost(ws: Workspace, remote: str, timeout: float) -> None:
    """A push of the node lost to another node's: remember it and tell the other nodes."""
    state = _state(ws)
    state["contended"] = time.time()
    _publish(ws, remote, state, lease_refs.node_name(ws), timeout)
    _save(ws, state)


def _publish(
    ws: Workspace, remote: str, state: dict[str, Any], node: str, wait: float | None = None
) -> None:
    """Force-push the time and this node's catch-up to ``refs/hystate/turns/<node>``, at most
    every ``PUBLISH`` seconds (best effort: a push that fails is retried all the same)."""
    now = time.time()
    if now - _num(state, "published") < PUBLISH:
        return
    state["published"] = now
    step = datetime.fromtimestamp(now, UTC).isoformat()
    data = json.dumps({"node": node, "lost_at": step, "cycle": round(cycle(state), 3)}).encode()
    try:
        sha = gr.publish_blob_ref(ws.repo, data, FILE)
        ref = f"refs/hystate/{TURNS}/{node}"
        gr.push(ws.repo, remote, sha, ref, timeout(ws) if wait is None else wait, force=True)
    except (HystateError, OSError):
        return


def _contending(ws: Workspace, node: str, quiet: float = 0.0) -> tuple[int, float]:
    """How many other nodes said (as last fetched) they lost a push or waited for a turn in the
    last ``CONTENDED`` seconds and since this node last found nobody contending (``quiet``; a
    clock skew between hosts shortens or stretches that), and the longest catch-up they
    published."""
    now = datetime.now(UTC)
    count = 0
    their = 0.0
    for other, raw in gr.ref_files(ws.repo, f"refs/hystate/remote-{TURNS}/", FILE).items():
        if other == node or len(raw) > 4096:
            continue
        try:
            doc = json.loads(raw)
            text = doc.get("lost_at")
            when = parse_time(text) if isinstance(text, str) and len(text) < 64 else None
            told = doc.get("cycle", 0.0)
        except (ValueError, AttributeError, RecursionError, TypeError):
            continue
        if when is None or not when.tzinfo or abs((now - when).total_seconds()) >= CONTENDED:
            continue
        if when.timestamp() <= quiet:
            continue
        count += 1
        if isinstance(told, int | float) and math.isfinite(told) and told > 0:
            their = max(their, min(float(told), MAX_CYCLE))
    return count, their
