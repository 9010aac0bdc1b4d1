"""Redis Streams as the event broker: append with a compare-and-swap on the stream's last entry,
read back, and follow.

The append is one Lua script, which Redis runs atomically: it reads the stream's last entry id,
and only when it is the one the publisher planned from does it ``XADD`` the batch (and record
the tip the batch brings the stream up to in ``<stream>:cursor``). Two publishers on different
hosts can therefore never interleave or both append the same batch: the second one's script
finds another last id and appends nothing. With ``appendonly yes`` Redis logs the script's
effects as one ``MULTI``/``EXEC`` block, so a crash keeps the whole batch or none of it.

redis-py is an optional dependency (``pip install 'hystate[redis]'``), imported only here.
"""

from __future__ import annotations

import inspect
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

from hystate.core.errors import BrokerUnavailable, UsageError

# XADD to KEYS[1] the entries in ARGV[6...], ARGV[4] fields each (name, value pairs), trimmed to
# about ARGV[2] entries ('0': not trimmed); ``last_id`` is the last id added. A script's body.
XADD_ENTRIES = """
local width = tonumber(ARGV[4]) * 2
local i = 6
while width > 0 and i + width - 1 <= #ARGV do
  local args = {KEYS[1]}
  if ARGV[2] ~= '0' then
    args[#args + 1] = 'MAXLEN'; args[#args + 1] = '~'; args[#args + 1] = ARGV[2]
  end
  args[#args + 1] = '*'
  for j = i, i + width - 1 do args[#args + 1] = ARGV[j] end
  last_id = redis.call('XADD', unpack(args))
  i = i + width
end
"""

_APPEND = (
    """
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local last_id = ''
if #last > 0 then last_id = last[1][1] end
if last_id ~= ARGV[1] then return {0, last_id} end
"""
    + XADD_ENTRIES
    + """
if ARGV[3] ~= '' then
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[2], 'last_id', last_id, 'tip', ARGV[3])
elseif ARGV[5] ~= '' then
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[2], 'last_id', last_id, 'anchor', ARGV[5])
end
return {1, last_id}
"""
)

Entry = tuple[str, dict[str, str]]


class _Call:
    __slots__ = ("cut", "fired", "until")

    def __init__(self, until: float, cut: Callable[[], None]) -> None:
        self.until, self.cut, self.fired = until, cut, False


class _Watchdog:
    """One thread per process that runs a call's ``cut`` when it outlives its deadline
    (arming costs a lock, not a thread start: ~0.4 ms on a loaded machine)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Nothing armed, no thread yet (also in a forked child, which has no thread)."""
        self._cond = threading.Condition()
        self._armed: set[_Call] = set()
        self._thread: threading.Thread | None = None

    def arm(self, seconds: float, cut: Callable[[], None]) -> _Call:
        call = _Call(time.monotonic() + seconds, cut)
        with self._cond:
            self._armed.add(call)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="hystate-broker-deadline")
                self._thread.daemon = True
                self._thread.start()
            self._cond.notify()
        return call

    def disarm(self, call: _Call) -> None:
        with self._cond:
            self._armed.discard(call)

    def _run(self) -> None:
        while True:
            with self._cond:
                now = time.monotonic()
                due = [c for c in self._armed if c.until <= now]
                for call in due:
                    self._armed.discard(call)
                    call.fired = True
                if not due:
                    wait = min((c.until for c in self._armed), default=now + 3600) - now
                    self._cond.wait(wait)
                    continue
            for call in due:  # outside the lock: a shutdown may take a moment
                call.cut()


_WATCHDOG = _Watchdog()
os.register_at_fork(after_in_child=_WATCHDOG.reset)
_NO_SETINFO: dict[str, Any] = {}


def redact(url: str) -> str:
    """``url`` fit for a message or a log: no user name, password or query."""
    try:
        parts = urlsplit(url)
        if parts.scheme == "unix":
            return f"unix://{parts.path}"
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<invalid URL>"
    if ":" in host:
        host = f"[{host}]"
    secret = "***@" if parts.username or parts.password else ""
    return f"{parts.scheme}://{secret}{host}{port}{parts.path}"


class RedisStream:
    """One stream on one Redis server. Every failure to reach it is BrokerUnavailable (exit 7)
    with the URL redacted; nothing is retried here (the caller decides)."""

    def __init__(self, url: str, stream: str, *, timeout: float, maxlen: int | None = None) -> None:
        try:
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry
        except ImportError:
            raise UsageError(
                "the event stream needs redis-py",
                hint="pip install 'hystate[redis]'",
            ) from None
        self._redis = redis
        if not _NO_SETINFO:
            # no CLIENT SETINFO on connect: two round trips and a package metadata read
            accepts = inspect.signature(redis.Redis.__init__).parameters
            _NO_SETINFO.update(
                {"driver_info": None}
                if "driver_info" in accepts
                else {"lib_name": None, "lib_version": None}
            )
        self.url, self.stream, self.maxlen = url, stream, maxlen
        self.deadline = 2 * timeout  # for one call, however the answer comes
        self.cursor_key = f"{stream}:cursor"
        self.where = redact(url)
        self.client = redis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            decode_responses=False,
            protocol=2,  # RESP3 would cost a HELLO round trip per connection
            **_NO_SETINFO,
        )
        self._append = self.client.register_script(_APPEND)
        self._scripts: dict[str, Any] = {}

    def close(self) -> None:
        self.client.close()

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """``fn(…)`` within ``deadline`` seconds: the socket timeout bounds each read, not an
        answer trickled a byte at a time, so past the deadline the connections are shut
        down by the watchdog (the blocked read then fails)."""
        call = _WATCHDOG.arm(self.deadline, self._cut_off)
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if call.fired:
                detail = f"no whole answer within {self.deadline:g} s"
            elif isinstance(exc, self._redis.exceptions.RedisError):
                detail = type(exc).__name__
                text = str(exc).splitlines()[0][:200] if str(exc) else ""
                if text and "@" not in text and "//" not in text:
                    detail += f": {text}"
            else:
                raise
            raise BrokerUnavailable(
                f"event broker {self.where}: {what} failed ({detail})",
                hint="the transitions are kept in git; `hystate events publish` sends them",
            ) from None
        finally:
            _WATCHDOG.disarm(call)

    def _cut_off(self) -> None:
        self.client.connection_pool.disconnect(inuse_connections=True)

    def head(self) -> tuple[Entry | None, dict[str, str]]:
        """The stream's last entry (None when empty) and the publisher's cursor record."""
        pipe = self.client.pipeline(transaction=False)
        pipe.xrevrange(self.stream, "+", "-", count=1)
        pipe.hgetall(self.cursor_key)
        last, cursor = self._call("reading the last entry", pipe.execute)
        entries = _decode_entries(last)
        return (entries[0] if entries else None), _decode_map(cursor)

    def before(self, entry_id: str, count: int) -> list[Entry]:
        """Up to ``count`` entries older than ``entry_id``, newest first."""
        raw = self._call(
            "reading back", self.client.xrevrange, self.stream, f"({entry_id}", "-", count=count
        )
        return _decode_entries(raw)

    def append(
        self,
        expected_last: str,
        events: Sequence[dict[str, str]],
        tip: str | None,
        anchor: str | None = None,
    ) -> tuple[bool, str]:
        """XADD ``events`` if the last entry id is still ``expected_last`` ("" = empty):
        (appended, the last id now). The cursor record then says: everything up to ``tip`` is
        in; or, while a rewritten history is being matched, ``anchor`` (the entry after which
        the stream is matched against)."""
        width = len(events[0]) if events else 0
        args = [expected_last, str(self.maxlen or 0), tip or "", str(width), anchor or ""]
        for event in events:
            if len(event) != width:
                raise ValueError("events of one batch carry the same fields")
            for name, value in event.items():
                args += [name, value]
        keys = [self.stream, self.cursor_key]
        ok, last = self._call("appending", self._append, keys=keys, args=args)
        return bool(ok), _text(last)

    def after(self, entry_id: str, count: int) -> list[Entry]:
        """Up to ``count`` entries newer than ``entry_id``, oldest first."""
        raw = self._call(
            "reading back", self.client.xrange, self.stream, f"({entry_id}", "+", count=count
        )
        return _decode_entries(raw)

    def read(self, after_id: str, *, count: int, block_ms: int | None) -> list[Entry]:
        """Entries after ``after_id``, oldest first; waits up to ``block_ms`` for one."""
        raw = self._call(
            "reading",
            self.client.xread,
            {self.stream: after_id},
            count=count,
            block=block_ms,
        )
        return _decode_entries(raw[0][1]) if raw else []

    def length(self) -> int:
        return int(self._call("counting", self.client.xlen, self.stream))

    def hash_field(self, key: str, name: str) -> str | None:
        raw = self._call("reading the cursor", self.client.hget, key, name)
        return None if raw is None else _text(raw)

    def run_script(self, source: str, *, keys: list[str], args: list[str]) -> tuple[bool, str]:
        """Run a compare-and-swap Lua script answering {ok, value}."""
        script = self._scripts.get(source)
        if script is None:
            script = self._scripts[source] = self.client.register_script(source)
        ok, value = self._call("appending", script, keys=keys, args=args)
        return bool(ok), _text(value)


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _decode_map(raw: Any) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in (raw or {}).items()}


def _decode_entries(raw: Any) -> list[Entry]:
    return [(_text(entry_id), _decode_map(fields)) for entry_id, fields in raw or []]
