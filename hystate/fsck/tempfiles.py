"""fsck: temp files a dead writer left (hystate's own, and its temp objects in .git)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from hystate.core.locks import pid_alive
from hystate.fsck.findings import Finding

if TYPE_CHECKING:
    from hystate.engine.workspace import Workspace


def temp_files(ws: Workspace, repair: bool) -> list[Finding]:
    found = []
    store, repo = ws.store, ws.repo
    candidates = store.temp_files() + list(store.state_dir.glob(".*.tmp"))
    candidates += _object_temp_files(repo.common_dir / "objects")
    for path in candidates:
        pid = _pid_in_name(path.name)
        if pid is None and path.name.startswith("tmp_obj_"):
            continue  # git's own temp object: an in-flight write of a git command
        if pid is not None and pid_alive(pid) and pid != os.getpid():
            continue  # a live writer's file
        finding = Finding("temp-file", str(path.relative_to(repo.root)), "leftover temp file")
        # hystate's own temp files of a dead writer hold nothing (the rename never
        # happened) and git ignores them: fsck removes them even without --repair
        if repair or (pid is not None and path.name.startswith(".")):
            path.unlink(missing_ok=True)
            finding.repaired, finding.action = True, "removed"
        found.append(finding)
    return found


def _object_temp_files(objects: Path) -> list[Path]:
    """tmp_obj_* files of the loose object folders; folders may vanish meanwhile (git gc)."""
    found = []
    try:
        folders = [e.path for e in os.scandir(objects) if len(e.name) == 2]
    except FileNotFoundError:
        return []
    for folder in folders:
        try:
            found += [Path(e.path) for e in os.scandir(folder) if e.name.startswith("tmp_obj_")]
        except FileNotFoundError:
            continue
    return found


def _pid_in_name(name: str) -> int | None:
    """The writer's pid in a temp file's name: ``.<name>.<pid>.tmp`` or ``tmp_obj_<pid>_<sha>``."""
    if name.startswith("tmp_obj_"):
        # hystate's own (tmp_obj_<pid>_<8 hex>); git's (tmp_obj_XXXXXX) are git's to clean
        parts = name.split("_")
        if len(parts) != 4 or len(parts[3]) != 8:
            return None
        part = parts[2]
    elif name.endswith(".tmp"):
        part = name[:-4].rsplit(".", 1)[-1]
    else:
        return None
    return int(part) if part.isdigit() and int(part) > 0 else None
