"""The orchestrator's run ids of a history entry, as the episode page shows them: each id as
text, linked to the orchestrator's UI when its address is known (``PREFECT_UI_URL``, Prefect's
own setting; ``AIRFLOW_UI_URL`` for Airflow's). Only http(s) addresses are used, and every id is
quoted into the path, so a value from a file never becomes markup or another address."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import quote

from hystate.core.urls import check_url

SHOWN = ("flow_run", "task_run", "dag_id", "dag_run", "task_id", "map_index", "try_number")


def _base(variable: str) -> str | None:
    url = os.environ.get(variable, "").rstrip("/")
    return url if url and check_url(url, ("http", "https")) is None else None


def _q(value: Any) -> str:
    return quote(str(value), safe="")


def links(run: Any) -> list[tuple[str, str | None]]:
    """``[(label, url or None)]`` of a history entry's ``run`` (empty when it has none)."""
    if not isinstance(run, dict) or not run:
        return []
    who = str(run.get("orchestrator", ""))
    url: dict[str, str | None] = {}
    prefect, airflow = _base("PREFECT_UI_URL"), _base("AIRFLOW_UI_URL")
    if who == "prefect" and prefect:
        for key, kind in (("flow_run", "flow-run"), ("task_run", "task-run")):
            if run.get(key):
                url[key] = f"{prefect}/runs/{kind}/{_q(run[key])}"
    if who == "airflow" and airflow and run.get("dag_id") and run.get("dag_run"):
        dag_run = f"{airflow}/dags/{_q(run['dag_id'])}/runs/{_q(run['dag_run'])}"
        url["dag_run"] = dag_run
        if run.get("task_id"):
            task = f"{dag_run}/tasks/{_q(run['task_id'])}"
            index = str(run.get("map_index", "-1"))
            url["task_id"] = task if index == "-1" else f"{task}/mapped/{_q(index)}"
    shown: list[tuple[str, str | None]] = [(who, None)] if who else []
    shown += [(f"{key}={run[key]}", url.get(key)) for key in SHOWN if key in run]
    return shown
