"""One transition, from the episode's lock to the commit, and what follows the commit.

Take the episode's lock, read and validate its file, check the file is what HEAD has (a crash or
a hand edit left nothing uncommitted), apply the rules, validate the result, write it
atomically, and commit exactly that file under the repo lock. If the commit fails, the file is
put back, so nothing is half-done. Around the commit run the workspace's subscribers (wired in
by the top layer: the push to a shared remote, the failure alert, the event stream), the ones
after it outside every lock; then git's housekeeping.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hystate.core.errors import GitError
from hystate.core.model import EpisodeState, ProcessingStage, check_id
from hystate.core.paths import NotRegularFile, read_bytes
from hystate.core.rules import Change, NoOp, apply_change
from hystate.core.schema import episode_problems
from hystate.core.store import dump, invalid_file
from hystate.engine import fencing, grouping, limits
from hystate.git import audit

if TYPE_CHECKING:
    from hystate.engine.workspace import Workspace


@dataclass(frozen=True)
class TransitionResult:
    episode: EpisodeState
    commit: str | None  # None: nothing changed (a no-op)
    from_stage: ProcessingStage | None = None
    # Not yet on the shared remote, and why (sync.push: batch, or offline); None: acknowledged
    # (on the remote, or there is no remote)
    pending: str | None = None

    @property
    def changed(self) -> bool:
        return self.commit is not None

    @property
    def lease(self) -> str | None:
        """The lease token this move issued (it entered an active stage), else None: present
        it to leave the stage (``hystate.engine.fencing``)."""
        return fencing.token_of(self.episode) if self.changed else None


def run(
    ws: Workspace,
    episode_id: str,
    build: Callable[[EpisodeState], Change],
    lock_timeout: float | None = None,
) -> TransitionResult:
    """``build`` the change from the episode as read under its lock; apply it in one commit.
    A change that changes nothing is no commit (``commit`` None)."""
    check_id(episode_id)
    ws.repo.check_writable()
    for before in ws.subscribers.before:
        before(ws)  # e.g. sync.push: each: the change is judged on the remote's latest
    with ws.episode_lock(episode_id, lock_timeout):
        path = ws.path_of(episode_id)
        raw, episode = ws.store.read(path)
        rel = ws.repo.relpath(path)
        committed = ws.repo.head_blob(rel)
        if committed != ws.repo.blob_id(rel, raw):
            raise GitError(
                f"{rel} has changes that are not committed",
                hint="commit or discard them, or run `hystate fsck --repair`",
            )
        change = build(episode)
        leaving = episode.stage.is_active and change.to is not episode.stage
        held = fencing.holder(episode)
        took = fencing.check(episode, leaving, change.lease, change.take_over)
        if change.run is None and ws.run_ids:
            change.run = dict(ws.run_ids)
        try:
            doc = apply_change(episode, change)
        except NoOp:
            return TransitionResult(episode, None, episode.stage)
        entered = change.to.is_active and change.to is not episode.stage
        under = change.lease if leaving and held is not None and took is None else None
        fencing.stamp(doc, entered, under, took)
        problems = episode_problems(doc, rel, expect_id=episode_id)
        if problems:
            raise invalid_file(
                problems, hint="give the missing or corrected fields with --set FIELD=VALUE"
            )
        data = dump(doc)
        message = audit.transition_message(
            episode_id,
            episode.stage.value,
            change.to.value,
            change.by,
            change.error or change.message,
            lease=doc["history"][-1].get("lease"),
            took_over=took,
            run=change.run,
        )
        ws.store.write(path, data)
        later: list[Callable[[], None]] = []
        ticket = grouping.Ticket()
        try:
            if grouping.eligible(ws, episode, change, rel):
                # nothing to judge under the lock, no subscriber with work under it: committed
                # in a group by whoever holds the lock (hystate.git.group)
                sha = grouping.commit(ws, ticket, rel, data, message, committed)
            else:
                with ws.repo_lock():
                    limits.check(ws, episode, change)  # the tree holds still under this lock
                    sha = ws.repo.commit({rel: data}, message, expect={rel: committed})
                    for subscriber in ws.subscribers.committed:
                        follow = _committed(ws, subscriber, doc, change)
                        if follow is not None:
                            later.append(follow)
        except BaseException:
            # The commit did not happen (HEAD lacks these bytes; its outcome is known): undo the
            # write. Also when HEAD moved on meanwhile (a person's commit put the file back to
            # an older state): the file then holds the version fsck can re-apply, not a third.
            if (
                not ticket.unsettled
                and _holds(path, data)
                and ws.repo.head_blob(rel) != ws.repo.blob_id(rel, data)
            ):
                ws.store.write(path, raw)
            raise
    # outside every lock: a slow webhook must never hold an episode or the repository
    result = TransitionResult(EpisodeState(doc, rel), sha, episode.stage)
    if result.lease is not None:
        ws.tokens[episode_id] = result.lease  # this workspace holds the lease it was issued
    after_commit(ws, sha, later)
    for acknowledge in ws.subscribers.acknowledge:
        result = acknowledge(ws, result)
    return result


def _holds(path: Path, data: bytes) -> bool:
    """Whether the file still holds what this transition wrote (a person's change since is
    never undone)."""
    try:
        return read_bytes(path) == data
    except (OSError, NotRegularFile):
        return False


def _committed(
    ws: Workspace,
    subscriber: Callable[..., Callable[[], None] | None],
    doc: dict[str, Any],
    change: Change,
) -> Callable[[], None] | None:
    """A subscriber run after the commit, under the repo lock (the alert streak): a file it
    cannot write (a full disk) is told, never reported as the transition failing (it is in
    the history)."""
    try:
        return subscriber(ws, doc, change)
    except OSError as exc:
        ws.repo.warnings.append(
            f"after the commit, {exc.filename or 'a file'} could not be written:"
            f" {exc.strerror or exc}"
        )
        return None


def after_commit(ws: Workspace, sha: str | None, later: Sequence[Callable[[], None]] = ()) -> None:
    """After the commit and outside every lock (best effort: none of it undoes the commit)."""
    while ws.repo.warnings:  # what went wrong after HEAD moved: told, never raised
        ws.notice(f"warning: {ws.repo.warnings.pop(0)}")
    if sha and not ws.hooks_told:
        ws.hooks_told = True
        hooks = ws.repo.unrun_hooks()
        if hooks:
            ws.notice(
                f"note: git hooks {', '.join(hooks)} are not run for state commits (README:"
                " 'Not run: git hooks'); `git config hystate.hooks skip` acknowledges this"
            )
    for follow in later:
        follow()
    for after in ws.subscribers.after:
        after(ws, sha)
    for after in ws.subscribers.after_transition:
        after(ws, sha)
    # Plumbing never triggers git's auto-gc; ask for it about once in 256 commits.
    if sha and sha.startswith("00") and ws.config.get("retention.compress_old"):
        ws.repo.git("gc", "--auto", "--quiet", check=False)
