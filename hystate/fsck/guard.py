"""The guard against a person's plain ``git commit`` reverting transitions.

``git commit`` reads the index before it takes ``index.lock``. Next to running workers, a
transition can land in between: the person's commit then writes its stale copy of the index
(an episode's entry back to an older blob), fails to move HEAD, and the person's next commit
records the stale entry: the transition is reverted. Three defences, each reading only what it
needs:

- ``staged_regressions``: the index entries of episode files that hold an *older state* than
  HEAD (``hystate validate --staged``, run by the pre-commit hook ``hystate init`` installs;
  ``fsck --repair`` sets those entries back to HEAD);
- ``reverts``: commits made without hystate that set an episode file to an older state (the
  hook bypassed or not installed); ``fsck --repair`` re-applies the lost transitions.

"Older state" is decided on the file's own ``history``: the other version's history is a strict
prefix of HEAD's, or it lacks HEAD's last transition.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from hystate.core import yamlio
from hystate.core.errors import LockBusy
from hystate.core.locks import lock_status
from hystate.core.paths import NotRegularFile, read_bytes
from hystate.fsck.findings import Finding
from hystate.git import audit, staged

if TYPE_CHECKING:
    from hystate.engine.workspace import Workspace
MARKER = "Hystate-"  # every commit hystate makes carries trailers starting with this
REAPPLIER = "hystate-fsck"


@dataclass(frozen=True)
class Regression:
    """An episode file whose ``version`` is older than ``current``."""

    path: str
    current_stage: str
    older_stage: str
    behind: int  # transitions of ``current`` the older version lacks
    strict_prefix: bool  # the older history is exactly the start of the current one

    def describe(self, what: str) -> str:
        lost = f"{self.behind} transition{'s' if self.behind != 1 else ''}"
        return (
            f"{what} is an older state than HEAD ({self.older_stage}; HEAD has "
            f"{self.current_stage}): committing it would revert {lost}"
        )


def regression(path: str, current: bytes, other: bytes) -> Regression | None:
    """``other`` as a regression of ``current`` (HEAD's version), or None when it is not one
    (newer, equal, diverged only in other fields, or not an episode file that parses)."""
    if current == other:
        return None
    new, old = _history(current), _history(other)
    if not new or old is None:
        return None
    prefix = len(old) < len(new) and new[: len(old)] == old
    if not prefix and new[-1] in old:
        return None
    behind = sum(1 for entry in new if entry not in old)
    return Regression(path, _stage(current), _stage(other), behind, prefix)


def staged_regressions(ws: Workspace) -> list[Regression]:
    """Index entries of episode files holding an older state than HEAD."""
    repo = ws.repo
    changes = [
        c
        for c in staged.staged_changes(repo, ws.rel_state_dir)
        if c.old and c.new and c.path.endswith(".yaml")
    ]
    blobs = staged.read_blobs(repo, [s for c in changes for s in (c.old, c.new) if s])
    found = []
    for change in changes:
        assert change.old and change.new
        found_one = regression(change.path, blobs[change.old], blobs[change.new])
        if found_one is not None:
            found.append(found_one)
    return found


def staged_in_transition(ws: Workspace) -> list[tuple[str, str]]:
    """(path, holder) of staged episode files whose episode a live process holds the lock of:
    a transition written and waiting for the repository lock. A person's ``git commit -a``
    would record it without hystate's trailers (and the transition would then find nothing to
    commit): the pre-commit hook refuses such a commit instead."""
    repo = ws.repo
    found = []
    for change in staged.staged_changes(repo, ws.rel_state_dir):
        if not change.path.endswith(".yaml") or change.new is None:
            continue
        lock = ws.locks_dir / f"{PurePosixPath(change.path).stem}.lock"
        if not lock.is_file():
            continue
        owner, stale = lock_status(lock)
        if not stale:
            found.append((change.path, owner.describe() if owner else "a process starting up"))
    return found


@dataclass(frozen=True)
class Revert:
    """A commit made without hystate that put an episode file back to an older state."""

    commit: str
    subject: str
    path: str
    before: str  # blob sha (hex) the file had before that commit
    after: str  # blob sha it set
    regression: Regression

    def describe(self) -> str:
        gone = self.regression
        lost = f"{gone.behind} transition{'s' if gone.behind != 1 else ''}"
        return (
            f"commit {self.commit[:8]} ({self.subject[:60]!r}), made without hystate, put it back "
            f"to an older state ({gone.older_stage}; it was {gone.current_stage}): {lost} reverted"
        )


def reverts(ws: Workspace) -> list[Revert]:
    """Transitions reverted by a commit without hystate's trailers and still missing in HEAD,
    newest revert first (at most one per file: the one HEAD still shows)."""
    repo = ws.repo
    commits = staged.trailerless_commits(repo, MARKER)
    changes = staged.commit_changes(repo, commits, ws.rel_state_dir)
    candidates = [
        (sha, c)
        for sha in commits
        for c in changes.get(sha, [])
        if c.old and c.new and c.path.endswith(".yaml")
    ]
    if not candidates:
        return []
    head_sha = {c.path: repo.head_blob(c.path) for _, c in candidates}
    blobs = staged.read_blobs(repo, [s for _, c in candidates for s in (c.old, c.new) if s])
    found: dict[str, Revert] = {}
    for sha, change in candidates:
        assert change.old and change.new
        if change.path in found:
            continue
        gone = regression(change.path, blobs[change.old], blobs[change.new])
        if gone is None or not gone.strict_prefix:
            continue
        head = head_sha[change.path]
        if head is None or head.hex() != change.new:
            continue  # changed since (re-applied already, or moved on): not still reverted
        subject = repo.git("log", "-1", "--format=%s", sha).strip()
        found[change.path] = Revert(sha, subject, change.path, change.old, change.new, gone)
    return list(found.values())


def reapply(ws: Workspace, revert: Revert) -> tuple[bool, str]:
    """Re-apply the transitions ``revert`` lost: commit the file as it was before it.
    (done, what happened). The episode's lock keeps workers off it meanwhile; the work tree
    must hold the version before the revert (as the workers left it) or the reverted one."""
    repo = ws.repo
    episode_id = PurePosixPath(revert.path).stem
    with ws.episode_lock(episode_id, timeout=2, mend=False):
        head = repo.head_blob(revert.path)
        if head is None or head.hex() != revert.after:
            return False, "changed meanwhile; left alone"
        blobs = staged.read_blobs(repo, [revert.before, revert.after])
        before, after = blobs[revert.before], blobs[revert.after]
        path = repo.root / revert.path
        current = _read_plain(path)
        if current not in (before, after):
            return False, (
                "not re-applied: the work tree holds a third version; commit or discard it, "
                "then run `hystate fsck --repair` again"
            )
        with ws.repo_lock():
            if current != before:
                ws.store.write(path, before)
            try:
                sha = repo.commit(
                    {revert.path: before},
                    reapply_message(episode_id, revert),
                    expect={revert.path: head},
                )
            except BaseException:
                if current is not None and repo.head_blob(revert.path) == head:
                    ws.store.write(path, current)
                raise
    return True, f"re-applied in {(sha or '')[:8]}"


def reset_staged(ws: Workspace) -> list[Regression]:
    """Set index entries holding an older state than HEAD back to HEAD's, under the repo lock
    (so no transition commits meanwhile); the entries reset."""
    with ws.repo_lock():
        found = staged_regressions(ws)
        staged.reset_index_entries(ws.repo, [r.path for r in found], wait=ws.config.lock_timeout)
    return found


def reapply_message(episode_id: str, revert: Revert) -> str:
    gone = revert.regression
    return audit.reapply_message(
        episode_id,
        gone.older_stage,
        gone.current_stage,
        behind=gone.behind,
        commit=revert.commit,
        subject=revert.subject,
        worker=REAPPLIER,
    )


def _history(raw: bytes) -> list[Any] | None:
    try:
        doc = yamlio.load(raw)
    except yamlio.YAMLError:
        return None
    history = doc.get("history") if isinstance(doc, dict) else None
    return history if isinstance(history, list) else None


def _stage(raw: bytes) -> str:
    doc = yamlio.load(raw)
    return str(doc.get("stage")) if isinstance(doc, dict) else "?"


# -- fsck's part ---------------------------------------------------------------------------


def fsck_reverts(ws: Workspace, repair: bool) -> list[Finding]:
    """fsck: transitions reverted by a commit made without hystate; re-applied with repair."""
    found = []
    for revert in reverts(ws):
        finding = Finding("reverted", revert.path, revert.describe())
        if repair:
            try:
                finding.repaired, finding.action = reapply(ws, revert)
            except LockBusy:
                finding.action = "not repaired: the episode is locked by a live process"
        found.append(finding)
    return found


def fsck_staged(ws: Workspace, repair: bool) -> list[Finding]:
    """fsck: index entries holding an older state than HEAD (what a person's failed `git
    commit` next to running workers leaves, and their next commit would record); set back to
    HEAD's with repair."""
    found = staged_regressions(ws)
    done = {r.path for r in reset_staged(ws)} if repair and found else set()
    findings = []
    for r in found:
        finding = Finding("index-drift", r.path, r.describe("git's index entry"))
        if r.path in done:
            finding.repaired, finding.action = True, "index entry set back to HEAD"
        findings.append(finding)
    return findings


def _read_plain(path: Path) -> bytes | None:
    """The work-tree file's bytes; None when it is missing or not a plain file (a symlink is
    never read through)."""
    try:
        return read_bytes(path)
    except (FileNotFoundError, NotRegularFile):
        return None
