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
NOTHING_LEFT = "nothing left to do"  # the throughput's note when every episode is done


def generate_summary(ws: Workspace, now: datetime | None = None) -> dict[str, Any]:
    """``completion_percentage`` counts published and skipped episodes as done (neither needs
    more work). ``estimated_completion``: the episodes still to do, at the rate episodes were
    finished during the last 7 days of history; null, with the reason, without enough history."""
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
    count, first, last = queries.entered_span(ws.cache, DONE, now - WINDOW)
    info: dict[str, Any] = {"finished_last_7_days": count, "per_day": None}
    if remaining == 0:
        info["note"] = NOTHING_LEFT
        return (last.isoformat(timespec="seconds") if last else None), info
    span = (last - first).total_seconds() if first and last and count >= 2 else 0.0
    if last is None or span <= 0:
        info["note"] = (
            "not enough history: fewer than two episodes finished at different times"
            " in the last 7 days"
        )
        return None, info
    rate = (count - 1) / span  # episodes per second
    info["per_day"] = round(rate * 86400, 2)
    eta = last + timedelta(seconds=remaining / rate)
    return eta.isoformat(timespec="seconds"), info
