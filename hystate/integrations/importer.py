"""``hystate import --from DIR``: the first migration tool's state becomes hystate's.

Every legacy episode becomes an episode file: ``mp3.size``/``mp3.duration`` go to
``metrics.audio_size``/``metrics.audio_duration``, ``status.download_url`` to ``files.source_url``
and ``mp3.md5`` to ``files.source_md5`` (where a download is checked). Episodes hystate already
knows keep their stage and history and only gain what they lack; nothing they hold is
overwritten (a disagreement is reported). The whole import is one commit, and it is not a
transition: updated episodes get no history entry.
"""

from __future__ import annotations

import copy
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hystate.core.errors import GitError
from hystate.core.model import EpisodeState, new_episode, now_utc, put_file_key
from hystate.core.schema import episode_problems
from hystate.core.store import dump, invalid_file
from hystate.engine import discovery
from hystate.engine.discovery import Progress, no_progress
from hystate.git.audit import trailers
from hystate.git.objects import object_id
from hystate.integrations.legacy import LegacyEpisode, read_legacy

if TYPE_CHECKING:
    from hystate.manager import StateManager


@dataclass
class ImportResult:
    source: str
    added: list[str] = field(default_factory=list)
    updated: dict[str, list[str]] = field(default_factory=dict)  # id -> fields gained
    skipped: dict[str, str] = field(default_factory=dict)  # id -> why
    notes: dict[str, list[str]] = field(default_factory=dict)  # id -> disagreements kept
    index: list[str] = field(default_factory=list)  # how the legacy index.yaml differs
    commit: str | None = None
    dry_run: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "dry_run": self.dry_run,
            "commit": self.commit,
            "added": self.added,
            "updated": [{"episode_id": k, "fields": v} for k, v in self.updated.items()],
            "skipped": [{"episode_id": k, "reason": v} for k, v in self.skipped.items()],
            "notes": [{"episode_id": k, "kept": v} for k, v in self.notes.items()],
            "index_differences": self.index,
        }


def import_legacy(
    manager: StateManager,
    source: Path,
    *,
    dry_run: bool = False,
    strict: bool = False,
    progress: Progress | None = None,
) -> ImportResult:
    """Import a legacy state directory (one commit); a bad directory raises InvalidData
    before anything is written. Every episode file is imported even when the legacy
    index.yaml is stale (``result.index`` says how it differs); ``strict`` refuses then.
    ``progress(done, total, what)`` is told how far each phase has got."""
    tell = progress or no_progress
    episodes, differences = read_legacy(source, strict=strict, progress=progress)
    result = ImportResult(str(source), dry_run=dry_run, index=differences)
    manager.repo.check_writable()
    manager.state_dir.mkdir(parents=True, exist_ok=True)
    known = [e for e in episodes if manager.store.find(e.identifier) is not None]
    with ExitStack() as stack:
        if not dry_run:
            # A transition of a known episode must not overwrite what the import adds (or
            # the other way round): hold its lock, then the repo lock, as transitions do.
            for episode in sorted(known, key=lambda e: e.identifier):
                stack.enter_context(manager.episode_lock(episode.identifier))
            stack.enter_context(manager.repo_lock())
        locked = {e.identifier for e in known}
        writes = _plan(manager, episodes, locked, result, tell)
        if dry_run or not writes:
            return result
        result.commit = _commit(manager, writes, _message(result, source, manager.worker), tell)
    return result


def _plan(
    manager: StateManager,
    episodes: list[LegacyEpisode],
    locked: set[str],
    result: ImportResult,
    tell: Progress,
) -> dict[str, tuple[Path, bytes, bytes | None]]:
    """rel path -> (path, new content, old content or None for a new file); checks them all."""
    at = now_utc()
    writes: dict[str, tuple[Path, bytes, bytes | None]] = {}
    in_head = discovery.ids_in_head(manager)  # a sparse checkout leaves some out of the work tree
    for number, legacy in enumerate(episodes):
        if number % 64 == 0:
            tell(number, len(episodes), "checking")
        path = manager.store.find(legacy.identifier)
        if path is None and legacy.identifier in in_head:
            result.skipped[legacy.identifier] = (
                "outside the sparse checkout (in HEAD, not in the work tree); left alone"
            )
            continue
        if path is None:
            doc = _new_doc(legacy, at, manager.worker)
            path = manager.store.path_for(legacy.identifier, legacy.date)
            old = None
            result.added.append(legacy.identifier)
        elif legacy.identifier not in locked:
            result.skipped[legacy.identifier] = "appeared while importing; run the import again"
            continue
        else:
            raw, episode = manager.store.read(path)
            rel = manager.repo.relpath(path)
            if manager.repo.head_blob(rel) != object_id(b"blob", raw):
                raise GitError(
                    f"{rel} has changes that are not committed; nothing was written",
                    hint="commit or discard them, or run `hystate fsck --repair`",
                )
            if episode.date != legacy.date:
                result.skipped[legacy.identifier] = (
                    f"air date differs (state {episode.date}, legacy {legacy.date}); left alone"
                )
                continue
            doc, gained, kept = _merge(episode, legacy)
            if kept:
                result.notes[legacy.identifier] = kept
            if not gained:
                result.skipped[legacy.identifier] = "already has all of this metadata"
                continue
            result.updated[legacy.identifier] = gained
            old = raw
        rel = manager.repo.relpath(path)
        problems = episode_problems(doc, rel, expect_id=legacy.identifier)
        if problems:
            raise invalid_file(problems)
        writes[rel] = (path, dump(doc), old)
    tell(len(episodes), len(episodes), "checking")
    return writes


def _new_doc(legacy: LegacyEpisode, at: str, by: str) -> dict[str, Any]:
    doc = new_episode(
        legacy.identifier,
        title=legacy.title,
        date=legacy.date,
        source_url=legacy.download_url,
        source_md5=legacy.md5,
        at=at,
        by=by,
    )
    doc["metrics"]["audio_duration"] = legacy.audio_duration
    doc["metrics"]["audio_size"] = legacy.audio_size
    return doc


def _merge(
    episode: EpisodeState, legacy: LegacyEpisode
) -> tuple[dict[str, Any], list[str], list[str]]:
    """(document, fields gained, disagreements kept): only empty fields are filled."""
    doc = copy.deepcopy(episode.data)
    gained: list[str] = []
    kept: list[str] = []
    default_url = f"https://archive.org/details/{doc['archive_identifier']}"
    offers: list[tuple[str, str, Any, bool]] = [
        # (object, key, legacy value, may replace hystate's default value)
        ("files", "source_url", legacy.download_url, True),
        ("files", "source_md5", legacy.md5, False),
        ("metrics", "audio_duration", legacy.audio_duration, False),
        ("metrics", "audio_size", legacy.audio_size, False),
    ]
    for obj, key, value, over_default in offers:
        if value is None:
            continue
        current = doc[obj].get(key)
        if current is None or (over_default and current == default_url):
            if obj == "files":
                put_file_key(doc, key, value)
            else:
                doc[obj][key] = value
            gained.append(f"{obj}.{key}")
        elif current != value:
            kept.append(f"{obj}.{key}={current!r} (legacy: {value!r})")
    return doc, gained, kept


def _commit(
    manager: StateManager,
    writes: dict[str, tuple[Path, bytes, bytes | None]],
    message: str,
    tell: Progress,
) -> str | None:
    written: list[tuple[str, Path, bytes | None]] = []
    try:
        for rel, (path, data, old) in writes.items():
            manager.store.write(path, data)
            written.append((rel, path, old))
            if len(written) % 64 == 0:
                tell(len(written), len(writes), "writing")
        tell(0, 0, "committing")
        return manager.repo.commit({rel: data for rel, (_, data, _) in writes.items()}, message)
    except BaseException:
        for rel, path, old in written:  # the commit did not happen: put every file back
            if manager.repo.head_blob(rel) != object_id(b"blob", writes[rel][1]):
                if old is None:
                    path.unlink(missing_ok=True)
                else:
                    manager.store.write(path, old)
        raise


def _message(result: ImportResult, source: Path, worker: str) -> str:
    added, updated = len(result.added), len(result.updated)
    subject = f"import: {added} new, {updated} updated episode{'s' if added + updated != 1 else ''}"
    parts = [subject, f"from the legacy state directory {source.name}"]
    if result.added:
        # one id per line: the cache reads these as the episodes' discovery (as for discover)
        parts.append("\n".join(result.added))
    if result.updated:
        lines = [f"- {eid} gained {', '.join(f)}" for eid, f in result.updated.items()]
        parts.append("metadata only, no transition:\n" + "\n".join(lines))
    extra = {"to": "discovered"} if result.added else {}
    parts.append(trailers(**extra, worker=worker, count=str(added + updated)))
    return "\n\n".join(parts) + "\n"
