"""An orchestrator's run ids on a transition: ``Hystate-<Key>`` trailers and the history entry's
``run`` (hystate.integrations sets them: Prefect's flow and task runs, Airflow's DAG run, task
and map index)."""

from __future__ import annotations

import re
from typing import Any

from hystate.core.errors import UsageError

_RUN_KEY = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_RUN_VALUE = re.compile(r"^[!-~][ -~]{0,199}$")
RESERVED_RUN_KEYS = frozenset({"episode", "from", "to", "worker", "count", "reapplies"})


def check_run_ids(run: Any) -> dict[str, str] | None:
    """An orchestrator's run ids (``{"orchestrator": "prefect", "flow_run": "…"}``): at most 8
    keys of lowercase letters, digits and ``_``, values of printable ASCII up to 200 characters;
    they become ``Hystate-<Key>`` trailers and the history entry's ``run``."""
    if not run:
        return None
    if not isinstance(run, dict) or len(run) > 8:
        raise UsageError("run ids: give a mapping of at most 8 names to values")
    checked: dict[str, str] = {}
    for key, value in run.items():
        text = str(value)
        if not isinstance(key, str) or not _RUN_KEY.match(key) or key in RESERVED_RUN_KEYS:
            raise UsageError(f"run ids: bad name {key!r} (lowercase letters, digits, _)")
        if not _RUN_VALUE.match(text):
            raise UsageError(f"run ids: {key}: printable ASCII of 1 to 200 characters")
        checked[key] = text
    return checked
