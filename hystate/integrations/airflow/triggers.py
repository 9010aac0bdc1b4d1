"""``HystateStageTrigger``: fires once episodes have reached a stage (runs in the triggerer)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from hystate.integrations.stage import waiting_for
from hystate.manager import StateManager


class HystateStageTrigger(BaseTrigger):
    """Polls the state repository every ``poll`` seconds (the reading in a thread, so the
    triggerer's event loop never blocks) until every one of ``episode_ids`` (None: every
    episode) has reached ``stage`` or gone past it; skipped ones count as settled unless
    ``include_skipped`` is False."""

    def __init__(
        self,
        stage: str,
        state_dir: str | None = None,
        episode_ids: list[str] | None = None,
        poll: float = 5.0,
        include_skipped: bool = True,
    ) -> None:
        super().__init__()
        self.stage = stage
        self.state_dir = state_dir
        self.episode_ids = episode_ids
        self.poll = poll
        self.include_skipped = include_skipped

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "stage": self.stage,
                "state_dir": self.state_dir,
                "episode_ids": self.episode_ids,
                "poll": self.poll,
                "include_skipped": self.include_skipped,
            },
        )

    def _waiting(self) -> list[str]:
        manager = StateManager(self.state_dir, worker="airflow-triggerer")
        return waiting_for(manager, self.stage, self.episode_ids, self.include_skipped)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        while True:
            waiting = await asyncio.to_thread(self._waiting)
            if not waiting:
                yield TriggerEvent({"status": "reached", "stage": self.stage})
                return
            self.log.info("%d episode(s) not yet %s", len(waiting), self.stage)
            await asyncio.sleep(self.poll)
