"""Fencing: only the holder of an active stage's lease leaves it (SPEC 3).

Entering an active stage (a claim, ``advance ID downloading``, a retry) issues a lease token,
``<n>.<8 hex>``: ``n`` is one more than the highest token the episode ever had (so it only
grows along the file's history), the hex part tells apart two nodes that issued the same ``n``
before one of them was dropped by a sync. The token is recorded in the file, in the history
entry that entered the stage (``lease``). Leaving the stage (done, failed) and renewing it
(a heartbeat) must present it: the entry that leaves records the token presented, so the file
says which lease each step was made under.

Anyone else is refused (exit 3, naming the holder). A person takes over on purpose
(``--force``, API ``take_over=True``): the entry records ``took_over`` (the holder it was taken
from) and the commit a ``Hystate-Took-Over`` trailer. Recovering a lost lease (``fsck
--repair``, ``auto_resume``) is such a take-over too.

A token presented for an episode whose lease has ended (someone else left the stage, or the
episode was marked lost) is refused whatever the move, so a late worker never "finishes" an
episode another worker finished or took: its lease is gone for good. A lease that expired and
that nobody took over may still be finished by its holder (the work was done; nobody else
started it). A token that belongs to no lease of the episode (``HYSTATE_LEASE`` left set for
another episode) is ignored where no token is needed.

Files written before fencing carry no token: their active stage is left as before.
"""

from __future__ import annotations

import os
import re
from typing import Any

from hystate.core.errors import IllegalTransition, UsageError
from hystate.core.model import EpisodeState

TOKEN = re.compile(r"^[0-9]{1,18}\.[0-9a-f]{8}$")
ENV = "HYSTATE_LEASE"


class LeaseRefused(IllegalTransition):
    """The caller does not hold the episode's lease (exit 3)."""


def check_token(text: str | None) -> str | None:
    """A token given by a caller (``--lease``): its shape checked (bad input: exit 2)."""
    if text is None or text == "":
        return None
    text = text.strip()
    if not TOKEN.fullmatch(text):
        raise UsageError(
            f"lease token {text[:40]!r} is not one hystate issued (expected like 3.0f9a2c1e)",
            hint="use the token printed by `hystate next --claim` or `hystate advance`",
        )
    return text


def holder(episode: EpisodeState) -> tuple[str, str | None] | None:
    """(token, worker) of the lease on the episode's active stage; None when it is in no
    active stage or entered it before fencing."""
    if not episode.stage.is_active or not episode.history:
        return None
    token = episode.history[-1].get("lease")
    return (str(token), episode.worker) if token else None


def new_token(history: list[dict[str, Any]]) -> str:
    """The next token of an episode with this history: ``n`` beyond every earlier one."""
    highest = 0
    for entry in history:
        found = entry.get("lease")
        if isinstance(found, str) and TOKEN.fullmatch(found):
            highest = max(highest, int(found.split(".")[0]))
    return f"{highest + 1}.{os.urandom(4).hex()}"


def check(
    episode: EpisodeState, leaving: bool, presented: str | None, take_over: bool
) -> str | None:
    """Whether a move of ``episode`` may go on. ``leaving``: it leaves the active stage the
    episode is in. Returns the holder taken over from (``take_over``), else None; raises
    LeaseRefused."""
    eid = episode.episode_id
    held = holder(episode)
    if leaving and held is not None:
        token, worker = held
        if presented == token:
            return None
        if take_over:
            return worker or "?"
        who = f"held by {worker}" if worker else "held by another worker"
        given = "no lease token was given" if presented is None else f"lease {presented} is not it"
        raise LeaseRefused(
            f"{eid} is {episode.stage.value}, {who} (lease {token}); {given}",
            hint="give the holder's token (--lease, $HYSTATE_LEASE), or take it over on "
            "purpose with --force (recorded)",
        )
    if presented is None or (held is not None and presented == held[0]):
        return None
    ended = ended_by(episode, presented)
    if ended is not None and not take_over:
        raise LeaseRefused(f"{eid}: lease {presented} has ended: {ended}; stop working on it")
    return None


def ended_by(episode: EpisodeState, token: str) -> str | None:
    """What ended lease ``token`` of this episode, when someone other than its holder did
    (None: not a lease of this episode, or its holder left the stage itself)."""
    history = episode.history
    for i, entry in enumerate(history):
        if entry.get("lease") != token or entry["to"] == entry.get("from"):
            continue
        later = history[i + 1 :]
        if not later:
            return None  # it still holds the stage (checked by the caller)
        step = later[0]
        if step.get("lease") == token and not step.get("took_over"):
            # its holder left the stage; anything after that is another lease's business
            return None
        what = f"{step['from']} -> {step['to']} by {step['by']} at {step['at']}"
        if step.get("took_over"):
            what += " (taken over)"
        now = episode.worker if episode.stage.is_active else None
        return what + (f"; now {episode.stage.value} by {now}" if now else "")
    return None


def stamp(doc: dict[str, Any], entered: bool, presented: str | None, took: str | None) -> None:
    """Record the lease on the history entry just appended: a new token when it entered an
    active stage, else the token it left under, and who was taken over."""
    entry = doc["history"][-1]
    if entered:
        entry["lease"] = new_token(doc["history"][:-1])
    elif presented is not None:
        entry["lease"] = presented
    if took is not None:
        entry["took_over"] = took


def token_of(episode: EpisodeState) -> str | None:
    """The token the last history entry issued (after a move into an active stage)."""
    held = holder(episode)
    return held[0] if held else None
