"""Per-stage limits: ``limits: {uploading: {concurrency: 2, per_day: 6}}`` in ``hystate.yaml``.

A limit is checked whenever an episode *enters* an active stage (a claim, ``advance``, a retry),
under the repository lock, against the tree that lock keeps still: the episodes in the stage now
(``concurrency``; a stuck one holds its slot until it is marked lost) and the entries into the
stage since midnight UTC (``per_day``; retries count, they use the quota too). Every transition
commits under that one lock, so no two entries can both see the last free slot, whichever
worker, process or orchestrator makes them. A refused entry is ``LimitReached`` (exit 3) and
changes nothing; claims stop at the limit and hand out what fits.

Across nodes (``hystate.cluster``) a claim is acknowledged only once the remote's tip holds it;
a claim replayed onto a tip that moved meanwhile is judged again against that tip's tree
(``replay_refusal``), so two nodes cannot both take the last slot.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time
from typing import TYPE_CHECKING

from hystate.core import yamlio
from hystate.core.errors import HystateError, IllegalTransition
from hystate.core.model import ProcessingStage, parse_time

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
    from hystate.cache import queries  # only a limited stage asks the cache

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


def tree_room(ws: Workspace, root: bytes | None, stage: ProcessingStage) -> Room | None:
    """``room`` counted from the episode files of the commit tree ``root`` (not the cache,
    which reflects HEAD): what a replay onto another node's tip is judged against."""
    concurrency, per_day = configured(ws, stage)
    if concurrency is None and per_day is None:
        return None
    folder = ws.repo.objects.lookup(root, ws.rel_state_dir) if ws.rel_state_dir != "." else None
    sha = folder[1] if folder is not None else root
    clock = datetime.now(UTC)
    midnight = datetime.combine(clock.date(), time(0), UTC)
    running = today = 0
    from hystate.cache.tree import StateTree  # a replay onto another node's tip

    for _, _, blob in StateTree(ws.repo.objects, sha).everything():
        try:
            doc = yamlio.load(ws.repo.objects.read(blob)[1])
            running += doc["stage"] == stage.value
            today += sum(
                1
                for entry in doc["history"]
                if entry["to"] == stage.value and parse_time(entry["at"]) >= midnight
            )
        except (HystateError, yamlio.YAMLError, KeyError, TypeError, ValueError):
            continue  # a broken file is fsck's to name; it holds no slot here
    return Room(stage.value, concurrency, per_day, running, today, clock.date().isoformat())


def replay_refusal(
    ws: Workspace, root: bytes | None, episode_id: str, old: str, new: str
) -> str | None:
    """Why a replayed transition ``old -> new`` may not land on the tree ``root`` (None: it
    may): it enters a limited stage that is full there."""
    try:
        target = S.parse(new)
    except HystateError:
        return None
    if not target.is_active or old == new or not limited(ws, target):
        return None
    current = tree_room(ws, root, target)
    reason = current.refusal() if current is not None else None
    return f"{episode_id}: {reason} on the remote" if reason else None
