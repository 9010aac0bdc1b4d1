"""What the server shows, as plain data: the dashboard (the report's data, computed once per
HEAD and shared by every client), a page of the episode list, one episode with its history and
diffs. Reads come from the cache (``state.db``), refreshed when HEAD moves, never per request:
a refresh scans the work tree (~0.2 s at 100,000 episodes), a page of the list must not."""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from hystate.cache import queries
from hystate.core import yamlio
from hystate.core.errors import HystateError, InvalidData, UsageError
from hystate.core.model import ID_PATTERN, ProcessingStage, check_id, parse_time
from hystate.core.paths import read_bytes
from hystate.engine import layout
from hystate.events.source import LIMITS, bounded
from hystate.git import audit
from hystate.reports.generator import ReportGenerator
from hystate.reports.summary import NOTHING_LEFT

if TYPE_CHECKING:
    from hystate.manager import StateManager

PER_PAGE, MAX_PER_PAGE = 50, 200
SHOWN_BYTES = 1 << 20  # of an episode's file on its page (a real one is ~1 KB), and 2x of diffs
SHOWN = 50  # stuck and skipped episodes listed on the dashboard (the counts are all of them)
CHART_POINTS = 300  # points per line of the progress chart, whatever the history's length
LIST_COLUMNS = (
    "episode_id", "title", "date", "stage", "status_message", "last_updated", "failed_stage",
    "error_count", "last_error",
)  # fmt: skip


COMMIT_FIELDS = ["%H", "%an", "%aI", "%s"]
COMMIT_KEYS = (audit.EPISODE, audit.FROM, audit.TO, audit.WORKER, audit.COUNT)


_STAGES = {stage.value for stage in ProcessingStage}
AUTHOR, SUBJECT = 200, 300  # characters of a commit's author and subject shown


def commit_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    """A row of ``GitRepo.log(…, COMMIT_FIELDS, trailer_keys=COMMIT_KEYS)`` as the pages and
    the event stream show it. Commits may be anyone's: the text is bounded to one line, and a
    trailer that names no episode, stage or count is none (the page counts with them)."""
    sha, author, time, subject, trail = row
    episode, count = trail[audit.EPISODE], trail[audit.COUNT]
    return {
        "sha": sha,
        "author": bounded(author, AUTHOR),
        "at": bounded(time, 40),
        "subject": bounded(subject, SUBJECT),
        "episode_id": episode if ID_PATTERN.fullmatch(episode) else None,
        "from": _stage(trail[audit.FROM]),
        "to": _stage(trail[audit.TO]),
        "worker": bounded(trail[audit.WORKER], LIMITS["worker"]) or None,
        "count": count if count.isascii() and count.isdigit() and len(count) <= 7 else None,
    }


def _stage(name: str) -> str | None:
    return name if name in _STAGES else None


def bounded_history(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """An episode's history (``audit.join``) with its commits' author and subject bounded, in
    the one vocabulary of hystate's JSON (the file's ``by`` is ``worker``)."""
    out = []
    for row in rows:
        for key, limit in (("author", AUTHOR + 100), ("subject", SUBJECT)):
            if isinstance(row.get(key), str):
                row[key] = bounded(row[key], limit)
        out.append({("worker" if k == "by" else k): v for k, v in row.items()})
    return out


@dataclass(frozen=True)
class Dashboard:
    head: str | None
    data: dict[str, Any]


class ReadModel:
    """One ``StateManager`` shared by the server's threads. ``lock`` serialises what writes:
    the cache refresh, the reports, the actions (their transitions)."""

    def __init__(self, manager: StateManager) -> None:
        self.manager = manager
        manager.refresh_once = True  # refreshed here, when HEAD moves
        self.lock = threading.Lock()
        self._dashboard: Dashboard | None = None
        self._fresh_for: str | None = None  # the HEAD the cache was last refreshed at

    def _refresh_for(self, head: str | None) -> None:
        """Refresh the cache (under ``lock``) unless it already was at this HEAD: a refresh
        scans the work tree, which at 100,000 files is the slowest step of a status."""
        if head is None or head != self._fresh_for:
            self.manager.refresh()
            self._fresh_for = head

    @property
    def repo_head(self) -> str | None:
        return self.manager.repo.head().sha

    def refresh(self) -> None:
        with self.lock:
            self._refresh_for(self.repo_head)

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        """A query of the cache; one that fails (the cache was deleted or broken under the
        server: deleting it is always allowed) rebuilds it and runs again."""
        try:
            return self.manager.cache.query(sql, params)
        except sqlite3.Error:
            with self.lock:
                self.manager.refresh()
            return self.manager.cache.query(sql, params)

    # -- the dashboard ---------------------------------------------------------------------

    def dashboard(self) -> dict[str, Any]:
        """The dashboard's data for the current HEAD (computed once per HEAD)."""
        head = self.repo_head
        current = self._dashboard
        if current is not None and current.head == head:
            return current.data
        with self.lock:
            current = self._dashboard
            if current is not None and current.head == head:
                return current.data
            self._refresh_for(head)
            data = self._collect(head)
            self._dashboard = Dashboard(head, data)
            return data

    def _collect(self, head: str | None) -> dict[str, Any]:
        reports = ReportGenerator(self.manager)
        try:
            data = reports.collect("daily")
        except HystateError as exc:  # a broken file: say so, and show what the cache has
            counts = queries.count_by_stage(self.manager.cache)
            return {
                "head": head,
                "error": str(exc),
                "counts": counts,
                "total": sum(counts.values()),
                "recent_commits": self.recent_commits(),
            }
        summary = data["summary"]
        total = summary["total_episodes"]
        chart = reports.chart(thin(data["progress_over_time"]), total)
        predictions = summary.get("predictions") or {}
        return {
            "head": head,
            "error": None,
            "generated_at": data["generated_at"],
            "total": total,
            "counts": summary["progress"],
            "completion_percentage": summary["completion_percentage"],
            "estimated_completion": summary["estimated_completion"],
            "eta_p50": predictions.get("eta_p50"),
            "eta_p90": predictions.get("eta_p90"),
            "per_day": summary["throughput"].get("per_day"),
            "eta_note": summary["throughput"].get("note"),
            "finished": summary["throughput"].get("note") == NOTHING_LEFT,
            "failed_now": summary["progress"].get("failed", 0),
            "throughput": data["throughput"],
            "chart": None if chart is None else chart_data(chart),
            "recent_failures": data["recent_failures"][:25],
            "stuck": data["stuck"][:SHOWN],
            "stuck_total": len(data["stuck"]),
            "skipped": data["skipped"][:SHOWN],
            "skipped_total": len(data["skipped"]),
            "years": self.years(),
            "recent_commits": self.recent_commits(),
        }

    def recent_commits(self, limit: int = 20) -> list[dict[str, Any]]:
        rows = self.manager.repo.log("HEAD", COMMIT_FIELDS, trailer_keys=COMMIT_KEYS, limit=limit)
        return [commit_dict(row) for row in rows]

    def years(self) -> list[str]:
        rows = self.query("SELECT DISTINCT year FROM episode_states ORDER BY year")
        return [r[0] for r in rows]

    # -- the episode list ------------------------------------------------------------------

    def episodes(
        self,
        *,
        stage: str | None = None,
        year: str | None = None,
        search: str | None = None,
        page: int = 1,
        per_page: int = PER_PAGE,
    ) -> dict[str, Any]:
        """One page of the episodes (oldest air date first), filtered by stage, year and a
        text found in the id or the title."""
        if page < 1 or not 1 <= per_page <= MAX_PER_PAGE:
            raise UsageError(f"page from 1, per_page from 1 to {MAX_PER_PAGE}")
        where, params = ["1=1"], list[Any]()
        if stage:
            where.append("stage = ?")
            params.append(ProcessingStage.parse(stage).value)
        if year:
            if not (len(year) == 4 and year.isascii() and year.isdigit()):
                raise UsageError(f"year must be four digits, not {year[:20]!r}")
            where.append("year = ?")
            params.append(year)
        if search:
            if len(search) > 200:
                raise UsageError("search text: at most 200 characters")
            if not search.isprintable():  # control characters, lone surrogates
                raise UsageError("search text: printable characters only")
            pattern = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            where.append("(episode_id LIKE ? ESCAPE '\\' OR title LIKE ? ESCAPE '\\')")
            params += [pattern + "%", pattern + "%"]
        clause = " AND ".join(where)
        offset = (page - 1) * per_page
        columns = ", ".join(LIST_COLUMNS)
        if search:
            # one pass over the rows (a text search reads them all; in table order, then
            # sorted: 40% faster at 100k than walking an index), then the page's rows by id
            found = [
                r[0]
                for r in self.query(
                    f"SELECT episode_id FROM episode_states NOT INDEXED WHERE {clause}"
                    " ORDER BY date, episode_id",
                    (*params,),
                )
            ]
            total, wanted = len(found), found[offset : offset + per_page]
            marks = ",".join("?" * len(wanted))
            rows = self.query(
                f"SELECT {columns} FROM episode_states WHERE episode_id IN ({marks})"
                " ORDER BY date, episode_id",
                tuple(wanted),
            )
        else:
            count = f"SELECT count(*) FROM episode_states WHERE {clause}"
            total = int(self.query(count, (*params,))[0][0])
            rows = self.query(
                f"SELECT {columns} FROM episode_states WHERE {clause}"
                " ORDER BY date, episode_id LIMIT ? OFFSET ?",
                (*params, per_page, offset),
            )
        return {
            "total": total,
            "page": page,
            "per_page": per_page,
            "pages": max(1, -(-total // per_page)),
            "items": [dict(zip(LIST_COLUMNS, tuple(r), strict=True)) for r in rows],
        }

    # -- one episode -----------------------------------------------------------------------

    def episode(self, episode_id: str, *, diffs: bool = True) -> dict[str, Any]:
        """The episode's file (as text), its fields, its history joined with the commits
        (``audit.join``) and, with ``diffs``, the patch each commit made to the file.
        UnknownEpisode when there is none."""
        manager = self.manager
        path = manager.path_of(check_id(episode_id))
        rel = manager.repo.relpath(path)
        try:  # never more than hystate reads of an episode file, whatever its size
            raw = read_bytes(path, yamlio.MAX_BYTES + 1)
        except FileNotFoundError:  # removed since it was found
            raise layout.not_found(manager, episode_id) from None
        except OSError:  # a symlink, a folder: never read (store.read below says why)
            raw = b""
        problem = None
        data: dict[str, Any] = {}
        history: list[dict[str, Any]] = []
        commits = audit.file_commits(manager.repo, rel)
        try:
            if len(raw) > yamlio.MAX_BYTES:
                raise InvalidData(f"{rel}: over {yamlio.MAX_BYTES:,} bytes; not read")
            data = manager.store.read(path)[1].data
            history = bounded_history(audit.join(data["history"], commits))
        except InvalidData as exc:
            problem = str(exc)
            history = bounded_history(audit.join([], commits))
        if diffs:
            patches = manager.repo.file_patches(rel, max_bytes=2 * SHOWN_BYTES)
            for row in history:
                row["diff"] = patches.get(row.get("commit") or "")
        shown = raw[:SHOWN_BYTES].decode("utf-8", "replace")
        if len(raw) > SHOWN_BYTES:
            shown += f"\n… (cut: the file is over {SHOWN_BYTES:,} bytes)"
        return {
            "episode_id": episode_id,
            "path": rel,
            "file": shown,
            "problem": problem,
            "state": data,  # the file's own keys
            "history": history,
        }

    def history(self, episode_id: str) -> list[dict[str, Any]]:
        return list(self.episode(episode_id, diffs=False)["history"])


def thin(series: dict[str, list[tuple[str, int]]]) -> dict[str, list[tuple[str, int]]]:
    """At most ``CHART_POINTS`` points a line: the last point of each equal slice of the time
    span (a cumulative count never loses its shape that way; the last point is kept)."""
    stamps = [parse_time(t) for points in series.values() for t, _ in points[:1] + points[-1:]]
    if not stamps:
        return series
    start, end = min(stamps), max(stamps)
    step = max((end - start) / CHART_POINTS, timedelta(microseconds=1))
    out: dict[str, list[tuple[str, int]]] = {}
    for name, points in series.items():
        if len(points) <= CHART_POINTS:
            out[name] = points
            continue
        kept: dict[int, tuple[str, int]] = {}
        for stamp, count in points:
            kept[int((parse_time(stamp) - start) / step)] = (stamp, count)
        out[name] = [kept[k] for k in sorted(kept)]
    return out


def chart_data(chart: Any) -> dict[str, Any]:
    """The chart as JSON (the page draws it with SVG elements, never with markup)."""
    return {
        "width": chart.width,
        "height": chart.height,
        "lines": chart.lines,
        "x_labels": [list(p) for p in chart.x_labels],
        "y_labels": [list(p) for p in chart.y_labels],
    }


def now_text() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
