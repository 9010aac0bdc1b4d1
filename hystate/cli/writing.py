"""Commands that change state: each transition is one commit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from hystate.cli.app import (
    Options,
    cli,
    echo,
    emit_json,
    json_option,
    lease_option,
    pass_opts,
    print_result,
    quiet,
    worker_option,
)
from hystate.cli.terminal import complete_episode_ids, complete_stages, progress_bar, working


@cli.command()
@json_option
@pass_opts
def init(opts: Options, as_json: bool) -> None:
    """Create the state directory (and a git repository if there is none). Safe to repeat.

    Also installs a git pre-commit hook running `hystate validate --staged`, so a plain
    `git commit` next to running workers cannot revert a transition (an existing hook is
    left alone: the line to add to it is printed).

    \b
    Example:
      hystate init
    """
    from hystate.git import GitRepo
    from hystate.git.locate import NotARepository

    say = quiet if as_json else echo
    made_repo = False
    try:
        GitRepo.discover(Path.cwd())
    except NotARepository as exc:
        if not exc.can_init:
            raise
        GitRepo.init(Path.cwd())
        made_repo = True
        say(f"initialised a git repository in {Path.cwd()}")
    manager = opts.manager()
    sha = manager.ensure_layout()
    state = manager.rel_state_dir
    say(f"state directory {state}/ " + (f"set up ({sha[:8]})" if sha else "already set up"))
    from hystate.git.hooks import install_pre_commit

    try:
        hook = install_pre_commit(manager.repo)
    except OSError as exc:
        echo(f"hystate: warning: pre-commit hook not installed: {exc}", err=True)
        hook = None
    if as_json:
        emit_json(
            {
                "git_repository_created": made_repo,
                "state_dir": state,
                "commit": sha,
                "hook": None if hook is None else {"status": hook.status, "path": str(hook.path)},
            }
        )
    if hook is None or as_json:
        return
    if hook.status == "installed":
        echo(f"pre-commit hook installed: {hook.path}")
    elif hook.status == "foreign":
        echo(
            f"hystate: {hook.path} exists and was left alone; add this line to it so a plain "
            f"`git commit` cannot revert transitions:\n  {hook.line}",
            err=True,
        )


@cli.command()
@click.option(
    "--from",
    "source",
    required=True,
    type=click.Path(path_type=Path),
    help="advancedsearch JSON, scrape JSON, JSON array, JSON lines, CSV, or a legacy state "
    "directory: hystate's own state folder (processed/) or the first tool's (as `hystate import`).",
)
@worker_option
@json_option
@pass_opts
def discover(opts: Options, source: Path, worker: str | None, as_json: bool) -> None:
    """Create a file for every new episode in a catalog file (one commit).

    Episodes that already have a file are left alone. A malformed file is rejected whole
    (exit 5) before anything is written. A directory is hystate's own state folder (another
    checkout's processed/: its episodes are discovered afresh, without their stages) or the
    first migration tool's state directory (see `hystate import`).

    \b
    Example:
      hystate discover --from archive-org-search-hooting-yard.json
      hystate discover --from ../hystate/processed
    """
    from hystate.engine.catalog import read_records, read_state_folder

    if source.is_dir() and not source.is_symlink():
        with working("reading the state folder"):
            folder = read_state_folder(source)
        if folder is None:
            from hystate.cli.migration import import_dir

            import_dir(opts, source, False, worker, as_json)
            return
        records = folder
    else:
        with working("reading the catalog"):
            records = read_records(source)
    from hystate.engine.discovery import discover as discover_records

    manager = opts.manager(worker, cli_worker=False)
    with progress_bar(f"discovering {len(records):,} episodes") as bar:
        result = discover_records(manager, records, source=source.name, progress=bar)
    if as_json:
        emit_json(
            {"added": result.added, "existing": len(result.existing), "commit": result.commit}
        )
        return
    commit = f" in {result.commit[:8]}" if result.commit else ""
    echo(
        f"discovered {len(result.added)} new episodes{commit}; {len(result.existing)} already known"
    )


@cli.command()
@click.argument("episode_id")  # a new id: none of the known ones to complete
@click.option("--title", required=True)
@click.option("--date", required=True, help="Air date, YYYY-MM-DD.")
@click.option("--archive-identifier", help="archive.org identifier (default: the episode id).")
@worker_option
@json_option
@pass_opts
def add(
    opts: Options,
    episode_id: str,
    title: str,
    date: str,
    archive_identifier: str | None,
    worker: str | None,
    as_json: bool,
) -> None:
    """Add one episode in stage discovered (one commit).

    \b
    Example:
      hystate add hooting-yard-live --title "An Evening of Lugubrious Music" --date 2008-01-01
    """
    result = opts.manager(worker, cli_worker=False).add_episode(
        episode_id, title=title, date=date, archive_identifier=archive_identifier
    )
    if as_json:
        emit_json(
            {"episode_id": episode_id, "created": bool(result.commit), "commit": result.commit}
        )
        return
    if result.commit:
        echo(f"{episode_id}: new -> discovered ({result.commit[:8]})")
    else:
        echo(f"{episode_id} already exists; left alone")


@cli.command()
@click.argument("episode_id", shell_complete=complete_episode_ids)
@click.argument("stage", shell_complete=complete_stages)
@click.option("-m", "--message", help="Status message (also the commit body).")
@click.option(
    "--set",
    "assignments",
    multiple=True,
    metavar="FIELD=VALUE",
    help="Set a field on the way, e.g. files.audio_file=audio/x.mp3 (repeatable).",
)
@click.option(
    "--force",
    is_flag=True,
    help="Retry a failed episode before its delay has passed; take over an active stage "
    "another worker holds (recorded in the history and a Hystate-Took-Over trailer).",
)
@click.option("--error", help="What went wrong: required with STAGE failed.")
@lease_option
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
    error: str | None,
    lease: str | None,
    worker: str | None,
    as_json: bool,
) -> None:
    """Move an episode to STAGE: one commit, or nothing if it is already there.

    Entering downloading, converting or uploading starts a lease (the stage timeout) and
    prints its token; leaving the stage (or renewing it with `hystate heartbeat ID`) needs
    that token (--lease or $HYSTATE_LEASE). Anyone else is refused (exit 3) unless --force.

    \b
    Examples:
      export HYSTATE_LEASE=$(hystate advance hy0_hooting_yard_2004-04-14 downloading \\
          --worker dl-1 --json | jq -r .lease)
      hystate advance hy0_hooting_yard_2004-04-14 downloaded \\
          --set files.audio_file=audio/2004/hy0_hooting_yard_2004-04-14.mp3 \\
          --set metrics.audio_size=28363609
      hystate advance hy0_hooting_yard_2004-04-14 failed --error "HTTP 503"
    """
    from hystate.core.errors import UsageError
    from hystate.core.model import ProcessingStage, check_id
    from hystate.core.rules import parse_assignment

    check_id(episode_id)
    target = ProcessingStage.parse(stage)
    fields = dict(parse_assignment(a) for a in assignments)
    if target is ProcessingStage.FAILED:
        if not error:
            raise UsageError("failing needs --error MSG (what went wrong)")
        if fields:
            raise UsageError("--set does not go with failed")
        manager = opts.manager(worker)
        result = manager.fail(episode_id, error, lease=lease, take_over=force)
        print_result(result, as_json)
        return
    if error:
        raise UsageError("--error goes with STAGE failed only")
    result = opts.manager(worker).update_state(
        episode_id, target, message=message, fields=fields, force=force, lease=lease,
        take_over=force,
    )  # fmt: skip
    print_result(result, as_json)


@cli.command()
@click.argument("episode_id", shell_complete=complete_episode_ids)
@click.option("--error", "error", required=True, help="What went wrong (one line or more).")
@click.option(
    "--traceback",
    "traceback_file",
    type=click.File("r"),
    help="File with the traceback to record ('-' for standard input).",
)
@click.option(
    "--force", is_flag=True, help="Take over an active stage another worker holds (recorded)."
)
@lease_option
@worker_option
@json_option
@pass_opts
def fail(
    opts: Options,
    episode_id: str,
    error: str,
    traceback_file: Any,
    force: bool,
    lease: str | None,
    worker: str | None,
    as_json: bool,
) -> None:
    """Record a failure of the active stage the episode is in (under its lease token:
    --lease or $HYSTATE_LEASE; --force takes it over).

    \b
    Example:
      hystate fail hy0_hooting_yard_2004-04-14 --error "HTTP 503 from archive.org"
    """
    from hystate.core.model import check_id

    check_id(episode_id)
    trace = traceback_file.read() if traceback_file else None
    result = opts.manager(worker).fail(
        episode_id, error, traceback=trace, lease=lease, take_over=force
    )
    print_result(result, as_json)


@cli.command()
@click.argument("episode_ids", nargs=-1, shell_complete=complete_episode_ids)
@click.option("--all", "all_failed", is_flag=True, help="Every failed episode.")
@click.option("--now", is_flag=True, help="Ignore the retry delay.")
@click.option(
    "--from",
    "from_stage",
    type=click.Choice(["downloading", "converting", "uploading"]),
    help="Go back to this active stage (no later than the one that failed).",
)
@click.option("--dry-run", is_flag=True, help="Say what would happen; change nothing.")
@worker_option
@json_option
@pass_opts
def retry(
    opts: Options,
    episode_ids: tuple[str, ...],
    all_failed: bool,
    now: bool,
    from_stage: str | None,
    dry_run: bool,
    worker: str | None,
    as_json: bool,
) -> None:
    """Send failed episodes back to the stage that failed, or to an earlier one (--from).

    Only those whose delay (retry_delay, doubled per attempt) has passed, unless --now. The
    attempt counts in the stage entered; episodes out of attempts there go to skipped with
    the reason. The stage entered (and its lease) is held by --worker: the one who will do
    the work. (Workers need no retry command: due retries come back through their claims.)

    \b
    Examples:
      hystate retry --all
      hystate retry hy0_hooting_yard_2004-04-14 --now
      hystate retry hy0_hooting_yard_2004-04-14 --from downloading --worker dl-1
    """
    if bool(episode_ids) == all_failed:
        raise click.UsageError("give episode ids or --all (not both)")
    outcomes = opts.manager(worker).retry(
        None if all_failed else list(episode_ids), now=now, dry_run=dry_run, to=from_stage
    )
    if as_json:
        emit_json([o.__dict__ for o in outcomes])
        return
    if not outcomes:
        echo("no failed episodes")
    for o in outcomes:
        lease = f"; lease {o.lease}" if o.lease else ""
        echo(f"{o.episode_id}: {o.action}" + (f" ({o.detail})" if o.detail else "") + lease)


@cli.command()
@click.argument("episode_id", shell_complete=complete_episode_ids)
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
    from hystate.core.model import check_id

    check_id(episode_id)
    print_result(opts.manager(worker).skip(episode_id, reason), as_json)
