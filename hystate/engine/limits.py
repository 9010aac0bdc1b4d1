"""Per-stage limits: ``limits: {uploading: {concurrency: 2, per_day: 6}}`` in ``hystate.yaml``.

A limit is checked whenever an episode *enters* an active stage (a claim, ``advance``, a retry),
under the repository lock, against the tree that lock keeps still: the episodes in the stage now
(``concurrency``; a stuck one holds its slot until it is marked lost) and the entries into the
stage since midnight UTC (``per_day``; retries count, they use the quota too). Every transition
commits under that one lock, so no two entries can both see the last free slot, whichever
worker, process or orchestrator makes them. A refused entry is ``LimitReached`` (exit 3) and
changes nothing; claims stop at the limit and hand out what fits.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time
from typing import TYPE_CHECKING

from hystate.cache import queries
from hystate.core.errors import IllegalTransition
from hystate.core.model import ProcessingStage

if TYPE_CHECKING:
    from hystate.core.model import EpisodeState
    from hystate.core.rules import Change
    from hystate.engine.workspace import Workspace

S = ProcessingStage


class LimitReached(IllegalTransition):
    """Entering the stage would exceed its ``limits`` entry (exit 3)."""


@dataclass(frozen=True)
class Room:
    """A stage's limits and how much of them is used now."""

    stage: str
    concurrency: int | None
    per_day: int | None
    running: int
    today: int
    day: str  # the UTC date ``today`` counts

    @property
    def free(self) -> int | None:
        """How many more episodes may enter now (None: no limit)."""
        spare = [
            limit - used
            for limit, used in ((self.concurrency, self.running), (self.per_day, self.today))
            if limit is not None
        ]
        return max(min(spare), 0) if spare else None

    def refusal(self) -> str | None:
        if self.concurrency is not None and self.running >= self.concurrency:
            return (
                f"{self.stage} limit reached: {self.running} of {self.concurrency} running "
                "(limits.concurrency)"
            )
        if self.per_day is not None and self.today >= self.per_day:
            return (
                f"{self.stage} limit reached: {self.today} of {self.per_day} entries on "
                f"{self.day} UTC (limits.per_day)"
            )
        return None

    def as_dict(self) -> dict[str, object]:
        return {
            "stage": self.stage,
            "concurrency": self.concurrency,
            "per_day": self.per_day,
            "running": self.running,
            "today": self.today,
            "day": self.day,
            "free": self.free,
        }


def configured(ws: Workspace, stage: ProcessingStage) -> tuple[int | None, int | None]:
    """``(concurrency, per_day)`` of ``stage`` (None where unlimited)."""
    if not stage.is_active:
        return None, None
    entry = ws.config.get("limits").get(stage.value) or {}
    return entry.get("concurrency"), entry.get("per_day")


def limited(ws: Workspace, stage: ProcessingStage) -> bool:
    return configured(ws, stage) != (None, None)


def room(ws: Workspace, stage: str | ProcessingStage, now: datetime | None = None) -> Room | None:
    """The stage's limits and their use, from the tree at HEAD (None: the stage has none).
    Outside the repository lock it is a forecast; ``check`` is the judgement."""
    target = S.parse(stage)
    concurrency, per_day = configured(ws, target)
    if concurrency is None and per_day is None:
        return None
    ws.refresh()
    cache = ws.cache
    running = queries.count_by_stage(cache).get(target.value, 0)
    clock = (now or datetime.now(UTC)).astimezone(UTC)
    midnight = datetime.combine(clock.date(), time(0), UTC)
    today = 0
    if per_day is not None:
        # from midnight on; an entry stamped later than now (a node's clock ahead) counts too
        today = queries.entered_span(cache, [target.value], midnight)[0]
    return Room(target.value, concurrency, per_day, running, today, clock.date().isoformat())


def check(ws: Workspace, episode: EpisodeState, change: Change) -> None:
    """Refuse ``change`` when it enters a limited stage that is full. Called under the
    repository lock, before the commit: the tree cannot change meanwhile."""
    target = change.to
    if not target.is_active or episode.stage is target or not limited(ws, target):
        return
    current = room(ws, target)
    reason = current.refusal() if current is not None else None
    if reason is not None:
        raise LimitReached(
            f"{episode.episode_id}: {reason}",
            hint="wait for a running one to finish (or for tomorrow), or raise the limit in "
            "hystate.yaml",
        )
