"""Acknowledged means kept (SPEC 11): what a caller is told about a transition on a node with a
shared remote, and about one of its transitions that a sync later dropped.

- ``sync.push: each``: the transition returns only once a sync (under the node's sync lock,
  waiting for another sync of the node) put it on the remote; a transition that sync drops
  (the remote moved the episode first) raises ``TransitionDropped`` (exit 3) with the reason:
  it was not done. Offline, or still losing to other nodes at the deadline: the result says it
  is pending (``TransitionResult.pending``; the CLI prints it) and the next sync carries it.
- ``sync.push: batch``: every transition's result says it is recorded locally and pending.
- A pending transition that a later sync drops (run by any process of the node: a claim, a
  ``hystate sync``) is journaled (``hystate.cluster.journal``); the worker that made it is told:
  the API raises ``TransitionDropped`` at its next call, the CLI prints it at the next command
  of that worker (``--worker``/``HYSTATE_WORKER``), ``hystate sync --json`` lists it.

A transition on the remote is never dropped: a sync replays only commits the remote lacks.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import TYPE_CHECKING, Any

from hystate.cluster import journal
from hystate.cluster.sync import sync_lock, sync_locked
from hystate.core.errors import HystateError, IllegalTransition
from hystate.core.yamlio import YAMLError, load

if TYPE_CHECKING:
    from hystate.engine.transition import TransitionResult
    from hystate.engine.workspace import Workspace

BATCH = "recorded locally; it reaches the remote with the next sync (sync.push: batch)"


class TransitionDropped(IllegalTransition):
    """A transition this worker was told about was not kept: the remote moved the episode
    first (exit 3)."""


def acknowledge(ws: Workspace, result: TransitionResult) -> TransitionResult:
    """The ``acknowledge`` subscriber: ``result`` once on the remote, or marked pending."""
    name = ws.sync_remote
    if not name or ws.syncing or not result.changed:
        return result
    episode = result.episode
    entry = episode.history[-1]
    key = (episode.episode_id, str(entry["from"]), str(entry["to"]), str(entry["by"]))
    if ws.config.get("sync.push") != "each":
        ws.pending.add(key)
        _start_reading(ws)
        return dataclasses.replace(result, pending=BATCH)
    _start_reading(ws)
    try:
        with sync_lock(ws):  # waits for another sync of this node: it may carry this commit
            report = sync_locked(ws, name)
    except HystateError as exc:
        ws.pending.add(key)
        return dataclasses.replace(
            result,
            pending=f"recorded locally, not on the remote yet ({exc.message}); the next "
            "`hystate sync` carries it",
        )
    if _on(ws, report.head, episode.path, entry):
        return result
    if _on(ws, ws.repo.refs.head().sha, episode.path, entry):  # (not pushed: cannot happen)
        ws.pending.add(key)
        return dataclasses.replace(result, pending="not pushed by the sync")
    why = next(
        (r["reason"] for r in report.dropped if (r["id"], r["from"], r["to"]) == key[:3]),
        "the remote moved the episode first",
    )
    raise TransitionDropped(_told(key, why), hint="`hystate show ID` has what the remote holds")


def _on(ws: Workspace, commit: str | None, rel: str | None, entry: dict[str, Any]) -> bool:
    """Whether the episode file at ``commit`` has the history entry ``entry``."""
    if not commit or not rel:
        return False
    raw = ws.repo.git_bytes("show", f"{commit}:{rel}", check=False)
    try:
        doc = load(raw) if raw else None
    except (YAMLError, UnicodeDecodeError):
        return False
    history = doc.get("history") if isinstance(doc, dict) else None
    return isinstance(history, list) and entry in history


def _start_reading(ws: Workspace) -> None:
    if ws.drops_read is None:
        ws.drops_read = journal.size(ws)


def told(ws: Workspace) -> None:
    """The ``before`` subscriber (and the start of a claim or heartbeat): tell this worker
    about its pending transitions a sync dropped since. The API raises; the CLI prints."""
    if not ws.sync_remote:
        return
    if not ws.raise_drops:
        if ws.drops_by_name:
            _print_for_worker(ws)
        return
    if not ws.pending or ws.drops_read is None:
        return
    rows, ws.drops_read = journal.read(ws, ws.drops_read)
    mine = []
    for row in rows:
        key = (str(row.get("id")), str(row.get("from")), str(row.get("to")), str(row.get("worker")))
        if key in ws.pending:
            ws.pending.discard(key)
            mine.append(_told(key, str(row.get("reason"))))
    if mine:
        raise TransitionDropped(
            "; ".join(mine), hint="those steps were not done: `hystate show ID` for each"
        )


def _told(key: tuple[str, str, str, str], reason: str) -> str:
    eid, old, new, worker = key
    return f"{eid}: {old} -> {new} by {worker} was dropped by a sync, not kept: {reason}"


def _print_for_worker(ws: Workspace) -> None:
    """The CLI: each command of a named worker prints the drops of its transitions since its
    last command (a cursor per worker name in ``.git/hystate/told/``)."""
    digest = hashlib.sha1(ws.worker.encode()).hexdigest()[:16]
    cursor = journal.path(ws).parent / "told" / digest
    try:
        offset = int(cursor.read_text())
    except (OSError, ValueError):
        offset = 0
    rows, end = journal.read(ws, offset)
    if end == offset:
        return
    for row in rows:
        if row.get("worker") == ws.worker:
            key = (str(row.get("id")), str(row.get("from")), str(row.get("to")), ws.worker)
            ws.notice(_told(key, str(row.get("reason"))))
    try:
        cursor.parent.mkdir(parents=True, exist_ok=True)
        cursor.write_text(str(end))
    except OSError:
        pass


def describe(result: TransitionResult) -> str | None:
    """One line for the CLI when ``result`` is not yet on the remote."""
    if result.pending is None:
        return None
    return f"pending: {result.episode.episode_id} {result.pending}"
