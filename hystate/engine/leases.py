"""Leases: telling a working worker from a lost one, without commits and without guessing pids.

Entering an active stage (downloading, converting, uploading) starts a lease. The committed
transition records who holds it (``worker``) and when it started (the last history entry's
``at``); its length is the stage's ``recovery.stage_timeouts`` entry of the committed
``hystate.yaml``. So every clone, on any host, computes the same first deadline from the tree.

The worker renews the lease while it works: ``hystate heartbeat ID``, ``StateManager.heartbeat``
or the ``StateManager.lease`` context manager (renews from a background thread). A renewal
writes ``<state_dir>/.locks/<id>.lease`` (JSON, atomically, under the episode's lock) and never
commits: ``.locks/`` is ignored by git. The lease file names the stage and the start of the
lease it renews, so a file left from an earlier stage is ignored.

An episode is stuck when its lease has expired (the later of the committed deadline and the
last renewal), or when an API worker registered its own process on this host (``lease`` does,
``heartbeat(register_pid=True)`` does) and that process is gone (pid dead, or reused by another
process). The pid of a CLI's caller is never judged: a pipeline calls hystate through shells and
wrappers that exit while the real work goes on.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from hystate.core.errors import HystateError, IllegalTransition, LockBusy, UsageError
from hystate.core.locks import HOST, pid_alive, process_start
from hystate.core.model import EpisodeState, ProcessingStage, check_id, now_utc, parse_time
from hystate.core.paths import write_atomic
from hystate.core.rules import Change
from hystate.engine import fencing, transition

if TYPE_CHECKING:
    from hystate.engine.workspace import Workspace

S = ProcessingStage
_HOST = HOST  # gethostname(2), without importing socket
SUFFIX = ".lease"


@dataclass(frozen=True)
class Lease:
    """The lease of one episode's current active stage."""

    episode_id: str
    stage: str
    entered_at: str  # start of the lease: the history entry that entered the stage
    worker: str | None
    expires_at: str
    renewed_at: str | None = None  # None: never renewed (the committed deadline holds)
    host: str | None = None  # host, pid and start: only when a worker registered its process
    pid: int | None = None
    start: str | None = None
    token: str | None = None  # the lease token (engine.fencing); None: entered before fencing

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def expired(self, now: datetime) -> bool:
        return now > parse_time(self.expires_at)

    def owner_gone(self) -> bool:
        """True only for a process registered on this host that provably no longer runs."""
        if self.pid is None or self.host != _HOST:
            return False
        if not pid_alive(self.pid):
            return True
        return self.start is not None and process_start(self.pid) not in (None, self.start)

    def stuck_reason(self, now: datetime) -> str | None:
        who = f"worker {self.worker}" if self.worker else "its worker"
        if self.owner_gone():
            return f"{who} (pid {self.pid} on {self.host}) is gone"
        if self.expired(now):
            renewed = f", last renewed {self.renewed_at}" if self.renewed_at else ", never renewed"
            return f"lease of {who} expired at {self.expires_at}{renewed}"
        return None


def lease_path(locks_dir: Path, episode_id: str) -> Path:
    return locks_dir / f"{check_id(episode_id)}{SUFFIX}"


def stage_lease_seconds(ws: Workspace, stage: ProcessingStage) -> float:
    return float(ws.config.get("recovery.stage_timeouts")[stage.value])


def _read_file(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None  # none yet, or torn by a crash: the committed deadline still holds
    return data if isinstance(data, dict) else None


def current_lease(ws: Workspace, episode: EpisodeState) -> Lease | None:
    """The lease of ``episode``'s active stage (None when it is in no active stage): this
    node's renewal or, when later, one another node published (the workspace's
    ``lease_sources``: ``hystate.cluster.lease_refs``)."""
    lease = _local_lease(ws, episode)
    if lease is None or not ws.sync_remote:
        return lease
    found = [
        source(ws, episode.episode_id, lease.stage, lease.entered_at)
        for source in ws.subscribers.lease_sources
    ]
    published = [f for f in found if f is not None]
    other = max(published, key=lambda f: parse_time(str(f["expires_at"])), default=None)
    if other is None or parse_time(str(other["expires_at"])) <= parse_time(lease.expires_at):
        return lease
    renewed = other.get("renewed_at")
    return Lease(
        lease.episode_id,
        lease.stage,
        lease.entered_at,
        lease.worker,
        str(other["expires_at"]),
        f"{renewed} on node {other['node']}" if renewed else None,
        token=lease.token,
    )


def _local_lease(ws: Workspace, episode: EpisodeState) -> Lease | None:
    if not episode.stage.is_active:
        return None
    entered = episode.history[-1]["at"]
    seconds = stage_lease_seconds(ws, episode.stage)
    committed = parse_time(entered) + timedelta(seconds=seconds)
    base = Lease(
        episode.episode_id,
        episode.stage.value,
        entered,
        episode.worker,
        committed.isoformat(timespec="seconds"),
        token=fencing.token_of(episode),
    )
    data = _read_file(lease_path(ws.locks_dir, episode.episode_id))
    if not data or data.get("stage") != base.stage or data.get("entered_at") != entered:
        return base
    try:
        renewed = parse_time(str(data["expires_at"]))
        pid = data.get("pid")
        return Lease(
            base.episode_id,
            base.stage,
            entered,
            base.worker,
            max(renewed, committed).isoformat(timespec="milliseconds"),
            str(data.get("renewed_at")) if data.get("renewed_at") else None,
            str(data["host"]) if data.get("host") else None,
            int(pid) if isinstance(pid, int) and pid > 0 else None,
            str(data["start"]) if data.get("start") else None,
            base.token,
        )
    except (KeyError, TypeError, ValueError):
        return base


def stuck_reason(ws: Workspace, episode: EpisodeState, now: datetime) -> str | None:
    lease = current_lease(ws, episode)
    return None if lease is None else lease.stuck_reason(now)


def renew(
    ws: Workspace,
    episode_id: str,
    *,
    seconds: float | None = None,
    worker: str | None = None,
    register_pid: bool = False,
    token: str | None = None,
) -> Lease:
    """Extend the lease of ``episode_id``'s active stage by ``seconds`` from now (default: the
    stage timeout). ``token`` must be the lease's (``hystate.engine.fencing``); ``worker``, when
    given, must be the one holding it. ``register_pid`` records this process, so its death
    is seen at once on this host. No commit."""
    check_id(episode_id)
    with ws.episode_lock(episode_id):
        episode = ws.episode(episode_id)
        if not episode.stage.is_active:
            ended = fencing.ended_by(episode, token) if token else None
            raise IllegalTransition(
                f"{episode_id} is {episode.stage.value}: there is no lease to renew"
                + (f" (lease {token} ended: {ended})" if ended else "")
                + (" (it was marked lost)" if _lost(episode) and not ended else ""),
                hint="stop working on it; `hystate show` says what happened",
            )
        fencing.check(episode, True, token, False)  # the token proves the holder
        fenced = fencing.holder(episode) is not None
        if not fenced and worker is not None and episode.worker not in (None, worker):
            raise IllegalTransition(
                f"{episode_id} is {episode.stage.value} by {episode.worker}, not by {worker}"
            )
        old = current_lease(ws, episode)
        assert old is not None
        now = datetime.now(UTC)
        length = stage_lease_seconds(ws, episode.stage) if seconds is None else seconds
        if not 0 < length <= 366 * 86400:  # nan too: a usage error of the caller's
            raise UsageError(f"lease length {length!r}: give 0 < seconds <= one year")
        host, pid, start = old.host, old.pid, old.start
        if register_pid:
            host, pid = _HOST, os.getpid()
            start = process_start(pid)
        lease = Lease(
            episode_id,
            old.stage,
            old.entered_at,
            episode.worker,
            (now + timedelta(seconds=length)).isoformat(timespec="milliseconds"),
            now.isoformat(timespec="milliseconds"),
            host,
            pid,
            start,
            old.token,
        )
        _write(lease_path(ws.locks_dir, episode_id), lease.as_dict())
        return lease


def _lost(episode: EpisodeState) -> bool:
    return "worker lost" in str(episode.data.get("status_message"))


def _write(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    write_atomic(path, json.dumps(data, indent=1).encode(), tmp=tmp)


class StillWorking(IllegalTransition):
    """The episode was judged stuck, but its lease was renewed before it could be marked."""


def mark_lost(ws: Workspace, episode_id: str, *, by: str) -> transition.TransitionResult:
    """Fail a stuck episode with "worker lost: <why>"; the judgement is repeated under the
    episode's lock (which renewals take too), so a worker that just renewed keeps it."""

    def build(episode: EpisodeState) -> Change:
        reason = stuck_reason(ws, episode, datetime.now(UTC))
        if reason is None:
            raise StillWorking(f"{episode_id} is {episode.stage.value} and its lease is alive")
        # a recovery takes the lost lease over (recorded as such: hystate.engine.fencing)
        return Change(S.FAILED, now_utc(), by, error=f"worker lost: {reason}", take_over=True)

    return transition.run(ws, episode_id, build)


def prune(locks_dir: Path, active: Iterable[str], now: datetime) -> int:
    """Remove lease files that can no longer matter: expired, and of an episode that is in no
    active stage. A fresh file (a worker that just entered a stage) is never touched."""
    keep = set(active)
    removed = 0
    for path in locks_dir.glob(f"*{SUFFIX}"):
        data = _read_file(path)
        try:
            expired = data is None or now > parse_time(str(data["expires_at"]))
        except (KeyError, TypeError, ValueError):
            expired = True
        if expired and path.name[: -len(SUFFIX)] not in keep:
            path.unlink(missing_ok=True)
            removed += 1
    for tmp in locks_dir.glob(f".*{SUFFIX}.*.tmp"):  # a renewal killed mid-write
        try:
            if now.timestamp() - tmp.stat().st_mtime > 60:
                tmp.unlink()
                removed += 1
        except FileNotFoundError:
            continue
    return removed


class LeaseKeeper:
    """``with manager.lease(episode_id):`` renews the lease from a background thread every
    third of its length and registers this process as the worker. It carries the lease token
    (``token``): ``advance`` and ``fail`` leave the stage under it. If the lease is lost (the
    episode was marked lost, or taken over), ``lost`` says why and renewal stops; leaving the
    stage is then refused (exit 3)."""

    def __init__(
        self,
        ws: Workspace,
        episode_id: str,
        *,
        seconds: float | None = None,
        worker: str | None = None,
        token: str | None = None,
    ) -> None:
        self.manager = ws
        self.episode_id = episode_id
        self.seconds = seconds
        self.worker = worker
        self.token = token
        self.lease: Lease | None = None
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def renew(self, *, register_pid: bool = False) -> Lease:
        self.lease = renew(
            self.manager,
            self.episode_id,
            seconds=self.seconds,
            worker=self.worker,
            register_pid=register_pid,
            token=self.token,
        )
        return self.lease

    def advance(self, stage: str | ProcessingStage, **kwargs: Any) -> transition.TransitionResult:
        """``StateManager.update_state`` (dotted ``fields``) under this lease's token."""
        from hystate.engine import steps

        return steps.advance(self.manager, self.episode_id, stage, lease=self.token, **kwargs)

    def fail(self, error: str, **kwargs: Any) -> transition.TransitionResult:
        """``StateManager.fail`` under this lease's token."""
        from hystate.engine import steps

        return steps.fail(self.manager, self.episode_id, error, lease=self.token, **kwargs)

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.renew()
            except LockBusy:
                continue  # a transition holds the lock for a moment: try at the next tick
            except HystateError as exc:
                self.lost = str(exc)
                return

    def __enter__(self) -> LeaseKeeper:
        lease = self.renew(register_pid=True)
        length = (parse_time(lease.expires_at) - datetime.now(UTC)).total_seconds()
        interval = max(length / 3, 0.05)
        self._thread = threading.Thread(
            target=self._run, args=(interval,), name=f"hystate-lease-{self.episode_id}", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
