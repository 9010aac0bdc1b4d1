"""Publishing the transitions to the event stream: what the stream lacks (a ``Plan``, from the
stream's own last entry to the tip of the published ref) and appending it with a
compare-and-swap, a batch at a time (``Publisher``). ``hystate.events.stream`` is the front door.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from hystate.core.errors import BrokerUnavailable, InvalidData
from hystate.core.locks import StateLock
from hystate.core.urls import check_broker_url
from hystate.events.redis_streams import Entry, RedisStream
from hystate.events.source import Event, EventSource, episode_of, key_of
from hystate.git import history as git_history

if TYPE_CHECKING:
    from hystate.core.config import Config
    from hystate.engine.workspace import Workspace
    from hystate.git import GitRepo

CHUNK = 200  # events per compare-and-swap append
READ_BACK = 1000  # entries per page when matching a rewritten history
WINDOW = 500  # first-parent commits read from git at a time
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
        problem = check_broker_url(url)
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


Key = tuple[str, str, str, str]


@dataclass
class Plan:
    """What the stream lacks: the rest of the position it ends inside, then the events of the
    positions after ``since`` up to ``tip``, read from git a window at a time, less those
    ``seen`` in the stream already (a rewritten history)."""

    expected: str  # the last entry id the plan starts from ("" = empty stream)
    tip: str
    head: list[Event] = field(default_factory=list)
    since: str | None = None  # None: from the first commit
    seen: set[Key] = field(default_factory=set)
    current: bool = False  # the cursor already records ``tip``: nothing to do
    resynced: bool = False
    positions: list[str] | None = None  # known already (a short walk)
    anchor: str | None = None  # matching a rewritten history against the entries after it

    def events(self, source: EventSource) -> Iterator[Event]:
        if self.current:
            return
        positions = self.positions
        if positions is None:
            positions = source.positions(self.since, self.tip)
        for batch in itertools.chain([self.head], _windows(source, positions)):
            for event in batch:
                if event.key not in self.seen:
                    yield event


def _windows(source: EventSource, positions: list[str]) -> Iterator[list[Event]]:
    for i in range(0, len(positions), WINDOW):
        yield source.of_positions(positions[i : i + WINDOW])


PENDING = "events.pending"  # "a commit may not be published yet", for the lock's holder
DAEMON = "events.daemon"  # held by a running `events publish --follow`


def events_folder(repo: GitRepo) -> Path:
    """``.git/hystate``: the publishers' lock, the pending mark, the daemon's lock."""
    return repo.common_dir / "hystate"


class Publisher:
    """Publishes one repository's transitions to its configured stream."""

    def __init__(
        self,
        ws: Workspace,
        settings: EventSettings | None = None,
        stream: RedisStream | None = None,
    ) -> None:
        self.repo = ws.repo
        self.settings = settings or EventSettings.of(ws.config)
        self.source = EventSource(ws.repo, ws.rel_state_dir)
        self.stream = stream or self.settings.open()
        folder = events_folder(self.repo)
        self.lock_path = folder / "events.lock"
        self.pending = folder / PENDING

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
        anchor = cursor.get("anchor") if cursor.get("last_id") == last_id else None
        if cursor.get("tip") and cursor.get("last_id") == last_id:
            start: str | None = cursor["tip"]  # everything up to it is in the stream
        elif last is not None:
            start = last[1].get("via", "")
            done = (last[1].get("commit", ""), episode_of(last[1]))
        else:
            start = None
        if start == tip and done is None:
            return Plan(last_id, tip, current=True)
        if start is None:
            return Plan(last_id, tip)
        path = git_history.first_parent_path(self.repo, start, tip) if start else None
        if path is not None or (start and git_history.is_ancestor(self.repo, start, tip)):
            head = self._rest(start, done) if done else []
            plan = Plan(last_id, tip, head, start, positions=path)
            if anchor:  # a matching publish was cut short: go on matching where it stopped
                plan.anchor, plan.seen, plan.resynced = anchor, self._keys_after(anchor), True
            return plan
        return self._resync(last_id, last, tip)

    def _keys_after(self, anchor: str) -> set[Key]:
        seen: set[Key] = set()
        page = self.stream.after(anchor, READ_BACK)
        while page:
            seen.update(key_of(fields) for _, fields in page if fields.get("to"))
            page = self.stream.after(page[-1][0], READ_BACK)
        return seen

    def _rest(self, via: str, done: tuple[str, str]) -> list[Event]:
        """The events of position ``via`` after the one the stream ends with."""
        events = self.source.of_positions([via])
        for i, event in enumerate(events):
            if (event.commit, event.episode) == done:
                return events[i + 1 :]
        return []

    def _resync(self, last_id: str, last: Entry | None, tip: str) -> Plan:
        """The stream ends with events of commits the tip does not reach: read it back to the
        newest entry whose position the tip reaches, and go on from there, skipping the
        transitions the newer entries already carry."""
        reach = git_history.reachable(self.repo, tip)
        seen: set[Key] = set()
        page = [last] if last else []
        while page:
            for entry_id, fields in page:
                if fields.get("via") in reach:
                    done = (fields.get("commit", ""), episode_of(fields))
                    head = self._rest(fields["via"], done)
                    return Plan(
                        last_id, tip, head, fields["via"], seen, resynced=True, anchor=entry_id
                    )
                if fields.get("to"):
                    seen.add(key_of(fields))
            page = self.stream.before(page[-1][0], READ_BACK)
        return Plan(last_id, tip, seen=seen, resynced=True, anchor="0-0")

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
            result.last_id = plan.expected or None
            if plan.current or self._send(plan, result, deadline):
                return result
        raise BrokerUnavailable(
            f"event stream {self.settings.stream!r}: other publishers kept appending",
            hint="try `hystate events publish` again",
        )

    def _send(self, plan: Plan, result: PublishResult, deadline: float | None) -> bool:
        """Append the plan's events a batch at a time, the last batch (maybe empty) recording
        the tip; False when another publisher appended first (nothing of this batch is in)."""
        expected = plan.expected
        batch: list[Event] = []
        events = plan.events(self.source)
        while True:
            event = next(events, None)
            if event is not None:
                batch.append(event)
                if len(batch) < CHUNK:
                    continue
            final = event is None
            ok, last = self.stream.append(
                expected, [e.fields() for e in batch], plan.tip if final else None, plan.anchor
            )
            if not ok:
                return False
            expected, result.last_id = last, last or None
            result.published += len(batch)
            batch = []
            if final:
                return True
            if deadline is not None and time.monotonic() > deadline:
                result.complete = False
                return True
