"""fsck: an episode file written but not committed (the process died between the two):
committed as the transition it is when it is valid and legal; otherwise the committed version
is put back (the bad content is kept under .git/hystate-lost/)."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hystate.core import yamlio
from hystate.core.errors import LockBusy
from hystate.core.locks import lock_status
from hystate.core.model import EpisodeState, ProcessingStage
from hystate.core.paths import NotRegularFile, read_bytes, write_atomic
from hystate.core.rules import legal_move
from hystate.core.schema import episode_problems
from hystate.core.store import is_episode_path, parse_content
from hystate.fsck.findings import Finding
from hystate.fsck.index import DRIFT, reset_index
from hystate.git import audit
from hystate.git.objects import object_id

if TYPE_CHECKING:
    from hystate.engine.workspace import Workspace

S = ProcessingStage
BUSY = "being changed by a live process; left alone"


def uncommitted(ws: Workspace, repair: bool, earlier: list[Finding]) -> list[Finding]:
    """Uncommitted episode files; a reverted transition fsck could not re-apply (in
    ``earlier``) is left as it is."""
    kept = {f.path for f in earlier if f.kind == "reverted" and not f.repaired}
    found = []
    rel_dir = ws.rel_state_dir
    prefix = "" if rel_dir == "." else rel_dir + "/"
    for rel in ws.repo.dirty_paths(rel_dir, ignored=True):
        if rel in kept or not is_episode_path(rel.removeprefix(prefix)):
            continue
        path = ws.repo.root / rel
        if not repair:  # looked at, never locked: a dead process's lock stays for its mender
            lock = ws.locks_dir / f"{path.stem}.lock"
            live = os.path.lexists(lock) and not lock_status(lock)[1]
            found.append(
                Finding("uncommitted", rel, BUSY) if live else _judge(ws, path, rel, False)
            )
            continue
        try:
            with ws.episode_lock(path.stem, timeout=2, mend=False):
                found.append(_judge(ws, path, rel, repair))
        except LockBusy:
            found.append(Finding("uncommitted", rel, BUSY))
    return found


def mend_orphan(ws: Workspace, episode_id: str) -> dict[str, Any] | None:
    """The episode's lock was just taken from a process that died holding it: a write of that
    process that never reached HEAD is repaired as ``fsck --repair`` repairs it (committed as
    the transition it is, or the committed version put back and the file kept under
    ``.git/hystate-lost/``), and told. The caller holds the episode lock, not the repository
    lock. None when the file is as HEAD has it."""
    path = ws.store.find(episode_id)
    if path is None:
        return None
    rel = ws.repo.relpath(path)
    if not _differs(ws, path, rel):
        return None
    finding = _judge(ws, path, rel, True)
    ws.notice(
        f"{rel}: written by a process that died before its commit ({finding.message}): "
        f"{finding.action}"
    )
    return {"path": rel, "found": finding.message, "action": finding.action}


def _differs(ws: Workspace, path: Path, rel: str) -> bool:
    committed = ws.repo.head_blob(rel)
    try:
        raw = read_bytes(path)
    except FileNotFoundError:
        return committed is not None
    except NotRegularFile:
        return True
    return object_id(b"blob", raw) != committed


def _judge(ws: Workspace, path: Path, rel: str, repair: bool) -> Finding:
    repo, store = ws.repo, ws.store
    committed_sha = repo.head_blob(rel)
    committed = repo.objects.read(committed_sha)[1] if committed_sha else None
    if not os.path.lexists(path):
        finding = Finding("uncommitted", rel, "episode file deleted but not committed")
        if repair and committed is not None:
            store.write(path, committed)
            finding.repaired, finding.action = True, "restored the committed version"
        return finding
    try:
        raw = read_bytes(path)
    except NotRegularFile as exc:
        finding = Finding("uncommitted", rel, f"is {exc.kind}: hystate never follows it")
        if repair and committed is not None:  # the rename replaces the link, not its target
            store.write(path, committed)
            finding.repaired, finding.action = True, "restored the committed version"
        return finding
    if committed_sha == object_id(b"blob", raw):
        return Finding("index-drift", rel, DRIFT, *reset_index(ws, rel, repair))
    verdict, message = as_transition(rel, raw, committed)
    finding = Finding("uncommitted", rel, verdict)
    if not repair:
        return finding
    if message is not None:
        with ws.repo_lock():  # the commit step, serialized like every other
            sha = repo.commit({rel: raw}, message, expect={rel: committed_sha})
        finding.repaired, finding.action = True, f"committed as {(sha or '')[:8]}"
    else:
        _keep_lost(ws, rel, raw)
        if committed is not None:
            store.write(path, committed)
            finding.action = (
                "restored the committed version (the file was kept in .git/hystate-lost/)"
            )
        else:
            path.unlink()
            finding.action = "removed (kept in .git/hystate-lost/)"
        finding.repaired = True
    return finding


def as_transition(rel: str, raw: bytes, committed: bytes | None) -> tuple[str, str | None]:
    """(what the file is, commit message) — no message when it is not a legal transition."""
    doc, problems = parse_content(raw, rel)
    if problems or not isinstance(doc, dict):
        return (
            "uncommitted and unreadable: " + (problems[0].message if problems else "not a mapping"),
            None,
        )
    problems = episode_problems(doc, rel, expect_id=Path(rel).stem)
    if problems:
        return f"uncommitted and invalid: {problems[0].path}: {problems[0].message}", None
    new = EpisodeState(doc)
    if committed is None:
        if new.stage is S.DISCOVERED and len(new.history) == 1:
            return "uncommitted new episode", audit.discover_message(
                [new.episode_id], None, new.history[0]["by"]
            )
        return "uncommitted new file that is not a fresh discovery", None
    old = EpisodeState(yamlio.load(committed))
    if new.history[: len(old.history)] != old.history or len(new.history) != len(old.history) + 1:
        return "uncommitted change that is not one transition", None
    entry = new.history[-1]
    if entry["from"] != old.stage.value or not legal_move(old.stage, old.failed_stage, new.stage):
        return f"uncommitted illegal move {old.stage.value} -> {new.stage.value}", None
    body = doc["status_message"]
    if new.stage is S.FAILED and new.error_history:
        body = new.error_history[-1]["error"]
    return (
        f"uncommitted transition {old.stage.value} -> {new.stage.value}",
        audit.transition_message(
            new.episode_id, old.stage.value, new.stage.value, entry["by"], body
        ),
    )


def _keep_lost(ws: Workspace, rel: str, raw: bytes) -> None:
    lost = ws.repo.git_dir / "hystate-lost"
    lost.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    # named by the content too: two versions kept in one second never overwrite each other
    write_atomic(
        lost / f"{stamp}-{object_id(b'blob', raw).hex()[:10]}-{rel.replace('/', '_')}", raw
    )
