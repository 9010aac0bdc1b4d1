"""Reports: the summary (JSON), a self-contained HTML page (counts, a progress-over-time chart in
inline SVG, throughput, recent failures, stuck and skipped episodes, the ETA), and CSV with one
row per episode, rendered and written where ``reporting`` says. The data comes from
``report_data``, the chart from ``charts``, the CSV from ``csvout``, the metrics from ``prom``;
everything is read from the cache (state.db), so a report of 100,000 episodes takes seconds;
every value from a file is escaped by Jinja2's autoescape."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hystate.core.errors import UsageError, cannot_write, is_cannot_write
from hystate.core.model import ProcessingStage
from hystate.core.paths import ensure_dir, write_atomic
from hystate.engine.layout import check_output
from hystate.reports import charts, csvout
from hystate.reports import data as report_data
from hystate.reports.charts import Chart
from hystate.reports.summary import generate_summary

if TYPE_CHECKING:
    from hystate.engine.workspace import Workspace


class ReportGenerator:
    def __init__(self, ws: Workspace) -> None:
        self.manager = ws

    def generate_summary(self) -> dict[str, Any]:
        return generate_summary(self.manager)

    def collect(self, period: str = "daily", now: datetime | None = None) -> dict[str, Any]:
        """Everything a report shows, as plain data (the JSON report is this)."""
        return report_data.collect(self.manager, period, now)

    def chart(self, series: dict[str, list[tuple[str, int]]], total: int) -> Chart | None:
        return charts.chart(series, total)

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
                    write_output(path, self.render_csv())
                    written.append(path)
                continue
            data = self.collect(period)
            if fmt == "html":
                path = self.default_path("html", period)
                write_output(path, self.render_html(data))
            else:
                path = self.default_path("html", period).with_suffix(".json")
                write_output(path, self.render_json(data))
            written.append(path)
        summary = self.default_path("json", "daily")
        write_output(summary, self.render_json(self.collect("daily")))
        return [*written, summary]

    def render_html(self, data: dict[str, Any]) -> str:
        from jinja2 import Environment, PackageLoader, select_autoescape

        env = Environment(
            loader=PackageLoader("hystate.reports"), autoescape=select_autoescape(default=True)
        )
        template = env.get_template("report.html.j2")
        summary = data["summary"]
        return template.render(
            data=data,
            summary=summary,
            chart=charts.chart(data["progress_over_time"], summary["total_episodes"]),
            stages=[s.value for s in ProcessingStage],
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
        return csvout.render_csv(self.manager)

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
        if target:
            check_output(self.manager, Path(target))
        path = Path(target) if target else self.default_path(fmt, period)
        write_output(path, text)
        self.written = path
        return None

    written: Path | None = None


def write_output(path: Path, text: str) -> None:
    """Atomically write a report or metrics file the user named; a folder is a usage error."""
    if path.is_dir():
        raise UsageError(f"{path} is a directory; give a file name (or '-' for stdout)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, text.encode("utf-8"))
    except OSError as exc:
        if is_cannot_write(exc):  # a full or read-only disk: the shared line and code (7)
            raise cannot_write(exc, path) from exc
        # a place that cannot hold a file (no such folder that can be made, no permission):
        # the path the user named is wrong, as a usage error
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from exc
