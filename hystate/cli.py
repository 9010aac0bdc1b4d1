"""The ``hystate`` command. Everything here is presentation: parsing arguments, printing,
and turning HystateError into a one-line message and its exit code (in one place,
``HystateGroup.invoke``). Heavy modules are imported inside the commands that need them, so
``hystate advance`` does not pay for GitPython or the reporting code."""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from hystate.errors import HystateError

if TYPE_CHECKING:
    from hystate.manager import StateManager, TransitionResult
    from hystate.model import EpisodeState

F = TypeVar("F", bound=Callable[..., Any])
EXIT_INTERRUPTED = 130


@dataclass
class Options:
    verbose: bool = False
    state_dir: str | None = None

    def manager(self, worker: str | None = None, *, cli_worker: bool = True) -> StateManager:
        from hystate.gitrepo import default_worker
        from hystate.manager import StateManager

        # The CLI acts for its caller (the pipeline script): that is the worker by default.
        default = default_worker(os.getppid()) if cli_worker else None
        return StateManager(self.state_dir, worker=worker or default)


class HystateGroup(click.Group):
    """Maps errors to exit codes: HystateError -> its code, Ctrl-C -> 130, anything
    unexpected -> 1 with a one-line message (the traceback only with -v)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except HystateError as exc:
            _fail(ctx, f"error: {exc}", exc.exit_code)
        except (KeyboardInterrupt, click.Abort):
            _fail(ctx, "interrupted", EXIT_INTERRUPTED)
        except (click.ClickException, click.exceptions.Exit, BrokenPipeError):
            raise
        except OSError as exc:
            _fail(ctx, f"error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), 1)
        except Exception as exc:
            _fail(ctx, f"internal error: {type(exc).__name__}: {exc}", 1)


def _fail(ctx: click.Context, message: str, code: int) -> None:
    opts = ctx.find_object(Options)
    if opts is not None and opts.verbose:
        traceback.print_exc()
    click.echo(f"hystate: {message}", err=True)
    if (opts is None or not opts.verbose) and code == 1 and message.startswith("internal"):
        click.echo("hystate: run again with -v for the traceback", err=True)
    ctx.exit(code)


def json_option(f: F) -> F:
    return click.option(
        "--json", "as_json", is_flag=True, help="Machine-readable output on stdout."
    )(f)


def worker_option(f: F) -> F:
    return click.option(
        "--worker", metavar="NAME", help="Who does the work (default: host:pid of the caller)."
    )(f)


def emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


@click.group(cls=HystateGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Show tracebacks and more detail.")
@click.option(
    "--state-dir",
    envvar="HYSTATE_STATE_DIR",
    metavar="DIR",
    help="State directory (default: state_directory of hystate.yaml, else processed).",
)
@click.version_option(package_name="hystate")
@click.pass_context
def cli(ctx: click.Context, verbose: bool, state_dir: str | None) -> None:
    """hystate: git-backed state of the Hooting Yard migration.

    One YAML file per episode is the source of truth; every transition is one git commit.

    \b
    Examples:
      hystate init
      hystate discover --from archive-org-search.json
      hystate advance hy0_hooting_yard_2004-04-14 downloading
      hystate show hy0_hooting_yard_2004-04-14
    """
    ctx.obj = Options(verbose, state_dir)
    if ctx.invoked_subcommand in READING and not any(a in ("-h", "--help") for a in sys.argv):
        from hystate.gitrepo.repo import prefetch_status

        prefetch_status(Path.cwd())


# Commands that only read: their cache check overlaps git's work-tree scan with start-up.
READING = {"status", "list", "next", "log", "report", "metrics"}
pass_opts = click.make_pass_decorator(Options)


@cli.command()
@pass_opts
def init(opts: Options) -> None:
    """Create the state directory (and a git repository if there is none). Safe to repeat.

    \b
    Example:
      hystate init
    """
    from hystate.errors import GitError
    from hystate.gitrepo import GitRepo

    try:
        GitRepo.discover(Path.cwd())
    except GitError:
        GitRepo.init(Path.cwd())
        click.echo(f"initialised a git repository in {Path.cwd()}")
    manager = opts.manager()
    sha = manager.ensure_layout()
    state = manager.rel_state_dir
    click.echo(f"state directory {state}/ " + (f"set up ({sha[:8]})" if sha else "already set up"))


@cli.command()
@click.option(
    "--from",
    "source",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="advancedsearch JSON, scrape JSON, JSON array, JSON lines, or CSV.",
)
@worker_option
@json_option
@pass_opts
def discover(opts: Options, source: Path, worker: str | None, as_json: bool) -> None:
    """Create a file for every new episode in a catalog file (one commit).

    Episodes that already have a file are left alone. A malformed file is rejected whole
    (exit 5) before anything is written.

    \b
    Example:
      hystate discover --from archive-org-search-hooting-yard.json
    """
    from hystate.discover import read_records

    records = read_records(source)
    result = opts.manager(worker, cli_worker=False).discover(records, source=source.name)
    if as_json:
        emit_json(
            {"added": result.added, "existing": len(result.existing), "commit": result.commit}
        )
        return
    commit = f" in {result.commit[:8]}" if result.commit else ""
    click.echo(
        f"discovered {len(result.added)} new episodes{commit}; {len(result.existing)} already known"
    )


@cli.command()
@click.argument("episode_id")
@click.option("--title", required=True)
@click.option("--date", required=True, help="Air date, YYYY-MM-DD.")
@click.option("--archive-identifier", help="archive.org identifier (default: the episode id).")
@worker_option
@pass_opts
def add(
    opts: Options,
    episode_id: str,
    title: str,
    date: str,
    archive_identifier: str | None,
    worker: str | None,
) -> None:
    """Add one episode in stage discovered (one commit).

    \b
    Example:
      hystate add hooting-yard-live --title "An Evening of Lugubrious Music" --date 2008-01-01
    """
    result = opts.manager(worker, cli_worker=False).add_episode(
        episode_id, title=title, date=date, archive_identifier=archive_identifier
    )
    if result.commit:
        click.echo(f"{episode_id}: new -> discovered ({result.commit[:8]})")
    else:
        click.echo(f"{episode_id} already exists; left alone")


@cli.command()
@click.argument("episode_id")
@json_option
@pass_opts
def show(opts: Options, episode_id: str, as_json: bool) -> None:
    """Print one episode's file.

    \b
    Example:
      hystate show hy0_hooting_yard_2004-04-14 --json
    """
    from hystate.model import check_id

    check_id(episode_id)
    episode = opts.manager().get_episode_state(episode_id)
    if as_json:
        emit_json(episode.data)
    else:
        from hystate import yamlio

        click.echo(yamlio.dump(episode.data), nl=False)


def _print_result(result: TransitionResult, as_json: bool) -> None:
    episode = result.episode
    if as_json:
        emit_json({"episode": episode.data, "commit": result.commit, "changed": result.changed})
        return
    if not result.changed:
        click.echo(f"{episode.episode_id} is already {episode.stage.value}; nothing to do")
        return
    old = result.from_stage.value if result.from_stage else "?"
    click.echo(
        f"{episode.episode_id}: {old} -> {episode.stage.value} ({(result.commit or '')[:8]})"
    )


@cli.command()
@click.argument("episode_id")
@click.argument("stage")
@click.option("-m", "--message", help="Status message (also the commit body).")
@click.option(
    "--set",
    "assignments",
    multiple=True,
    metavar="FIELD=VALUE",
    help="Set a field on the way, e.g. files.audio_file=audio/x.mp3 (repeatable).",
)
@click.option("--force", is_flag=True, help="Retry a failed episode before its delay has passed.")
@worker_option
@json_option
@pass_opts
def advance(
    opts: Options,
    episode_id: str,
    stage: str,
    message: str | None,
    assignments: tuple[str, ...],
    force: bool,
    worker: str | None,
    as_json: bool,
) -> None:
    """Move an episode to STAGE: one commit, or nothing if it is already there.

    \b
    Examples:
      hystate advance hy0_hooting_yard_2004-04-14 downloading --worker dl-1
      hystate advance hy0_hooting_yard_2004-04-14 downloaded \\
          --set files.audio_file=audio/2004/hy0_hooting_yard_2004-04-14.mp3 \\
          --set metrics.audio_size=28363609
    """
    from hystate.model import ProcessingStage, check_id
    from hystate.rules import parse_assignment

    check_id(episode_id)
    target = ProcessingStage.parse(stage)
    fields = dict(parse_assignment(a) for a in assignments)
    result = opts.manager(worker).update_state(
        episode_id, target, message=message, fields=fields, force=force
    )
    _print_result(result, as_json)


@cli.command()
@click.argument("episode_id")
@click.option("--error", "error", required=True, help="What went wrong (one line or more).")
@click.option(
    "--traceback",
    "traceback_file",
    type=click.File("r"),
    help="File with the traceback to record ('-' for standard input).",
)
@worker_option
@json_option
@pass_opts
def fail(
    opts: Options,
    episode_id: str,
    error: str,
    traceback_file: Any,
    worker: str | None,
    as_json: bool,
) -> None:
    """Record a failure of the active stage the episode is in.

    \b
    Example:
      hystate fail hy0_hooting_yard_2004-04-14 --error "HTTP 503 from archive.org"
    """
    from hystate.model import check_id

    check_id(episode_id)
    trace = traceback_file.read() if traceback_file else None
    result = opts.manager(worker).fail(episode_id, error, traceback=trace)
    _print_result(result, as_json)


@cli.command()
@click.argument("episode_ids", nargs=-1)
@click.option("--all", "all_failed", is_flag=True, help="Every failed episode.")
@click.option("--now", is_flag=True, help="Ignore the retry delay.")
@click.option("--dry-run", is_flag=True, help="Say what would happen; change nothing.")
@json_option
@pass_opts
def retry(
    opts: Options,
    episode_ids: tuple[str, ...],
    all_failed: bool,
    now: bool,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Send failed episodes back to the stage that failed.

    Only those whose delay (retry_delay, doubled per attempt) has passed, unless --now.
    Episodes out of attempts go to skipped with the reason.

    \b
    Examples:
      hystate retry --all
      hystate retry hy0_hooting_yard_2004-04-14 --now
    """
    if bool(episode_ids) == all_failed:
        raise click.UsageError("give episode ids or --all (not both)")
    outcomes = opts.manager(cli_worker=False).retry(
        None if all_failed else list(episode_ids), now=now, dry_run=dry_run
    )
    if as_json:
        emit_json([o.__dict__ for o in outcomes])
        return
    if not outcomes:
        click.echo("no failed episodes")
    for o in outcomes:
        click.echo(f"{o.episode_id}: {o.action}" + (f" ({o.detail})" if o.detail else ""))


@cli.command()
@click.argument("episode_id")
@click.option("--reason", required=True, help="Why the episode is skipped.")
@worker_option
@json_option
@pass_opts
def skip(opts: Options, episode_id: str, reason: str, worker: str | None, as_json: bool) -> None:
    """Take an episode out of the pipeline, with the reason.

    \b
    Example:
      hystate skip hooting-yard-live --reason "rebroadcast of 2007-12-27"
    """
    from hystate.model import check_id

    check_id(episode_id)
    _print_result(opts.manager(worker).skip(episode_id, reason), as_json)


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
    from hystate import yamlio

    manager = opts.manager(cli_worker=False)
    values: Any = manager.config.values
    if key:
        try:
            values = manager.config.get(key)
        except KeyError:
            from hystate.errors import UsageError

            raise UsageError(f"unknown config key {key!r}") from None
    if as_json:
        emit_json(values)
    elif isinstance(values, dict):
        source = manager.config.source or "defaults (no hystate.yaml)"
        click.echo(f"# from {source}", err=True)
        click.echo(yamlio.dump({"state_management": values} if not key else values), nl=False)
    else:
        click.echo("null" if values is None else values)


@cli.command()
@click.option("--base", metavar="REF", help="Review what changed since REF (a branch, a commit).")
@click.option("--github", is_flag=True, help="GitHub Actions annotations (::error file=...).")
@json_option
@pass_opts
def validate(opts: Options, base: str | None, github: bool, as_json: bool) -> None:
    """Check episode files against the schema and the transition rules.

    Without --base: every file (schema, invariants). With --base REF: every episode file
    changed since REF, and each transition added since REF, step by step (a squash merge
    validates like a commit per transition); deleted or moved files, committed caches, and
    commits without hystate's trailers (a warning) are reported too. Exit 1 on any error.

    \b
    Examples:
      hystate validate
      hystate validate --base origin/main --json
    """
    manager = opts.manager(cli_worker=False)
    if base:
        from hystate.review import review

        found = review(manager, base)
        rows = [f.as_dict() for f in found]
        errors = [f for f in found if f.level == "error"]
        summary = f"{len(errors)} errors, {len(found) - len(errors)} warnings since {base}"
    else:
        problems = manager.validate()
        rows = [
            {**p.as_dict(), "level": "error", "message": f"{p.path}: {p.message}"} for p in problems
        ]
        errors = problems  # type: ignore[assignment]
        count = sum(1 for _ in manager.store.iter_paths())
        bad = len({p.file for p in problems})
        summary = f"{count} files checked, {bad} with problems ({len(problems)} in all)"
    if as_json:
        emit_json({"summary": summary, "problems": rows})
    else:
        for row in rows:
            if github:
                line = f",line={row['line']}" if row.get("line") else ""
                message = str(row["message"]).replace("%", "%25").replace("\n", "%0A")
                click.echo(f"::{row['level']} file={row['file']}{line}::{message}")
            else:
                where = f"{row['file']}:{row['line']}" if row.get("line") else row["file"]
                click.echo(f"{where}: {row['level']}: {row['message']}")
        click.echo(summary, err=True)
    if errors:
        raise click.exceptions.Exit(1)


@cli.command(name="merge-driver")
@click.argument("base", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("ours", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("theirs", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("name", required=False, default="episode")
def merge_driver(base: Path, ours: Path, theirs: Path, name: str) -> None:
    """Git merge driver for episode files (installed by `hystate init`).

    Merges two branches' changes to one episode field by field; if both moved the stage,
    leaves git's conflict markers and exits 1.

    \b
    Example (.git/config, written by hystate init):
      [merge "hystate"]
          driver = python -m hystate.cli merge-driver %O %A %B %P
    """
    from hystate.merge import merge_files

    clean, why = merge_files(base, ours, theirs, name)
    if not clean:
        click.echo(
            f"hystate: {name}: conflict: {why}; resolve it, then `hystate validate`", err=True
        )
        raise click.exceptions.Exit(1)


def _progress(label: str) -> Callable[[int, int], None] | None:
    """A progress bar on stderr for long work, only when stderr is a terminal."""
    if not sys.stderr.isatty():
        return None
    bar: Any = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = click.progressbar(length=total, label=label, file=sys.stderr)
            bar.__enter__()
        bar.update(done - bar.pos)
        if done >= total:
            bar.__exit__(None, None, None)

    return update


def _reader(opts: Options) -> StateManager:
    """A manager for reading commands: cache notices go to stderr."""
    manager = opts.manager(cli_worker=False)
    manager.cache.notice = lambda message: click.echo(f"hystate: {message}", err=True)
    manager.refresh_once = True  # one command, one snapshot of the tree
    return manager


def _episode_summary(episode: EpisodeState, width: int = 60) -> str:
    title = episode.title if len(episode.title) <= width else episode.title[: width - 1] + "…"
    return f"{episode.episode_id:<44} {episode.date}  {episode.stage.value:<11}  {title}"


@cli.command(name="list")
@click.option("--stage", "stages", multiple=True, help="Only this stage (repeatable).")
@click.option("--year", "years", multiple=True, help="Only this year (repeatable).")
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
    from hystate.model import ProcessingStage

    for stage in stages:
        ProcessingStage.parse(stage)
    episodes = _reader(opts).list_episodes(stages, years)
    if as_json:
        emit_json([e.data for e in episodes])
    elif as_csv:
        import csv

        writer = csv.writer(sys.stdout)
        writer.writerow(
            ["episode_id", "date", "stage", "title", "last_updated", "worker", "attempts_total"]
        )
        for e in episodes:
            writer.writerow(
                [
                    e.episode_id,
                    e.date,
                    e.stage.value,
                    e.title,
                    e.last_updated,
                    e.worker or "",
                    sum(e.attempts.values()),
                ]
            )
    else:
        for e in episodes:
            click.echo(_episode_summary(e))
        click.echo(f"{len(episodes)} episodes", err=True)


@cli.command()
@json_option
@pass_opts
def status(opts: Options, as_json: bool) -> None:
    """Counts per stage, completion and the estimated completion date.

    \b
    Example:
      hystate status --json
    """
    from hystate.summary import generate_summary

    summary = generate_summary(_reader(opts))
    if as_json:
        emit_json(summary)
        return
    total = summary["total_episodes"]
    click.echo(f"{total} episodes, {summary['completion_percentage']}% done (published or skipped)")
    widest = max(summary["progress"].values(), default=0) or 1
    for stage, count in summary["progress"].items():
        bar = "█" * round(30 * count / widest) if count else ""
        click.echo(f"  {stage:<12}{count:>7}  {bar}")
    throughput = summary["throughput"]
    if summary["estimated_completion"]:
        rate = throughput["per_day"]
        basis = f" ({rate} episodes/day over the last 7 days)" if rate else ""
        click.echo(f"estimated completion: {summary['estimated_completion']}{basis}")
    else:
        click.echo(f"estimated completion: unknown ({throughput.get('note', '')})")


@cli.command(name="next")
@click.argument("stage")
@click.option("--limit", default=1, show_default=True, type=click.IntRange(min=1))
@click.option("--claim", is_flag=True, help="Move them into STAGE now (one commit each).")
@worker_option
@json_option
@pass_opts
def next_(
    opts: Options, stage: str, limit: int, claim: bool, worker: str | None, as_json: bool
) -> None:
    """Episodes ready to enter STAGE; with --claim, take them.

    Workers claiming at the same time never get the same episode. Failed episodes whose
    retry of STAGE is due are included.

    \b
    Examples:
      hystate next downloading --limit 5
      hystate next downloading --limit 2 --claim --worker dl-1 --json
    """
    from hystate.model import ProcessingStage

    target = ProcessingStage.parse(stage)
    if claim:
        manager = opts.manager(worker)
        episodes = [r.episode for r in manager.claim_next(target, limit, worker=manager.worker)]
    else:
        episodes = _reader(opts).get_next_for_processing(target, limit)
    if as_json:
        emit_json([e.data for e in episodes])
        return
    for e in episodes:
        click.echo(_episode_summary(e))
    if not episodes:
        click.echo(f"nothing ready for {target.value}", err=True)


@cli.command()
@click.argument("episode_id")
@json_option
@pass_opts
def history(opts: Options, episode_id: str, as_json: bool) -> None:
    """An episode's transitions joined with the commits that made them.

    \b
    Example:
      hystate history hy0_hooting_yard_2004-04-14
    """
    from hystate.model import check_id

    rows = opts.manager(cli_worker=False).history(check_id(episode_id))
    if as_json:
        emit_json(rows)
        return
    for row in rows:
        move = (
            f"{row['from'] or '-'} -> {row['to']}" if row["to"] else "(commit without transition)"
        )
        sha = (row.get("commit") or "uncommitted")[:8]
        click.echo(f"{row['at']}  {move:<28} {row['by'] or '':<16} {sha}  {row.get('author', '')}")


@cli.command()
@click.option("--since", help="ISO time, e.g. 2026-11-01 or 2026-11-01T12:00:00+00:00.")
@click.option("--until", help="ISO time.")
@click.option("--episode", "episode_id", help="Only this episode.")
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
    import time

    manager = _reader(opts)
    seen: set[tuple[str, str, str]] = set()

    def emit(events: list[dict[str, Any]]) -> None:
        for event in events:
            key = (event["episode_id"], event["at"], event["to"])
            if key in seen:
                continue
            seen.add(key)
            if as_json:
                click.echo(json.dumps(event, ensure_ascii=False))
            else:
                move = f"{event['from'] or '-'} -> {event['to']}"
                extra = f"  {event['error']}" if event.get("error") else ""
                by = event.get("by") or ""
                click.echo(f"{event['at']}  {event['episode_id']:<40} {move:<26} {by}{extra}")

    emit(manager.events(since=since, until=until, episode_id=episode_id))
    manager.refresh_once = False  # following: look at the tree again on every poll
    while follow:
        time.sleep(interval)
        emit(manager.events(since=since, until=until, episode_id=episode_id))
        sys.stdout.flush()


@cli.command()
@pass_opts
def rebuild(opts: Options) -> None:
    """Rebuild state.db and index.json from the tree (they are caches; nothing is lost).

    \b
    Example:
      hystate rebuild
    """
    import time

    manager = _reader(opts)
    started = time.perf_counter()
    result = manager.refresh(force=True, progress=_progress("rebuilding"))
    took = time.perf_counter() - started
    name = manager.cache.db_path.name
    click.echo(f"rebuilt {name} and index.json from {result.reread} files in {took:.1f}s")


@cli.command()
@click.option("--repair", is_flag=True, help="Mend what can be mended.")
@click.option("--remove-orphans", is_flag=True, help="Also delete media files of no episode.")
@json_option
@pass_opts
def fsck(opts: Options, repair: bool, remove_orphans: bool, as_json: bool) -> None:
    """Find (and with --repair mend) what a crash or a hand edit left behind.

    Uncommitted episode files, temp files, index drift, stale locks, episodes stuck in an
    active stage, orphaned media, stale caches. Exit 0 when clean or all repaired, 1 when
    problems remain.

    \b
    Examples:
      hystate fsck
      hystate fsck --repair --json
    """
    from hystate.recovery import RecoveryManager

    manager = opts.manager(cli_worker=False)
    findings = RecoveryManager(manager).fsck(repair=repair, remove_orphans=remove_orphans)
    left = [f for f in findings if not f.repaired]
    if as_json:
        emit_json({"findings": [f.as_dict() for f in findings], "remaining": len(left)})
    else:
        for f in findings:
            done = f" -> {f.action}" if f.repaired else ""
            click.echo(f"{f.kind:<14} {f.path}: {f.message}{done}")
        verdict = (
            "clean"
            if not findings
            else f"{len(findings) - len(left)} repaired, {len(left)} remaining"
        )
        click.echo(f"fsck: {verdict}", err=True)
        if left and not repair:
            click.echo("hystate: run `hystate fsck --repair` to mend what can be mended", err=True)
    if left:
        raise click.exceptions.Exit(1)


@cli.command()
@json_option
@pass_opts
def locks(opts: Options, as_json: bool) -> None:
    """List lock files: who holds them, and whether the holder is gone.

    \b
    Example:
      hystate locks
    """
    from hystate.locks import lock_status

    manager = opts.manager(cli_worker=False)
    rows = []
    for path in sorted(manager.locks_dir.glob("*.lock")):
        owner, stale = lock_status(path)
        rows.append({
            "lock": path.name,
            "host": owner.host if owner else None,
            "pid": owner.pid if owner else None,
            "acquired_at": owner.acquired_at if owner else None,
            "stale": stale,
        })  # fmt: skip
    if as_json:
        emit_json(rows)
        return
    for r in rows:
        state = "stale (holder gone)" if r["stale"] else "held"
        click.echo(
            f"{r['lock']:<48} {state:<20} {r['host']} pid {r['pid']} since {r['acquired_at']}"
        )
    if not rows:
        click.echo("no locks held", err=True)


@cli.command()
@click.argument("episode_id", required=False)
@click.option("--all-stale", is_flag=True, help="Remove every lock whose holder is gone.")
@click.option("--force", is_flag=True, help="Remove the lock even if its holder may be alive.")
@pass_opts
def unlock(opts: Options, episode_id: str | None, all_stale: bool, force: bool) -> None:
    """Remove a lock left behind (an episode's, or every stale one).

    A lock whose holder is provably gone is removed; a live holder's only with --force.

    \b
    Examples:
      hystate unlock --all-stale
      hystate unlock hy0_hooting_yard_2004-04-14 --force
    """
    from hystate.errors import LockBusy, UsageError
    from hystate.locks import lock_status
    from hystate.model import check_id

    manager = opts.manager(cli_worker=False)
    if bool(episode_id) == all_stale:
        raise UsageError("give an episode id or --all-stale")
    paths = (
        [manager.locks_dir / f"{check_id(episode_id)}.lock"]
        if episode_id
        else sorted(manager.locks_dir.glob("*.lock"))
    )
    removed = 0
    for path in paths:
        if not path.exists():
            click.echo(f"{path.name}: not locked")
            continue
        owner, stale = lock_status(path)
        if not stale and not force:
            if episode_id:
                who = owner.describe() if owner else "a process still writing it"
                raise LockBusy(f"{path.name} is held by {who}", hint="use --force if you are sure")
            continue
        path.unlink(missing_ok=True)
        removed += 1
        click.echo(f"{path.name}: removed")
    click.echo(f"{removed} lock(s) removed", err=True)


@cli.command()
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["html", "json", "csv"]),
    help="Default: reporting.report_format.",
)
@click.option(
    "--period", type=click.Choice(["daily", "weekly"]), default="daily", show_default=True
)
@click.option(
    "-o",
    "--output",
    metavar="PATH|-",
    help="Where to write ('-' for stdout); default: <state dir>/reports/.",
)
@pass_opts
def report(opts: Options, fmt: str | None, period: str, output: str | None) -> None:
    """Write a report: HTML (self-contained, with a progress chart), JSON summary, or CSV.

    By default into <state dir>/reports/: daily_report_YYYY-MM-DD.html,
    weekly_report_YYYY-Www.html, summary.json, episodes_YYYY-MM-DD.csv. Prints the path.

    \b
    Examples:
      hystate report
      hystate report --format csv -o episodes.csv
      hystate report --format json -o -
    """
    from hystate.reports import ReportGenerator

    manager = _reader(opts)
    generator = ReportGenerator(manager)
    text = generator.write(
        fmt or str(manager.config.get("reporting.report_format")), period, output
    )
    if text is not None:
        click.echo(text, nl=False)
    else:
        click.echo(str(generator.written.resolve() if generator.written else ""))


@cli.command()
@click.option(
    "--textfile",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write atomically here (node_exporter textfile collector).",
)
@pass_opts
def metrics(opts: Options, textfile: Path | None) -> None:
    """Prometheus metrics: episodes per stage, transitions and failures, last transition time.

    \b
    Examples:
      hystate metrics
      hystate metrics --textfile /var/lib/node_exporter/textfile/hystate.prom
    """
    from hystate.reports import metrics_text, write_textfile

    manager = _reader(opts)
    if textfile:
        write_textfile(manager, textfile)
        click.echo(f"wrote {textfile}", err=True)
    else:
        click.echo(metrics_text(manager).decode(), nl=False)


def main() -> None:
    # SIGTERM unwinds like Ctrl-C, so locks are released and files put back.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        cli.main(prog_name="hystate")
    except BrokenPipeError:
        # The reader went away (`hystate log | head`): not an error worth a message.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(0)


if __name__ == "__main__":
    main()
