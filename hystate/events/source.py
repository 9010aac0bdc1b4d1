"""Transitions as events, read from the git history (the source of the event stream).

A *position* is a commit on the first-parent line of the published branch. Its events are:
- a transition commit (``Hystate-Episode`` and ``Hystate-To`` trailers, touching the episode's
  file): one event;
- a discovery or import batch (``Hystate-To: discovered`` without ``Hystate-Episode``): one
  ``discovered`` event per new episode the body lists, in the body's order;
- a merge: the events of the commits it brings in (those not on the first-parent line), oldest
  first, each with ``via`` = the merge;
- anything else (a person's commit, ``fsck --repair``'s re-application): none.

``at`` and ``message`` come from the episode file as that commit stores it (the last entry of
``history`` and ``status_message``): ``(episode_id, at, from, to)`` names a transition whatever
commit carries it, so a rebased or replayed history is matched against what was published.
Every field is bounded and stripped of control characters: commits may be forged by anyone who
can push.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from hystate.core import yamlio
from hystate.core.model import ID_PATTERN, ProcessingStage
from hystate.git import GitRepo
from hystate.git import history as git_history

EPISODE, FROM, TO, WORKER = "Hystate-Episode", "Hystate-From", "Hystate-To", "Hystate-Worker"
_KEYS = (EPISODE, FROM, TO, WORKER)
# the one vocabulary of hystate's JSON (the CLI, the API, the events): episode_id, worker, at
FIELDS = ("commit", "via", "episode_id", "from", "to", "worker", "at", "subject", "message")
LIMITS = {"worker": 200, "subject": 300, "message": 2000, "at": 40}
_STAGES = {stage.value for stage in ProcessingStage}
# a commit, the position it came through, its episodes, the path of the (first) one's file
_Planned = tuple[git_history.LogEntry, str, list[str], str | None]
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def bounded(text: object, limit: int) -> str:
    """One line of at most ``limit`` characters with control characters, bidi overrides and
    lone surrogates written as ``\\uXXXX``: safe to print, log or put in a page."""
    raw = text if isinstance(text, str) else ""
    line = _UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", raw[: limit * 2])
    if len(line) > limit:
        line = line[: limit - 1] + "…"
    return line


@dataclass(frozen=True)
class Event:
    commit: str
    via: str
    episode: str
    from_stage: str  # "" for a discovery
    to_stage: str
    worker: str
    at: str
    subject: str
    message: str

    @property
    def key(self) -> tuple[str, str, str, str]:
        """What names the transition in any history that carries it."""
        return (self.episode, self.at, self.from_stage, self.to_stage)

    def fields(self) -> dict[str, str]:
        values = [self.commit, self.via, self.episode, self.from_stage, self.to_stage]
        values += [self.worker, self.at, self.subject, self.message]
        return dict(zip(FIELDS, values, strict=True))


def episode_of(fields: dict[str, str]) -> str:
    """The episode id of a stream entry (``episode`` in entries published before the one
    vocabulary, ``episode_id`` since)."""
    return fields.get("episode_id") or fields.get("episode") or ""


def key_of(fields: dict[str, str]) -> tuple[str, str, str, str]:
    return (episode_of(fields), fields.get("at", ""), fields.get("from", ""), fields["to"])


class EventSource:
    """The events of one repository's history, for one state directory."""

    def __init__(self, repo: GitRepo, rel_state_dir: str) -> None:
        self.repo = repo
        self.prefix = "" if rel_state_dir in ("", ".") else rel_state_dir.rstrip("/") + "/"

    def positions(self, since: str | None, tip: str) -> list[str]:
        """The first-parent commits after ``since`` up to ``tip``, oldest first."""
        return git_history.first_parents(self.repo, since, tip)

    def of_positions(self, shas: Sequence[str]) -> list[Event]:
        """The events of these positions, in this order."""
        if not shas:
            return []
        return self._events(git_history.commits(self.repo, shas, _KEYS, listed=True))

    def _events(self, line: Sequence[git_history.LogEntry]) -> list[Event]:
        planned: list[_Planned] = []
        for position in line:
            inner = [position]
            if position.is_merge:
                side = [f"{position.parents[0]}..{position.sha}"]
                inner = git_history.commits(self.repo, side, _KEYS)[:-1]
            for entry in inner:
                planned.extend(self._plan(entry, position.sha))
        docs = self._read(planned)
        events: list[Event] = []
        for (entry, via, ids, _), doc in zip(planned, docs, strict=True):
            events.extend(self._make(entry, via, ids, doc))
        return events

    def _plan(self, entry: git_history.LogEntry, via: str) -> Iterator[_Planned]:
        trail = entry.trailers
        to = trail[TO]
        if to not in _STAGES:
            return
        files = self._episode_files(entry)
        if trail[EPISODE]:
            if ID_PATTERN.fullmatch(trail[EPISODE]) and trail[FROM] in (*_STAGES, ""):
                yield entry, via, [trail[EPISODE]], files.get(trail[EPISODE])
        elif to == ProcessingStage.DISCOVERED.value:
            # only ids whose file the commit adds: a body can list anything
            ids = [line for line in entry.body.splitlines() if line in files]
            if ids:
                ids = list(dict.fromkeys(ids))
                yield entry, via, ids, files[ids[0]]

    def _episode_files(self, entry: git_history.LogEntry) -> dict[str, str]:
        """{episode id: path} of the episode files (``<state dir>/<folder>/<id>.yaml``) the
        commit changed."""
        found = {}
        for name in entry.files:
            if name.startswith(self.prefix) and name.endswith(".yaml"):
                folder, slash, file = name[len(self.prefix) :].partition("/")
                if slash and folder and "/" not in file and ID_PATTERN.fullmatch(file[:-5]):
                    found[file[:-5]] = name
        return found

    def _read(self, planned: Sequence[_Planned]) -> list[Any]:
        """Each planned commit's (first) episode file as that commit stores it, parsed."""
        specs: list[str] = []
        where: list[int | None] = []
        for entry, _, _, path in planned:
            where.append(len(specs) if path else None)
            if path:
                specs.append(f"{entry.sha}:{path}")
        blobs = git_history.read_blobs(self.repo, specs)
        return [None if i is None else _parse(blobs[i]) for i in where]

    def _make(
        self, entry: git_history.LogEntry, via: str, ids: list[str], doc: Any
    ) -> Iterator[Event]:
        if doc is None:
            return  # the commit does not hold the episode's file: not a transition
        trail = entry.trailers
        single = bool(trail[EPISODE])
        entries = doc.get("history")
        entries = entries if isinstance(entries, list) and entries else [{}]
        # a transition appended the last entry; a discovery made the first
        step = entries[-1] if single else entries[0]
        at = step.get("at") if isinstance(step, dict) else ""
        message = doc.get("status_message") if single else ""
        for episode in ids:
            yield Event(
                commit=entry.sha,
                via=via,
                episode=episode,
                from_stage=trail[FROM],
                to_stage=trail[TO],
                worker=bounded(trail[WORKER], LIMITS["worker"]),
                at=_time(at),
                subject=bounded(entry.subject, LIMITS["subject"]),
                message=bounded(message, LIMITS["message"]),
            )


def _parse(blob: bytes | None) -> Any:
    if blob is None:
        return None
    try:
        doc = yamlio.load(blob)
    except Exception:  # any malformed file: published without the fields it would give
        return {}
    return doc if isinstance(doc, dict) else {}


def _time(value: object) -> str:
    text = value.isoformat() if isinstance(value, datetime) else value
    if not isinstance(text, str) or len(text) > LIMITS["at"]:
        return ""
    try:
        datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return ""
    return text
