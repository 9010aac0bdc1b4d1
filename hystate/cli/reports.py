"""Commands about the whole collection: ``status`` (counts, completion, forecast),
``report`` (HTML, JSON, CSV), ``metrics`` (Prometheus) and ``rebuild`` (the caches)."""

from __future__ import annotations

import time
from pathlib import Path

import click

from hystate.cli.app import (
    Options,
    cli,
    echo,
    emit_json,
    json_option,
    pass_opts,
    reader,
)
from hystate.cli.terminal import progress_bar


@cli.command()
@json_option
@pass_opts
def status(opts: Options, as_json: bool) -> None:
    """Counts per stage, completion and the estimated completion date.

    \b
    Example:
      hystate status --json
    """
    from hystate.cluster import standing
    from hystate.reports.forecast import describe
    from hystate.reports.summary import NOTHING_LEFT, generate_summary

    manager = reader(opts)
    summary = generate_summary(manager)
    remote = standing.status(manager)
    if remote is not None:
        summary["sync"] = remote
    if as_json:
        emit_json(summary)
        return
    total = summary["total_episodes"]
    echo(f"{total} episodes, {summary['completion_percentage']}% done (published or skipped)")
    if remote is not None:
        echo(standing.describe_status(remote))
    widest = max(summary["progress"].values(), default=0) or 1
    for stage, count in summary["progress"].items():
        bar = "█" * round(30 * count / widest) if count else ""
        echo(f"  {stage:<12}{count:>7}  {bar}")
    throughput = summary["throughput"]
    if throughput.get("note") == NOTHING_LEFT:
        last = summary["estimated_completion"]
        echo(f"finished: {NOTHING_LEFT}{f' (last episode done {last})' if last else ''}")
    elif summary["estimated_completion"]:
        rate = throughput["per_day"]
        basis = f" ({rate} episodes/day over the last 7 days)" if rate else ""
        echo(f"estimated completion: {summary['estimated_completion']}{basis}")
    else:
        echo(f"estimated completion: unknown ({throughput.get('note', '')})")
    echo("\n".join(describe(summary["predictions"])))


@cli.command()
@json_option
@pass_opts
def rebuild(opts: Options, as_json: bool) -> None:
    """Rebuild state.db and index.json from the tree (they are caches; nothing is lost).

    \b
    Example:
      hystate rebuild
    """
    manager = reader(opts)
    started = time.perf_counter()
    with progress_bar("rebuilding") as bar:
        result = manager.refresh(force=True, progress=bar)
    took = time.perf_counter() - started
    name = manager.cache.db_path.name
    if as_json:
        emit_json({"rebuilt": [name, "index.json"], "files": result.reread, "seconds": took})
        return
    echo(f"rebuilt {name} and index.json from {result.reread} files in {took:.1f}s")


@cli.command()
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["html", "json", "csv"]),
    help="Default: reporting.report_format.",
)
@click.option("--period", type=click.Choice(["daily", "weekly"]), help="Default: daily.")
@click.option(
    "-o",
    "--output",
    metavar="PATH|-",
    help="Where to write ('-' for stdout); default: <state dir>/reports/.",
)
@json_option
@pass_opts
def report(
    opts: Options, fmt: str | None, period: str | None, output: str | None, as_json: bool
) -> None:
    """Write reports: HTML (self-contained, with a progress chart), JSON summary, or CSV.

    Without options: what the config's `reporting` asks for, in one run (generate_daily,
    generate_weekly, in report_format) plus summary.json. With --format, --period or -o: that
    one report. Into <state dir>/reports/: daily_report_YYYY-MM-DD.html,
    weekly_report_YYYY-Www.html, summary.json (the seed's summary keys at the top level),
    episodes_YYYY-MM-DD.csv. Prints the paths (--json: {"written": [paths]}).

    \b
    Examples:
      hystate report
      hystate report --period weekly
      hystate report --format csv -o episodes.csv
      hystate report --format json -o -
    """
    from hystate.core.errors import UsageError
    from hystate.reports.generator import ReportGenerator

    if as_json and output == "-":
        raise UsageError("--json prints the paths written; -o - prints the report itself")
    manager = reader(opts)
    generator = ReportGenerator(manager)
    if fmt is None and period is None and output is None:
        paths = [str(path.resolve()) for path in generator.write_configured()]
        if as_json:
            emit_json({"written": paths})
            return
        for path in paths:
            click.echo(path)
        return
    text = generator.write(
        fmt or str(manager.config.get("reporting.report_format")), period or "daily", output
    )
    if text is not None:
        echo(text, nl=False)
    elif as_json:
        emit_json({"written": [str(generator.written.resolve())] if generator.written else []})
    else:
        echo(str(generator.written.resolve() if generator.written else ""))


@cli.command()
@click.option(
    "--textfile",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write atomically here (node_exporter textfile collector).",
)
@json_option
@pass_opts
def metrics(opts: Options, textfile: Path | None, as_json: bool) -> None:
    """Prometheus metrics: episodes per stage, transitions and failures, last transition time.

    \b
    Examples:
      hystate metrics
      hystate metrics --textfile /var/lib/node_exporter/textfile/hystate.prom
      hystate metrics --json
    """
    from hystate.reports.prometheus import metrics_text, write_textfile

    manager = reader(opts)
    if textfile:
        write_textfile(manager, textfile)
        echo(f"wrote {textfile}", err=True)
    elif as_json:
        from prometheus_client.parser import text_string_to_metric_families

        text = metrics_text(manager).decode()
        emit_json(
            {
                family.name: [{"labels": s.labels, "value": s.value} for s in family.samples]
                for family in text_string_to_metric_families(text)
            }
        )
    else:
        echo(metrics_text(manager).decode(), nl=False)
