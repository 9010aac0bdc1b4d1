"""``hystate heartbeat``: renewing the lease on an episode's active stage (no commit)."""

from __future__ import annotations

import click

from hystate.cli.app import (
    Options,
    cli,
    emit_json,
    json_option,
    lease_option,
    pass_opts,
    worker_option,
)
from hystate.cli.terminal import complete_episode_ids


@cli.command()
@click.argument("episode_id", shell_complete=complete_episode_ids)
@click.option(
    "--seconds",
    type=click.FloatRange(min=0, min_open=True, max=366 * 86400),
    help="Lease length from now (default: the stage timeout, recovery.stage_timeouts).",
)
@lease_option
@worker_option
@json_option
@pass_opts
def heartbeat(
    opts: Options,
    episode_id: str,
    seconds: float | None,
    lease: str | None,
    worker: str | None,
    as_json: bool,
) -> None:
    """Renew the lease on an episode's active stage (no commit).

    An episode in downloading, converting or uploading counts as stuck (`fsck --repair` and
    claims with recovery.auto_resume mark it failed, "worker lost") once its lease expires.
    Call this more often than the lease length while the work goes on. Needs the lease token
    (--lease, $HYSTATE_LEASE). Exit 3 when the episode is no longer in an active stage (it
    was marked lost: stop working on it), when the token is not the holder's (it was taken
    over), or when --worker names another worker than the one holding it.

    \b
    Example (a worker script):
      export HYSTATE_LEASE=$(hystate advance "$id" downloading --worker dl-1 --json | jq -r .lease)
      ( while sleep 60; do hystate heartbeat "$id" --worker dl-1 || exit; done ) &
      curl -o "$mp3" "$url"; kill $!
    """
    from hystate.core.model import check_id
    from hystate.engine.fencing import check_token
    from hystate.engine.leases import renew

    check_id(episode_id)
    from hystate.cli.cluster import publish_leases

    manager = opts.manager(cli_worker=False)
    held = renew(manager, episode_id, seconds=seconds, worker=worker, token=check_token(lease))
    publish_leases(manager)  # on a node with a remote, so other nodes' fsck see it
    if as_json:
        emit_json(held.as_dict())
    else:
        click.echo(f"{episode_id}: {held.stage} lease of {held.worker} until {held.expires_at}")
