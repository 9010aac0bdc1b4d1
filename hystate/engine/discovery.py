"""Discovery: a file for every new episode of a catalog, in one commit.

Records already known are left alone, whether their file is in the work tree or only in HEAD (a
sparse checkout leaves some out). New files are rendered and validated on every core, written
without an fsync each and synced once for the batch, then committed together.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from hystate.core.errors import Problem
from hystate.core.model import check_id, new_episode, now_utc
from hystate.core.parallel import chunked_map
from hystate.core.paths import ensure_dir
from hystate.core.schema import episode_problems
from hystate.core.store import dump, invalid_file
from hystate.engine.catalog import Record, parse_rows
from hystate.git import audit
from hystate.git.bulk import BulkCommit

if TYPE_CHECKING:
    from hystate.engine.workspace import Workspace


# progress(done, total, what): how far a long piece of work has got (total 0: unknown)
Progress = Callable[[int, int, str], None]


def no_progress(done: int, total: int, what: str) -> None:
    """Progress told to no one."""


@dataclass(frozen=True)
class DiscoverResult:
    added: list[str]
    existing: list[str]
    commit: str | None


def add_episode(
    ws: Workspace,
    episode_id: str,
    *,
    title: str,
    date: str,
    archive_identifier: str | None = None,
) -> DiscoverResult:
    check_id(episode_id)  # a bad id is a usage error (exit 2), not bad data
    row = {"identifier": episode_id, "title": title, "date": date}
    [record] = parse_rows([("--", row)], episode_id)
    return discover(ws, [record], archive_identifier=archive_identifier)


def discover(
    ws: Workspace,
    records: Iterable[Record],
    *,
    source: str | None = None,
    archive_identifier: str | None = None,
    progress: Progress | None = None,
) -> DiscoverResult:
    """Create a file for every record that has none (one commit); leave the others alone.
    ``progress(done, total, what)`` is told how far each phase has got (the command line draws
    it; a total of 0: the commit, of unknown length)."""
    tell = progress or no_progress
    records = list(records)
    ws.repo.check_writable()
    ensure_dir(ws.repo.root, ws.state_dir)
    at = now_utc()
    with ws.repo_lock():
        # What a worker needs to make each new file; the parsed documents never come back
        # (at 100,000 episodes they were ~200 MB of the parent's memory).
        # (paths as strings: at 100,000 episodes Path objects were ~40 MB of the parent)
        todo: list[tuple[str, str, str, str]] = []
        taken: set[str] = set()
        existing = []
        in_head = ids_in_head(ws)
        tell(0, len(records), "checking")
        for done, record in enumerate(records, 1):
            if done % 1024 == 0:
                tell(done, len(records), "checking")
            eid = record.identifier
            if eid in in_head or eid in taken or ws.store.find(eid) is not None:
                existing.append(eid)
                continue
            taken.add(eid)
            todo.append(
                (_rel(ws, ws.store.path_for(eid, record.date)), eid, record.title, record.date)
            )
        tell(len(records), len(records), "checking")
        del taken, in_head, records
        render = partial(_render_new, (archive_identifier, at, ws.worker))
        # Each chunk's files and blobs are written as it comes back; only (path, blob id)
        # stays until the one commit (at 100,000 episodes the files' bytes were ~150 MB).
        bulk = BulkCommit(ws.repo)
        ids: list[str] = []
        written: list[str] = []
        total = len(todo)
        tell(0, total, "writing")
        try:
            for chunk, rendered in chunked_map(render, todo):
                files = []
                for (rel, eid, _, _), (data, problems) in zip(chunk, rendered, strict=True):
                    if problems:
                        raise invalid_file(problems)
                    files.append((rel, data))
                    ids.append(eid)
                for rel, data in files:
                    ws.store.write(ws.repo.root / rel, data, sync=False)
                    written.append(rel)
                bulk.add_batch(files)
                del files, rendered
                tell(len(ids), total, "writing")
            todo.clear()
            if not ids:
                return DiscoverResult([], existing, None)
            message = audit.discover_message(ids, source, ws.worker)
            os.sync()  # once for the batch's files and blobs: an fsync a file costs ~1 ms each
            tell(0, 0, "committing")
            sha = bulk.commit(message)
        except BaseException:
            for rel in written:
                if ws.repo.head_blob(rel) is None:
                    (ws.repo.root / rel).unlink(missing_ok=True)
            raise
        del bulk, written
    for after in ws.subscribers.after:
        after(ws, sha)  # outside the lock, like a transition's
    return DiscoverResult(ids, existing, sha)


def ids_in_head(ws: Workspace) -> set[str]:
    """Episode ids HEAD has files for. A sparse checkout leaves some out of the work
    tree: they are known all the same, whatever their state, and never made anew."""
    return {
        name.rpartition("/")[2][:-5]
        for name in ws.repo.head_names(ws.rel_state_dir, 1)
        if name.endswith(".yaml")
    }


def _render_new(
    common: tuple[str | None, str, str], todo: Sequence[tuple[str, str, str, str]]
) -> list[tuple[bytes, list[Problem]]]:
    """Each new episode's file content and its problems (none when valid)."""
    archive_identifier, at, by = common
    out = []
    for rel, eid, title, date in todo:
        doc = new_episode(
            eid, title=title, date=date, archive_identifier=archive_identifier, at=at, by=by
        )
        out.append((dump(doc), episode_problems(doc, rel, expect_id=eid)))
    return out


def _rel(ws: Workspace, path: Path) -> str:
    return path.relative_to(ws.repo.root).as_posix()
