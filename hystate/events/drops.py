"""Dropped transitions on the event stream: ``<stream>:dropped``.

A sync that must drop a pending transition of this node (the remote moved the episode first, or
its claim was withdrawn) journals it (``hystate.cluster.journal``, ``.git/hystate/dropped.jsonl``).
That journal is the source here, as the git history is for ``<stream>``: every journaled drop is
published once to ``<stream>:dropped`` with the episode, the move, the worker that made it, the
reason and the commit that was dropped. How far each node's journal has got is kept beside the
stream, in the hash ``<stream>:dropped:cursor`` (node name -> journal offset), and the append is
one Lua script that moves that offset compare-and-swap: two processes of a node never publish a
drop twice, and a broker that was down gets the drops at the next publish.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hystate.cluster import journal
from hystate.cluster.lease_refs import node_name
from hystate.events.publisher import EventSettings
from hystate.events.redis_streams import XADD_ENTRIES, RedisStream

if TYPE_CHECKING:
    from hystate.engine.workspace import Workspace

SUFFIX = ":dropped"
BATCH = 200  # drops per compare-and-swap append

# KEYS: the drops stream, the cursor hash. ARGV: node, maxlen ('0': none), the new offset, the
# fields per drop, the expected offset, then the drops' fields (name, value pairs).
_APPEND = (
    """
local at = redis.call('HGET', KEYS[2], ARGV[1]) or '0'
if at ~= ARGV[5] then return {0, at} end
local last_id = ''
"""
    + XADD_ENTRIES
    + """
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
return {1, ARGV[3]}
"""
)

FIELDS = ("episode_id", "from", "to", "worker", "reason", "commit", "at", "node")


def journal_size(ws: Workspace) -> int:
    """The size of this node's journal: publish again when it has grown."""
    return journal.size(ws)


def open_stream(settings: EventSettings, timeout: float | None = None) -> RedisStream:
    """The drops stream on the configured broker."""
    wait = settings.timeout if timeout is None else timeout
    return RedisStream(settings.url, settings.stream + SUFFIX, timeout=wait, maxlen=settings.maxlen)


def entry(row: dict[str, object], node: str) -> dict[str, str]:
    """A journal line as the stream's fields, in the one vocabulary."""
    named = {**row, "episode_id": row.get("id"), "node": node}
    return {name: "" if named.get(name) is None else str(named[name]) for name in FIELDS}


def publish(ws: Workspace, settings: EventSettings | None = None) -> int:
    """Publish this node's journaled drops that ``<stream>:dropped`` lacks; the number sent.
    Raises BrokerUnavailable when the broker cannot be reached (nothing is lost: the journal
    keeps them for the next publish)."""
    if journal.size(ws) == 0:
        return 0
    settings = settings or EventSettings.of(ws.config)
    node = node_name(ws)
    stream = open_stream(settings)
    try:
        sent = 0
        while True:  # another process of this node may move the cursor too: read it again
            at = stream.hash_field(stream.cursor_key, node)
            offset = int(at) if at and at.isdigit() else 0
            rows, end = journal.read(ws, offset, limit=BATCH)
            if end == offset:
                return sent
            events = [entry(row, node) for row in rows]
            ok, _now = stream.run_script(
                _APPEND,
                keys=[stream.stream, stream.cursor_key],
                args=[node, str(settings.maxlen or 0), str(end), str(len(FIELDS)), at or "0"]
                + [value for event in events for pair in event.items() for value in pair],
            )
            if ok:
                sent += len(events)
    finally:
        stream.close()


def after_drops(ws: Workspace) -> None:
    """After a sync journaled drops: publish them best effort; never raises (a broker that is
    down costs one notice; `hystate events publish` sends them later)."""
    from hystate.core.errors import HystateError

    try:
        publish(ws)
    except HystateError as exc:
        ws.notice(f"dropped transitions not on the event stream yet ({exc.message})")
