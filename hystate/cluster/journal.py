"""The node's journal of dropped transitions: ``.git/hystate/dropped.jsonl``.

Every sync that drops a local transition (the remote moved the episode first, or a claim was
withdrawn) appends one JSON line per drop: the commit, the episode, the move, the worker that
made it (its ``Hystate-Worker``), the reason and when. The workers that made them read it to be
told (``hystate.cluster.acks``): a drop by any process of the node reaches the worker, whichever
process ran the sync. Local to the clone (never pushed); appends are single ``O_APPEND`` writes.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hystate.engine.workspace import Workspace

NAME = "dropped.jsonl"
KEYS = ("commit", "id", "from", "to", "worker", "reason")


def path(ws: Workspace) -> Path:
    return Path(ws.repo.git_dir) / "hystate" / NAME


def record_dropped(ws: Workspace, rows: list[dict[str, Any]]) -> None:
    """Append the drops of one sync round (best effort: the sync's own report has them too)."""
    if not rows:
        return
    at = datetime.now(UTC).isoformat(timespec="milliseconds")
    data = "".join(
        json.dumps({**{k: row.get(k) for k in KEYS}, "at": at}, sort_keys=True) + "\n"
        for row in rows
    ).encode()
    target = path(ws)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
    except OSError as exc:
        ws.notice(f"dropped transitions not journaled ({exc}); `hystate sync --json` lists them")
        return
    for hook in ws.subscribers.dropped:  # the event stream, when configured
        hook(ws)


def size(ws: Workspace) -> int:
    try:
        return path(ws).stat().st_size
    except OSError:
        return 0


def read(ws: Workspace, offset: int, limit: int | None = None) -> tuple[list[dict[str, Any]], int]:
    """The drops journaled from byte ``offset`` on (the first ``limit`` lines when given), and
    the offset after the lines read."""
    try:
        with open(path(ws), "rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except OSError:
        return [], offset
    end = data.rfind(b"\n") + 1  # a line being written is read next time
    lines = data[:end].splitlines(keepends=True)
    if limit is not None and len(lines) > limit:
        lines = lines[:limit]
        end = sum(len(line) for line in lines)
    rows = []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows, offset + end
