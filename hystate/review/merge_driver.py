"""The git merge driver for episode files: ``hystate merge-driver %O %A %B``.

Two branches that changed the same episode are merged field by field. The transition fields
(stage, status_message, last_updated, failed_stage, worker, attempts, error_history, history)
move together: if one side made transitions, its bundle is taken whole; if both did, that is a
real conflict. Other fields (title, files, youtube, metrics, ...) merge leaf by leaf, and a leaf
both sides changed differently is a conflict. A conflict is written as git's usual conflict
markers (which `hystate validate` reports) and the driver exits 1; a merged result that would
not validate is treated as a conflict too, so the driver never writes an invalid file.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from hystate.core.schema import episode_problems
from hystate.core.store import dump, parse_content
from hystate.git import merge_file

TRANSITION_KEYS = (
    "stage", "status_message", "last_updated", "failed_stage", "worker", "attempts",
    "error_history", "history",
)  # fmt: skip

_MISSING = object()


class Conflict(Exception):
    pass


def merge_documents(
    base: dict[str, Any], ours: dict[str, Any], theirs: dict[str, Any]
) -> dict[str, Any]:
    """The merged episode, or Conflict naming what both sides changed."""
    result = copy.deepcopy(ours)
    ours_moved = any(ours.get(k) != base.get(k) for k in TRANSITION_KEYS)
    theirs_moved = any(theirs.get(k) != base.get(k) for k in TRANSITION_KEYS)
    if ours_moved and theirs_moved and any(ours.get(k) != theirs.get(k) for k in TRANSITION_KEYS):
        raise Conflict(
            f"both branches moved the stage ({ours.get('stage')} vs {theirs.get('stage')})"
        )
    if theirs_moved:
        for key in TRANSITION_KEYS:
            result[key] = copy.deepcopy(theirs[key])
    for key in ours.keys() | theirs.keys() | base.keys():
        if key in TRANSITION_KEYS:
            continue
        result[key] = _merge_value(
            key, base.get(key, _MISSING), ours.get(key, _MISSING), theirs.get(key, _MISSING)
        )
    order = list(ours)
    return {k: result[k] for k in order if k in result and result[k] is not _MISSING}


def _merge_value(path: str, base: Any, ours: Any, theirs: Any) -> Any:
    if ours == theirs or theirs == base:
        return ours
    if ours == base:
        return copy.deepcopy(theirs)
    if isinstance(base, dict) and isinstance(ours, dict) and isinstance(theirs, dict):
        merged = {}
        for key in list(ours) + [k for k in theirs if k not in ours]:
            value = _merge_value(
                f"{path}.{key}",
                base.get(key, _MISSING),
                ours.get(key, _MISSING),
                theirs.get(key, _MISSING),
            )
            if value is not _MISSING:
                merged[key] = value
        return merged
    raise Conflict(f"both branches changed {path}")


def merge_files(
    base_path: Path, ours_path: Path, theirs_path: Path, name: str = "episode"
) -> tuple[bool, str]:
    """Run the driver on three files; writes the result over ``ours_path``.
    Returns (clean, explanation)."""
    texts = [p.read_bytes() for p in (base_path, ours_path, theirs_path)]
    docs = []
    for raw in texts:
        doc, problems = parse_content(raw, name)
        docs.append(doc if not problems and isinstance(doc, dict) else None)
    reason = "a side is not a valid episode file"
    if all(d is not None for d in docs):
        base, ours, theirs = docs
        try:
            merged = merge_documents(base, ours, theirs)  # type: ignore[arg-type]
            problems = episode_problems(merged, name, expect_id=ours.get("episode_id"))  # type: ignore[union-attr]
            if not problems:
                ours_path.write_bytes(dump(merged))
                return True, "merged field by field"
            reason = f"the merged file would be invalid: {problems[0].path}: {problems[0].message}"
        except Conflict as exc:
            reason = str(exc)
    text = merge_file(texts[1], texts[0], texts[2], labels=("ours", "base", "theirs"))
    if b"\n=======\n" not in text:  # the lines merged, the meaning did not: mark the whole file
        text = b"<<<<<<< ours\n" + texts[1] + b"=======\n" + texts[2] + b">>>>>>> theirs\n"
    ours_path.write_bytes(text)
    return False, reason
