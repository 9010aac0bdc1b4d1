"""``HystateHook``: a ``StateManager`` for a task, its transitions carrying the task's run ids."""

from __future__ import annotations

import os
from collections.abc import Mapping
from importlib import import_module
from typing import Any

from airflow.sdk import BaseHook

from hystate.integrations.stage import Work
from hystate.manager import StateManager


def run_ids(context: Mapping[str, Any] | None) -> dict[str, str]:
    """The DAG run's and task instance's ids: dag_id, dag_run, task_id, map_index, try."""
    if not context:
        return {"orchestrator": "airflow"}
    ti = context.get("ti") or context.get("task_instance")
    dag_run = context.get("dag_run")
    found = {
        "dag_id": getattr(ti, "dag_id", None),
        "dag_run": getattr(dag_run, "run_id", None) or getattr(ti, "run_id", None),
        "task_id": getattr(ti, "task_id", None),
        "map_index": getattr(ti, "map_index", None),
        "try_number": getattr(ti, "try_number", None),
    }
    return {"orchestrator": "airflow", **{k: str(v) for k, v in found.items() if v is not None}}


def load_work(work: Work | str) -> Work:
    """A work function, or its import path ``package.module:function`` (what a DAG file can
    hand to a mapped operator: a string survives serialization)."""
    if callable(work):
        return work
    module, _, name = str(work).partition(":")
    if not module or not name:
        raise ValueError(f"work {work!r}: give a callable or 'package.module:function'")
    found = getattr(import_module(module), name)
    if not callable(found):
        raise ValueError(f"work {work!r} is not callable")
    return found  # type: ignore[no-any-return]


class HystateHook(BaseHook):
    """Reaches the state repository (``state_dir``, else ``$HYSTATE_STATE_DIR``, else found from
    the working directory like git) as ``worker`` (default ``airflow:<dag_id>``)."""

    conn_name_attr = "hystate_conn_id"
    hook_name = "hystate"

    def __init__(self, state_dir: str | os.PathLike[str] | None = None, worker: str | None = None):
        super().__init__()
        self.state_dir = state_dir
        self.worker = worker

    def get_conn(self) -> StateManager:
        return self.get_manager()

    def get_manager(self, context: Mapping[str, Any] | None = None) -> StateManager:
        ids = run_ids(context)
        worker = self.worker or f"airflow:{ids.get('dag_id', 'local')}"
        manager = StateManager(self.state_dir, worker=worker)
        manager.run_ids = ids
        return manager
