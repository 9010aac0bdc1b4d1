"""Operators: plan a stage (the ids to ``.expand`` over) and run a stage for one episode."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from hystate.integrations.airflow.hooks import HystateHook, load_work
from hystate.integrations.stage import Outcome, Work, plan, run_stage

StateDir = str | os.PathLike[str] | None


class HystatePlanOperator(BaseOperator):
    """Returns (XCom) the ids ready for ``stage``: due retries included, stuck work taken back
    first, at most ``limit`` and today's ``per_day`` quota. Waits up to ``wait`` seconds when a
    retry of the stage is coming but not due yet. ``chunk`` > 1 returns lists of that many ids
    (a task instance per list: Airflow's per-task cost is about half a second)."""

    template_fields: Sequence[str] = ("stage",)

    def __init__(
        self,
        *,
        stage: str,
        state_dir: StateDir = None,
        limit: int = 1000,
        wait: float = 0.0,
        fill_slots: bool = False,
        chunk: int = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.chunk = chunk
        self.stage = stage
        self.state_dir = state_dir
        self.limit = limit
        self.wait = wait
        self.fill_slots = fill_slots

    def execute(self, context: Any) -> list[Any]:
        manager = HystateHook(self.state_dir).get_manager(context)
        ids = plan(manager, self.stage, self.limit, wait=self.wait, concurrency_cap=self.fill_slots)
        self.log.info("%s: %d episode(s) ready", self.stage, len(ids))
        if self.chunk <= 1:
            return ids
        return [ids[i : i + self.chunk] for i in range(0, len(ids), self.chunk)]


class HystateStageOperator(BaseOperator):
    """Does ``stage`` for one episode through hystate: enters ``episode_id`` (or claims the next
    ready one), renews its lease while ``work`` runs, advances with the fields it returns, or
    fails the episode with the error and traceback and then fails the task without an Airflow
    retry (``AirflowFailException``): hystate's policy decides the retry. A full stage (another
    runner holds the slots) is waited for up to ``room_wait`` seconds. ``episode_id`` may be a
    list: the episodes one after the other in this task instance. Returns the outcomes."""

    template_fields: Sequence[str] = ("episode_id", "stage")

    def __init__(
        self,
        *,
        stage: str,
        work: Work | str,
        episode_id: str | list[str] | None = None,
        state_dir: StateDir = None,
        worker: str | None = None,
        lease_seconds: float | None = None,
        room_wait: float = 600.0,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("retries", 0)
        super().__init__(**kwargs)
        self.stage = stage
        self.work = work
        self.episode_id = episode_id
        self.state_dir = state_dir
        self.worker = worker
        self.lease_seconds = lease_seconds
        self.room_wait = room_wait

    def execute(self, context: Any) -> list[dict[str, Any]]:
        manager = HystateHook(self.state_dir, self.worker).get_manager(context)
        work = load_work(self.work)
        given = self.episode_id
        ids: list[str | None] = list(given) if isinstance(given, (list, tuple)) else [given or None]
        outcomes = [self._one(manager, work, eid) for eid in ids]
        failed = [o for o in outcomes if o.result == "failed"]
        if failed:
            first = failed[0]
            raise AirflowFailException(
                f"{len(failed)} of {len(outcomes)} failed (hystate retries them); "
                f"{first.episode_id}: {first.detail}"
            )
        return [o.as_dict() for o in outcomes]

    def _one(self, manager: Any, work: Work, episode_id: str | None) -> Outcome:
        outcome = run_stage(
            manager,
            self.stage,
            work,
            episode_id,
            lease_seconds=self.lease_seconds,
            room_wait=self.room_wait,
        )
        self.log.info(
            "%s %s: %s %s", outcome.episode_id, self.stage, outcome.result, outcome.detail
        )
        return outcome
