"""``migration_dag``: the catalog through every stage, round after round, mapped per episode.

Each stage gets ``rounds`` rounds (default: the stage's attempt budget, so every retry hystate
allows has a round): a ``HystatePlanOperator`` lists the ready ids (due retries included,
waiting up to ``retry_wait`` for one that is coming), and ``HystateStageOperator.partial(...)
.expand(episode_id=...)`` maps over them. Rounds run whatever happened before them
(``trigger_rule="all_done"``): a failed episode is hystate's to retry, not the DAG's to stop
for. A stage with ``limits.concurrency`` runs its tasks in the pool ``hystate_<stage>`` of
that many slots (``ensure_pools`` makes it); hystate checks the limit again on entry and alone
enforces ``per_day``. With ``wait_for``, the DAG ends with a deferrable ``HystateStageSensor``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, BaseOperator

from hystate.core.model import ACTIVE_STAGES, ProcessingStage
from hystate.engine.limits import configured
from hystate.integrations.airflow.operators import HystatePlanOperator, HystateStageOperator
from hystate.integrations.airflow.sensors import HystateStageSensor
from hystate.integrations.stage import PIPELINE, Work
from hystate.manager import StateManager

S = ProcessingStage


def pool_name(stage: str) -> str:
    return f"hystate_{stage}"


def pools(manager: StateManager) -> dict[str, int]:
    """{pool name: slots} for every stage with a ``limits.concurrency``."""
    found = {}
    for stage in ACTIVE_STAGES:
        slots = configured(manager, stage)[0]
        if slots is not None:
            found[pool_name(stage.value)] = slots
    return found


def airflow_command() -> str:
    """The ``airflow`` command: on the PATH, else beside this Python (a venv not activated)."""
    beside = Path(sys.executable).with_name("airflow")
    return shutil.which("airflow") or (str(beside) if beside.exists() else "airflow")


def ensure_pools(manager: StateManager, airflow: str | None = None) -> dict[str, int]:
    """Create or resize the pools (``airflow pools set``) to match ``hystate.yaml``."""
    airflow = airflow or airflow_command()
    made = pools(manager)
    for name, slots in made.items():
        description = f"hystate limits.{name.removeprefix('hystate_')}.concurrency"
        subprocess.run(
            [airflow, "pools", "set", name, str(slots), description],
            check=True,
            capture_output=True,
        )
    return made


def migration_dag(
    dag_id: str,
    works: Mapping[str, Work | str],
    *,
    state_dir: str | os.PathLike[str] | None = None,
    rounds: int | None = None,
    retry_wait: float = 60.0,
    lease_seconds: float | None = None,
    wait_for: str | None = None,
    chunk: int = 1,
    **dag_kwargs: Any,
) -> DAG:
    """The DAG (see the module docstring). ``works``: {stage: work or "module:function"};
    ``wait_for``: a stage every episode must reach (or be skipped) before the run ends, waited
    for by a closing deferrable ``HystateStageSensor`` (default: none; the run ends with its
    last round);
    ``chunk``: episodes per mapped task instance (default one)."""
    unknown = sorted(set(works) - set(PIPELINE))
    if unknown:
        raise ValueError(f"no stage task for {', '.join(unknown)}; stages: {', '.join(PIPELINE)}")
    folder = None if state_dir is None else os.fspath(state_dir)
    manager = StateManager(folder)
    limits = pools(manager)
    dag_kwargs.setdefault("schedule", None)
    dag_kwargs.setdefault("catchup", False)
    dag_kwargs.setdefault("max_active_runs", 1)
    stages = [s for s in PIPELINE if s in works]
    with DAG(dag_id, **dag_kwargs) as dag:
        before: BaseOperator | Any = None
        for stage in stages:
            target = S.parse(stage)
            budget = manager.recovery.max_retries[ACTIVE_STAGES[target]] if target.is_active else 1
            pool = limits.get(pool_name(stage))
            for number in range(1, (rounds or budget) + 1):
                plan = HystatePlanOperator(
                    task_id=f"plan_{stage}_{number}",
                    stage=stage,
                    state_dir=folder,
                    wait=retry_wait if number > 1 else 0.0,
                    chunk=chunk,
                    trigger_rule="all_done",
                )
                run = HystateStageOperator.partial(
                    task_id=f"{stage}_{number}",
                    stage=stage,
                    work=works[stage],
                    state_dir=folder,
                    lease_seconds=lease_seconds,
                    **({"pool": pool_name(stage)} if pool else {}),
                ).expand(episode_id=plan.output)
                if before is not None:
                    before >> plan
                before = run
        if wait_for is not None:
            sensor = HystateStageSensor(
                task_id=f"wait_{wait_for}",
                stage=wait_for,
                state_dir=folder,
                deferrable=True,
                poke_interval=2.0,
                timeout=3600.0,
                trigger_rule="all_done",
            )
            if before is not None:
                before >> sensor
    return dag
