"""Prefect 3 runs the migration on hystate (``pip install 'hystate[prefect]'``; docs/prefect.md).

- ``stage_task(stage, work)``: a Prefect task running ``hystate.integrations.stage.run_stage``:
  it claims an episode (or enters the one mapped to it), renews the lease while ``work(episode)``
  runs, advances with the fields it returns, or fails the episode with the error and traceback
  (the task run then ends Failed, and is never retried by Prefect: hystate's policy decides).
- ``migration_flow(works)``: a flow walking the stages in order; for each it plans the ready
  episodes and maps the stage task over them (``.map``), round after round, until the stage has
  nothing left (due retries included). A re-run after a crash finishes only what is left.
- Every transition carries the flow run and task run ids (``Hystate-Flow-Run``,
  ``Hystate-Task-Run`` trailers; ``run`` in the history entry).
- A stage's ``limits.concurrency`` becomes the global concurrency limit ``hystate-<stage>``
  that its task runs occupy; hystate checks the limit again when the episode enters the stage,
  and alone enforces ``per_day``.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.client.orchestration import get_client
from prefect.concurrency.sync import concurrency
from prefect.futures import wait
from prefect.runtime import flow_run, task_run
from prefect.states import Failed
from prefect.task_runners import ThreadPoolTaskRunner

from hystate.core.model import ACTIVE_STAGES, ProcessingStage
from hystate.engine.limits import configured
from hystate.integrations.stage import PIPELINE, Outcome, Work, plan, run_stage
from hystate.manager import StateManager

StateDir = str | os.PathLike[str] | None
PROGRESS = frozenset({"done", "failed", "skipped", "lost"})


def run_ids() -> dict[str, str]:
    """The current flow run's and task run's ids (those that exist)."""
    found = {"flow_run": flow_run.get_id(), "task_run": task_run.get_id()}
    return {"orchestrator": "prefect", **{k: str(v) for k, v in found.items() if v}}


def manager_for(state_dir: StateDir = None, worker: str | None = None) -> StateManager:
    """A manager whose transitions carry this run's ids; the worker is the flow run's name."""
    name = worker or f"prefect:{flow_run.get_name() or 'local'}"
    manager = StateManager(state_dir, worker=name)
    manager.run_ids = run_ids()
    return manager


def limit_name(stage: str) -> str:
    return f"hystate-{stage}"


def sync_concurrency_limits(manager: StateManager) -> dict[str, int]:
    """Create or update the global concurrency limit of every stage with a
    ``limits.concurrency``; returns {limit name: slots}."""
    made: dict[str, int] = {}
    with get_client(sync_client=True) as client:
        for stage in ACTIVE_STAGES:
            slots = configured(manager, stage)[0]
            if slots is not None:
                client.upsert_global_concurrency_limit_by_name(limit_name(stage.value), slots)
                made[limit_name(stage.value)] = slots
    return made


@contextmanager
def _slot(manager: StateManager, stage: str, wait: float) -> Iterator[None]:
    """One slot of the stage's Prefect limit, waited for up to ``wait`` seconds; then the work
    goes on under hystate's limit alone (a slot a killed flow left behind on the server must
    not stop the re-run: hystate's check is the one that holds)."""
    target = ProcessingStage.parse(stage)
    if not target.is_active or configured(manager, target)[0] is None:
        yield
        return
    held = concurrency(limit_name(target.value), occupy=1, strict=False, timeout_seconds=wait)
    try:
        held.__enter__()
    except TimeoutError:
        get_run_logger().warning(
            "no %s slot in %.0f s: going on under hystate's limit", limit_name(stage), wait
        )
        yield
        return
    try:
        yield
    finally:
        held.__exit__(None, None, None)


def stage_task(
    stage: str,
    work: Work,
    *,
    state_dir: StateDir = None,
    worker: str | None = None,
    lease_seconds: float | None = None,
    room_wait: float = 600.0,
    **options: Any,
) -> Any:
    """A Prefect task doing ``stage`` for one episode: ``task(episode_id)`` enters that one,
    ``task()`` claims the next ready; a list of ids is done one after the other in one task run
    (a lane: it holds one concurrency slot throughout). It returns the ``Outcome`` as a dict (a
    list of them for a list); a failure of the work ends the task run Failed after hystate
    recorded it."""
    options.setdefault("name", f"hystate-{stage}")
    options.setdefault("retries", 0)
    options.setdefault("task_run_name", lambda: _run_name(stage))

    @task(**options)
    def hystate_stage(episode_id: str | list[str] | None = None) -> Any:
        logger = get_run_logger()
        manager = manager_for(state_dir, worker)
        ids: list[str | None] = list(episode_id) if isinstance(episode_id, list) else [episode_id]
        outcomes = []
        with _slot(manager, stage, room_wait):
            for eid in ids:
                outcome = run_stage(
                    manager, stage, work, eid, lease_seconds=lease_seconds, room_wait=room_wait
                )
                logger.info(
                    "%s %s: %s %s", outcome.episode_id, stage, outcome.result, outcome.detail
                )
                outcomes.append(outcome.as_dict())
        data: Any = outcomes if isinstance(episode_id, list) else outcomes[0]
        failed = [o for o in outcomes if o["result"] == "failed"]
        if failed:
            first = failed[0]
            return Failed(message=f"{first['episode_id']}: {first['detail']}", data=data)
        return data

    return hystate_stage


def _run_name(stage: str) -> str:
    given = task_run.get_parameters().get("episode_id")
    if isinstance(given, list):
        return f"{stage}-lane-of-{len(given)}-from-{given[0] if given else 'none'}"
    return f"{stage}-{given or 'next'}"


def _outcomes(future: Any, stage: str) -> list[dict[str, Any]]:
    state = future.state
    data = state.result(raise_on_failure=False) if state.is_failed() else future.result()
    if isinstance(data, dict):
        return [data]
    if isinstance(data, list):
        return [dict(o) for o in data]
    return [Outcome(None, stage, "error", str(state.message)).as_dict()]


def lanes(ids: list[str], count: int) -> list[list[str]]:
    """``ids`` dealt into ``count`` lists (no empty one)."""
    return [ids[i::count] for i in range(min(count, len(ids)))]


def migration_flow(
    works: Mapping[str, Work],
    *,
    state_dir: StateDir = None,
    worker: str | None = None,
    batch: int = 16,
    retry_wait: float = 60.0,
    max_workers: int = 4,
    lease_seconds: float | None = None,
    name: str = "hystate-migration",
    on_round: Callable[[str, list[dict[str, Any]]], None] | None = None,
) -> Any:
    """A flow migrating every episode through the stages of ``works`` (``{"downloading":
    download, "converting": convert, ...}``, walked in pipeline order), ``batch`` episodes a
    round, ``max_workers`` task runs at once. Between rounds it waits up to ``retry_wait``
    seconds for retries hystate will allow. Returns {stage: {result: count}}."""
    unknown = sorted(set(works) - set(PIPELINE))
    if unknown:
        raise ValueError(f"no stage task for {', '.join(unknown)}; stages: {', '.join(PIPELINE)}")
    tasks = {
        stage: stage_task(
            stage, fn, state_dir=state_dir, worker=worker, lease_seconds=lease_seconds
        )
        for stage, fn in works.items()
    }

    @task(name="hystate-plan", task_run_name="plan-{stage}")
    def plan_stage(stage: str) -> list[str]:
        manager = manager_for(state_dir, worker)
        return plan(manager, stage, batch, wait=retry_wait, concurrency_cap=False)

    @flow(name=name, task_runner=ThreadPoolTaskRunner(max_workers=max_workers))
    def migrate() -> dict[str, dict[str, int]]:
        logger = get_run_logger()
        manager = manager_for(state_dir, worker)
        made = sync_concurrency_limits(manager)
        if made:
            logger.info("concurrency limits: %s", made)
        summary: dict[str, dict[str, int]] = {}
        for stage in (s for s in PIPELINE if s in tasks):
            counts: Counter[str] = Counter()
            idle = 0
            while idle < 3:
                ids = plan_stage(stage)
                if not ids:
                    break
                # a limited stage runs in as many lanes as it has slots: one task run a lane,
                # holding its slot (Prefect makes a waiting task retry about once a second)
                slots = configured(manager, ProcessingStage.parse(stage))[0]
                futures = tasks[stage].map(lanes(ids, slots) if slots else ids)
                wait(futures)
                outcomes = [o for f in futures for o in _outcomes(f, stage)]
                counts.update(o["result"] for o in outcomes)
                if on_round is not None:
                    on_round(stage, outcomes)
                idle = 0 if any(o["result"] in PROGRESS for o in outcomes) else idle + 1
            summary[stage] = dict(counts)
            logger.info("%s: %s", stage, dict(counts) or "nothing to do")
        return summary

    return migrate
