"""Checks and repairs: validate (and --base for pull requests), the merge driver, fsck, locks."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from hystate.cli.app import (
    Options,
    cli,
    echo,
    emit_json,
    json_option,
    pass_opts,
    quiet,
)
from hystate.cli.terminal import complete_episode_ids, progress_bar, working

if TYPE_CHECKING:
    from hystate.manager import StateManager


@cli.command()
@click.option("--base", metavar="REF", help="Review what changed since REF (a branch, a commit).")
@click.option(
    "--staged",
    is_flag=True,
    help="Only refuse staged episode files holding an older state than HEAD (the pre-commit hook).",
)
@click.option("--github", is_flag=True, help="GitHub Actions annotations (::error file=...).")
@json_option
@pass_opts
def validate(opts: Options, base: str | None, staged: bool, github: bool, as_json: bool) -> None:
    """Check episode files against the schema and the transition rules.

    Without --base: every file (schema, invariants). With --base REF: every episode file
    changed since REF, and each transition added since REF, step by step (a squash merge
    validates like a commit per transition); deleted or moved files, committed caches, and
    commits without hystate's trailers (a warning) are reported too. With --staged: what
    `git commit` would record, refused when an episode file's staged version is an older state
    than HEAD's (a stale index next to running workers would revert transitions); the hook
    `hystate init` installs runs it. Exit 1 on any error.

    \b
    Examples:
      hystate validate
      hystate validate --base origin/main --json
      hystate validate --staged
    """
    from hystate.core.errors import UsageError

    if base and staged:
        raise UsageError("--base and --staged do not go together")
    manager = opts.manager(cli_worker=False)
    rows: list[dict[str, Any]]
    if staged:
        rows = _staged_rows(manager)
        errors = len(rows)
        summary = f"{errors} staged episode file(s) would revert transitions" if rows else ""
    elif base:
        from hystate.review.base import review

        found = review(manager, base)
        rows = [f.as_dict() for f in found]
        errors = sum(1 for f in found if f.level == "error")
        summary = f"{errors} errors, {len(found) - errors} warnings since {base}"
    else:
        from hystate.review.validate import validate as check_files

        with progress_bar("validating") as bar:
            problems = check_files(manager, progress=bar)
        rows = [
            {**p.as_dict(), "level": "error", "message": f"{p.path}: {p.message}"} for p in problems
        ]
        errors = len(problems)
        count = sum(1 for _ in manager.store.iter_paths())
        bad = len({p.file for p in problems})
        summary = f"{count} files checked, {bad} with problems ({len(problems)} in all)"
    if as_json:
        emit_json({"summary": summary, "problems": rows})
    else:
        for row in rows:
            if github:  # escaped as GitHub reads them: a file name cannot add a command line
                line = f",line={row['line']}" if row.get("line") else ""
                where = _gh_escape(str(row["file"])).replace(":", "%3A").replace(",", "%2C")
                echo(f"::{row['level']} file={where}{line}::{_gh_escape(str(row['message']))}")
            else:
                where = _one_line(str(row["file"]))
                where = f"{where}:{row['line']}" if row.get("line") else where
                echo(f"{where}: {row['level']}: {row['message']}")
    if summary:
        echo(summary, err=True)  # for people, with --json too
    if errors:
        raise click.exceptions.Exit(1)


def _staged_rows(manager: StateManager) -> list[dict[str, Any]]:
    """One error row per staged episode file that would revert transitions."""
    from hystate.fsck.guard import staged_in_transition, staged_regressions

    busy = [
        {
            "file": path,
            "line": None,
            "episode_id": Path(path).stem,
            "level": "error",
            "message": f"hystate is committing a transition of this file ({holder}); leave it "
            f"out of this commit (`git restore --staged {path}`) or wait for it",
        }
        for path, holder in staged_in_transition(manager)
    ]
    return busy + [
        {
            "file": r.path,
            "line": None,
            "episode_id": Path(r.path).stem,
            "level": "error",
            "message": r.describe("the staged version")
            + f"; unstage it: `git restore --staged {r.path}` (or `hystate fsck --repair`)",
        }
        for r in staged_regressions(manager)
    ]


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
    from hystate.review.merge_driver import merge_files

    clean, why = merge_files(base, ours, theirs, name)
    if not clean:
        echo(f"hystate: {name}: conflict: {why}; resolve it, then `hystate validate`", err=True)
        raise click.exceptions.Exit(1)


@cli.command()
@click.option("--repair", is_flag=True, help="Mend what can be mended.")
@click.option(
    "--remove-orphans",
    is_flag=True,
    help="With --repair: also delete untracked media files of no episode.",
)
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
    from hystate.core.errors import UsageError
    from hystate.fsck.recovery import RecoveryManager

    if remove_orphans and not repair:
        raise UsageError(
            "--remove-orphans deletes files: give it with --repair (run `hystate fsck` first to"
            " list them)"
        )
    from hystate.cli.cluster import sync_quietly

    manager = opts.manager(cli_worker=False)
    sync_quietly(manager)  # several machines: judge the latest state and every node's leases
    with working("repairing" if repair else "checking"):
        findings = RecoveryManager(manager).fsck(repair=repair, remove_orphans=remove_orphans)
    if repair and any(f.repaired for f in findings):
        sync_quietly(manager)  # a recovery is a transition like any other: push it
    left = [f for f in findings if not f.repaired]
    if as_json:
        emit_json({"findings": [f.as_dict() for f in findings], "remaining": len(left)})
    else:
        for f in findings:
            done = f" -> {f.action}" if f.repaired else ""
            echo(f"{f.kind:<14} {_one_line(f.path)}: {f.message}{done}")
        verdict = (
            "clean"
            if not findings
            else f"{len(findings) - len(left)} repaired, {len(left)} remaining"
        )
        if left and not repair:  # one line on stderr, as for every failing command
            verdict += "; run `hystate fsck --repair` to mend what can be mended"
        echo(f"fsck: {verdict}", err=True)
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
    from hystate.core.locks import lock_status

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
        holder = (
            f"{r['host']} pid {r['pid']} since {r['acquired_at']}"
            if r["host"] is not None
            else "owner unknown: not a readable lock file"
        )
        echo(f"{r['lock']:<48} {state:<20} {holder}")
    if not rows:
        echo("no locks held", err=True)


@cli.command()
@click.argument("episode_id", required=False, shell_complete=complete_episode_ids)
@click.option("--all-stale", is_flag=True, help="Remove every lock whose holder is gone.")
@click.option("--force", is_flag=True, help="Remove the lock even if its holder may be alive.")
@json_option
@pass_opts
def unlock(
    opts: Options, episode_id: str | None, all_stale: bool, force: bool, as_json: bool
) -> None:
    """Remove a lock left behind (an episode's, or every stale one).

    A lock whose holder is provably gone is removed; a live holder's only with --force.

    \b
    Examples:
      hystate unlock --all-stale
      hystate unlock hy0_hooting_yard_2004-04-14 --force
    """
    from hystate.core.errors import LockBusy, UsageError
    from hystate.core.locks import lock_status
    from hystate.core.model import check_id

    manager = opts.manager(cli_worker=False)
    if bool(episode_id) == all_stale:
        raise UsageError("give an episode id or --all-stale")
    paths = (
        [manager.locks_dir / f"{check_id(episode_id)}.lock"]
        if episode_id
        else sorted(manager.locks_dir.glob("*.lock"))
    )
    removed = 0
    report: dict[str, list[str]] = {"removed": [], "kept": [], "not_locked": []}
    say = quiet if as_json else echo
    for path in paths:
        if not path.exists():
            report["not_locked"].append(path.stem)
            say(f"{path.name}: not locked")
            continue
        owner, stale = lock_status(path)
        if not stale and not force:
            if episode_id:
                who = owner.describe() if owner else "a process still writing it"
                raise LockBusy(f"{path.name} is held by {who}", hint="use --force if you are sure")
            report["kept"].append(path.stem)
            continue
        path.unlink(missing_ok=True)
        removed += 1
        report["removed"].append(path.stem)
        say(f"{path.name}: removed")
    if as_json:
        emit_json(report)
        return
    echo(f"{removed} lock(s) removed", err=True)


def _gh_escape(text: str) -> str:
    """A GitHub workflow command's data: a newline in it would start a command of its own."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _one_line(name: str) -> str:
    """A file name on one line of a listing (a name with a newline would forge a line)."""
    return name.replace("\r", "\\r").replace("\n", "\\n")
