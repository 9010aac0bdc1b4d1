"""Kept answers (``hystate.cache.memo``) carried from one tree to the next by a refresh that
re-read a few episodes (issue 29). A pipeline transitions all the time, and each transition
used to make the next ``status`` compute every kept answer again over 100,000 episodes. Now
the refresh knows which episodes changed, and from what rows to what rows: ``capture`` reads
them before the refresh replaces them and after, and ``carry`` gives each answer kept for the
old tree its value for the new one, in the refresh's own transaction (counts per stage, the
history's span and first entry, the forecast's waiting groups and group members, its training
set), or drops it where an update could differ from a computation (the next read computes it,
as before).

What is carried is exactly what the computation gives on the new tables (tests/cache/
test_follow.py compares them with a rebuilt cache's after random transitions, commits with
plain git, another process's transitions and rebuilds): a sum of numbers that change is never
carried (floating point sums depend on their order), nor an end (min, first, last) that a
removed row held or tied. The forecast's training set (``forecast_queries.training_runs``) is
carried by finding its episodes again (one query through partial indexes, ~2.5 ms at 100,000
episodes) and reading the runs of those that joined, left or changed, spliced into its kept
text where a bisection finds them (``hystate.cache.training_text``: never decoded, encoded or
cut whole); the model learnt from it is carried when its runs are
the same, else learnt again from the carried runs (~10-15 ms at 100,000 episodes instead of
~0.3 s from the history).
"""

from __future__ import annotations

import itertools
import json
import sqlite3
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from hystate.cache import training_text
from hystate.cache.db import CacheDB
from hystate.cache.tables import ACTIVE, ACTIVE_SQL
from hystate.core.model import parse_time

# the episodes of the most recent entries into an active stage (arguments: how many less one,
# and how many): the newest entries since the how-many-th newest's time less two days, read in
# order through the partial indexes of such entries (``tables``: none is sorted); entries of
# the same moment taken by episode id, so that the set is a function of the tree, not of the
# order its rows were written (a rebuild's)
CANDIDATES = (
    "SELECT episode_id FROM processing_log INDEXED BY processing_log_active_rank"
    f" WHERE to_stage IN {ACTIVE_SQL} AND timestamp >= coalesce((SELECT"
    " strftime('%Y-%m-%dT%H:%M:%S', substr(timestamp, 1, 19), '-2 days') FROM processing_log"
    f" INDEXED BY processing_log_active_time WHERE to_stage IN {ACTIVE_SQL}"
    " ORDER BY timestamp DESC LIMIT 1 OFFSET ?), '')"
    " ORDER BY julianday(timestamp) DESC, episode_id LIMIT ?"
)


# (episode_id, time, from, to, audio_size, audio_duration) of the episodes in a JSON list
TRAINING_ROWS = (
    "SELECT l.episode_id, l.timestamp, l.from_stage, l.to_stage, e.audio_size,"
    " e.audio_duration FROM processing_log l JOIN episode_states e USING (episode_id)"
    " WHERE l.episode_id IN (SELECT value FROM json_each(?))"
    " ORDER BY l.episode_id, julianday(l.timestamp), l.id"
)


def runs_by_episode(rows: Sequence[Sequence[Any]]) -> dict[str, list[list[Any]]]:
    """``TRAINING_ROWS`` as the runs of each episode that has any."""
    found = {}
    for episode, group in itertools.groupby(rows, key=lambda r: r[0]):
        mine = list(group)  # the episode's sizes are on each of its rows
        made = episode_runs([r[1:4] for r in mine], mine[0][4], mine[0][5])
        if made:
            found[episode] = made
    return found


def episode_runs(rows: Sequence[Sequence[Any]], size: Any, duration: Any) -> list[list[Any]]:
    """The runs in one episode's (timestamp, from, to) rows, in time order: each stay in an
    active stage that was entered, then left."""
    runs = []
    entered: tuple[str, float] | None = None
    for stamp, old, new in rows:
        when = parse_time(stamp).timestamp()
        if entered and old == entered[0] and old in ACTIVE:
            runs.append([old, entered[1], when, new, size, duration])
        entered = (new, when)
    return runs


# episode_id, stage, failed_stage, the three attempt counts, audio_size, audio_duration
STATE = (
    "SELECT episode_id, stage, failed_stage, download_attempts, conversion_attempts,"
    " upload_attempts, audio_size, audio_duration FROM episode_states"
    " WHERE episode_id IN (SELECT value FROM json_each(?))"
)
# episode_id, id, timestamp, from, to, julianday(timestamp)
LOG = (
    "SELECT episode_id, id, timestamp, from_stage, to_stage, julianday(timestamp)"
    " FROM processing_log WHERE episode_id IN (SELECT value FROM json_each(?))"
    " ORDER BY episode_id, julianday(timestamp), id"
)
TRAINING = "training_runs/"
CARRY_AT_MOST = 1000  # changed episodes; more (a large pull): the answers are computed again
REDO_AT_MOST = 500  # episodes whose runs are read again; more: computed again
STATE_FEATURES = {"audio_size": 5, "audio_duration": 6}  # their places in a STATE row, less one


@dataclass
class Rows:
    """The rows of some episodes at one moment (``capture``)."""

    states: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    logs: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)


def capture(db: CacheDB, ids: list[str], old_stamp: str | None) -> Rows | None:
    """The rows of episodes ``ids``, if the cache keeps answers for ``old_stamp``."""
    if old_stamp is None or len(ids) > CARRY_AT_MOST:
        return None
    try:
        names = [r[0] for r in db.db.execute("SELECT name FROM memo WHERE stamp = ?", (old_stamp,))]
    except sqlite3.DatabaseError:
        return None
    if not names:
        return None
    return rows(db, ids)


def rows(db: CacheDB, ids: list[str]) -> Rows:
    """The rows of episodes ``ids`` now (``capture``; after the refresh, to ``carry``)."""
    found = Rows()
    text = json.dumps(ids)
    for row in db.db.execute(STATE, (text,)):
        found.states[row[0]] = tuple(row[1:])
    for row in db.db.execute(LOG, (text,)):
        found.logs.setdefault(row[0], []).append(tuple(row[1:]))
    return found


def carry(db: CacheDB, old_stamp: str, new_stamp: str, before: Rows, after: Rows) -> None:
    """Each answer kept for ``old_stamp`` restamped ``new_stamp`` with its new value, or
    dropped where it cannot be carried exactly. ``before`` and ``after``: the rows of every
    episode the refresh changed."""
    kept = db.db.execute("SELECT name, value FROM memo WHERE stamp = ?", (old_stamp,)).fetchall()
    db.db.execute("DELETE FROM memo WHERE stamp != ?", (new_stamp,))
    change = Change(db, before, after)
    kept.sort(key=lambda row: not row[0].startswith(TRAINING))  # what the model learns from first
    for name, text in kept:
        try:
            carried = change.follow_text(name, text)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError):
            carried = None  # not what this code wrote: computed again
        except sqlite3.Error:
            carried = None
        if carried is not None:
            db.db.execute(
                "INSERT OR REPLACE INTO memo VALUES (?, ?, ?)", (name, new_stamp, carried)
            )


class Change:
    """What the refresh changed: the rows of some episodes, before and after. Every log row
    of these episodes was deleted and inserted again (with ids above every other row's)."""

    def __init__(self, db: CacheDB, before: Rows, after: Rows) -> None:
        self.db, self.before, self.after = db, before, after
        self.removed = [r for rows in before.logs.values() for r in rows]
        self.added = [r for rows in after.logs.values() for r in rows]
        self.states = [(s, -1) for s in before.states.values()]
        self.states += [(s, 1) for s in after.states.values()]
        self.ids = set(before.states) | set(after.states) | set(before.logs) | set(after.logs)
        self.same_training = False  # the model learns from the same runs (``training``)

    def follow_text(self, name: str, text: str) -> str | None:
        """The new text of the answer ``name`` kept as ``text``, or None: compute it again.
        The training set is followed in its text (``training_text``); the model is kept
        as it is or dropped; the others are decoded, followed and encoded."""
        kind = name.split("/", 1)[0]
        if kind == "training_runs":
            return self.training_text(int(name.split("/")[2]), text)
        if kind == "forecast.model":
            return text if self.same_training else None
        value = self.follow(name, json.loads(text))
        return None if value is None else json.dumps(value[0], allow_nan=False)

    def follow(self, name: str, value: Any) -> tuple[Any] | None:
        """(the new value,) of the answer ``name``, or None: compute it again."""
        kind = name.split("/", 1)[0]
        if kind == "count_by_stage":
            return (self.counts(value),)
        if kind == "first_entry_time":
            return self.first_entry(value)
        if kind == "entered_span":
            return self.span(json.loads(name.split("/", 2)[2]), value)
        if kind == "waiting_groups":
            _, _, stages, features = name.split("/")
            return self.groups(stages.split(","), features.split(","), value)
        if kind == "group_members":
            return self.members(json.loads(name.split("/", 2)[2]), value)
        if kind == "training_runs":
            return self.training(int(name.split("/")[2]), value)
        if kind == "forecast.model":
            return (value,) if self.same_training else None
        return None

    def counts(self, value: list[list[Any]]) -> list[list[Any]]:
        counts = Counter({stage: n for stage, n in value})
        for state, sign in self.states:
            counts[state[0]] += sign
        if any(n < 0 for n in counts.values()):
            raise ValueError("fewer than none")
        return [[stage, n] for stage, n in sorted(counts.items()) if n]

    def first_entry(self, value: str | None) -> tuple[Any] | None:
        gone = Counter(r[1:4] for r in self.removed) - Counter(r[1:4] for r in self.added)
        if value is None or gone:
            return None  # an entry removed might have been the first
        first = datetime.fromisoformat(value)
        if first.tzinfo is None:
            raise ValueError("a time without its offset")
        for row in self.added:
            when = parse_time(row[1])
            if when < first or (when == first and when.isoformat() != first.isoformat()):
                return None  # earlier (or as early, written otherwise): see compute
        return (value,)

    def span(self, stages: list[str], value: list[Any]) -> tuple[Any] | None:
        count, low, oldest, first, last = value
        inside = set(stages)
        removed = [r for r in self.removed if r[3] in inside and r[4] is not None]
        added = [r for r in self.added if r[3] in inside and r[4] is not None]
        if not removed and not added:
            return (value,)
        if not count:
            return None
        ((newest,),) = self.db.db.execute("SELECT julianday(?)", (last,)).fetchall()
        if any(r[1] == low or r[4] in (oldest, newest) for r in removed):
            return None  # an end may have gone (or be held by a row of a new id)
        count += len(added) - len(removed)
        for _, stamp, _, _, day in sorted(added, key=lambda r: (r[4], r[0])):
            low = min(low, stamp)
            if day < oldest:
                oldest, first = day, stamp
            if day >= newest:
                newest, last = day, stamp
        return ([count, low, oldest, first, last],)

    def groups(self, stages: list[str], features: list[str], value: list[Any]) -> tuple[Any] | None:
        places = [STATE_FEATURES[f] for f in features]
        found = {tuple(row[:5]): list(row) for row in value}
        moved: dict[tuple[Any, ...], list[Counter[Any]]] = {}
        for state, sign in self.states:
            if state[0] not in stages:
                continue
            group = tuple(state[:5])
            row = found.setdefault(group, [*group, 0, *[0, 0.0, 0.0, None, None] * len(places)])
            row[5] += sign
            deltas = moved.setdefault(group, [Counter() for _ in places])
            for delta, place in zip(deltas, places, strict=True):
                if state[place] is not None:
                    delta[(type(state[place]), state[place])] += sign
        for group, deltas in moved.items():
            row = found[group]
            for i, delta in enumerate(deltas):
                changed = [(k, n) for k, n in delta.items() if n]
                if not changed:
                    continue  # the same numbers as before
                ((_, number), n) = changed[0]
                if row[6 + 5 * i] or len(changed) != 1 or n != 1:
                    return None  # a sum of numbers changes: computed again (see the docstring)
                x = float(number)
                row[6 + 5 * i : 11 + 5 * i] = [1, x, x * 1.0 * number, number, number]
            if row[5] < 0:
                raise ValueError("fewer than none")
        rows = [row for row in found.values() if row[5]]
        return (sorted(rows, key=lambda r: (r[0], r[1] is not None, r[1] or "", *r[2:5])),)

    def members(self, args: list[Any], value: Any) -> tuple[Any] | None:
        group = tuple(args[:5])
        if any(tuple(state[:5]) == group for state, _ in self.states):
            return None
        return (value,)

    def training(self, episodes: int, value: dict[str, Any]) -> tuple[Any] | None:
        """``forecast_queries.training_runs``: the candidates found again (one indexed
        query), and the runs of those that joined, left or changed read again."""
        chosen = self.candidates(episodes)
        redo = self.redo(set(value["candidates"]), chosen)
        if len(redo) > REDO_AT_MOST:
            return None
        runs = {e: r for e, r in value["runs"].items() if e not in redo}
        runs.update(self.runs_of(redo & set(chosen)))
        new = {"candidates": chosen, "runs": dict(sorted(runs.items()))}
        self.same_training = new["runs"] == value["runs"]  # the model reads nothing else
        return (new,)

    def training_text(self, episodes: int, text: str) -> str | None:
        """``training`` done on the kept text: the entries of the episodes that joined, left
        or changed are cut out or put in where bisection finds them, the text between copied
        as it is. The same text as ``json.dumps`` of ``training``'s answer, without decoding
        and encoding ~9,000 runs, nor cutting the text into its ~1,700 entries (~330 KB at
        100,000 episodes: ~6 ms a transition in a served child, most of it memory the fork's
        copy-on-write had to fault in). Text of another shape: decoded."""
        parts = training_text.parse(text)
        if parts is None:
            return self._decoded(episodes, text)
        candidates, body = parts
        chosen = self.candidates(episodes)
        redo = self.redo(set(candidates), chosen)
        if len(redo) > REDO_AT_MOST:
            return None
        if not training_text.IDS.fullmatch("".join(f"{e}\n" for e in redo)):
            return self._decoded(episodes, text)  # an id JSON would escape: not found by bisection
        fresh = self.runs_of(redo & set(chosen))
        try:
            spliced = body.splice(
                {e: training_text.entry(e, fresh[e]) if e in fresh else None for e in redo}
            )
        except training_text.Shape:
            return self._decoded(episodes, text)
        self.same_training = spliced[1]  # the model reads nothing else
        return training_text.compose(chosen, spliced[0])

    def _decoded(self, episodes: int, text: str) -> str | None:
        value = self.training(episodes, json.loads(text))
        return None if value is None else json.dumps(value[0], allow_nan=False)

    def candidates(self, episodes: int) -> list[str]:
        args = (max(episodes - 1, 0), episodes)
        return sorted({r[0] for r in self.db.db.execute(CANDIDATES, args)})

    def redo(self, old: set[str], chosen: list[str]) -> set[str]:
        """The episodes whose runs are read again: those that joined or left, and those of
        the changed episodes that are or were candidates."""
        return (old ^ set(chosen)) | (self.ids & (old | set(chosen)))

    def runs_of(self, episodes: set[str]) -> dict[str, list[list[Any]]]:
        wanted = json.dumps(sorted(episodes))
        return runs_by_episode(self.db.db.execute(TRAINING_ROWS, (wanted,)).fetchall())
