"""Several machines: ``hystate sync`` (see ``hystate.cluster.sync`` for the design)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from hystate.cli.app import Options, cli, echo, emit_json, json_option, pass_opts
from hystate.cli.terminal import working

if TYPE_CHECKING:
    from hystate.manager import StateManager


@cli.command()
@click.option(
    "--remote", metavar="NAME", help="The git remote (default: sync.remote of hystate.yaml)."
)
@json_option
@pass_opts
def sync(opts: Options, remote: str | None, as_json: bool) -> None:
    """Fetch the shared remote, replay this node's transitions on it, push.

    The node's own unpublished transitions are replayed on the remote's tip: a transition
    still legal on the remote's version of its episode is kept, otherwise dropped with the
    reason (the one pushed first wins, the same on every node). The push is a plain
    fast-forward push, retried after a fetch when another node pushed first. Exit 7 when the
    remote is unreachable (transitions stay committed locally; sync again later).

    \b
    Examples:
      hystate sync
      hystate sync --remote origin --json
    """
    from hystate.cluster import sync as sync_mod

    manager = opts.manager(cli_worker=False, last_good_config=True)
    with working("syncing"):
        report = sync_mod.sync(manager, remote)
    problem = config_problem(manager.repo.root)
    if problem:  # it arrived with the remote's state: say so, the next sync brings the fix
        manager.notice(f"{problem}; `hystate sync` works on the last good copy until it is fixed")
    if as_json:
        emit_json(named(report.as_dict()))
        return
    for row in report.dropped:
        what = f"{row['id']}: {row['from']} -> {row['to']}" if row["id"] else row["commit"][:12]
        echo(f"dropped  {what}: {row['reason']}")
    echo(
        f"{report.remote}/{report.branch} at {str(report.head)[:12]}: {len(report.pushed)} pushed, "
        f"{len(report.replayed)} replayed, {len(report.dropped)} dropped"
        + (f", {len(report.mended)} mended" if report.mended else ""),
        err=True,
    )


def named(report: dict[str, Any]) -> dict[str, Any]:
    """The sync report in the one vocabulary of hystate's JSON (an episode is ``episode_id``)."""
    for key in ("pushed", "replayed", "dropped"):
        report[key] = [
            {("episode_id" if k == "id" else k): v for k, v in row.items()} for row in report[key]
        ]
    return report


def sync_quietly(manager: StateManager) -> None:
    """On a node with a remote, sync; offline, say so in one line and go on locally."""
    if not manager.sync_remote:
        return
    from hystate.cluster import sync as sync_mod
    from hystate.core.errors import HystateError

    try:
        sync_mod.sync(manager)
    except HystateError as exc:
        manager.notice(f"working on the local state only: {exc}")


def publish_leases(manager: StateManager) -> None:
    """On a node with a remote, push this node's lease table (best effort)."""
    if not manager.sync_remote:
        return
    from hystate.cluster import lease_refs
    from hystate.cluster import sync as sync_mod

    lease_refs.publish(manager, manager.sync_remote, sync_mod.timeout(manager))


def config_problem(root: Path) -> str | None:
    """Why the work tree's hystate.yaml does not load, or None."""
    from hystate.core.config import Config
    from hystate.core.errors import InvalidData

    try:
        Config.load(root)
    except InvalidData as exc:
        return str(exc.message)
    return None
