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
import statistics
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from hystate.model import ACTIVE_STAGES, parse_time

if TYPE_CHECKING:
    from hystate.manager import StateManager

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
MIN_R2 = 0.10
MAX_TRAINING_RUNS = 20_000  # per stage: the most recent ones
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


def _quantile(values: list[float], q: float) -> float:
    if len(values) == 1:
        return values[0]
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return cuts[max(min(round(q * 100) - 1, 98), 0)]


def fit_stage(
    stage: str, runs: list[Run], features: tuple[str, ...] = FEATURES
) -> StageModel | None:
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
        statistics.pstdev(seconds),
    )


def _line(stage: str, runs: int, failures: int, feature: str, done: list[Run]) -> StageModel | None:
    """A least-squares line of duration on ``feature``, if it explains enough."""
    pairs = [(float(getattr(r, feature)), r.seconds) for r in done if getattr(r, feature)]
    if len(pairs) < MIN_RUNS_FOR_LINE or len({x for x, _ in pairs}) < 2:
        return None
    xs, ys = [p[0] for p in pairs], [p[1] for p in pairs]
    total = statistics.pvariance(ys)
    if total <= 0:
        return None
    slope, intercept = statistics.linear_regression(xs, ys)
    residuals = [y - (intercept + slope * x) for x, y in pairs]
    r2 = 1 - statistics.pvariance(residuals) / total
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
        statistics.pstdev(residuals),
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
        for i in range(10):
            lo, hi = start + i * width, start + (i + 1) * width
            busy[i] += max(0.0, min(run.end, hi) - max(run.start, lo))
    rates = sorted(b / width for b in busy)
    if rates[-1] <= 0:
        return None
    return statistics.median(rates), max(_quantile(rates, 0.1), 1e-9)


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


def _tries_left(snapshot: Snapshot, stage: str, budget: int) -> int:
    used = snapshot.attempts.get(ACTIVE_STAGES_BY_NAME[stage], 0)
    if snapshot.stage == stage:
        return max(budget - used + 1, 0)  # the attempt under way counts
    return max(budget - used, 0)


ACTIVE_STAGES_BY_NAME = {stage.value: kind for stage, kind in ACTIVE_STAGES.items()}


def episode_outlook(model: Model, snap: Snapshot, now: float) -> dict[str, Any] | None:
    """Risk of ending skipped and remaining work (seconds) of one unfinished episode; None
    for an episode with nothing left to do."""
    if snap.stage == "failed":
        todo = ORDER[ORDER.index(snap.failed_stage) :] if snap.failed_stage in ORDER else ()
    else:
        todo = STILL_TO_DO.get(snap.stage, ())
    if not todo:
        return None
    survive, p50, p90, mean, var = 1.0, 0.0, 0.0, 0.0, 0.0
    for stage in todo:
        stage_model = model.stages.get(stage)
        budget = int(model.max_retries.get(ACTIVE_STAGES_BY_NAME[stage], 1))
        tries = _tries_left(snap, stage, budget)
        if stage_model is None:
            continue
        f = stage_model.failure_rate
        survive *= 1 - f**tries if tries > 0 else 0.0
        runs = sum(f**i for i in range(tries))  # expected attempts still to make
        value = getattr(snap, stage_model.feature) if stage_model.feature else None
        q50, q90, mu = stage_model.quantiles(value)
        if snap.stage == stage:  # part of the current attempt is done
            elapsed = max(now - snap.since, 0.0)
            q50, q90, mu = (max(q - elapsed, 0.0) for q in (q50, q90, mu))
        p50 += runs * q50
        p90 += runs * q90
        mean += runs * mu  # retry delays are waiting, not work: other episodes fill them
        n_var = f / (1 - f) ** 2 if f < 1 else 0.0
        var += runs * stage_model.stdev**2 + mu**2 * min(n_var, tries**2)
    return {
        "episode_id": snap.episode_id,
        "stage": snap.stage,
        "risk": round(1 - survive, 4),
        "work_p50_seconds": round(p50, 1),
        "work_p90_seconds": round(p90, 1),
        "_mean": mean,
        "_var": var,
    }


def predict(model: Model, snapshots: list[Snapshot], now: float) -> dict[str, Any]:
    """ETA range, remaining work, per-stage models and the riskiest episodes."""
    outlooks = [o for s in snapshots if (o := episode_outlook(model, s, now)) is not None]
    mean = sum(o.pop("_mean") for o in outlooks)
    sd = math.sqrt(sum(o.pop("_var") for o in outlooks))
    work = (mean, mean + Z90 * sd)
    result: dict[str, Any] = {
        "eta_p50": None,
        "eta_p90": None,
        "note": None,
        "remaining_episodes": len(outlooks),
        "remaining_work_seconds": {"p50": round(work[0], 1), "p90": round(work[1], 1)},
        "parallelism": None,
        "expected_skips": round(sum(o["risk"] for o in outlooks), 2),
        "stages": {s: m.as_dict() for s, m in model.stages.items()},
        "episodes": sorted(outlooks, key=lambda o: (-o["risk"], o["episode_id"])),
    }
    if not outlooks:
        result["note"] = "no work left before upload"
        return result
    if not model.stages or model.rate is None:
        result["note"] = "not enough history: no timed runs of the active stages in the last 7 days"
        return result
    fast, slow = model.rate
    result["parallelism"] = {"p50": round(fast, 2), "p10": round(slow, 2)}
    result["eta_p50"] = _iso(now + work[0] / fast)
    # p90: the slow rate, plus the tail list scheduling allows (Graham: the longest remaining
    # chain of one episode, less what runs beside it) and one late failure's retry delay
    chain = max(o["work_p90_seconds"] for o in outlooks)
    late_failure = model.retry_delay if any(m.failures for m in model.stages.values()) else 0.0
    tail = (1 - 1 / max(slow, 1.0)) * chain + late_failure
    result["eta_p90"] = _iso(now + work[1] / slow + tail)
    return result


def _iso(when: float) -> str | None:
    try:
        return datetime.fromtimestamp(when, UTC).isoformat(timespec="seconds")
    except (OverflowError, ValueError, OSError):
        return None  # beyond what a date can say


# -- from the cache ------------------------------------------------------------------------


def runs_from_log(rows: list[Any], features: dict[str, tuple[Any, Any]]) -> list[Run]:
    """Runs from processing_log rows (episode_id, timestamp, from_stage, to_stage) in episode
    and time order; ``features``: episode_id -> (audio_size, audio_duration)."""
    runs = []
    entered: tuple[str, str, float] | None = None
    for episode_id, stamp, old, new in rows:
        when = parse_time(stamp).timestamp()
        if entered and entered[0] == episode_id and old == entered[1] and old in ORDER:
            size, duration = features.get(episode_id, (None, None))
            runs.append(Run(old, entered[2], when, new == DONE_AFTER[old], size, duration))
        entered = (episode_id, new, when)
    return runs


def predict_summary(manager: StateManager, now: datetime | None = None) -> dict[str, Any]:
    """Predictions from the cache of ``manager`` (what ``status`` and the reports show)."""
    now = now or datetime.now(UTC)
    cache = manager.cache
    rows = cache.query(
        "SELECT episode_id, timestamp, from_stage, to_stage FROM processing_log"
        " WHERE episode_id IN (SELECT episode_id FROM processing_log WHERE to_stage IN"
        " ('downloading', 'converting', 'uploading') ORDER BY timestamp DESC LIMIT ?)"
        " ORDER BY episode_id, timestamp, id",
        (MAX_TRAINING_RUNS,),
    )
    states = cache.query(
        "SELECT episode_id, stage, failed_stage, download_attempts, conversion_attempts,"
        " upload_attempts, last_updated, audio_size, audio_duration FROM episode_states"
        " WHERE stage NOT IN ('uploaded', 'scheduled', 'published', 'skipped')"
    )
    features = {r[0]: (r[7], r[8]) for r in states}
    if rows:
        known = {r[0] for r in rows} - set(features)
        for chunk in _chunks(sorted(known), 500):
            marks = ",".join("?" * len(chunk))
            for r in cache.query(
                "SELECT episode_id, audio_size, audio_duration FROM episode_states"
                f" WHERE episode_id IN ({marks})",
                tuple(chunk),
            ):
                features[r[0]] = (r[1], r[2])
    runs = runs_from_log([tuple(r) for r in rows], features)
    snapshots = [
        Snapshot(
            r[0],
            r[1],
            r[2],
            {"download": r[3], "conversion": r[4], "upload": r[5]},
            parse_time(r[6]).timestamp(),
            r[7],
            r[8],
        )
        for r in states
    ]
    stamp = now.timestamp()
    model = fit(
        runs,
        manager.config.get("recovery.max_retries"),
        float(manager.config.get("recovery.retry_delay")),
        stamp,
    )
    result = predict(model, snapshots, stamp)
    result["episodes"] = result["episodes"][:10]
    return result


def _chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def describe(prediction: dict[str, Any]) -> list[str]:
    """The predictions as lines for people (``hystate status``)."""
    lines = []
    if prediction["eta_p50"]:
        work = prediction["remaining_work_seconds"]
        lines.append(
            f"predicted completion of the work: {_short(prediction['eta_p50'])} (p50) to "
            f"{_short(prediction['eta_p90'])} (p90); {work['p50'] / 3600:.1f} h of work left, "
            f"{prediction['parallelism']['p50']} runs at a time"
        )
    else:
        lines.append(f"predicted completion: unknown ({prediction['note']})")
    for stage, m in prediction["stages"].items():
        basis = m["model"] + (f", r2 {m['r2']}" if m["r2"] is not None else "")
        lines.append(
            f"  {stage:<12}{m['runs']:>6} runs, {100 * m['failure_rate']:.1f}% fail, "
            f"p50 {m['p50_seconds']:g}s, p90 {m['p90_seconds']:g}s ({basis})"
        )
    risky = [e for e in prediction["episodes"] if e["risk"] >= 0.05][:5]
    if risky:
        shown = ", ".join(f"{e['episode_id']} {100 * e['risk']:.0f}% ({e['stage']})" for e in risky)
        lines.append(f"most at risk of ending skipped: {shown}")
    lines.append(f"expected to end skipped: {prediction['expected_skips']:g} episodes")
    return lines


def _short(stamp: str | None) -> str:
    return stamp[:16].replace("T", " ") if stamp else "?"
