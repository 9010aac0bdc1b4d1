"""Commands that read episodes: one file (``show``), many (``list``), what is ready
(``next``), an episode's history, the event log, and the configuration. The caches answer,
refreshed from the tree first."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

from hystate.cli.app import (
    Options,
    clean,
    clean_line,
    cli,
    echo,
    emit_json,
    emit_json_array,
    json_option,
    pass_opts,
    reader,
    worker_option,
)
from hystate.cli.terminal import complete_episode_ids, complete_stages, complete_years
from hystate.core.errors import UsageError
from hystate.core.model import EpisodeState, ProcessingStage, check_id, parse_when


@cli.command()
@click.argument("episode_id", shell_complete=complete_episode_ids)
@json_option
@pass_opts
def show(opts: Options, episode_id: str, as_json: bool) -> None:
    """Print one episode's file.

    \b
    Example:
      hystate show hy0_hooting_yard_2004-04-14 --json
    """
    check_id(episode_id)
    episode = opts.manager().episode(episode_id)
    if as_json:
        emit_json(episode.data)
    else:
        from hystate.core import yamlio

        echo(yamlio.dump(episode.data), nl=False)


@cli.command()
@click.argument("key", required=False)
@json_option
@pass_opts
def config(opts: Options, key: str | None, as_json: bool) -> None:
    """Show the effective configuration (hystate.yaml plus defaults), or one KEY.

    \b
    Examples:
      hystate config
      hystate config recovery.max_retries.download
    """
    from hystate.core import yamlio

    manager = opts.manager(cli_worker=False)
    values: Any = manager.config.values
    if key:
        try:
            values = manager.config.get(key)
        except KeyError:
            raise UsageError(f"unknown config key {key!r}") from None
    if as_json:
        emit_json(values)
    elif isinstance(values, dict):
        source = manager.config.source or "defaults (no hystate.yaml)"
        echo(f"# from {source}", err=True)
        echo(yamlio.dump({"state_management": values} if not key else values), nl=False)
    else:
        echo("null" if values is None else values)


def _episode_summary(episode: EpisodeState, width: int = 60) -> str:
    return _summary_line(
        episode.episode_id, episode.date, episode.stage.value, episode.title, width
    )


def _summary_line(episode_id: str, date: str, stage: str, title: str, width: int = 60) -> str:
    title = title if len(title) <= width else title[: width - 1] + "…"
    return f"{episode_id:<44} {date}  {stage:<11}  {title}"


def _print_listing(manager: Any, stages: tuple[str, ...], years: tuple[str, ...]) -> None:
    """``list``'s lines from the cache's columns (no episode document parsed), written a few
    hundred at a time (one write per line cost more than the query at 1,000 lines)."""
    from hystate.cache import queries

    manager.list_episodes(stages, years, limit=0)  # the refresh and the check of problems
    count = 0
    lines: list[str] = []
    for row in queries.iter_listing(manager.cache, stages, years):
        lines.append(clean(_summary_line(*row)))  # each line as ``echo`` cleans it
        count += 1
        if len(lines) == 256:
            click.echo("\n".join(lines))
            lines.clear()
    if lines:
        click.echo("\n".join(lines))
    echo(f"{count} episodes", err=True)


def _check_years(years: tuple[str, ...]) -> tuple[str, ...]:
    """A year is four digits (an episode's folder): anything else would list nothing, silently."""
    for year in years:
        if not (len(year) == 4 and year.isascii() and year.isdigit()):
            raise UsageError(f"--year {clean_line(year)!r} is not a year like 2004")
    return years


@cli.command(name="list")
@click.option(
    "--stage",
    "stages",
    multiple=True,
    shell_complete=complete_stages,
    help="Only this stage (repeatable).",
)
@click.option(
    "--year",
    "years",
    multiple=True,
    callback=lambda _ctx, _param, years: _check_years(years),
    shell_complete=complete_years,
    help="Only this year, e.g. 2004 (repeatable).",
)
@click.option("--csv", "as_csv", is_flag=True, help="CSV on stdout.")
@json_option
@pass_opts
def list_(
    opts: Options, stages: tuple[str, ...], years: tuple[str, ...], as_csv: bool, as_json: bool
) -> None:
    """List episodes (oldest air date first).

    \b
    Examples:
      hystate list --stage failed
      hystate list --year 2004 --json
    """
    for stage in stages:
        ProcessingStage.parse(stage)
    if not (as_json or as_csv):
        _print_listing(reader(opts), stages, years)
        return
    episodes = reader(opts).stream_episodes(stages, years)  # one at a time: any number
    if as_json:
        emit_json_array(e.data for e in episodes)
    elif as_csv:
        from hystate.reports.csvout import csv_text

        header = (
            "episode_id",
            "date",
            "stage",
            "title",
            "last_updated",
            "worker",
            "attempts_total",
        )
        rows = [
            (e.episode_id, e.date, e.stage.value, e.title, e.last_updated, e.worker or "",
             sum(e.attempts.values()))
            for e in episodes
        ]  # fmt: skip
        echo(csv_text(header, rows), nl=False)


@cli.command(name="next")
@click.argument("stage", shell_complete=complete_stages)
@click.option("--limit", default=1, show_default=True, type=click.IntRange(min=1))
@click.option("--claim", is_flag=True, help="Move them into STAGE now (one commit each).")
@click.option(
    "--deadline",
    type=click.FloatRange(min=0, min_open=True, max=86400),
    help="With --claim on a node with a remote: seconds to keep trying while other nodes win "
    "the pushes (default: sync.deadline); then exit 6.",
)
@click.option(
    "--remote",
    metavar="NAME",
    help="With --claim: acknowledge claims only once pushed there (default: sync.remote).",
)
@worker_option
@json_option
@pass_opts
def next_(
    opts: Options,
    stage: str,
    limit: int,
    claim: bool,
    deadline: float | None,
    remote: str | None,
    worker: str | None,
    as_json: bool,
) -> None:
    """Episodes ready to enter STAGE; with --claim, take them.

    Workers claiming at the same time never get the same episode. Failed episodes whose
    retry of STAGE is due are included; for published, only episodes whose scheduled_date
    has come. With recovery.auto_resume, --claim first marks stuck episodes failed ("worker
    lost") and sends those out of attempts to skipped. The claimed stage starts a lease,
    whose token is printed (`lease TOKEN`; "lease" in --json): leaving the stage or renewing
    it (`hystate heartbeat ID`) needs it (--lease or $HYSTATE_LEASE). On a node with a
    remote (sync.remote, --remote) a claim is acknowledged only once pushed there; with the
    remote unreachable, exit 7; still losing to other nodes at --deadline, exit 6.

    \b
    Examples:
      hystate next downloading --limit 5
      hystate next downloading --limit 2 --claim --worker dl-1 --json
    """
    target = ProcessingStage.parse(stage)
    if claim:
        manager = opts.manager(worker)
        if remote is not None:
            from hystate.cluster.sync import remote_of

            manager.sync_remote = remote_of(manager, remote)  # a bad name: exit 2
        results = manager.claim_next(target, limit, worker=manager.worker, deadline=deadline)
        episodes = [r.episode for r in results]
        tokens = [r.lease for r in results]
    else:
        episodes = reader(opts).get_next_for_processing(target, limit)
        tokens = [None] * len(episodes)
    if as_json:  # a claim's lease token beside the file's keys: `jq -r '.[0].lease'`
        emit_json(
            [
                {**e.data, "lease": t} if claim else e.data
                for e, t in zip(episodes, tokens, strict=True)
            ]
        )
        return
    for e, token in zip(episodes, tokens, strict=True):
        echo(_episode_summary(e) + (f"  lease {token}" if token else ""))
    if not episodes:
        from hystate.engine.limits import room

        held = room(reader(opts), target)  # a limit, not the lack of work, may be why
        why = held.refusal() if held is not None else None
        echo(f"nothing ready for {target.value}" + (f": {why}" if why else ""), err=True)


@cli.command()
@click.argument("episode_id", shell_complete=complete_episode_ids)
@json_option
@pass_opts
def history(opts: Options, episode_id: str, as_json: bool) -> None:
    """An episode's transitions joined with the commits that made them.

    \b
    Example:
      hystate history hy0_hooting_yard_2004-04-14
    """
    rows = opts.manager(cli_worker=False).history(check_id(episode_id))
    if as_json:  # one vocabulary: the file's `by` is `worker` outside it
        emit_json([{("worker" if k == "by" else k): v for k, v in row.items()} for row in rows])
        return
    for row in rows:
        move = (
            f"{row['from'] or '-'} -> {row['to']}" if row["to"] else "(commit without transition)"
        )
        sha = (row.get("commit") or "uncommitted")[:8]
        run = " ".join(f"{k}={v}" for k, v in (row.get("run") or {}).items())
        line = f"{row['at']}  {move:<28} {row['by'] or '':<16} {sha}  {row.get('author', '')}"
        echo(f"{line}  {run}" if run else line)


@cli.command()
@click.option(
    "--since",
    help="ISO date or time (2026-11-01, 2026-11-01T12:00:00+02:00), 'yesterday', '2 hours ago'.",
)
@click.option("--until", help="Same forms as --since.")
@click.option(
    "--episode", "episode_id", shell_complete=complete_episode_ids, help="Only this episode."
)
@click.option("--follow", is_flag=True, help="Keep printing new events as they happen.")
@click.option(
    "--interval", default=1.0, show_default=True, help="Seconds between checks with --follow."
)
@json_option
@pass_opts
def log(
    opts: Options,
    since: str | None,
    until: str | None,
    episode_id: str | None,
    follow: bool,
    interval: float,
    as_json: bool,
) -> None:
    """The event stream: one line per transition (JSON lines with --json).

    \b
    Examples:
      hystate log --since 2026-11-24 --json
      hystate log --follow
    """
    # the files hold UTC times (hystate writes them), so a UTC bound compares correctly
    since = parse_when(since).isoformat(timespec="seconds") if since else None
    until = parse_when(until).isoformat(timespec="seconds") if until else None
    manager = reader(opts)
    seen: set[tuple[Any, ...]] = set()

    def emit(events: list[dict[str, Any]]) -> None:
        # Two moves of one episode in one second to the same stage are two events, never one:
        # the k-th event alike in episode, time and move is told from the first by k
        # (histories only grow, so each poll counts them the same way).
        alike: dict[tuple[Any, ...], int] = {}
        for event in events:
            same = (event["episode_id"], event["at"], event["from"], event["to"])
            alike[same] = alike.get(same, 0) + 1
            key = (*same, alike[same])
            if key in seen:
                continue
            seen.add(key)
            if as_json:  # one vocabulary: episode_id, worker, at
                echo(json.dumps(event, ensure_ascii=False))
            else:
                move = f"{event['from'] or '-'} -> {event['to']}"
                extra = f"  {event['error']}" if event.get("error") else ""
                who = event.get("worker") or ""
                echo(f"{event['at']}  {event['episode_id']:<40} {move:<26} {who}{extra}")

    emit(manager.events(since=since, until=until, episode_id=episode_id))
    manager.refresh_once = False  # following: look at the tree again on every poll
    while follow:
        time.sleep(interval)
        emit(manager.events(since=since, until=until, episode_id=episode_id))
        sys.stdout.flush()
