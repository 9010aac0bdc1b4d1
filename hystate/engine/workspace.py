"""``Workspace``: one state directory of one git repository, as every layer below the facade
receives it: the repository, the episode store, the configuration, the locks, the cache and the
subscribers that run around a commit.

``hystate.manager.StateManager`` (the public API) is a ``Workspace`` with the transitions on top;
nothing here knows it. What happens before and after a commit (the push to a shared remote, the
failure alert, the event stream) is wired in by that top layer as ``Subscribers``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hystate.core.config import Config, last_good, remember_good
from hystate.core.errors import InvalidData
from hystate.core.locks import StateLock
from hystate.core.model import EpisodeState, ProcessingStage, check_id, check_worker
from hystate.core.rules import Change, ErrorRecovery
from hystate.core.runs import check_run_ids
from hystate.core.store import EpisodeStore
from hystate.engine import layout
from hystate.git import GitRepo, audit, default_worker

if TYPE_CHECKING:  # the caches are imported when first asked (a transition needs none)
    from hystate.cache.state_cache import RefreshResult, StateCache

REPO_LOCK = "_repo.lock"  # ids start with a letter or digit, so this never names an episode

# Under the repository lock, right after the commit: returns what to do once every lock is
# released (or None). The failure alert counts here, so two failures never count as one.
Committed = Callable[["Workspace", dict[str, Any], Change], Callable[[], None] | None]


LeaseSource = Callable[["Workspace", str, str, str], dict[str, Any] | None]


@dataclass
class Subscribers:
    """What runs around a transition's commit, in order; each is best effort and none of it
    undoes the commit."""

    # before a transition takes the episode's lock
    before: list[Callable[[Workspace], None]] = field(default_factory=list)
    # under the repository lock, right after a transition's commit
    committed: list[Committed] = field(default_factory=list)
    # whether a ``committed`` subscriber has work for this workspace (then the transition
    # commits under the repository lock itself, not through the group-commit queue)
    serial: list[Callable[[Workspace, Change], bool]] = field(default_factory=list)
    # outside every lock, after every state commit (a transition's or discovery's)
    after: list[Callable[[Workspace, str | None], None]] = field(default_factory=list)
    # outside every lock, after a transition's commit, last
    after_transition: list[Callable[[Workspace, str | None], None]] = field(default_factory=list)
    # where else a lease may have been renewed (another node's published lease table): the
    # renewal of (episode, stage, entered_at) with the latest deadline, or None
    lease_sources: list[LeaseSource] = field(default_factory=list)
    # last, outside every lock: the result as acknowledged (a shared remote's ``sync.push``:
    # on the remote, or told pending); may raise when the transition was not kept
    acknowledge: list[Callable[[Workspace, Any], Any]] = field(default_factory=list)
    # after a sync journaled transitions of this node that it had to drop
    dropped: list[Callable[[Workspace], None]] = field(default_factory=list)
    # an episode's lock was just taken from a process that is gone, before anything reads the
    # file: what that process left (a write it never committed) is mended; a row saying how
    orphaned: list[Callable[[Workspace, str], dict[str, Any] | None]] = field(default_factory=list)


class EpisodeLock(StateLock):
    """An episode's lock. Taken from a process that died holding it, what that process left is
    mended first (``Subscribers.orphaned``), so no reader builds on, and no sync trips over, a
    write nobody committed; ``mended`` says what was done."""

    def __init__(self, path: Path, timeout: float, on_stale: Callable[[], list[Any]]) -> None:
        super().__init__(path, timeout=timeout)
        self._on_stale = on_stale
        self.mended: list[dict[str, Any]] = []

    def acquire(self) -> None:
        super().acquire()
        if self.broke_stale:
            try:
                self.mended = [row for row in self._on_stale() if row is not None]
            except BaseException:
                self.hand_back()  # not mended (a full disk): the next taker tries again
                raise


class Workspace:
    """The state of every episode in one state directory of one git repository.

    Found from the current directory (like git) and ``hystate.yaml``'s state directory, or the
    directory named (``Workspace("path/to/processed")``).
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
        last_good_config: bool = False,
    ) -> None:
        here = Path(os.path.realpath(cwd if cwd is not None else Path.cwd()))
        if state_dir is None:
            state_dir = os.environ.get("HYSTATE_STATE_DIR") or None
        self.repo = layout.find_repo(here, state_dir)
        # A config that does not load: ``last_good_config`` (``sync``, so that the fix can
        # arrive) works on the last copy that loaded and says so in ``config_problem``.
        self.config_problem: str | None = None
        self.config = config or self._load_config(last_good_config)
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
        # Several machines (hystate.cluster): the remote claims go through, if any.
        self.sync_remote: str | None = self.config.get("sync.remote")
        self.syncing = False  # a sync is replaying: no syncing around its own transitions
        # Where to tell a person something that is not an error (the CLI: stderr).
        self.notice: Callable[[str], None] = lambda message: None
        # A long-lived process checks the tree before every query; a command that reads once
        # (the CLI) may check it once.
        self.refresh_once = False
        self._refreshed = False
        self.hooks_told = False  # unrun git hooks are named once per workspace
        self.subscribers = Subscribers()
        # An orchestrator's run ids (hystate.integrations): every transition made through this
        # workspace carries them as commit trailers and in its history entry.
        self._run_ids: dict[str, str] = {}
        # The lease tokens this workspace was issued (hystate.engine.fencing), presented for
        # it when the caller gives none: the process that claimed an episode holds its lease.
        self.tokens: dict[str, str] = {}
        # Transitions made here and not yet on the shared remote, (id, from, to, worker), and
        # how far the node's journal of dropped ones was read (hystate.cluster.acks); the CLI
        # prints a drop where the API raises it.
        self.pending: set[tuple[str, str, str, str]] = set()
        self.drops_read: int | None = None
        self.raise_drops = True
        self.drops_by_name = False  # the CLI, for a worker named by --worker/$HYSTATE_WORKER

    def token(self, episode_id: str, given: str | None) -> str | None:
        """The lease token to present for ``episode_id``: ``given``, else the one issued here."""
        from hystate.engine.fencing import check_token

        return check_token(given) or self.tokens.get(episode_id)

    def _load_config(self, fall_back: bool) -> Config:
        try:
            config = Config.load(self.repo.root)
        except InvalidData as exc:
            if not fall_back:
                exc.hint = exc.hint or (
                    "fix it; a fix pushed to the shared remote arrives with `hystate sync`,"
                    " which works on the last good copy meanwhile"
                )
                raise
            good = last_good(self.repo.git_dir)
            self.config_problem = (
                f"{exc.message}; working on the "
                + ("last good copy" if good else "default settings")
                + " until a fix arrives"
            )
            return good or Config.defaults()
        remember_good(self.repo.git_dir, self.repo.root)
        return config

    @property
    def run_ids(self) -> dict[str, str]:
        return self._run_ids

    @run_ids.setter
    def run_ids(self, run: Mapping[str, Any] | None) -> None:
        self._run_ids = check_run_ids(dict(run) if run else None) or {}

    # -- locks -----------------------------------------------------------------------------

    def episode_lock(
        self, episode_id: str, timeout: float | None = None, *, mend: bool = True
    ) -> EpisodeLock:
        """``mend``: taken from a dead process, what it left is mended (``EpisodeLock``); fsck
        passes False, it judges such files itself."""
        wait = self.config.lock_timeout if timeout is None else timeout
        menders = self.subscribers.orphaned if mend else []
        return EpisodeLock(
            self.locks_dir / f"{episode_id}.lock",
            wait,
            lambda: [m(self, episode_id) for m in menders],
        )

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

    def history(self, episode_id: str) -> list[dict[str, Any]]:
        """The file's own history joined with the commits that made it (``audit.join``)."""
        path = self.path_of(check_id(episode_id))
        episode = self.store.read(path)[1]
        return audit.join(episode.history, audit.file_commits(self.repo, self.repo.relpath(path)))

    # -- the cache -------------------------------------------------------------------------

    @property
    def cache(self) -> StateCache:
        if self._cache is None:
            from hystate.cache.state_cache import StateCache

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
        from hystate.cache import queries

        return queries.episodes(self._fresh(), stages, years, limit)

    def stream_episodes(
        self, stages: Iterable[str | ProcessingStage] = (), years: Iterable[str] = ()
    ) -> Iterator[EpisodeState]:
        """``list_episodes`` one at a time, from one snapshot of the cache; read it to the end
        (or close it) before asking the cache anything else in this thread."""
        from hystate.cache import queries

        return queries.iter_episodes(self._fresh(), stages, years)

    def get_episodes_by_stage(self, stage: str | ProcessingStage) -> list[EpisodeState]:
        return self.list_episodes([stage])

    def count_all_episodes(self) -> int:
        from hystate.cache import queries

        return queries.count(self._fresh())

    def count_by_stage(self) -> dict[str, int]:
        from hystate.cache import queries

        return queries.count_by_stage(self._fresh())

    def events(
        self, *, since: str | None = None, until: str | None = None, episode_id: str | None = None
    ) -> list[dict[str, Any]]:
        """The processing log: one event per history entry, oldest first."""
        from hystate.cache import queries

        return queries.events(self._fresh(), since=since, until=until, episode_id=episode_id)
