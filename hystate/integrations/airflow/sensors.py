"""``HystateStageSensor``: waits until episodes reach a stage; ``deferrable=True`` hands the
waiting to ``HystateStageTrigger`` in the triggerer, freeing the worker slot."""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseSensorOperator
from airflow.sdk.exceptions import AirflowException

from hystate.integrations.airflow.hooks import HystateHook
from hystate.integrations.airflow.triggers import HystateStageTrigger
from hystate.integrations.stage import waiting_for


class HystateStageSensor(BaseSensorOperator):
    """True once every one of ``episode_ids`` (None: every episode) is in ``stage`` or past it
    (skipped ones count as settled unless ``include_skipped`` is False)."""

    template_fields: Sequence[str] = ("stage", "episode_ids")

    def __init__(
        self,
        *,
        stage: str,
        episode_ids: list[str] | None = None,
        state_dir: str | os.PathLike[str] | None = None,
        include_skipped: bool = True,
        deferrable: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.stage = stage
        self.episode_ids = episode_ids
        self.state_dir = None if state_dir is None else os.fspath(state_dir)
        self.include_skipped = include_skipped
        self.deferrable = deferrable

    def _waiting(self, context: Any) -> list[str]:
        manager = HystateHook(self.state_dir).get_manager(context)
        ids = list(self.episode_ids) if self.episode_ids else None
        return waiting_for(manager, self.stage, ids, self.include_skipped)

    def poke(self, context: Any) -> bool:
        waiting = self._waiting(context)
        if waiting:
            self.log.info("%d episode(s) not yet %s, e.g. %s", len(waiting), self.stage, waiting[0])
        return not waiting

    def execute(self, context: Any) -> Any:
        if not self.deferrable or self.poke(context):
            return super().execute(context) if not self.deferrable else {"status": "reached"}
        self.defer(
            trigger=HystateStageTrigger(
                self.stage,
                self.state_dir,
                list(self.episode_ids) if self.episode_ids else None,
                float(self.poke_interval),
                self.include_skipped,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=float(self.timeout)) if self.timeout else None,
        )

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> Any:
        if not event or event.get("status") != "reached":
            raise AirflowException(f"hystate trigger ended without reaching {self.stage}: {event}")
        self.log.info("every episode reached %s", self.stage)
        return event
