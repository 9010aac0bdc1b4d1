"""Reports: the summary (JSON), a self-contained HTML page (counts, a progress-over-time chart in
inline SVG, throughput, recent failures, stuck and skipped episodes, the ETA), CSV with one row
per episode, and Prometheus metrics. Everything is read from the cache (state.db), so a report
of 100,000 episodes takes seconds; every value from a file is escaped by Jinja2's autoescape."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hystate.model import ProcessingStage, parse_time
from hystate.paths import ensure_dir, write_atomic
from hystate.summary import generate_summary

if TYPE_CHECKING:
    from hystate.manager import StateManager

S = ProcessingStage
MILESTONES = ("downloaded", "converted", "uploaded", "published")
COLOURS = {
    "downloaded": "#8da0cb",
    "converted": "#66c2a5",
    "uploaded": "#fc8d62",
    "published": "#1b7837",
}
CSV_FIELDS = (
    "episode_id", "date", "title", "stage", "status_message", "last_updated", "failed_stage",
    "worker", "audio_file", "video_file", "youtube_video_id", "scheduled_date", "published_date",
    "audio_duration", "audio_size", "video_size", "processing_time", "download_attempts",
    "conversion_attempts", "upload_attempts", "error_count", "last_error",
)  # fmt: skip


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    lines: list[dict[str, Any]]
    x_labels: list[tuple[float, str]]
    y_labels: list[tuple[float, str]]


class ReportGenerator:
    def __init__(self, manager: StateManager) -> None:
        self.manager = manager

    def generate_summary(self) -> dict[str, Any]:
        return generate_summary(self.manager)

    # -- data ------------------------------------------------------------------------------

    def collect(self, period: str = "daily", now: datetime | None = None) -> dict[str, Any]:
        """Everything a report shows, as plain data (the JSON report is this)."""
        from hystate.recovery import RecoveryManager

        now = now or datetime.now(UTC)
        summary = generate_summary(self.manager, now)
        cache = self.manager.cache
        failures = [
            {
                "episode_id": r[0],
                "at": r[1],
                "stage": r[2],
                "title": r[4] or "",
                **json.loads(r[3] or "{}"),
            }
            for r in cache.query(
                "SELECT l.episode_id, l.timestamp, l.from_stage, l.details, e.title"
                " FROM processing_log l LEFT JOIN episode_states e USING (episode_id)"
                " WHERE l.event = 'failed' ORDER BY l.timestamp DESC, l.id DESC LIMIT 25"
            )
        ]
        skipped = [
            {"episode_id": r[0], "title": r[1], "reason": r[2] or "", "at": r[3]}
            for r in cache.query(
                "SELECT episode_id, title, status_message, last_updated FROM episode_states"
                " WHERE stage = 'skipped' ORDER BY last_updated DESC"
            )
        ]
        stuck = [
            {"episode_id": e.episode_id, "title": e.title, "stage": e.stage.value, "reason": reason}
            for e, reason in RecoveryManager(self.manager).stuck()
        ]
        return {
            "period": period,
            "generated_at": now.isoformat(timespec="seconds"),
            "summary": summary,
            "throughput": self._throughput(period, now),
            "progress_over_time": self._progress_series(),
            "recent_failures": failures,
            "stuck": stuck,
            "skipped": skipped,
        }

    def _throughput(self, period: str, now: datetime) -> list[dict[str, Any]]:
        """Episodes finishing each stage, per day (last 14 days) or per week (last 12 weeks)."""
        weekly = period == "weekly"
        span = timedelta(weeks=12) if weekly else timedelta(days=14)
        since = (now - span).isoformat(timespec="seconds")
        rows = self.manager.cache.query(
            "SELECT timestamp, to_stage FROM processing_log WHERE timestamp >= ? AND to_stage IN"
            " ('downloaded', 'converted', 'uploaded', 'published', 'failed')",
            (since,),
        )
        buckets: dict[str, Counter[str]] = {}
        for stamp, stage in rows:
            when = parse_time(stamp)
            key = (
                f"{when.isocalendar().year}-W{when.isocalendar().week:02d}"
                if weekly
                else when.date().isoformat()
            )
            buckets.setdefault(key, Counter())[stage] += 1
        return [
            {"period": key, **{s: buckets[key][s] for s in (*MILESTONES, "failed")}}
            for key in sorted(buckets)
        ]

    def _progress_series(self) -> dict[str, list[tuple[str, int]]]:
        """Cumulative count of episodes that reached each milestone, over time."""
        rows = self.manager.cache.query(
            "SELECT to_stage, timestamp FROM processing_log WHERE to_stage IN"
            " ('downloaded', 'converted', 'uploaded', 'published') ORDER BY timestamp"
        )
        series: dict[str, list[tuple[str, int]]] = {m: [] for m in MILESTONES}
        counts: Counter[str] = Counter()
        for stage, stamp in rows:
            counts[stage] += 1
            points = series[stage]
            if points and points[-1][0] == stamp:
                points[-1] = (stamp, counts[stage])
            else:
                points.append((stamp, counts[stage]))
        return series

    # -- renderings ------------------------------------------------------------------------

    def chart(self, series: dict[str, list[tuple[str, int]]], total: int) -> Chart | None:
        width, height, left, bottom = 760, 260, 48, 28
        stamps = [parse_time(t) for points in series.values() for t, _ in points]
        if not stamps:
            return None
        start, end = min(stamps), max(stamps)
        span = max((end - start).total_seconds(), 1.0)
        top = max(total, 1)

        def x(when: datetime) -> float:
            return round(left + (width - left - 10) * (when - start).total_seconds() / span, 1)

        def y(count: int) -> float:
            return round(height - bottom - (height - bottom - 10) * count / top, 1)

        lines = []
        for name, points in series.items():
            if not points:
                continue
            coords = [(x(parse_time(t)), y(n)) for t, n in points]
            coords.append((x(end), coords[-1][1]))
            path = " ".join(f"{px},{py}" for px, py in coords)
            lines.append(
                {"name": name, "points": path, "colour": COLOURS[name], "last": points[-1][1]}
            )
        x_labels = [
            (
                x(start + timedelta(seconds=span * f)),
                _label(start + timedelta(seconds=span * f), span),
            )
            for f in (0, 0.5, 1)
        ]
        y_labels = [(y(n), str(n)) for n in sorted({0, top // 2, top})]
        return Chart(width, height, lines, x_labels, y_labels)

    def generate_html_report(self, period: str = "daily") -> str:
        """The seed's call: the HTML report as a string (``write`` puts it in a file)."""
        self.manager.refresh()
        return self.render_html(self.collect(period))

    def write_configured(self) -> list[Path]:
        """What ``reporting`` asks for, in one run: the daily and/or weekly report in
        ``report_format`` (CSV once: it has no period), and always ``summary.json``."""
        self.manager.refresh()
        self.manager.cache.check_problems()
        config = self.manager.config
        fmt = str(config.get("reporting.report_format"))
        periods = [p for p in ("daily", "weekly") if config.get(f"reporting.generate_{p}")]
        written = []
        for period in periods:
            if fmt == "csv":
                path = self.default_path("csv", period)
                if path not in written:
                    _write(path, self.render_csv())
                    written.append(path)
                continue
            data = self.collect(period)
            if fmt == "html":
                path = self.default_path("html", period)
                _write(path, self.render_html(data))
            else:
                path = self.default_path("html", period).with_suffix(".json")
                _write(path, self.render_json(data))
            written.append(path)
        summary = self.default_path("json", "daily")
        _write(summary, self.render_json(self.collect("daily")))
        return [*written, summary]

    def render_html(self, data: dict[str, Any]) -> str:
        from jinja2 import Environment, PackageLoader, select_autoescape

        env = Environment(
            loader=PackageLoader("hystate"), autoescape=select_autoescape(default=True)
        )
        template = env.get_template("report.html.j2")
        summary = data["summary"]
        return template.render(
            data=data,
            summary=summary,
            chart=self.chart(data["progress_over_time"], summary["total_episodes"]),
            stages=[s.value for s in S],
            widest=max(summary["progress"].values(), default=0) or 1,
            skipped_shown=data["skipped"][:50],
        )

    def render_json(self, data: dict[str, Any]) -> str:
        """The seed's ``generate_summary`` keys at the top level, then the report's details."""
        rest = {k: v for k, v in data.items() if k != "summary"}
        rest["throughput_by_period"] = rest.pop("throughput")
        flat = {**data["summary"], **rest}
        return json.dumps(flat, indent=2, ensure_ascii=False) + "\n"

    def render_csv(self) -> str:
        rows = self.manager.cache.query(
            f"SELECT {', '.join(CSV_FIELDS)} FROM episode_states ORDER BY date, episode_id"
        )
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(CSV_FIELDS)
        writer.writerows(tuple(map(csv_cell, row)) for row in rows)
        return out.getvalue()

    def default_path(self, fmt: str, period: str) -> Path:
        """Where a report goes by default: ``<state dir>/reports/``, a folder made (and checked)
        so that nothing is ever written through a linked ``reports``."""
        reports = ensure_dir(self.manager.repo.root, self.manager.state_dir / "reports")
        today = datetime.now(UTC).date()
        if fmt == "json":
            return reports / "summary.json"
        if fmt == "csv":
            return reports / f"episodes_{today.isoformat()}.csv"
        if period == "weekly":
            iso = today.isocalendar()
            return reports / f"weekly_report_{iso.year}-W{iso.week:02d}.html"
        return reports / f"daily_report_{today.isoformat()}.html"

    def write(self, fmt: str, period: str, target: str | None) -> str | None:
        """Render ``fmt`` and write it to ``target`` (a path, '-' for stdout, None for the
        default place). Returns the text for stdout, or None when written to a file."""
        self.manager.refresh()
        self.manager.cache.check_problems()
        if fmt == "csv":
            text = self.render_csv()
        else:
            data = self.collect(period)
            text = self.render_html(data) if fmt == "html" else self.render_json(data)
        if target == "-":
            return text
        path = Path(target) if target else self.default_path(fmt, period)
        _write(path, text)
        self.written = path
        return None

    written: Path | None = None


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A cell a spreadsheet will not run: text starting like a formula (``=HYPERLINK(…)``,
    ``+cmd``, ``-2+3``, ``@SUM``, a tab or CR) gets a leading apostrophe (OWASP's advice)."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def metrics_text(manager: StateManager) -> bytes:
    """Prometheus text exposition: episodes per stage (zeros included), transitions and
    failures counters from the history, the last transition's time. No episode ids."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    registry.register(_Collector(manager))
    return bytes(generate_latest(registry))


def write_textfile(manager: StateManager, path: Path) -> None:
    """Atomically write the metrics for node_exporter's textfile collector."""
    _write(path, metrics_text(manager).decode())


class _Collector:
    def __init__(self, manager: StateManager) -> None:
        self.manager = manager

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        counts = self.manager.count_by_stage()
        episodes = GaugeMetricFamily(
            "hystate_episodes", "Episodes in each stage.", labels=["stage"]
        )
        for stage, n in counts.items():
            episodes.add_metric([stage], n)
        yield episodes
        cache = self.manager.cache
        transitions = CounterMetricFamily(
            "hystate_transitions",
            "Transitions recorded in the episodes' history, by stage entered.",
            labels=["to"],
        )
        entered = {
            r[0]: r[1]
            for r in cache.query(
                "SELECT to_stage, count(*) FROM processing_log"
                " WHERE from_stage IS NOT NULL GROUP BY to_stage"
            )
        }
        for stage in (s.value for s in S):
            transitions.add_metric([stage], entered.get(stage, 0))
        yield transitions
        failures = CounterMetricFamily(
            "hystate_failures", "Failures recorded, by the stage that failed.", labels=["stage"]
        )
        failed = {
            r[0]: r[1]
            for r in cache.query(
                "SELECT from_stage, count(*) FROM processing_log"
                " WHERE to_stage = 'failed' GROUP BY from_stage"
            )
        }
        for stage in ("downloading", "converting", "uploading"):
            failures.add_metric([stage], failed.get(stage, 0))
        yield failures
        (last,) = cache.query("SELECT max(timestamp) FROM processing_log")[0]
        stamp = GaugeMetricFamily(
            "hystate_last_transition_timestamp_seconds", "Unix time of the newest history entry."
        )
        stamp.add_metric([], parse_time(last).timestamp() if last else 0.0)
        yield stamp
        total = GaugeMetricFamily(
            "hystate_completion_ratio", "Share of episodes published or skipped."
        )
        all_ = sum(counts.values())
        total.add_metric([], (counts["published"] + counts["skipped"]) / all_ if all_ else 0.0)
        yield total
        yield from _prediction_metrics(self.manager)


def _prediction_metrics(manager: StateManager) -> Any:
    """hystate.predict's figures; a quantile without enough history is left out."""
    from prometheus_client.core import GaugeMetricFamily

    from hystate.forecast import predict_summary

    p = predict_summary(manager)
    eta = GaugeMetricFamily(
        "hystate_predicted_completion_timestamp_seconds",
        "Predicted Unix time when every episode is uploaded or skipped.",
        labels=["quantile"],
    )
    for quantile, key in (("0.5", "eta_p50"), ("0.9", "eta_p90")):
        if p[key]:
            eta.add_metric([quantile], parse_time(p[key]).timestamp())
    yield eta
    work = GaugeMetricFamily(
        "hystate_predicted_remaining_work_seconds",
        "Predicted run time still needed by the active stages, summed over episodes.",
        labels=["quantile"],
    )
    work.add_metric(["0.5"], p["remaining_work_seconds"]["p50"])
    work.add_metric(["0.9"], p["remaining_work_seconds"]["p90"])
    yield work
    rate = GaugeMetricFamily(
        "hystate_stage_failure_rate", "Share of runs of a stage that failed.", labels=["stage"]
    )
    for stage, model in p["stages"].items():
        rate.add_metric([stage], model["failure_rate"])
    yield rate
    skips = GaugeMetricFamily(
        "hystate_predicted_skips", "Expected number of unfinished episodes that end skipped."
    )
    skips.add_metric([], p["expected_skips"])
    yield skips


def _label(when: datetime, span: float) -> str:
    if span <= 3600:
        return when.strftime("%H:%M:%S")
    if span <= 2 * 86400:
        return when.strftime("%Y-%m-%d %H:%M")
    return when.date().isoformat()


def _write(path: Path, text: str) -> None:
    """Atomically write ``path``; the temp file never outlives a failure or an interrupt."""
    from hystate.errors import UsageError

    if path.is_dir():
        raise UsageError(f"{path} is a directory; give a file name (or '-' for stdout)")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text.encode("utf-8"))
