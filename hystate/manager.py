"""``StateManager``: the Python API the pipeline workers call, and what the CLI drives.

A thin facade over the layers: a ``Workspace`` (repository, store, config, locks, cache) with the
transitions (``hystate.engine``), the checks (``hystate.review``) and the subscribers that run
around a commit wired in here: the push to a shared remote (``hystate.cluster``), the failure
alert (``hystate.reports.alerts``) and the event stream (``hystate.events``). Every transition is
``hystate.engine.transition.run``: one commit of one file, or nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from hystate.core.model import EpisodeState, ProcessingStage
from hystate.engine.workspace import Workspace

if TYPE_CHECKING:
    from hystate.core.errors import Problem
    from hystate.core.rules import Change
    from hystate.engine import leases, limits
    from hystate.engine.catalog import Record
    from hystate.engine.discovery import DiscoverResult
    from hystate.engine.leases import Lease
    from hystate.engine.retries import RetryOutcome
    from hystate.engine.transition import TransitionResult

# What a transition does not use is imported on first use (the cluster, the event stream, the
# alerts, the checks, claims, leases, discovery): `hystate advance` is a fresh process each time.
# The subscribers below import their module only when its feature is configured; each module's
# own function checks the configuration again.

__all__ = ["StateManager"]


class StateManager(Workspace):
    """The state of every episode in one state directory of one git repository.

    ``StateManager()`` finds the repository from the current directory (like git) and the state
    directory from ``hystate.yaml``; ``StateManager("path/to/processed")`` names it directly.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        wired = self.subscribers
        wired.before.append(_told)  # a pending transition of this worker was dropped
        wired.before.append(_before_transition)
        wired.committed.append(_on_commit)
        wired.serial.append(_serial)
        wired.after.append(_after_commit)
        wired.acknowledge.append(_acknowledge)  # sync.push: each: on the remote, or pending
        wired.lease_sources.append(_lease_source)
        wired.dropped.append(_dropped)  # a sync dropped pending transitions: on the event stream
        wired.orphaned.append(_orphaned)  # a dead process's uncommitted write, as fsck --repair

    # -- handing out work ------------------------------------------------------------------

    def get_next_for_processing(
        self, stage: str | ProcessingStage, limit: int = 10
    ) -> list[EpisodeState]:
        """Episodes ready to enter ``stage`` (oldest air date first): those in a stage that
        leads to it, failed ones whose retry of ``stage`` is due, and for ``published`` only
        those whose scheduled time has come."""
        from hystate.engine import claims

        return claims.ready(self, stage, limit)

    def claim_next(
        self,
        stage: str | ProcessingStage,
        limit: int = 1,
        *,
        worker: str | None = None,
        deadline: float | None = None,
    ) -> list[TransitionResult]:
        """Move up to ``limit`` ready episodes into ``stage`` for ``worker``, one commit each;
        two workers never get the same episode. With ``recovery.auto_resume``, stuck episodes
        are first marked lost and exhausted ones skipped (see ``hystate.engine.retries``).
        Each result's ``lease`` is the token that leaving the stage needs. On a node with a
        shared remote, claims are acknowledged once pushed; ``deadline``: seconds to keep
        trying while other nodes win the pushes (default ``sync.deadline``)."""
        from hystate.engine import claims

        if self.sync_remote:
            from hystate.cluster import acks, remote_claims

            acks.told(self)
            return remote_claims.claim(self, stage, limit, worker, deadline=deadline)
        return claims.claim(self, stage, limit, worker)

    def resume(self) -> list[RetryOutcome]:
        """What a claim does first with ``recovery.auto_resume``: stuck episodes become failed
        ("worker lost"), failed ones out of attempts become skipped."""
        from hystate.engine import retries

        return retries.resume(self)

    def limit_room(self, stage: str | ProcessingStage) -> limits.Room | None:
        """The stage's ``limits`` and how much of them is used now (None: it has none)."""
        from hystate.engine import limits

        return limits.room(self, stage)

    # -- leases (no commits: see hystate.engine.leases) ------------------------------------

    def heartbeat(
        self,
        episode_id: str,
        *,
        seconds: float | None = None,
        register_pid: bool = False,
        lease: str | None = None,
    ) -> Lease:
        """Renew the lease on ``episode_id``'s active stage (default length: the stage
        timeout). ``register_pid``: judge this process's death as the worker's. ``lease``:
        its token (default: the one this manager was issued; ``hystate.engine.fencing``)."""
        from hystate.engine import leases

        worker = self.worker if self.worker_named else None
        _told(self)
        return leases.renew(
            self, episode_id, seconds=seconds, worker=worker, register_pid=register_pid,
            token=self.token(episode_id, lease),
        )  # fmt: skip

    def lease(
        self, episode_id: str, *, seconds: float | None = None, token: str | None = None
    ) -> leases.LeaseKeeper:
        """``with manager.lease(id) as held:`` renews the lease in the background while you
        work; ``held.advance(...)`` and ``held.fail(...)`` leave the stage under its token."""
        from hystate.engine import leases

        worker = self.worker if self.worker_named else None
        return leases.LeaseKeeper(
            self, episode_id, seconds=seconds, worker=worker, token=self.token(episode_id, token)
        )

    # -- checks ----------------------------------------------------------------------------

    def validate(self) -> list[Problem]:
        """Every problem of every episode file (never stops at the first)."""
        from hystate.review import validate as checks

        return checks.validate(self)

    def tracked_caches(self) -> list[Problem]:
        """Cache-named entries of the state folder committed to git."""
        from hystate.review import validate as checks

        return checks.tracked_caches(self)

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
        lease: str | None = None,
        take_over: bool = False,
        **seed_fields: Any,
    ) -> TransitionResult:
        """Move an episode to ``stage`` (one commit), or do nothing if it already is there
        with the same data. ``fields`` sets dotted keys (``{"files.audio_file": "a.mp3"}``);
        the seed's names work too (``audio_file=Path(...)``, ``youtube_video_id=...``,
        ``status_message=...``, ``error=...``: see ``hystate.core.seed_fields``). ``force``
        lets a retry go before its backoff delay has passed. Leaving an active stage needs its
        lease token (``lease``; default: the one this manager was issued for the episode), or
        ``take_over`` (recorded): see ``hystate.engine.fencing``."""
        if seed_fields:
            from hystate.core.seed_fields import seed_arguments

            asked = seed_arguments(stage, seed_fields, message=message, fields=fields)
            if asked.error is not None:
                return self.fail(
                    episode_id, asked.error, traceback=asked.traceback, worker=worker,
                    lease=lease, take_over=take_over,
                )  # fmt: skip
            stage, message, fields = asked.stage, asked.message, asked.fields
        from hystate.engine import steps  # a reading command needs no transition code

        return steps.advance(
            self, episode_id, stage, message=message, fields=fields, worker=worker,
            force=force, lock_timeout=lock_timeout, lease=lease, take_over=take_over,
        )  # fmt: skip

    def fail(
        self,
        episode_id: str,
        error: str,
        *,
        traceback: str | None = None,
        worker: str | None = None,
        lease: str | None = None,
        take_over: bool = False,
    ) -> TransitionResult:
        """Record a failure of the active stage the episode is in (under its lease token:
        ``lease``, default the one this manager was issued; or ``take_over``)."""
        from hystate.engine import steps

        return steps.fail(
            self, episode_id, error, traceback=traceback, worker=worker, lease=lease,
            take_over=take_over,
        )  # fmt: skip

    def skip(self, episode_id: str, reason: str, *, worker: str | None = None) -> TransitionResult:
        from hystate.engine import steps

        return steps.skip(self, episode_id, reason, worker=worker)

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
        from hystate.engine import retries

        return retries.retry(self, episode_ids, now=now, dry_run=dry_run, to=to, worker=worker)

    # -- discovery -------------------------------------------------------------------------

    def add_episode(
        self, episode_id: str, *, title: str, date: str, archive_identifier: str | None = None
    ) -> DiscoverResult:
        """One new episode (one commit), like a one-record ``discover``."""
        from hystate.engine import discovery

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
        from hystate.engine import discovery

        return discovery.discover(
            self, records, source=source, archive_identifier=archive_identifier
        )


# -- the subscribers, each importing its module only when its feature is on --------------------


def _syncs(ws: Workspace) -> bool:
    return bool(ws.sync_remote)


def _told(ws: Workspace) -> None:
    if _syncs(ws):
        from hystate.cluster import acks

        acks.told(ws)


def _before_transition(ws: Workspace) -> None:
    if _syncs(ws) and ws.config.get("sync.push") == "each":
        from hystate.cluster import remote_claims

        remote_claims.before_transition(ws)


def _on_commit(ws: Workspace, doc: dict[str, Any], change: Change) -> Callable[[], None] | None:
    if not ws.config.get("monitoring.alert_on_failure"):
        return None
    from hystate.reports import alerts

    return alerts.on_commit(ws, doc, change)


def _serial(ws: Workspace, change: Change) -> bool:
    if not ws.config.get("monitoring.alert_on_failure"):
        return False
    from hystate.reports import alerts

    return alerts.counts(ws, change)


def _after_commit(ws: Workspace, sha: str | None) -> None:
    if sha and ws.config.get("events.enabled"):
        from hystate.events import stream

        stream.after_commit(ws, sha)


def _dropped(ws: Workspace) -> None:
    if ws.config.get("events.enabled"):
        from hystate.events import drops

        drops.after_drops(ws)


def _orphaned(ws: Workspace, episode_id: str) -> dict[str, Any] | None:
    from hystate.fsck import uncommitted

    return uncommitted.mend_orphan(ws, episode_id)


def _acknowledge(ws: Workspace, result: TransitionResult) -> TransitionResult:
    if not _syncs(ws):
        return result
    from hystate.cluster import acks

    return acks.acknowledge(ws, result)


def _lease_source(
    ws: Workspace, episode_id: str, stage: str, entered_at: str
) -> dict[str, Any] | None:
    from hystate.cluster import lease_refs

    return lease_refs.latest(ws, episode_id, stage, entered_at)
