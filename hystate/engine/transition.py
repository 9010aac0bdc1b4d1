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
from typing import TYPE_CHECKING

from hystate.core.errors import GitError
from hystate.core.model import EpisodeState, ProcessingStage, check_id
from hystate.core.rules import Change, NoOp, apply_change
from hystate.core.schema import episode_problems
from hystate.core.store import dump, invalid_file
from hystate.git import audit

if TYPE_CHECKING:
    from hystate.engine.workspace import Workspace


@dataclass(frozen=True)
class TransitionResult:
    episode: EpisodeState
    commit: str | None  # None: nothing changed (a no-op)
    from_stage: ProcessingStage | None = None

    @property
    def changed(self) -> bool:
        return self.commit is not None


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
        )
        ws.store.write(path, data)
        later: list[Callable[[], None]] = []
        try:
            with ws.repo_lock():
                sha = ws.repo.commit({rel: data}, message)
                for subscriber in ws.subscribers.committed:
                    follow = subscriber(ws, doc, change)
                    if follow is not None:
                        later.append(follow)
        except BaseException:
            if ws.repo.head_blob(rel) == committed:
                ws.store.write(path, raw)  # the commit did not happen: undo the write
            raise
    # outside every lock: a slow webhook must never hold an episode or the repository
    after_commit(ws, sha, later)
    return TransitionResult(EpisodeState(doc, rel), sha, episode.stage)


def after_commit(ws: Workspace, sha: str | None, later: Sequence[Callable[[], None]] = ()) -> None:
    """After the commit and outside every lock (best effort: none of it undoes the commit)."""
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
