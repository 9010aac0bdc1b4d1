"""The reports ``hystate.yaml``'s ``reporting`` asks for (daily and/or weekly, in its format),
written by the server at start and then every ``every`` seconds (``ReportGenerator
.write_configured``: today's daily report and this week's weekly report are rewritten, a new
day or week starts a new file)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from hystate.core.errors import HystateError

if TYPE_CHECKING:
    from hystate.serve.readmodel import ReadModel

log = logging.getLogger("hystate.serve")


class ReportScheduler:
    def __init__(self, model: ReadModel, every: float) -> None:
        self.model = model
        self.every = every
        self.runs = 0
        self.last: list[Path] = []
        self.last_error: str | None = None

    def write_once(self) -> list[Path]:
        from hystate.reports.generator import ReportGenerator

        with self.model.lock:
            written = ReportGenerator(self.model.manager).write_configured()
        self.runs += 1
        self.last = written
        return written

    async def run(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.write_once)
                self.last_error = None
            except (HystateError, OSError) as exc:  # a broken file: try again next time
                self.last_error = str(exc)
                log.warning("reports not written: %s", exc)
            await asyncio.sleep(self.every)
