"""``hystate serve``: the dashboard, the API and the event stream (``hystate.serve``)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from hystate.cli.app import Options, cli, pass_opts


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", default=8765, show_default=True, type=click.IntRange(1, 65535), help="TCP port."
)
@click.option(
    "--allow-actions",
    is_flag=True,
    help="Enable POST /api/actions/{retry,skip}/ID (each a normal transition), for requests "
    "carrying the token.",
)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File whose first line is the actions' token (else $HYSTATE_SERVE_TOKEN).",
)
@click.option(
    "--reports-every",
    default=3600.0,
    show_default=True,
    type=click.FloatRange(0),
    metavar="SECONDS",
    help="Rewrite the reports hystate.yaml's `reporting` asks for this often (0: never).",
)
@pass_opts
def serve(
    opts: Options,
    host: str,
    port: int,
    allow_actions: bool,
    token_file: Path | None,
    reports_every: float,
) -> None:
    """Serve the live dashboard, the episode pages, the JSON API (/api/…), the read-only
    GraphQL endpoint (/graphql) and the event stream (/events). Read-only unless started
    with --allow-actions and a token. Needs the serve extra: pip install 'hystate[serve]'.

    \b
    Examples:
      hystate serve                                  # http://127.0.0.1:8765/
      HYSTATE_SERVE_TOKEN=$(openssl rand -hex 24) hystate serve --allow-actions
      curl -s 'http://127.0.0.1:8765/api/episodes?stage=failed&per_page=10'
    """
    from hystate.core.errors import UsageError
    from hystate.serve import MISSING_EXTRA, missing_extra

    if missing_extra():
        raise UsageError(MISSING_EXTRA)
    if token_file is not None and not allow_actions:
        raise UsageError("--token-file is for --allow-actions")
    token = None
    if allow_actions:
        from hystate.serve.actions import load_token

        token = load_token(token_file, os.environ.get("HYSTATE_SERVE_TOKEN"))
    from hystate.serve.runner import listen_socket, run
    from hystate.serve.server import LOCAL_HOSTS, Server

    manager = opts.manager("hystate-serve", cli_worker=False)
    sock = listen_socket(host, port)
    local = host in ("127.0.0.1", "localhost", "::1")
    if not local:
        manager.notice(
            f"listening on {host}, not only this machine: anyone who can reach it reads the state"
        )
    hosts = LOCAL_HOSTS if local else ["*"]
    server = Server(manager, token=token, reports_every=reports_every, hosts=hosts)
    shown = f"[{host}]" if ":" in host else host
    manager.notice(f"serving http://{shown}:{port}/ (Ctrl-C stops)")
    run(server, sock)
