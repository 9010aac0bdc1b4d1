"""What a report shows, as plain data (the JSON report is this): the summary, throughput per
day or week, progress over time, recent failures, stuck and skipped episodes. Read from the
cache through ``hystate.cache.queries``."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from hystate.cache import queries
from hystate.fsck.recovery import RecoveryManager
from hystate.reports.summary import generate_summary

if TYPE_CHECKING:
    from hystate.engine.workspace import Workspace

MILESTONES = ("downloaded", "converted", "uploaded", "published")


def collect(ws: Workspace, period: str = "daily", now: datetime | None = None) -> dict[str, Any]:
    """Everything a report shows, as plain data."""
    now = now or datetime.now(UTC)
    summary = generate_summary(ws, now)
    cache = ws.cache
    stuck = [
        {"episode_id": e.episode_id, "title": e.title, "stage": e.stage.value, "reason": reason}
        for e, reason in RecoveryManager(ws).stuck()
    ]
    return {
        "period": period,
        "generated_at": now.isoformat(timespec="seconds"),
        "summary": summary,
        "throughput": throughput(ws, period, now),
        "progress_over_time": progress_series(ws),
        "recent_failures": queries.recent_failures(cache),
        "stuck": stuck,
        "skipped": queries.skipped(cache),
    }


def throughput(ws: Workspace, period: str, now: datetime) -> list[dict[str, Any]]:
    """Episodes finishing each stage, per UTC day (last 14 days) or per ISO week (last 12
    weeks)."""
    weekly = period == "weekly"
    span = timedelta(weeks=12) if weekly else timedelta(days=14)
    buckets: dict[str, Counter[str]] = {}
    stages = (*MILESTONES, "failed")
    for day, stage, count in queries.entered_per_day(ws.cache, stages, now - span):
        key = day
        if weekly:
            week = date.fromisoformat(day).isocalendar()
            key = f"{week.year}-W{week.week:02d}"
        buckets.setdefault(key, Counter())[stage] += count
    return [{"period": key, **{s: buckets[key][s] for s in stages}} for key in sorted(buckets)]


def progress_series(ws: Workspace) -> dict[str, list[tuple[str, int]]]:
    """Cumulative count of episodes that reached each milestone, over time."""
    series: dict[str, list[tuple[str, int]]] = {m: [] for m in MILESTONES}
    counts: Counter[str] = Counter()
    for stage, stamp in queries.entries(ws.cache, MILESTONES):
        counts[stage] += 1
        points = series[stage]
        if points and points[-1][0] == stamp:
            points[-1] = (stamp, counts[stage])
        else:
            points.append((stamp, counts[stage]))
    return series
