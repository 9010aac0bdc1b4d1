"""``hystate events``: publish the transitions to the event stream, follow it, and see where it
stands. A thin skin over ``hystate.events.stream``."""

from __future__ import annotations

import json
import re
import sys

import click

from hystate.cli.app import Options, clean_line, cli, echo, emit_json, json_option, pass_opts

_ENTRY_ID = re.compile(r"^(\$|0|\d{1,20}(-\d{1,20})?)$")


@cli.group()
def events() -> None:
    """The event stream: every transition published once, in order, to Redis Streams.

    Configured by the `events` block of hystate.yaml (docs/events.md).

    \b
    Examples:
      hystate events publish
      hystate events publish --follow
      hystate events tail --from-id 0 --json
      hystate events status
    """


@events.command()
@click.option("--follow", is_flag=True, help="Keep publishing as the branch moves (a daemon).")
@click.option(
    "--interval",
    default=0.2,
    show_default=True,
    help="Seconds between checks with --follow (doubling up to 5 s while the broker is down).",
)
@json_option
@pass_opts
def publish(opts: Options, follow: bool, interval: float, as_json: bool) -> None:
    """Publish every transition the stream lacks, up to the tip of the published ref.

    Safe to run any time, from any number of places: an event is never appended twice.

    \b
    Examples:
      hystate events publish
      hystate events publish --follow
    """
    from hystate.events import stream as api

    manager = opts.manager(cli_worker=False)
    if follow:
        if not 0.01 <= interval <= 3600:
            raise click.BadParameter("between 0.01 and 3600 seconds", param_hint="--interval")
        api.follow(
            manager, interval=interval, report=lambda line: echo(f"hystate: {line}", err=True)
        )
        return
    from hystate.events import drops

    publisher = api.Publisher(manager)
    try:
        result = publisher.publish(lock_wait=manager.config.lock_timeout)
    finally:
        publisher.close()
    dropped = drops.publish(manager)  # this node's journal of dropped transitions
    if as_json:
        emit_json({**result.__dict__, "dropped": dropped})
        return
    note = " (history rewritten: matched against the stream)" if result.resynced else ""
    echo(f"published {result.published} event(s); stream at {result.last_id or 'empty'}{note}")
    if dropped:
        echo(f"published {dropped} dropped transition(s) to the {drops.SUFFIX[1:]} stream")


@events.command()
@click.option(
    "--from-id",
    "from_id",
    default="0",
    show_default=True,
    metavar="ID",
    help="Print the entries after this stream id (0: from the start, $: only new ones).",
)
@click.option("--follow", "-f", is_flag=True, help="Keep waiting for new entries.")
@click.option("--limit", type=click.IntRange(min=1), help="Stop after this many entries.")
@click.option(
    "--dropped",
    is_flag=True,
    help="The transitions syncs had to drop (<stream>:dropped), not the transitions.",
)
@json_option
@pass_opts
def tail(
    opts: Options, from_id: str, follow: bool, limit: int | None, dropped: bool, as_json: bool
) -> None:
    """Print the stream's entries after an id: a consumer that restarts passes the last id
    it handled and misses nothing.

    \b
    Examples:
      hystate events tail --from-id 0 --json
      hystate events tail --from-id 1732450000000-0 --follow
      hystate events tail --dropped --json
    """
    from hystate.events import stream as api

    if not _ENTRY_ID.fullmatch(from_id) or any(
        part.isdigit() and int(part) >= 1 << 64 for part in from_id.split("-")
    ):  # Redis ids are two 64-bit numbers
        raise click.BadParameter("a stream id such as 1732450000000-0, 0 or $", param_hint="ID")
    config = opts.manager(cli_worker=False).config
    entries = api.consume(config, from_id, follow=follow, dropped=dropped)
    for shown, (entry_id, fields) in enumerate(entries, 1):
        if as_json:
            echo(json.dumps({"id": entry_id, **fields}, ensure_ascii=False))
        else:
            echo(_entry_line(entry_id, fields))
        sys.stdout.flush()
        if limit is not None and shown >= limit:
            return


@events.command()
@json_option
@pass_opts
def status(opts: Options, as_json: bool) -> None:
    """Where the stream stands: the last published commit and how many events it lacks.

    \b
    Example:
      hystate events status --json
    """
    from hystate.events import stream as api

    info = api.status(opts.manager(cli_worker=False))
    if as_json:
        emit_json(info)
        return
    for key, value in info.items():  # one line each: the last entry may be anyone's
        echo(f"{key + ':':<18} {'-' if value is None else clean_line(str(value), 200)}")


def _entry_line(entry_id: str, fields: dict[str, str]) -> str:
    """One entry on one line, each field bounded: the stream may hold entries that hystate
    did not write (a newline in a field would forge a line of its own)."""
    from hystate.events.source import bounded

    def field(name: str, limit: int, default: str = "") -> str:
        return bounded(fields.get(name) or default, limit)

    move = f"{field('from', 12, '-')} -> {field('to', 12, '?')}"
    line = (
        f"{bounded(entry_id, 45)}  {field('at', 25):<25} {field('episode_id', 100):<40} "
        f"{move:<26} {bounded((fields.get('commit') or '')[:10], 10)}"
    )
    if "reason" in fields:  # a dropped transition: whose it was and why
        line += f"  dropped: {field('worker', 60)}: {field('reason', 200)}"
    return line
