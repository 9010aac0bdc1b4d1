"""``hystate validate``: every problem of the state folder, never stopping at the first.

Each episode file checked (schema, invariants: on every core), ids that two files claim, what
the store finds that is not an episode file, and cache-named entries committed to git."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from hystate.core.errors import Problem
from hystate.core.parallel import file_problems

if TYPE_CHECKING:
    from hystate.engine.discovery import Progress
    from hystate.engine.workspace import Workspace


def validate(ws: Workspace, progress: Progress | None = None) -> list[Problem]:
    """Every problem of every episode file, then the folder's anomalies and tracked caches
    (``progress(done, total, what)`` is told how many files are checked)."""
    store = ws.store
    paths = list(store.iter_paths())
    problems: list[Problem] = []
    seen: dict[str, Path] = {}
    for number, (path, found) in enumerate(zip(paths, file_problems(store, paths), strict=True)):
        if progress is not None and number % 256 == 0:
            progress(number, len(paths), "checking")
        problems.extend(found)
        if path.stem in seen:
            problems.append(
                Problem(
                    store.name(path), "$.episode_id", f"duplicate of {store.name(seen[path.stem])}"
                )
            )
        seen[path.stem] = path
    if progress is not None:
        progress(len(paths), len(paths), "checking")
    return problems + store.anomalies() + tracked_caches(ws)


def tracked_caches(ws: Workspace) -> list[Problem]:
    """Cache-named entries of the state folder committed to git (a branch can carry a
    ``state.db`` with planted rows or triggers): never used, always reported."""
    rel_dir = ws.rel_state_dir
    tree = ws.repo.subtree(rel_dir)
    if tree is None:
        return []
    names = {str(ws.config.get("database_file")), "index.json", ".locks", "reports"}
    found = []
    for raw in ws.repo.objects.tree(tree).entries():
        name = raw.decode(errors="replace")
        if name in names or name.startswith("state.db"):
            found.append(
                Problem(
                    f"{rel_dir}/{name}",
                    "$",
                    "cache file committed to git: hystate never uses it (its caches live in"
                    " .git/hystate/); untrack it with `git rm --cached`",
                )
            )
    return found
