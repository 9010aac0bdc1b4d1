"""Replaying a node's unpublished commits on top of the remote's tip: the conflict rules.

Each local commit is replayed file by file against three versions: ``base`` (the file before
the commit), ``local`` (after it) and ``remote`` (the file at the tip being built on).

- The remote did not touch the file (``remote == base``): the local version is taken.
- Both made the same file, or the remote's history holds every entry the local transition
  added (another node replayed it from its ticket, ``hystate.cluster.tickets``): taken once.
- An episode file the remote changed, under a transition commit of that episode:
  * the remote moved no stage (its history is the base's): the field-wise merge of
    ``hystate.review.merge_driver`` decides (a field both changed differently drops the transition);
  * the remote moved the episode: the local transition is re-applied only if it is still legal
    on the remote's version: the remote is in the stage the transition started from, that
    stage is not an active one (leaving an active stage belongs to the attempt that entered
    it, and the remote's is another attempt), the rules allow the move (``rules.legal_move``)
    and a retry stays within its budget. Its history and error entries are appended to the
    remote's, its attempt is counted on top of the remote's count. Otherwise it is dropped,
    with the reason.
- An episode file both sides created (two nodes discovered the same catalog): the remote's is
  kept, as discovery leaves an existing episode alone.
- Any other file both sides changed differently (a person's edit): sync stops with the
  commit and path named; nothing is changed.

Every decision depends only on those three versions, so every node decides the same: the
transition pushed first wins. Pure rules here; reading and writing objects is
``hystate.cluster.sync``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from hystate.core.model import ACTIVE_STAGES, ProcessingStage
from hystate.core.rules import ErrorRecovery, legal_move
from hystate.core.schema import episode_problems
from hystate.core.store import dump, parse_content
from hystate.review.merge_driver import TRANSITION_KEYS, Conflict, _merge_value

S = ProcessingStage
_MISSING = object()


class Dropped(Exception):
    """This change no longer applies on the remote's version; ``str()`` is the reason."""


@dataclass(frozen=True)
class Move:
    """What a transition commit says it did (its trailers)."""

    episode_id: str
    from_stage: str
    to_stage: str
    worker: str | None = None  # who made it (Hystate-Worker): told when it is dropped
    lease: str | None = None  # the lease token it issued or left under (Hystate-Lease)


def resolve(
    name: str,
    base: bytes | None,
    local: bytes | None,
    remote: bytes | None,
    move: Move | None,
    recovery: ErrorRecovery,
) -> bytes | None:
    """The content of episode file ``name`` after replaying ``local`` (from ``base``) on
    ``remote``; None: the file is absent. Raises Dropped."""
    if remote == base:
        return local
    if local == remote:
        return remote
    if local is None or remote is None:
        raise Dropped(f"{name}: deleted on one side, changed on the other")
    if base is None:
        return remote  # created on both sides: the remote's stays (discovery is idempotent)
    docs = [_parse(raw, name) for raw in (base, local, remote)]
    b, loc, rem = docs
    if _already(b, loc, rem):
        return remote
    merged = reapply(b, loc, rem, move, recovery)
    problems = episode_problems(merged, name, expect_id=loc.get("episode_id"))
    if problems:
        raise Dropped(f"the result would be invalid: {problems[0].path}: {problems[0].message}")
    return dump(merged)


def _already(base: dict[str, Any], local: dict[str, Any], remote: dict[str, Any]) -> bool:
    """Whether the remote holds the local transition already: each history entry it added is
    in the remote's history (another node replayed it from its ticket, then maybe moved on)."""
    before, after, theirs = (d.get("history") for d in (base, local, remote))
    if not (isinstance(before, list) and isinstance(after, list) and isinstance(theirs, list)):
        return False
    added = after[len(before) :]
    return bool(added) and after[: len(before)] == before and all(e in theirs for e in added)


def _parse(raw: bytes, name: str) -> dict[str, Any]:
    doc, problems = parse_content(raw, name)
    if problems or not isinstance(doc, dict):
        raise Dropped(f"{name}: a version is not a valid episode file")
    return doc


def reapply(
    base: dict[str, Any],
    local: dict[str, Any],
    remote: dict[str, Any],
    move: Move | None,
    recovery: ErrorRecovery,
) -> dict[str, Any]:
    """The local change re-applied on the remote's document (see the module docstring)."""
    if remote.get("history") == base.get("history"):
        try:
            from hystate.review.merge_driver import merge_documents

            return merge_documents(base, remote, local)
        except Conflict as exc:
            raise Dropped(str(exc)) from None
    if move is None:
        raise Dropped("the remote moved the episode; this commit is no transition to re-apply")
    before, now = S(base["stage"]), S(remote["stage"])
    last = remote["history"][-1] if remote.get("history") else {}
    who = capped(str(last.get("by", "?")), 60)  # the remote's file: quoted briefly
    where = f"the remote moved it {before.value} -> {now.value} (by {who})"
    wanted = f"{move.from_stage} -> {move.to_stage} no longer applies"
    if now.value != move.from_stage or now is not before:
        raise Dropped(f"{where}; {wanted}")
    if now.is_active:
        raise Dropped(f"{where}: another attempt holds it; {wanted}")
    target = S(move.to_stage)
    failed = S(remote["failed_stage"]) if remote.get("failed_stage") else None
    if not legal_move(now, failed, target):
        raise Dropped(f"{where}; {wanted}")
    theirs = base["history"]
    if local["history"][: len(theirs)] != theirs:
        raise Dropped(f"{where}; the local history does not extend the base's")
    doc = copy.deepcopy(remote)
    for key in ("stage", "status_message", "last_updated", "failed_stage", "worker"):
        doc[key] = copy.deepcopy(local[key])
    for kind, count in local["attempts"].items():
        doc["attempts"][kind] = (
            remote["attempts"].get(kind, 0) + count - base["attempts"].get(kind, 0)
        )
    if target.is_active:
        kind = ACTIVE_STAGES[target]
        budget = recovery.max_retries[kind]
        if doc["attempts"][kind] > budget:
            raise Dropped(f"{where}: {kind} attempts would be {doc['attempts'][kind]} of {budget}")
    doc["error_history"] = (
        remote["error_history"] + local["error_history"][len(base["error_history"]) :]
    )
    doc["history"] = remote["history"] + local["history"][len(theirs) :]
    for key in local.keys() | remote.keys():
        if key in TRANSITION_KEYS:
            continue
        try:
            value = _merge_value(
                key, base.get(key, _MISSING), remote.get(key, _MISSING), local.get(key, _MISSING)
            )
        except Conflict as exc:
            raise Dropped(f"{where}; {exc}") from None
        if value is not _MISSING:
            doc[key] = value
    return {k: doc[k] for k in local if k in doc}


def capped(text: str, limit: int = 300) -> str:
    """``text`` cut to ``limit`` characters, the last an ellipsis when it was longer."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
