"""``StateManager``: the Python API the pipeline workers call, and what the CLI drives.

Every transition is ``hystate.transition.run``: one commit of one file, or nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from hystate import (
    audit,
    discovery,
    integrity,
    layout,
    leases,
    limits,
    queries,
    remote_work,
    transition,
    work,
)
from hystate.cache import RefreshResult, StateCache
from hystate.config import Config
from hystate.discover import Record
from hystate.discovery import DiscoverResult
from hystate.errors import InvalidData, Problem
from hystate.gitrepo import GitRepo, default_worker
from hystate.leases import Lease
from hystate.locks import StateLock
from hystate.model import (
    EpisodeState,
    ProcessingStage,
    check_id,
    check_run_ids,
    check_worker,
    now_utc,
)
from hystate.rules import Change, ErrorRecovery, check_message, field_path
from hystate.seed_api import seed_update
from hystate.store import EpisodeStore
from hystate.transition import TransitionResult
from hystate.validation import check_value
from hystate.work import RetryOutcome

S = ProcessingStage
REPO_LOCK = "_repo.lock"  # ids start with a letter or digit, so this never names an episode


class StateManager:
    """The state of every episode in one state directory of one git repository.

    ``StateManager()`` finds the repository from the current directory (like git) and the state
    directory from ``hystate.yaml``; ``StateManager("path/to/processed")`` names it directly.
    """

    state_dir: Path
    repo: GitRepo
    config: Config
    worker: str

    def __init__(
        self,
        state_dir: str | os.PathLike[str] | None = None,
        *,
        cwd: str | os.PathLike[str] | None = None,
        config: Config | None = None,
        worker: str | None = None,
    ) -> None:
        here = Path(os.path.realpath(cwd if cwd is not None else Path.cwd()))
        if state_dir is None:
            state_dir = os.environ.get("HYSTATE_STATE_DIR") or None
        self.repo = layout.find_repo(here, state_dir)
        self.config = config or Config.load(self.repo.root)
        self.state_dir = layout.confined_state_dir(self, here, state_dir)
        self.store = EpisodeStore(self.state_dir, self.repo.root)
        named = worker or os.environ.get("HYSTATE_WORKER") or None
        self.worker = check_worker(named) if named else default_worker()
        self.worker_named = named is not None
        self.recovery = ErrorRecovery(
            self.config.get("recovery.max_retries"), self.config.get("recovery.retry_delay")
        )
        self.repo.lock_wait = self.config.lock_timeout
        self._cache: StateCache | None = None
        # Several machines (hystate.sync): the remote claims go through, if any.
        self.sync_remote: str | None = self.config.get("sync.remote")
        self.syncing = False  # a sync is replaying: no syncing around its own transitions
        # Where to tell a person something that is not an error (the CLI: stderr).
        self.notice: Callable[[str], None] = lambda message: None
        # A long-lived process checks the tree before every query; a command that reads once
        # (the CLI) may check it once.
        self.refresh_once = False
        self._refreshed = False
        self.hooks_told = False  # unrun git hooks are named once per manager
        # An orchestrator's run ids (hystate.integrations): every transition this manager makes
        # carries them as commit trailers and in the history entry (``check_run_ids``).
        self._run_ids: dict[str, str] = {}

    @property
    def run_ids(self) -> dict[str, str]:
        return self._run_ids

    @run_ids.setter
    def run_ids(self, run: Mapping[str, Any] | None) -> None:
        self._run_ids = check_run_ids(dict(run) if run else None) or {}

    # -- locks -----------------------------------------------------------------------------

    def episode_lock(self, episode_id: str, timeout: float | None = None) -> StateLock:
        wait = self.config.lock_timeout if timeout is None else timeout
        return StateLock(self.locks_dir / f"{episode_id}.lock", timeout=wait)

    def repo_lock(self) -> StateLock:
        return StateLock(self.locks_dir / REPO_LOCK, timeout=self.config.lock_timeout)

    @property
    def locks_dir(self) -> Path:
        """``<state_dir>/.locks``; refused when it is a symlink or a file (a branch can commit
        one pointing anywhere), so no lock is ever made, read or removed through it."""
        return layout.locks_dir(self)

    # -- setting up ------------------------------------------------------------------------

    def ensure_layout(self) -> str | None:
        """Create the state directory and its .gitignore and .gitattributes (committed), and
        set the repository options hystate relies on. Safe to repeat."""
        return layout.ensure_layout(self)

    @property
    def rel_state_dir(self) -> str:
        return self.state_dir.relative_to(self.repo.root).as_posix() or "."

    # -- reading ---------------------------------------------------------------------------

    def path_of(self, episode_id: str) -> Path:
        path = self.store.find(episode_id)
        if path is None:
            raise layout.not_found(self, episode_id)
        return path

    def episode(self, episode_id: str) -> EpisodeState:
        """The episode read from its file; UnknownEpisode (exit 4) when there is none."""
        return self.store.read(self.path_of(episode_id))[1]

    def get_episode_state(self, episode_id: str) -> EpisodeState | None:
        """The seed's lookup: the episode, or None when there is no such episode."""
        return self.episode(episode_id) if self.store.find(check_id(episode_id)) else None

    def iter_episodes(self) -> Iterator[EpisodeState]:
        """Every episode read from its file, validated; a broken file raises InvalidData."""
        for path in self.store.iter_paths():
            yield self.store.read(path)[1]

    # -- the cache -------------------------------------------------------------------------

    @property
    def cache(self) -> StateCache:
        if self._cache is None:
            self._cache = StateCache(self.store, self.repo, str(self.config.get("database_file")))
        return self._cache

    def refresh(
        self, *, force: bool = False, progress: Callable[[int, int], None] | None = None
    ) -> RefreshResult:
        """Bring state.db and index.json in line with the tree (re-reading only what changed)."""
        return self.cache.refresh(force=force, progress=progress)

    def _fresh(self) -> StateCache:
        if not (self.refresh_once and self._refreshed):
            self.refresh()
            self._refreshed = True
        self.cache.check_problems()
        return self.cache

    def list_episodes(
        self,
        stages: Iterable[str | ProcessingStage] = (),
        years: Iterable[str] = (),
        limit: int | None = None,
    ) -> list[EpisodeState]:
        """Episodes (oldest air date first), optionally only some stages and years, at most
        ``limit``."""
        return queries.episodes(self._fresh(), stages, years, limit)

    def stream_episodes(
        self, stages: Iterable[str | ProcessingStage] = (), years: Iterable[str] = ()
    ) -> Iterator[EpisodeState]:
        """``list_episodes`` one at a time, from one snapshot of the cache; read it to the end
        (or close it) before asking the cache anything else in this thread."""
        return queries.iter_episodes(self._fresh(), stages, years)

    def get_episodes_by_stage(self, stage: str | ProcessingStage) -> list[EpisodeState]:
        return self.list_episodes([stage])

    def count_all_episodes(self) -> int:
        return queries.count(self._fresh())

    def count_by_stage(self) -> dict[str, int]:
        return queries.count_by_stage(self._fresh())

    def get_next_for_processing(
        self, stage: str | ProcessingStage, limit: int = 10
    ) -> list[EpisodeState]:
        """Episodes ready to enter ``stage`` (oldest air date first): those in a stage that
        leads to it, failed ones whose retry of ``stage`` is due, and for ``published`` only
        those whose scheduled time has come."""
        return work.ready(self, stage, limit)

    def claim_next(
        self, stage: str | ProcessingStage, limit: int = 1, *, worker: str | None = None
    ) -> list[TransitionResult]:
        """Move up to ``limit`` ready episodes into ``stage`` for ``worker``, one commit each;
        two workers never get the same episode. With ``recovery.auto_resume``, stuck episodes
        are first marked lost and exhausted ones skipped (see ``hystate.work``)."""
        if self.sync_remote:
            return remote_work.claim(self, stage, limit, worker)
        return work.claim(self, stage, limit, worker)

    def resume(self) -> list[RetryOutcome]:
        """What a claim does first with ``recovery.auto_resume``: stuck episodes become failed
        ("worker lost"), failed ones out of attempts become skipped."""
        return work.resume(self)

    def limit_room(self, stage: str | ProcessingStage) -> limits.Room | None:
        """The stage's ``limits`` and how much of them is used now (None: it has none)."""
        return limits.room(self, stage)

    # -- leases (no commits: see hystate.leases) -------------------------------------------

    def heartbeat(
        self, episode_id: str, *, seconds: float | None = None, register_pid: bool = False
    ) -> Lease:
        """Renew the lease on ``episode_id``'s active stage (default length: the stage
        timeout). ``register_pid``: judge this process's death as the worker's."""
        worker = self.worker if self.worker_named else None
        return leases.renew(
            self, episode_id, seconds=seconds, worker=worker, register_pid=register_pid
        )

    def lease(self, episode_id: str, *, seconds: float | None = None) -> leases.LeaseKeeper:
        """``with manager.lease(id):`` renews the lease in the background while you work."""
        worker = self.worker if self.worker_named else None
        return leases.LeaseKeeper(self, episode_id, seconds=seconds, worker=worker)

    def events(
        self, *, since: str | None = None, until: str | None = None, episode_id: str | None = None
    ) -> list[dict[str, Any]]:
        """The processing log: one event per history entry, oldest first."""
        return queries.events(self._fresh(), since=since, until=until, episode_id=episode_id)

    def history(self, episode_id: str) -> list[dict[str, Any]]:
        """The file's own history joined with the commits that made it (``audit.join``)."""
        path = self.path_of(check_id(episode_id))
        episode = self.store.read(path)[1]
        return audit.join(episode.history, audit.file_commits(self.repo, self.repo.relpath(path)))

    def validate(self) -> list[Problem]:
        """Every problem of every episode file (never stops at the first): ``integrity``."""
        return integrity.validate(self)

    def tracked_caches(self) -> list[Problem]:
        """Cache-named entries of the state folder committed to git (``integrity``)."""
        return integrity.tracked_caches(self)

    # -- transitions -----------------------------------------------------------------------

    def update_state(
        self,
        episode_id: str,
        stage: str | ProcessingStage,
        *,
        message: str | None = None,
        fields: Mapping[str, Any] | None = None,
        worker: str | None = None,
        force: bool = False,
        lock_timeout: float | None = None,
        **seed_fields: Any,
    ) -> TransitionResult:
        """Move an episode to ``stage`` (one commit), or do nothing if it already is there
        with the same data. ``fields`` sets dotted keys (``{"files.audio_file": "a.mp3"}``);
        the seed's names work too (``audio_file=Path(...)``, ``youtube_video_id=...``,
        ``status_message=...``, ``error=...``: see ``hystate.seed_api``). ``force`` lets a
        retry go before its backoff delay has passed."""
        if seed_fields:
            return seed_update(
                self, episode_id, stage, seed_fields, message=message, fields=fields,
                worker=worker, force=force, lock_timeout=lock_timeout,
            )  # fmt: skip
        target = S.parse(stage)
        message = check_message(message)
        by = check_worker(worker) if worker else self.worker

        def build(episode: EpisodeState) -> Change:
            if episode.stage is S.FAILED and target.is_active:
                work.check_retry(self, episode, target, force)
            paths = [
                (field_path(k, episode.data), check_value(k, v)) for k, v in (fields or {}).items()
            ]
            return Change(target, now_utc(), by, worker=by, message=message, fields=paths)

        return self._transition(episode_id, build, lock_timeout)

    def fail(
        self,
        episode_id: str,
        error: str,
        *,
        traceback: str | None = None,
        worker: str | None = None,
    ) -> TransitionResult:
        """Record a failure of the active stage the episode is in."""
        text = check_message(error, "error")
        if not text:
            raise InvalidData("--error must not be empty")
        by = check_worker(worker) if worker else self.worker
        trace = traceback if traceback and traceback.strip() else None
        return self._transition(
            episode_id,
            lambda _: Change(S.FAILED, now_utc(), by, error=text, traceback=trace),
        )

    def skip(self, episode_id: str, reason: str, *, worker: str | None = None) -> TransitionResult:
        text = check_message(reason, "reason")
        if not text:
            raise InvalidData("--reason must not be empty")
        by = check_worker(worker) if worker else self.worker
        return self._transition(
            episode_id, lambda _: Change(S.SKIPPED, now_utc(), by, message=text)
        )

    def retry(
        self,
        episode_ids: Iterable[str] | None = None,
        *,
        now: bool = False,
        dry_run: bool = False,
        to: str | ProcessingStage | None = None,
        worker: str | None = None,
    ) -> list[RetryOutcome]:
        """Send failed episodes back to the stage that failed, or to an earlier active stage
        (``to``), when their delay has passed (``now`` ignores it), for ``worker``; those out
        of attempts go to skipped with the reason."""
        return work.retry(self, episode_ids, now=now, dry_run=dry_run, to=to, worker=worker)

    def _transition(
        self,
        episode_id: str,
        build: Callable[[EpisodeState], Change],
        lock_timeout: float | None = None,
    ) -> TransitionResult:
        return transition.run(self, episode_id, build, lock_timeout)

    # -- discovery -------------------------------------------------------------------------

    def add_episode(
        self, episode_id: str, *, title: str, date: str, archive_identifier: str | None = None
    ) -> DiscoverResult:
        """One new episode (one commit), like a one-record ``discover``."""
        return discovery.add_episode(
            self, episode_id, title=title, date=date, archive_identifier=archive_identifier
        )

    def discover(
        self,
        records: Iterable[Record],
        *,
        source: str | None = None,
        archive_identifier: str | None = None,
    ) -> DiscoverResult:
        """Create a file for every record that has none (one commit); leave the others alone."""
        return discovery.discover(
            self, records, source=source, archive_identifier=archive_identifier
        )
