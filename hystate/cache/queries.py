"""The questions hystate asks the cache (``state.db``), in SQL: episodes by stage and year,
counts, the processing log, and what the reports, the metrics and the forecast read. Every
answer is read from a refreshed cache; no other module writes SQL against it.

Times keep the offset they were written with (``+02:00`` is as valid as ``+00:00``), so they
are never compared or ordered as strings: the index narrows by string with two days to spare (no
offset reaches a day, so no two times a day apart in string order can be reversed in time), then
``julianday()`` (SQLite applies the offset) orders and ``parse_time`` decides exact bounds.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from hystate.cache import memo
from hystate.core.model import EpisodeState, ProcessingStage, parse_time

if TYPE_CHECKING:
    from hystate.cache.state_cache import StateCache


def episodes(
    cache: StateCache,
    stages: Iterable[str | ProcessingStage] = (),
    years: Iterable[str] = (),
    limit: int | None = None,
) -> list[EpisodeState]:
    """Episodes, oldest air date first, optionally only some stages and years, at most
    ``limit``."""
    return list(iter_episodes(cache, stages, years, limit))


def iter_episodes(
    cache: StateCache,
    stages: Iterable[str | ProcessingStage] = (),
    years: Iterable[str] = (),
    limit: int | None = None,
) -> Iterator[EpisodeState]:
    """``episodes`` one at a time (memory independent of how many)."""
    sql, params = _episodes_sql("data, path", stages, years, limit)
    for row in cache.stream(sql, params):
        yield EpisodeState(json.loads(row["data"]), row["path"])


def iter_listing(
    cache: StateCache, stages: Iterable[str | ProcessingStage] = (), years: Iterable[str] = ()
) -> Iterator[tuple[str, str, str, str]]:
    """(episode_id, date, stage, title) of ``episodes``, one at a time: the columns ``list``
    prints, without parsing each episode's document (1,000 failed at 100,000: ~25 -> 10 ms)."""
    sql, params = _episodes_sql("episode_id, date, stage, title", stages, years, None)
    for row in cache.stream(sql, params):
        yield row[0], row[1], row[2], row[3]


def _episodes_sql(
    columns: str, stages: Iterable[str | ProcessingStage], years: Iterable[str], limit: int | None
) -> tuple[str, tuple[Any, ...]]:
    wanted = list(dict.fromkeys(ProcessingStage.parse(s).value for s in stages))
    years = list(years)
    in_years = f" AND year IN ({','.join('?' * len(years))})" if years else ""
    if wanted and limit is not None:
        # The first few of some stages (`next`): each stage's first ``limit`` read in order
        # from the (stage, date, episode_id) index, then merged. "stage IN (...) ORDER BY"
        # sorted every episode of those stages first: 0.1-0.3 s at 100,000, now < 1 ms.
        one = (
            f"SELECT * FROM (SELECT {columns}, date AS d_, episode_id AS e_ FROM episode_states"
            f" WHERE stage = ?{in_years} ORDER BY date, episode_id LIMIT ?)"
        )
        sql = f"SELECT {columns} FROM ({' UNION ALL '.join([one] * len(wanted))})"
        params: list[Any] = [v for stage in wanted for v in (stage, *years, _rows(limit))]
        sql += " ORDER BY d_, e_ LIMIT ?"
        params.append(_rows(limit))
    else:
        sql, params = f"SELECT {columns} FROM episode_states WHERE 1=1", []
        if wanted:
            sql += f" AND stage IN ({','.join('?' * len(wanted))})"
            params.extend(wanted)
        if years:
            sql += in_years
            params.extend(years)
        sql += " ORDER BY date, episode_id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(_rows(limit))
    return sql, tuple(params)


def _rows(limit: int) -> int:
    """``limit`` as an SQL LIMIT: SQLite integers are 64-bit (``next --limit 10**30`` is all)."""
    return min(max(limit, 0), 2**63 - 1)


def count(cache: StateCache) -> int:
    return int(cache.query("SELECT count(*) FROM episode_states")[0][0])


def count_by_stage(cache: StateCache) -> dict[str, int]:
    """Episodes per stage (every stage, in stage order); kept per tree (``memo``)."""

    def compute() -> list[list[Any]]:
        rows = cache.query("SELECT stage, count(*) FROM episode_states GROUP BY stage")
        return [[row[0], row[1]] for row in rows]

    counts = dict(memo.remembered(cache, "count_by_stage/1", compute, _pairs))
    return {s.value: counts.get(s.value, 0) for s in ProcessingStage}


def _pairs(value: Any) -> list[tuple[Any, ...]]:
    return memo.rows(value, (str, int))


def _spare(when: datetime, days: int) -> str:
    """``when`` moved by ``days``, as the string prefix every stored time starts with (at the
    ends of the calendar, the end itself: the exact comparison follows in Python)."""
    try:
        moved = when.astimezone(UTC) + timedelta(days=days)
    except OverflowError:
        moved = datetime.min if days < 0 else datetime.max
    return moved.replace(tzinfo=None).isoformat(timespec="seconds")  # strftime: year 1 is "1"


def _as_time(value: str | datetime) -> datetime:
    return parse_time(value) if isinstance(value, str) else value


def events(
    cache: StateCache,
    *,
    since: str | datetime | None = None,
    until: str | datetime | None = None,
    episode_id: str | None = None,
) -> list[dict[str, Any]]:
    """One event per history entry, oldest first; ``since``/``until`` inclusive."""
    low = _as_time(since) if since is not None else None
    high = _as_time(until) if until is not None else None
    sql, params = "SELECT * FROM processing_log WHERE 1=1", list[Any]()
    for clause, value in (
        ("timestamp >= ?", _spare(low, -2) if low else None),
        ("timestamp <= ?", _spare(high, 2) if high else None),
        ("episode_id = ?", episode_id),
    ):
        if value is not None:
            sql += f" AND {clause}"
            params.append(value)
    rows = cache.query(sql + " ORDER BY julianday(timestamp), id", tuple(params))
    if low or high:
        rows = [r for r in rows if _within(parse_time(r["timestamp"]), low, high)]
    return [
        {
            "at": r["timestamp"],
            "episode_id": r["episode_id"],
            "event": r["event"],
            "from": r["from_stage"],
            "to": r["to_stage"],
            "commit": r["commit_sha"],
            **details(r["details"]),
        }
        for r in rows
    ]


def details(text: str | None) -> dict[str, Any]:
    """A log row's details in the one vocabulary of hystate's JSON: the history entry's
    ``by`` is ``worker`` (the cache keeps the file's word)."""
    found = json.loads(text or "{}")
    if "by" in found:
        found["worker"] = found.pop("by")
    return dict(found)


def _within(when: datetime, low: datetime | None, high: datetime | None) -> bool:
    return (low is None or when >= low) and (high is None or when <= high)


def entered_per_day(
    cache: StateCache, stages: Sequence[str], since: datetime
) -> list[tuple[str, str, int]]:
    """(UTC date, stage, how many) of the entries into one of ``stages`` at or after ``since``,
    counted by SQLite (times compared as instants), by date."""
    where, args = _entered(stages, since)
    rows = cache.query(
        f"SELECT date(timestamp), to_stage, count(*) {where} GROUP BY 1, 2 ORDER BY 1, 2", args
    )
    return [(day, stage, count) for day, stage, count in rows]


def entered_span(
    cache: StateCache, stages: Sequence[str], since: datetime, *, keep: bool = False
) -> tuple[int, datetime | None, datetime | None]:
    """How many entries into one of ``stages`` at or after ``since``, and the first and last
    of them (in time order). ``keep``: the span of all of them is kept per tree (``memo``),
    and is the answer when its earliest entry is at or after ``since`` (``status``)."""
    where, args = _entered(stages, since)
    if keep:
        name = f"entered_span/1/{json.dumps(list(stages))}"
        count, low, oldest, first, last = memo.remembered(
            cache, name, lambda: _span(cache, stages), _kept_span
        )
        if not count:
            return 0, None, None
        ((bound,),) = cache.query("SELECT julianday(?)", args[-1:])
        if low >= args[-2] and bound is not None and oldest >= bound:
            return count, first, last
    ((count,),) = cache.query(f"SELECT count(*) {where}", args)
    if not count:
        return 0, None, None
    order = "ORDER BY julianday(timestamp) {0}, id {0} LIMIT 1"
    ((first,),) = cache.query(f"SELECT timestamp {where} {order.format('ASC')}", args)
    ((last,),) = cache.query(f"SELECT timestamp {where} {order.format('DESC')}", args)
    return count, parse_time(first), parse_time(last)


def _span(cache: StateCache, stages: Sequence[str]) -> list[Any]:
    """(count, least string, earliest instant, first, last) of every entry into ``stages``
    that has an instant."""
    where = (
        f"FROM processing_log WHERE to_stage IN ({','.join('?' * len(stages))})"
        " AND julianday(timestamp) IS NOT NULL"
    )
    ((count, low, oldest),) = cache.query(
        f"SELECT count(*), min(timestamp), min(julianday(timestamp)) {where}", tuple(stages)
    )
    if not count:
        return [0, None, None, None, None]
    order = "ORDER BY julianday(timestamp) {0}, id {0} LIMIT 1"
    ((first,),) = cache.query(f"SELECT timestamp {where} {order.format('ASC')}", tuple(stages))
    ((last,),) = cache.query(f"SELECT timestamp {where} {order.format('DESC')}", tuple(stages))
    return [count, low, oldest, first, last]


def _kept_span(value: Any) -> tuple[Any, ...]:
    ((count, low, oldest, first, last),) = memo.rows(
        [value], (int, memo.MAYBE_TEXT, memo.MAYBE_NUMBER, memo.MAYBE_TEXT, memo.MAYBE_TEXT)
    )
    if not count:
        return 0, None, None, None, None
    if low is None or oldest is None or first is None or last is None:
        raise TypeError("a span without its ends")
    return count, low, oldest, parse_time(first), parse_time(last)


def _entered(stages: Sequence[str], since: datetime) -> tuple[str, tuple[str, ...]]:
    """``FROM … WHERE …`` of the log's entries into one of ``stages`` at or after the instant
    ``since`` (the string bound, which the index serves, then the exact one), and its
    arguments."""
    marks = ",".join("?" * len(stages))
    where = (
        f"FROM processing_log WHERE to_stage IN ({marks}) AND timestamp >= ?"
        " AND julianday(timestamp) >= julianday(?)"
    )
    return where, (*stages, _spare(since, -2), since.astimezone(UTC).isoformat())


def entries(cache: StateCache, stages: Sequence[str]) -> list[tuple[str, str]]:
    """(stage, time as written) of every entry into one of ``stages``, in time order."""
    marks = ",".join("?" * len(stages))
    rows = cache.query(
        f"SELECT to_stage, timestamp FROM processing_log WHERE to_stage IN ({marks})"
        " ORDER BY julianday(timestamp), id",
        tuple(stages),
    )
    return [(stage, stamp) for stage, stamp in rows]


def recent_failures(cache: StateCache, limit: int = 25) -> list[dict[str, Any]]:
    """The newest failures first: episode, time, the stage that failed, title, details, and
    where the episode is now: ``recovered`` once it left failed for work again (it is no longer
    failed nor skipped; ``now`` names its stage)."""
    rows = cache.query(
        "SELECT l.episode_id, l.timestamp, l.from_stage, l.details, e.title, e.stage"
        " FROM processing_log l LEFT JOIN episode_states e USING (episode_id)"
        " WHERE l.event = 'failed' ORDER BY julianday(l.timestamp) DESC, l.id DESC LIMIT ?",
        (limit,),
    )
    return [
        {
            "episode_id": r[0],
            "at": r[1],
            "stage": r[2],
            "title": r[4] or "",
            **details(r[3]),
            "now": r[5],
            "recovered": r[5] not in (None, "failed", "skipped"),
        }
        for r in rows
    ]


def skipped(cache: StateCache) -> list[dict[str, Any]]:
    """Skipped episodes, the most recently skipped first, with the reason."""
    rows = cache.query(
        "SELECT episode_id, title, status_message, last_updated FROM episode_states"
        " WHERE stage = 'skipped' ORDER BY julianday(last_updated) DESC, episode_id"
    )
    return [{"episode_id": r[0], "title": r[1], "reason": r[2] or "", "at": r[3]} for r in rows]


def columns(cache: StateCache, names: Sequence[str]) -> list[tuple[Any, ...]]:
    """The columns ``names`` (from ``cache_schema.COLUMNS``) of every episode, in air-date
    order."""
    rows = cache.query(f"SELECT {', '.join(names)} FROM episode_states ORDER BY date, episode_id")
    return [tuple(r) for r in rows]


def transitions_by_stage(cache: StateCache) -> dict[str, int]:
    """How often each stage was entered, discoveries (entries into discovered from nothing)
    included: 526 discoveries are 526 transitions to discovered."""
    rows = cache.query("SELECT to_stage, count(*) FROM processing_log GROUP BY to_stage")
    return {r[0]: r[1] for r in rows}


def failures_by_stage(cache: StateCache) -> dict[str, int]:
    rows = cache.query(
        "SELECT from_stage, count(*) FROM processing_log WHERE to_stage = 'failed'"
        " GROUP BY from_stage"
    )
    return {r[0]: r[1] for r in rows}


def first_entry_time(cache: StateCache) -> datetime | None:
    """When the history began: the oldest entry's time (the oldest by string, and all within
    two days of it, as last_entry_time). Each time once: a discovery batch is 100,000 entries
    of one timestamp, parsed once, not 100,000 times."""

    def compute() -> str | None:
        rows = cache.query(
            "SELECT DISTINCT timestamp FROM processing_log WHERE timestamp <= (SELECT"
            " strftime('%Y-%m-%dT%H:%M:%S', substr(min(timestamp), 1, 19), '+2 days')"
            " FROM processing_log)"
        )
        first = min((parse_time(r[0]) for r in rows), default=None)
        return first.isoformat() if first else None

    def decode(value: Any) -> datetime | None:
        if value is None:
            return None
        when = datetime.fromisoformat(value)
        if when.tzinfo is None:
            raise ValueError("a time without its offset")
        return when

    return memo.remembered(cache, "first_entry_time/1", compute, decode)


def last_entry_time(cache: StateCache) -> datetime | None:
    """The newest history entry's time (the newest by string, and all within two days of it)."""
    rows = cache.query(
        "SELECT DISTINCT timestamp FROM processing_log WHERE timestamp >= (SELECT"
        " strftime('%Y-%m-%dT%H:%M:%S', substr(max(timestamp), 1, 19), '-2 days')"
        " FROM processing_log)"
    )
    return max((parse_time(r[0]) for r in rows), default=None)
