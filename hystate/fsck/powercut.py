"""fsck: what a power cut leaves in git, mended without a person.

A power cut can bring the newest loose objects back empty while the branch (renamed over its
old value) names them: every command then fails on a commit that cannot be read. The episode
files are fsynced before each commit, so they still hold every acknowledged transition. The
repair (``hystate.git.damage`` finds the damage): the broken object files are set aside (kept
under ``.git/hystate-lost/objects/``), the branch goes back to the newest commit below which
everything is whole, the index entries of the state folder follow it, and each episode file
ahead of that commit is committed again: one commit per episode, its trailers from the stage
the branch has to the stage the file has, the body naming every transition re-applied. What is
not a continuation of the committed history is left to the ``uncommitted`` check.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hystate.core import yamlio
from hystate.core.errors import GitError, LockBusy
from hystate.core.model import EpisodeState, ProcessingStage
from hystate.core.paths import NotRegularFile, read_bytes
from hystate.core.rules import legal_move
from hystate.core.schema import episode_problems
from hystate.core.store import is_episode_path, parse_content
from hystate.fsck.findings import Finding
from hystate.git import audit, damage

if TYPE_CHECKING:
    from hystate.engine.workspace import Workspace

S = ProcessingStage


def power_cut(ws: Workspace, repair: bool) -> list[Finding]:
    return _objects(ws, repair) + _index(ws, repair)


def _index(ws: Workspace, repair: bool) -> list[Finding]:
    """git's index torn by a power cut: set aside and made anew from HEAD."""
    repo = ws.repo
    if not damage.index_torn(repo):
        return []
    finding = Finding("power-cut", ".git/index", "git's index is empty or torn (a power cut)")
    if repair:
        with ws.repo_lock():
            kept = damage.rebuild_index(repo)
        finding.repaired = True
        finding.action = f"made anew from HEAD (the torn one kept as {kept.relative_to(repo.root)})"
    return [finding]


def _objects(ws: Workspace, repair: bool) -> list[Finding]:
    repo = ws.repo
    found = damage.damage(repo)
    if not found.found:
        return []
    findings = []
    files = Finding(
        "power-cut",
        ".git/objects",
        f"{len(found.broken_files)} empty or torn git objects (a power cut)",
    )
    if found.intact is None:
        files.message += "; no whole commit found on the branch: restore it from a clone"
        return [files]
    moved = found.head != found.intact
    named = found.head[:12] if found.head else "nothing (its file is torn)"
    branch = Finding(
        "power-cut",
        found.ref or "HEAD",
        f"names {named}, which is not whole; the last whole commit is {found.intact[:12]}",
    )
    objects = [files] if found.broken_files else []  # none: only the branch's file was torn
    if not repair:
        return [*objects, *([branch] if moved else [])]
    if found.broken_files:
        lost = damage.set_aside(repo, found.broken_files)
        files.repaired, files.action = True, f"set aside in {lost.relative_to(repo.root)}"
    findings += objects
    if moved:
        with ws.repo_lock():
            damage.reset_branch(
                repo,
                found.ref,
                found.head,
                found.intact,
                "hystate fsck: back to the last whole commit",
            )
            damage.reset_index(repo, found.intact, ws.rel_state_dir)
        branch.repaired, branch.action = True, f"back on {found.intact[:12]}"
        findings.append(branch)
    findings += reapply(ws)
    return findings


def reapply(ws: Workspace) -> list[Finding]:
    """Commit again each episode file that continues the committed history by one or more
    transitions (the power cut took their commits)."""
    repo, found = ws.repo, []
    rel_dir = ws.rel_state_dir
    prefix = "" if rel_dir == "." else rel_dir + "/"
    for rel in repo.dirty_paths(rel_dir):
        if not is_episode_path(rel.removeprefix(prefix)):
            continue
        path = repo.root / rel
        try:
            with ws.episode_lock(path.stem, timeout=2, mend=False):
                committed_sha = repo.head_blob(rel)
                committed = repo.objects.read(committed_sha)[1] if committed_sha else None
                raw = read_bytes(path)
                message = continuation(rel, raw, committed)
                if message is None:
                    continue  # not ours to judge here: the uncommitted check looks at it
                with ws.repo_lock():
                    sha = repo.commit({rel: raw}, message)
        except (LockBusy, OSError, NotRegularFile, GitError):
            continue
        found.append(
            Finding(
                "power-cut",
                rel,
                "transitions whose commit a power cut took",
                repaired=True,
                action=f"re-applied as {(sha or '')[:8]}",
            )
        )
    return found


def continuation(rel: str, raw: bytes, committed: bytes | None) -> str | None:
    """The commit message re-applying ``raw`` over ``committed`` when its history continues
    the committed one by legal moves, else None."""
    doc, problems = parse_content(raw, rel)
    if problems or not isinstance(doc, dict) or episode_problems(doc, rel):
        return None
    new = EpisodeState(doc)
    if committed is None:
        # its discovery's commit was lost too: the file's own first entry is that discovery
        first = new.history[0] if new.history else {}
        if first.get("to") != S.DISCOVERED.value or len(new.history) < 2:
            return None  # a fresh discovery alone is the uncommitted check's to judge
        start = {
            **doc,
            "stage": S.DISCOVERED.value,
            "failed_stage": None,
            "history": new.history[:1],
        }
        old = EpisodeState(start)
    else:
        try:
            old = EpisodeState(yamlio.load(committed))
        except Exception:
            return None
    done = len(old.history)
    extra = new.history[done:]
    if new.history[:done] != old.history or not extra:
        return None
    stage, failed = old.stage, old.failed_stage
    for entry in extra:
        if entry.get("from") != stage.value:
            return None
        try:
            to = S(entry["to"])
        except ValueError:
            return None
        if not legal_move(stage, failed, to):
            return None
        if to is S.FAILED and stage is not S.FAILED:
            failed = stage
        stage = to
    moves = " -> ".join([old.stage.value, *(e["to"] for e in extra)])
    body = (
        f"re-applied after a power cut: {moves} (the commits were lost; the episode file,"
        " synced before each, kept them)"
    )
    return audit.transition_message(
        new.episode_id, old.stage.value, new.stage.value, extra[-1]["by"], body
    )
