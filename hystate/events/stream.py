"""The event stream: every transition published once, in order, to Redis Streams.

The git history is the source and the stream is its own cursor. A publisher reads the stream's
last entry (its ``via``, ``commit`` and ``episode_id`` fields say how far the stream has got), walks
the first-parent commits of the published ref from there to its tip (``event_source.py``) and
appends the missing events with a compare-and-swap on the last entry id
(``brokers/redis_streams.py``): whatever crashes, and whoever else publishes from wherever, an
event is in the stream once. Publishers of one repository also take ``.git/hystate/events.lock``
(O_EXCL), so they queue instead of racing.

When the stream's last ``via`` is not an ancestor of the tip (the history was rewritten, or a
node's branch was replaced by another's), the stream is read back to the newest entry whose
``via`` the tip still reaches, and the tip's events from there on are published except those
whose ``(episode_id, at, from, to)`` the newer entries already carry.

After every commit ``after_commit`` publishes best effort, outside every lock, within
``events.timeout`` seconds; a broker that is down costs one notice, and the events go out at the
next publish (the next transition, ``hystate events publish``, or a ``--follow`` publisher).
"""

from __future__ import annotations

import os
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hystate.core.errors import BrokerUnavailable, HystateError, LockBusy
from hystate.core.locks import LockOwner, StateLock
from hystate.events.publisher import (
    DAEMON,
    PENDING,
    URL_ENV,
    EventSettings,
    Plan,
    Publisher,
    PublishResult,
    events_folder,
)
from hystate.events.redis_streams import redact
from hystate.events.source import episode_of

if TYPE_CHECKING:
    from hystate.core.config import Config
    from hystate.engine.workspace import Workspace

__all__ = [
    "URL_ENV",
    "EventSettings",
    "Plan",
    "PublishResult",
    "Publisher",
    "after_commit",
    "consume",
    "follow",
    "status",
]


# -- after a commit ----------------------------------------------------------------------------

_TOLD: weakref.WeakSet[Any] = weakref.WeakSet()
_LATER = "events not published yet (they are safe in git; the next publish sends them)"


def after_commit(ws: Workspace, sha: str | None) -> None:
    """Publish best effort after a commit, outside every lock; never raises. A publisher that
    holds the lock is left to it: the ``events.pending`` mark, set before trying the lock and
    checked by the holder after it lets go, makes it publish this commit too."""
    if not sha or not ws.config.get("events.enabled"):
        return
    try:
        folder = events_folder(ws.repo)
        if _daemon_runs(folder):
            _touch(folder / PENDING)  # it publishes within its interval; no broker here
            return
        settings = EventSettings.of(ws.config)
        deadline = time.monotonic() + settings.timeout
        publisher = Publisher(ws, settings)
        try:
            _drain(publisher, deadline)
        finally:
            publisher.close()
    except HystateError as exc:
        # the broker's own hint repeats what _LATER says; others (no redis-py) say what to do
        text = exc.message if isinstance(exc, BrokerUnavailable) else str(exc)
        _tell_once(ws, f"{_LATER}: {text}")
    except Exception as exc:  # best effort: a transition never fails on its events
        _tell_once(ws, f"{_LATER}: {type(exc).__name__}: {exc}")


def _drain(publisher: Publisher, deadline: float) -> None:
    _touch(publisher.pending)
    while time.monotonic() < deadline:
        lock = StateLock(publisher.lock_path, timeout=0)
        try:
            lock.acquire()
        except LockBusy:
            return  # its holder sees the mark once it lets go
        try:
            while publisher.pending.exists() and time.monotonic() < deadline:
                publisher.pending.unlink(missing_ok=True)
                publisher.publish_locked(deadline)
        finally:
            lock.release()
        if not publisher.pending.exists():
            return


def _daemon_runs(folder: Path) -> bool:
    owner = LockOwner.read(folder / DAEMON)
    return owner is not None and not owner.gone()


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o644))


def _tell_once(ws: Workspace, message: str) -> None:
    if ws not in _TOLD:
        _TOLD.add(ws)
        ws.notice(message)


# -- status, following, consuming ---------------------------------------------------------------


def status(ws: Workspace) -> dict[str, Any]:
    """Where the stream stands: its last entry, its length, and how many events it lacks."""
    settings = EventSettings.of(ws.config)
    publisher = Publisher(ws, settings)
    try:
        last, _ = publisher.stream.head()
        plan = publisher.plan()
        return {
            "enabled": settings.enabled,
            "url": redact(settings.url),
            "stream": settings.stream,
            "ref": settings.ref or (ws.repo.head().ref or "HEAD"),
            "tip": plan.tip if plan else None,
            "length": publisher.stream.length(),
            "last_id": last[0] if last else None,
            "last_commit": last[1].get("commit") if last else None,
            "last_episode_id": episode_of(last[1]) or None if last else None,
            "backlog": sum(1 for _ in plan.events(publisher.source)) if plan else 0,
            "history_rewritten": bool(plan and plan.resynced),
        }
    finally:
        publisher.close()


def follow(
    ws: Workspace,
    *,
    interval: float = 0.2,
    stop: Callable[[], bool] = lambda: False,
    report: Callable[[str], None] = lambda line: None,
) -> None:
    """Publish whenever the ref moves, until ``stop()``; an unreachable broker is retried with
    backoff (one report per outage). While it runs (``.git/hystate/events.daemon``), commits
    leave the publishing to it: a CLI transition then never loads redis-py. One per
    repository."""
    settings = EventSettings.of(ws.config)
    daemon = StateLock(events_folder(ws.repo) / DAEMON, timeout=0)
    try:
        daemon.acquire()
    except LockBusy as exc:
        raise LockBusy(
            f"another `hystate events publish --follow` runs for this repository ({exc.message})"
        ) from None
    from hystate.events import drops

    publisher = Publisher(ws, settings)
    published_tip: str | None = None
    journal_size = -1
    down_since: float | None = None
    wait = interval
    try:
        while not stop():
            tip = publisher.tip()
            if tip != published_tip or publisher.pending.exists():
                try:
                    publisher.pending.unlink(missing_ok=True)
                    result = publisher.publish(lock_wait=ws.config.lock_timeout)
                except BrokerUnavailable as exc:
                    down_since, wait = _broker_down(exc, down_since, wait, report)
                else:
                    if down_since is not None:
                        report("event broker reachable again")
                        down_since = None
                    wait = interval
                    if result.published:
                        report(f"published {result.published} event(s) up to {tip}")
                    published_tip = tip if result.complete else None
            size = drops.journal_size(ws)
            if size != journal_size:  # a sync of this node dropped transitions: the drops stream
                try:
                    sent = drops.publish(ws, settings)
                except BrokerUnavailable as exc:
                    down_since, wait = _broker_down(exc, down_since, wait, report)
                else:
                    journal_size = size
                    if sent:
                        report(f"published {sent} dropped transition(s)")
            _sleep(wait, stop)
    finally:
        publisher.close()
        daemon.release()


def _broker_down(
    exc: BrokerUnavailable, since: float | None, wait: float, report: Callable[[str], None]
) -> tuple[float, float]:
    """(down since, the next wait): said once an outage, the wait doubling up to 5 s."""
    if since is None:
        report(f"{exc}; retrying")
        since = time.monotonic()
    return since, min(wait * 2, 5.0)


def _sleep(seconds: float, stop: Callable[[], bool]) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end and not stop():
        time.sleep(min(0.05, seconds))


def consume(
    config: Config,
    last_id: str = "0-0",
    *,
    follow: bool = True,
    block_ms: int = 5000,
    count: int = 100,
    dropped: bool = False,
) -> Iterator[tuple[str, dict[str, str]]]:
    """(entry id, fields) of every event after ``last_id``, oldest first. A consumer that keeps
    the last id it handled and passes it again after a restart misses nothing and sees nothing
    twice. With ``follow`` it waits for new events (forever); without, it stops at the end.
    Entries published before the one vocabulary (``episode``) are given as ``episode_id``.
    ``dropped``: the stream of transitions syncs had to drop (``hystate.events.drops``)."""
    from hystate.events import drops

    settings = EventSettings.of(config)
    wait = settings.timeout + block_ms / 1000
    stream = drops.open_stream(settings, wait) if dropped else settings.open(timeout=wait)
    try:
        cursor = last_id
        while True:
            entries = stream.read(cursor, count=count, block_ms=block_ms if follow else None)
            if not entries and not follow:
                return
            for entry_id, fields in entries:
                yield entry_id, _named(fields)
                cursor = entry_id
    finally:
        stream.close()


def _named(fields: dict[str, str]) -> dict[str, str]:
    """An entry's fields in the one vocabulary (``episode_id``, ``worker``, ``at``)."""
    if "episode" not in fields or "episode_id" in fields:
        return fields
    return {("episode_id" if k == "episode" else k): v for k, v in fields.items()}
