"""Predictions from the history: how long each active stage takes, how often it fails, when
the migration will be done (a p50/p90 range) and how likely each episode is to end skipped.

Plain statistics, fitted on the runs the history records (a run: entering downloading,
converting or uploading until leaving it for the next stage or for failed):

- duration per stage: a least-squares line on what is known of the episode (mp3 size or audio
  duration, whichever explains more) when that line explains at least 10% of the variance of
  at least 10 runs; otherwise the plain distribution. p50/p90 of a run
  are the prediction plus the median / 90th percentile of the residuals.
- failure rate per stage: failures / runs (with half a failure and one run added, so a stage
  with no runs yet is not certain either way). With ``max_retries`` attempts, an episode ends
  skipped at a stage with probability ``rate ** attempts left``; its risk combines the stages
  it still has to pass.
- completion: the remaining work (expected attempts x mean duration, summed; the p90 adds
  1.28 standard deviations) divided by the parallelism seen in the history (busy time of the
  runs / wall time, in ten slices of the recent window: median for p50, the 10th percentile
  for p90). The p90 also adds the tail: the longest remaining chain of one episode (which
  cannot be spread over workers) and one retry delay. The ETA is for the work through
  ``uploaded``; publication dates are the schedule's.

The core works on plain data (``Run``, ``Snapshot``) so ``bench/predictions.py`` can cut a
history at any moment and back-test it; ``predict_summary`` reads them from the cache.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass

ORDER = ("downloading", "converting", "uploading")
DONE_AFTER = {"downloading": "downloaded", "converting": "converted", "uploading": "uploaded"}
# which stages an episode still has to pass, from the stage it is in
STILL_TO_DO = {
    "discovered": ORDER,
    "downloading": ORDER,
    "downloaded": ORDER[1:],
    "converting": ORDER[1:],
    "converted": ORDER[2:],
    "uploading": ORDER[2:],
}
FEATURES = ("audio_size", "audio_duration")
MIN_RUNS_FOR_LINE = 10
MIN_RUNS = 10  # a stage with fewer timed runs is not used for risk or ETA (too few to tell)
MIN_R2 = 0.10
MAX_TRAINING_RUNS = 3_000  # the model learns from the episodes of the latest runs
WINDOW = timedelta(days=7)
Z90 = 1.2816


@dataclass(frozen=True)
class Run:
    stage: str
    start: float  # unix seconds
    end: float
    ok: bool
    audio_size: float | None = None
    audio_duration: float | None = None

    @property
    def seconds(self) -> float:
        return max(self.end - self.start, 0.0)


@dataclass(frozen=True)
class Snapshot:
    """An episode as it stands: what the predictions need of it."""

    episode_id: str
    stage: str
    failed_stage: str | None
    attempts: dict[str, int]  # download / conversion / upload
    since: float  # when it entered its stage
    audio_size: float | None = None
    audio_duration: float | None = None


@dataclass(frozen=True)
class StageModel:
    stage: str
    runs: int
    failures: int
    feature: str | None  # None: the plain distribution
    slope: float
    intercept: float
    r2: float | None
    q50: float  # residual (or duration) quantiles
    q90: float
    mean: float
    stdev: float

    @property
    def failure_rate(self) -> float:
        return (self.failures + 0.5) / (self.runs + 1)

    fallback_x: float = 0.0  # the mean feature, for an episode whose feature is unknown

    def base(self, value: float | None) -> float:
        if self.feature is None:
            return 0.0  # the quantiles are durations themselves
        return self.intercept + self.slope * (self.fallback_x if value is None else value)

    def quantiles(self, value: float | None) -> tuple[float, float, float]:
        """(p50, p90, mean) seconds of one run of an episode with this feature value."""
        base = self.base(value)
        return max(base + self.q50, 0.0), max(base + self.q90, 0.0), max(base + self.mean, 0.0)

    def as_dict(self) -> dict[str, Any]:
        p50, p90, _ = self.quantiles(None)
        return {
            "runs": self.runs,
            "failures": self.failures,
            "failure_rate": round(self.failure_rate, 4),
            "model": f"line on {self.feature}" if self.feature else "distribution",
            "r2": None if self.r2 is None else round(self.r2, 3),
            "p50_seconds": round(p50, 1),
            "p90_seconds": round(p90, 1),
        }


def _variance(values: list[float]) -> float:
    """Population variance in floats (statistics.pvariance is exact, and 20x slower)."""
    mean = math.fsum(values) / len(values)
    return math.fsum((v - mean) ** 2 for v in values) / len(values)


def _stdev(values: list[float]) -> float:
    return math.sqrt(_variance(values))


def _quantile(values: list[float], q: float) -> float:
    if len(values) == 1:
        return values[0]
    import statistics  # here: a forecast kept with the cache (reports/trained.py) needs none

    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return cuts[max(min(round(q * 100) - 1, 98), 0)]


def fit_stage(
    stage: str, runs: list[Run], features: tuple[str, ...] = FEATURES
) -> StageModel | None:
    import statistics

    mine = [r for r in runs if r.stage == stage]
    if not mine:
        return None
    failures = sum(1 for r in mine if not r.ok)
    done = [r for r in mine if r.ok] or mine  # durations of successful runs, when there are
    seconds = [r.seconds for r in done]
    lines = [line for f in features if (line := _line(stage, len(mine), failures, f, done))]
    if lines:
        return max(lines, key=lambda m: m.r2 or 0.0)
    return StageModel(
        stage,
        len(mine),
        failures,
        None,
        0.0,
        0.0,
        None,
        _quantile(seconds, 0.5),
        _quantile(seconds, 0.9),
        statistics.fmean(seconds),
        _stdev(seconds),
    )


def _line(stage: str, runs: int, failures: int, feature: str, done: list[Run]) -> StageModel | None:
    """A least-squares line of duration on ``feature``, if it explains enough."""
    import statistics

    pairs = [(float(getattr(r, feature)), r.seconds) for r in done if getattr(r, feature)]
    if len(pairs) < MIN_RUNS_FOR_LINE or len({x for x, _ in pairs}) < 2:
        return None
    xs, ys = [p[0] for p in pairs], [p[1] for p in pairs]
    total = _variance(ys)
    if total <= 0:
        return None
    slope, intercept = statistics.linear_regression(xs, ys)
    residuals = [y - (intercept + slope * x) for x, y in pairs]
    r2 = 1 - _variance(residuals) / total
    if r2 < MIN_R2:
        return None
    return StageModel(
        stage,
        runs,
        failures,
        feature,
        slope,
        intercept,
        r2,
        _quantile(residuals, 0.5),
        _quantile(residuals, 0.9),
        statistics.fmean(residuals),
        _stdev(residuals),
        fallback_x=statistics.fmean(xs),
    )


def parallelism(runs: list[Run], now: float) -> tuple[float, float] | None:
    """(median, 10th percentile) of busy run-seconds per wall second over ten slices of the
    recent window (the last 7 days, or since the first run)."""
    recent = [r for r in runs if r.end >= now - WINDOW.total_seconds()]
    if len(recent) < 2:
        return None
    start = min(r.start for r in recent)
    end = max(r.end for r in recent)
    if end - start <= 0:
        return None
    width = (end - start) / 10
    busy = [0.0] * 10
    for run in recent:
        first = max(int((run.start - start) // width), 0)
        last = min(int((run.end - start) // width), 9)
        for i in range(first, last + 1):  # only the slices the run overlaps
            lo, hi = start + i * width, start + (i + 1) * width
            busy[i] += max(0.0, min(run.end, hi) - max(run.start, lo))
    rates = sorted(b / width for b in busy)
    if rates[-1] <= 0:
        return None
    import statistics

    # runs shorter than the timestamps' second leave most slices idle: the median is then 0,
    # and the mean (> 0 here) is the rate work was actually done at
    return statistics.median(rates) or statistics.fmean(rates), max(_quantile(rates, 0.1), 1e-9)


@dataclass(frozen=True)
class Model:
    stages: dict[str, StageModel]
    max_retries: dict[str, int]
    retry_delay: float
    rate: tuple[float, float] | None  # parallelism (p50, p10)


def fit(
    runs: list[Run],
    max_retries: dict[str, int],
    retry_delay: float,
    now: float,
    features: tuple[str, ...] = FEATURES,
) -> Model:
    """``features=()``: the plain distributions only (the back-test's baseline)."""
    stages = {s: m for s in ORDER if (m := fit_stage(s, runs, features)) is not None}
    return Model(stages, dict(max_retries), retry_delay, parallelism(runs, now))
