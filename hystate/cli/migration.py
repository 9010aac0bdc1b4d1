"""Commands that move state between tools and machines: ``import`` (the first migration
tool's state directory), ``backup`` and ``restore`` (git bundles)."""

from __future__ import annotations

from pathlib import Path

import click

from hystate.cli.app import (
    Options,
    cli,
    echo,
    emit_json,
    json_option,
    pass_opts,
    worker_option,
)
from hystate.cli.terminal import progress_bar, working
from hystate.core.errors import UsageError


@cli.command(name="import")
@click.option(
    "--from",
    "source",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The legacy state directory (<year>/<identifier>.yaml, index.yaml).",
)
@click.option("--dry-run", is_flag=True, help="Show what would change; write nothing.")
@click.option(
    "--strict",
    is_flag=True,
    help="Refuse the directory when its index.yaml disagrees with the episode files.",
)
@worker_option
@json_option
@pass_opts
def import_(
    opts: Options, source: Path, dry_run: bool, strict: bool, worker: str | None, as_json: bool
) -> None:
    """Import the first migration tool's state directory (one commit).

    New episodes are discovered with their mp3 size, duration, download URL and md5; episodes
    already known keep their stage and history and only gain the metadata they lack. Long texts
    (description, full_text) are not copied. A malformed legacy file is named and the whole
    directory rejected (exit 5) before anything is written. The episode files are the truth: when
    the legacy index.yaml went stale, every file is imported and the difference reported
    (--strict refuses the directory instead). `discover --from DIR` does the same.

    \b
    Example:
      hystate import --from ../migration/state/archive_org
    """
    import_dir(opts, source, dry_run, worker, as_json, strict=strict)


def import_dir(
    opts: Options,
    source: Path,
    dry_run: bool,
    worker: str | None,
    as_json: bool,
    *,
    strict: bool = False,
) -> None:
    from hystate.integrations.importer import import_legacy

    manager = opts.manager(worker or "legacy-import", cli_worker=False)
    with progress_bar("importing") as bar:
        result = import_legacy(manager, source, dry_run=dry_run, strict=strict, progress=bar)
    if as_json:
        emit_json(result.as_dict())
        return
    verb = "would import" if dry_run else "imported"
    commit = f" in {result.commit[:8]}" if result.commit else ""
    echo(
        f"{verb} {source}: {len(result.added)} added, {len(result.updated)} updated, "
        f"{len(result.skipped)} skipped{commit}"
    )
    for eid in result.added:
        echo(f"  added    {eid}")
    for eid, fields in result.updated.items():
        echo(f"  updated  {eid}: {', '.join(fields)}")
    for eid, reason in result.skipped.items():
        echo(f"  skipped  {eid}: {reason}")
    for eid, kept in result.notes.items():
        echo(f"  kept     {eid}: {'; '.join(kept)}")
    if result.index:
        echo("the legacy index.yaml is stale; every episode file was read (--strict refuses):")
        for line in result.index:
            echo(f"  index    {line}")


@cli.command()
@click.option("-o", "--output", type=click.Path(path_type=Path), help="The bundle file to write.")
@click.option(
    "--verify",
    "check",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Check an existing backup instead of writing one.",
)
@json_option
@pass_opts
def backup(opts: Options, output: Path | None, check: Path | None, as_json: bool) -> None:
    """Write a verified git bundle of the state history, or check one (--verify).

    The bundle holds HEAD, every branch and tag and their whole history; caches, locks and
    reports are never tracked, so they are not in it. A damaged bundle is exit 5.

    \b
    Examples:
      hystate backup -o ../backups/hystate-2026-11-24.bundle
      hystate backup --verify ../backups/hystate-2026-11-24.bundle
    """
    from hystate.engine import backup as backups

    if (output is None) == (check is None):
        raise UsageError("give either -o FILE (write a backup) or --verify FILE (check one)")
    if check is not None:
        with working("verifying the backup"):
            info = backups.verify(check)
        if as_json:
            emit_json({"path": str(check), "ok": True, "refs": info.refs, "commits": info.commits})
            return
        shown = f"{len(info.refs)} refs, {info.commits} commits, HEAD {_short(info.head)}"
        echo(f"{check}: ok ({shown})")
        return
    assert output is not None
    with working("writing the backup"):
        result = backups.backup(opts.manager(), output)
    if as_json:
        emit_json(result.as_dict())
        return
    echo(
        f"wrote {result.path} ({result.size} bytes; {len(result.refs)} refs, "
        f"{result.commits} commits; verified)"
    )
    if result.uncommitted:
        echo(
            f"note: {len(result.uncommitted)} uncommitted change(s) under the state directory are "
            f"not in the backup (e.g. {result.uncommitted[0]})",
            err=True,
        )


@cli.command()
@click.argument("bundle", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("directory", type=click.Path(path_type=Path))
@json_option
def restore(bundle: Path, directory: Path, as_json: bool) -> None:
    """Make a working state repository in DIRECTORY from a backup and rebuild its caches.

    DIRECTORY must be new or empty. The bundle is verified first.

    \b
    Example:
      hystate restore ../backups/hystate-2026-11-24.bundle ../hystate-restored
    """
    from hystate.engine.backup import restore as do_restore

    with working("restoring"):
        result = do_restore(bundle, directory)
    if as_json:
        emit_json(result.as_dict())
        return
    echo(
        f"restored {result.path}: {result.commits} commits, {result.episodes} episodes in "
        f"{result.state_dir}/; caches rebuilt"
    )


def _short(sha: str | None) -> str:
    return sha[:8] if sha else "none"
