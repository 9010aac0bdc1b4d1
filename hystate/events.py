"""The event stream: every transition published once, in order, to Redis Streams.

The git history is the source and the stream is its own cursor. A publisher reads the stream's
last entry (its ``via``, ``commit`` and ``episode`` fields say how far the stream has got), walks
the first-parent commits of the published ref from there to its tip (``event_source.py``) and
appends the missing events with a compare-and-swap on the last entry id
(``brokers/redis_streams.py``): whatever crashes, and whoever else publishes from wherever, an
event is in the stream once. Publishers of one repository also take ``.git/hystate/events.lock``
(O_EXCL), so they queue instead of racing.

When the stream's last ``via`` is not an ancestor of the tip (the history was rewritten, or a
node's branch was replaced by another's), the stream is read back to the newest entry whose
``via`` the tip still reaches, and the tip's events from there on are published except those
whose ``(episode, at, from, to)`` the newer entries already carry.

After every commit ``after_commit`` publishes best effort, outside every lock, within
``events.timeout`` seconds; a broker that is down costs one notice, and the events go out at the
next publish (the next transition, ``hystate events publish``, or a ``--follow`` publisher).
"""

from __future__ import annotations

import os
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hystate.brokers.redis_streams import Entry, RedisStream, check_url, redact
from hystate.errors import BrokerUnavailable, HystateError, InvalidData, LockBusy
from hystate.event_source import Event, EventSource, key_of
from hystate.gitrepo import history as git_history
from hystate.locks import StateLock

if TYPE_CHECKING:
    from hystate.config import Config
    from hystate.manager import StateManager

CHUNK = 200  # events per compare-and-swap append
READ_BACK = 1000  # entries per page when matching a rewritten history
URL_ENV = "HYSTATE_EVENTS_URL"  # keeps a password out of the committed hystate.yaml


@dataclass(frozen=True)
class EventSettings:
    enabled: bool
    url: str
    stream: str
    maxlen: int | None
    ref: str | None
    timeout: float

    @classmethod
    def of(cls, config: Config) -> EventSettings:
        url = os.environ.get(URL_ENV) or str(config.get("events.url"))
        problem = check_url(url)
        if problem:
            source = URL_ENV if os.environ.get(URL_ENV) else "events.url"
            raise InvalidData(f"{source}: {problem}")
        maxlen = config.get("events.maxlen")
        return cls(
            enabled=bool(config.get("events.enabled")),
            url=url,
            stream=str(config.get("events.stream")),
            maxlen=int(maxlen) if maxlen else None,
            ref=config.get("events.ref"),
            timeout=float(config.get("events.timeout")),
        )

    def open(self, timeout: float | None = None) -> RedisStream:
        wait = self.timeout if timeout is None else timeout
        return RedisStream(self.url, self.stream, timeout=wait, maxlen=self.maxlen)


@dataclass
class PublishResult:
    published: int = 0
    tip: str | None = None
    last_id: str | None = None
    resynced: bool = False  # the history was rewritten: matched against what was published
    complete: bool = True  # False when the deadline stopped it with events left


@dataclass
class Plan:
    expected: str  # the last entry id the plan starts from ("" = empty stream)
    tip: str
    events: list[Event] = field(default_factory=list)
    current: bool = False  # the cursor already records ``tip``
    resynced: bool = False


class Publisher:
    """Publishes one repository's transitions to its configured stream."""

    def __init__(
        self,
        manager: StateManager,
        settings: EventSettings | None = None,
        stream: RedisStream | None = None,
    ) -> None:
        self.repo = manager.repo
        self.settings = settings or EventSettings.of(manager.config)
        self.source = EventSource(manager.repo, manager.rel_state_dir)
        self.stream = stream or self.settings.open()
        folder = self.repo.common_dir / "hystate"
        self.lock_path = folder / "events.lock"
        self.pending = folder / "events.pending"

    def close(self) -> None:
        self.stream.close()

    def tip(self) -> str | None:
        return git_history.resolve(self.repo, self.settings.ref)

    # -- planning --------------------------------------------------------------------------

    def plan(self) -> Plan | None:
        """What the stream lacks, from its last entry to the tip (None: no commit yet)."""
        tip = self.tip()
        if tip is None:
            return None
        last, cursor = self.stream.head()
        last_id = last[0] if last else ""
        done: tuple[str, str] | None = None
        if cursor.get("tip") and cursor.get("last_id") == last_id:
            start: str | None = cursor["tip"]  # everything up to it is in the stream
        elif last is not None:
            start = last[1].get("via", "")
            done = (last[1].get("commit", ""), last[1].get("episode", ""))
        else:
            start = None
        if start == tip and done is None:
            return Plan(last_id, tip, current=True)
        if start is None:
            return Plan(last_id, tip, self.source.between(None, tip))
        if start and git_history.is_ancestor(self.repo, start, tip):
            events = self._rest(start, done) if done else []
            return Plan(last_id, tip, events + self.source.between(start, tip))
        return Plan(last_id, tip, self._resync(last, tip), resynced=True)

    def _rest(self, via: str, done: tuple[str, str]) -> list[Event]:
        """The events of position ``via`` after the one the stream ends with."""
        events = self.source.at_position(via)
        for i, event in enumerate(events):
            if (event.commit, event.episode) == done:
                return events[i + 1 :]
        return []

    def _resync(self, last: Entry | None, tip: str) -> list[Event]:
        reach = git_history.reachable(self.repo, tip)
        seen: set[tuple[str, str, str, str]] = set()
        page = [last] if last else []
        anchor = None
        while page and anchor is None:
            for _, fields in page:
                if fields.get("via") in reach:
                    anchor = fields
                    break
                if fields.get("to"):
                    seen.add(key_of(fields))
            else:
                page = self.stream.before(page[-1][0], READ_BACK)
        if anchor is None:
            candidates = self.source.between(None, tip)
        else:
            via = anchor["via"]
            done = (anchor.get("commit", ""), anchor.get("episode", ""))
            candidates = self._rest(via, done) + self.source.between(via, tip)
        return [event for event in candidates if event.key not in seen]

    # -- publishing ------------------------------------------------------------------------

    def publish(self, *, deadline: float | None = None, lock_wait: float = 30.0) -> PublishResult:
        """Bring the stream up to the tip. ``deadline`` (a ``time.monotonic()`` value) stops
        between batches; LockBusy when another publisher holds the lock past ``lock_wait``."""
        with StateLock(self.lock_path, timeout=lock_wait):
            return self.publish_locked(deadline)

    def publish_locked(self, deadline: float | None = None) -> PublishResult:
        result = PublishResult()
        for _ in range(20):  # another host appended meanwhile: plan again
            plan = self.plan()
            if plan is None:
                return result
            result.tip, result.resynced = plan.tip, result.resynced or plan.resynced
            expected, conflict = plan.expected, False
            result.last_id = expected or None
            if not plan.events:
                if not plan.current:
                    conflict = not self.stream.append(expected, [], plan.tip)[0]
                if not conflict:
                    return result
                continue
            for start in range(0, len(plan.events), CHUNK):
                chunk = plan.events[start : start + CHUNK]
                final = start + CHUNK >= len(plan.events)
                ok, last = self.stream.append(
                    expected, [e.fields() for e in chunk], plan.tip if final else None
                )
                if not ok:
                    conflict = True
                    break
                expected, result.last_id = last, last
                result.published += len(chunk)
                if not final and deadline is not None and time.monotonic() > deadline:
                    result.complete = False
                    return result
            if not conflict:
                return result
        raise BrokerUnavailable(
            f"event stream {self.settings.stream!r}: other publishers kept appending",
            hint="try `hystate events publish` again",
        )

    def backlog(self) -> Plan | None:
        return self.plan()


# -- after a commit ----------------------------------------------------------------------------

_TOLD: weakref.WeakSet[Any] = weakref.WeakSet()
_LATER = "events not published yet (they are safe in git; the next publish sends them)"


def after_commit(manager: StateManager, sha: str | None) -> None:
    """Publish best effort after a commit, outside every lock; never raises. A publisher that
    holds the lock is left to it: the ``events.pending`` mark, set before trying the lock and
    checked by the holder after it lets go, makes it publish this commit too."""
    if not sha:
        return
    try:
        settings = EventSettings.of(manager.config)
        if not settings.enabled:
            return
        deadline = time.monotonic() + settings.timeout
        publisher = Publisher(manager, settings)
        try:
            _drain(publisher, deadline)
        finally:
            publisher.close()
    except HystateError as exc:
        _tell_once(manager, f"{_LATER}: {exc.message}")
    except Exception as exc:  # best effort: a transition never fails on its events
        _tell_once(manager, f"{_LATER}: {type(exc).__name__}: {exc}")


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


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o644))


def _tell_once(manager: StateManager, message: str) -> None:
    if manager not in _TOLD:
        _TOLD.add(manager)
        manager.notice(message)


# -- status, following, consuming ---------------------------------------------------------------


def status(manager: StateManager) -> dict[str, Any]:
    """Where the stream stands: its last entry, its length, and how many events it lacks."""
    settings = EventSettings.of(manager.config)
    publisher = Publisher(manager, settings)
    try:
        last, _ = publisher.stream.head()
        plan = publisher.plan()
        return {
            "enabled": settings.enabled,
            "url": redact(settings.url),
            "stream": settings.stream,
            "ref": settings.ref or (manager.repo.head().ref or "HEAD"),
            "tip": plan.tip if plan else None,
            "length": publisher.stream.length(),
            "last_id": last[0] if last else None,
            "last_commit": last[1].get("commit") if last else None,
            "last_episode": last[1].get("episode") if last else None,
            "backlog": len(plan.events) if plan else 0,
            "history_rewritten": bool(plan and plan.resynced),
        }
    finally:
        publisher.close()


def follow(
    manager: StateManager,
    *,
    interval: float = 0.2,
    stop: Callable[[], bool] = lambda: False,
    report: Callable[[str], None] = lambda line: None,
) -> None:
    """Publish whenever the ref moves, until ``stop()``; an unreachable broker is retried with
    backoff (one report per outage)."""
    settings = EventSettings.of(manager.config)
    publisher = Publisher(manager, settings)
    published_tip: str | None = None
    down_since: float | None = None
    wait = interval
    try:
        while not stop():
            tip = publisher.tip()
            if tip != published_tip or publisher.pending.exists():
                try:
                    publisher.pending.unlink(missing_ok=True)
                    result = publisher.publish(lock_wait=manager.config.lock_timeout)
                except BrokerUnavailable as exc:
                    if down_since is None:
                        down_since = time.monotonic()
                        report(f"{exc}; retrying")
                    wait = min(wait * 2, 5.0)
                else:
                    if down_since is not None:
                        report("event broker reachable again")
                        down_since = None
                    wait = interval
                    if result.published:
                        report(f"published {result.published} event(s) up to {tip}")
                    published_tip = tip if result.complete else None
            _sleep(wait, stop)
    finally:
        publisher.close()


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
) -> Iterator[tuple[str, dict[str, str]]]:
    """(entry id, fields) of every event after ``last_id``, oldest first. A consumer that keeps
    the last id it handled and passes it again after a restart misses nothing and sees nothing
    twice. With ``follow`` it waits for new events (forever); without, it stops at the end."""
    settings = EventSettings.of(config)
    stream = settings.open(timeout=settings.timeout + block_ms / 1000)
    try:
        cursor = last_id
        while True:
            entries = stream.read(cursor, count=count, block_ms=block_ms if follow else None)
            if not entries and not follow:
                return
            for entry_id, fields in entries:
                yield entry_id, fields
                cursor = entry_id
    finally:
        stream.close()
