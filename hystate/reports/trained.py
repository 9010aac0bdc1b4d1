"""The forecast's model as ``status`` reads it: trained on the runs of the most recent episodes
in the cache's history, and kept with the cache (``hystate.cache.memo``) until HEAD's tree
changes. At 100,000 episodes the training set is 26,000 history rows read and turned into
~9,000 runs, then fitted: ~0.2 s a call, which a kept model turns into a lookup. The runs are
kept too, and carried through a transition (``hystate.cache.follow``): after one, the model is
learnt again from them (~30 ms), or carried when they are the same.

What is kept depends on the tables alone: each stage's model, and the runs' spans for the
parallelism, which depends on the clock (the runs of the last 7 days). When every run ended
within the window, the parallelism of all of them is the answer, kept too; otherwise it is
computed from the kept spans. Either way the numbers are those ``fit`` gives."""

from __future__ import annotations

import base64
import dataclasses
from array import array
from typing import TYPE_CHECKING, Any

from hystate.cache import forecast_queries, memo
from hystate.core.model import parse_time
from hystate.reports.fit import (
    DONE_AFTER,
    FEATURES,
    MAX_TRAINING_RUNS,
    ORDER,
    WINDOW,
    Model,
    Run,
    StageModel,
    fit_stage,
    parallelism,
)

if TYPE_CHECKING:
    from hystate.cache.state_cache import StateCache

NAME = f"forecast.model/1/{MAX_TRAINING_RUNS}/{','.join(FEATURES)}"
FIELDS = [f.name for f in dataclasses.fields(StageModel)]


def runs_from_log(rows: list[Any]) -> list[Run]:
    """Runs from processing_log rows (episode_id, timestamp, from_stage, to_stage, audio_size,
    audio_duration) in episode and time order."""
    runs = []
    entered: tuple[str, str, float] | None = None
    for episode_id, stamp, old, new, size, duration in rows:
        when = parse_time(stamp).timestamp()
        if entered and entered[0] == episode_id and old == entered[1] and old in ORDER:
            runs.append(Run(old, entered[2], when, new == DONE_AFTER[old], size, duration))
        entered = (episode_id, new, when)
    return runs


def training_runs(cache: StateCache) -> list[Run]:
    """``runs_from_log`` of the training log, from the runs the cache keeps and carries
    through transitions (``forecast_queries.training_runs``): no history to read again."""
    kept = forecast_queries.training_runs(cache, MAX_TRAINING_RUNS)["runs"]
    return [
        Run(stage, start, end, new == DONE_AFTER[stage], size, duration)
        for episode in sorted(kept)
        for stage, start, end, new, size, duration in kept[episode]
    ]


def _learn(cache: StateCache) -> dict[str, Any]:
    runs = training_runs(cache)
    stages = {s: m for s in ORDER if (m := fit_stage(s, runs, FEATURES)) is not None}
    spans = array("d", [t for r in runs for t in (r.start, r.end)])
    # the clock at which every run is within the window: any later clock drops some
    every_run = min((r.end for r in runs), default=None)
    return {
        "stages": {s: [getattr(m, f) for f in FIELDS] for s, m in stages.items()},
        "spans": base64.b64encode(spans.tobytes()).decode("ascii"),
        "oldest_end": every_run,
        "rate_of_all": parallelism(runs, every_run) if every_run is not None else None,
    }


@dataclasses.dataclass(frozen=True)
class _Learned:
    stages: dict[str, StageModel]
    times: array[float]  # start, end of each run, in the runs' order
    oldest_end: float | None
    rate_of_all: tuple[float, float] | None

    def rate(self, now: float) -> tuple[float, float] | None:
        if self.oldest_end is not None and self.oldest_end >= now - WINDOW.total_seconds():
            return self.rate_of_all  # the same runs are recent at this clock
        times, since = self.times, now - WINDOW.total_seconds()
        spans = [  # the recent ones, in order: parallelism keeps no other
            Run("", times[i], times[i + 1], True)
            for i in range(0, len(times), 2)
            if times[i + 1] >= since
        ]
        return parallelism(spans, now)


# stage runs failures feature slope intercept r2, then q50 q90 mean stdev fallback_x
MODEL_KINDS: tuple[Any, ...] = (
    str,
    int,
    int,
    memo.MAYBE_TEXT,
    memo.NUMBER,
    memo.NUMBER,
    memo.MAYBE_NUMBER,
)
MODEL_KINDS += (memo.NUMBER,) * 5


def _decode(value: dict[str, Any]) -> _Learned:
    """What ``_learn`` kept; TypeError or ValueError for anything else."""
    models = memo.rows(list(value["stages"].values()), MODEL_KINDS)
    stages = {m[0]: StageModel(**dict(zip(FIELDS, m, strict=True))) for m in models}
    if list(stages) != list(value["stages"]) or any(s not in ORDER for s in stages):
        raise ValueError("not the stages' models")
    ((oldest,),) = memo.rows([[value["oldest_end"]]], (memo.MAYBE_NUMBER,))
    rate = value["rate_of_all"]
    if rate is not None:
        rate = memo.rows([rate], (memo.NUMBER, memo.NUMBER))[0]
    times = array("d")
    times.frombytes(base64.b64decode(value["spans"], validate=True))
    if len(times) % 2:
        raise ValueError("not pairs of times")
    return _Learned(stages, times, oldest, rate)


def trained_model(
    cache: StateCache, max_retries: dict[str, int], retry_delay: float, now: float
) -> Model:
    """What ``fit`` gives on the runs of the ``MAX_TRAINING_RUNS`` most recent episodes."""
    learned = memo.remembered(cache, NAME, lambda: _learn(cache), _decode)
    return Model(learned.stages, dict(max_retries), retry_delay, learned.rate(now))
