"""One transition, from the episode's lock to the commit, and what follows the commit.

Take the episode's lock, read and validate its file, check the file is what HEAD has (a crash or
a hand edit left nothing uncommitted), apply the rules, validate the result, write it
atomically, and commit exactly that file under the repo lock. If the commit fails, the file is
put back, so nothing is half-done. After the commit, outside every lock: the alert, the event
stream, the push to the shared remote, git's housekeeping.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hystate import alerts, audit, events, limits, remote_work
from hystate.errors import GitError
from hystate.model import EpisodeState, ProcessingStage, check_id
from hystate.rules import Change, NoOp, apply_change
from hystate.store import dump, invalid_file
from hystate.validation import episode_problems

if TYPE_CHECKING:
    from hystate.manager import StateManager


@dataclass(frozen=True)
class TransitionResult:
    episode: EpisodeState
    commit: str | None  # None: nothing changed (a no-op)
    from_stage: ProcessingStage | None = None

    @property
    def changed(self) -> bool:
        return self.commit is not None


def run(
    manager: StateManager,
    episode_id: str,
    build: Callable[[EpisodeState], Change],
    lock_timeout: float | None = None,
) -> TransitionResult:
    """``build`` the change from the episode as read under its lock; apply it in one commit.
    A change that changes nothing is no commit (``commit`` None)."""
    check_id(episode_id)
    manager.repo.check_writable()
    if manager.sync_remote and not manager.syncing:
        remote_work.before_transition(manager)  # sync.push: each: judged on the remote's latest
    with manager.episode_lock(episode_id, lock_timeout):
        path = manager.path_of(episode_id)
        raw, episode = manager.store.read(path)
        rel = manager.repo.relpath(path)
        committed = manager.repo.head_blob(rel)
        if committed != manager.repo.blob_id(rel, raw):
            raise GitError(
                f"{rel} has changes that are not committed",
                hint="commit or discard them, or run `hystate fsck --repair`",
            )
        change = build(episode)
        if change.run is None and manager.run_ids:
            change.run = dict(manager.run_ids)
        try:
            doc = apply_change(episode, change)
        except NoOp:
            return TransitionResult(episode, None, episode.stage)
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
            change.run,
        )
        manager.store.write(path, data)
        alert = None
        try:
            with manager.repo_lock():
                limits.check(manager, episode, change)  # the tree holds still under this lock
                sha = manager.repo.commit({rel: data}, message)
                alert = alerts.count(manager, doc, change)
        except BaseException:
            if manager.repo.head_blob(rel) == committed:
                manager.store.write(path, raw)  # the commit did not happen: undo the write
            raise
    # outside every lock: a slow webhook must never hold an episode or the repository
    after_commit(manager, sha, alert)
    return TransitionResult(EpisodeState(doc, rel), sha, episode.stage)


def after_commit(
    manager: StateManager, sha: str | None, alert: dict[str, Any] | None = None
) -> None:
    """After the commit and outside every lock (best effort: none of it undoes the commit)."""
    if sha and not manager.hooks_told:
        manager.hooks_told = True
        hooks = manager.repo.unrun_hooks()
        if hooks:
            manager.notice(
                f"note: git hooks {', '.join(hooks)} are not run for state commits (README:"
                " 'Not run: git hooks'); `git config hystate.hooks skip` acknowledges this"
            )
    if alert is not None:
        alerts.send(manager, alert)
    events.after_commit(manager, sha)  # the event stream; off unless configured
    if sha and manager.sync_remote and not manager.syncing:
        remote_work.after_transition(manager)  # sync.push: each (best effort, never fails this)
    # Plumbing never triggers git's auto-gc; ask for it about once in 256 commits.
    if sha and sha.startswith("00") and manager.config.get("retention.compress_old"):
        manager.repo.git("gc", "--auto", "--quiet", check=False)
