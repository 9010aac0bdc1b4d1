"""The seed's ``generate_summary`` shape: counts per stage, completion, and an estimated
completion date from the throughput actually seen in the history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from hystate.cache import queries
from hystate.core.model import ProcessingStage
from hystate.reports.forecast import predict_summary

if TYPE_CHECKING:
    from hystate.engine.workspace import Workspace

DONE = (ProcessingStage.PUBLISHED.value, ProcessingStage.SKIPPED.value)
WINDOW = timedelta(days=7)
DAY = timedelta(days=1)
NOTHING_LEFT = "nothing left to do"  # the throughput's note when every episode is done
NO_EPISODES = "no episodes yet: `hystate discover --from CATALOG` adds them"


def generate_summary(ws: Workspace, now: datetime | None = None) -> dict[str, Any]:
    """``completion_percentage`` counts published and skipped episodes as done (neither needs
    more work). ``estimated_completion``: now plus the episodes still to do at the rate episodes
    were finished during the last 7 days of history; null, with the reason, without enough
    history. With nothing left to do it is the time the last episode was done."""
    now = now or datetime.now(UTC)
    progress = ws.count_by_stage()
    total = sum(progress.values())
    done = sum(progress[s] for s in DONE)
    eta, throughput = estimate_completion(ws, total - done, now)

    return {
        "timestamp": now.isoformat(timespec="seconds"),
        "total_episodes": total,
        "progress": progress,
        "completion_percentage": round(100 * done / total, 1) if total else 0.0,
        "estimated_completion": eta,
        "throughput": throughput,
        "predictions": predict_summary(ws, now),
    }


def estimate_completion(
    ws: Workspace, remaining: int, now: datetime
) -> tuple[str | None, dict[str, Any]]:
    """The rate is the episodes finished in the window over the days the window covers: the
    last 7 days, or since the history began when it is younger, and never less than one day
    (a burst of 525 episodes in a minute is 525 a day, not 750,000). The ETA counts from now,
    so it is never in the past."""
    since = now - WINDOW
    count, _, last = queries.entered_span(ws.cache, DONE, since, keep=True)
    info: dict[str, Any] = {"finished_last_7_days": count, "per_day": None}
    if remaining == 0 and queries.first_entry_time(ws.cache) is None:
        info["note"] = NO_EPISODES
        return None, info
    if remaining == 0:
        info["note"] = NOTHING_LEFT
        return (last.isoformat(timespec="seconds") if last else None), info
    if count < 2:
        info["note"] = "not enough history: fewer than two episodes finished in the last 7 days"
        return None, info
    began = queries.first_entry_time(ws.cache) or since
    seconds = max((now - max(since, began)).total_seconds(), DAY.total_seconds())
    info["per_day"] = round(count * DAY.total_seconds() / seconds, 2)
    eta = now + timedelta(seconds=remaining * seconds / count)
    return eta.isoformat(timespec="seconds"), info
