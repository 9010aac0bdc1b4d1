"""Forecasting from the fitted models (``hystate.reports.fit``): each unfinished episode's risk of
ending skipped and remaining work, the ETA range of the whole migration, and reading all that
from the cache for ``status``, the reports and the metrics."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from hystate.cache import forecast_queries
from hystate.core.model import ACTIVE_STAGES, parse_time
from hystate.reports import trained
from hystate.reports.fit import (
    FEATURES,
    MIN_RUNS,
    ORDER,
    STILL_TO_DO,
    Z90,
    Model,
    Snapshot,
    StageModel,
)
from hystate.reports.trained import trained_model

if TYPE_CHECKING:
    from hystate.engine.workspace import Workspace


ACTIVE_STAGES_BY_NAME = {stage.value: kind for stage, kind in ACTIVE_STAGES.items()}


@dataclass
class Group:
    """Unfinished episodes alike in all the risk depends on (stage, failed stage, attempts),
    with sums of their features: the expected work is linear in a feature, so a group's work
    follows from these sums without visiting each episode (100,000 episodes make a few hundred
    groups)."""

    stage: str
    failed_stage: str | None
    attempts: tuple[int, int, int]  # download, conversion, upload
    n: int = 0
    # feature -> [count known, sum, sum of squares, min, max]
    sums: dict[str, list[float]] = field(default_factory=dict)

    def add(self, snap: Snapshot) -> None:
        self.n += 1
        for feature in FEATURES:
            value = getattr(snap, feature)
            if value is not None:
                s = self.sums.setdefault(feature, [0, 0.0, 0.0, math.inf, -math.inf])
                s[0] += 1
                s[1] += value
                s[2] += value * value
                s[3] = min(s[3], value)
                s[4] = max(s[4], value)

    @property
    def key(self) -> tuple[str, str | None, tuple[int, int, int]]:
        return self.stage, self.failed_stage, self.attempts


def _todo(stage: str, failed_stage: str | None) -> tuple[str, ...]:
    if stage == "failed":
        return ORDER[ORDER.index(failed_stage) :] if failed_stage in ORDER else ()
    return STILL_TO_DO.get(stage, ())


def _plan(model: Model, stage: str, failed: str | None, attempts: tuple[int, int, int]) -> Any:
    """(stage model, tries left, expected attempts) for each stage still to pass, and the
    probability of passing them all."""
    used = dict(zip(("download", "conversion", "upload"), attempts, strict=True))
    steps = []
    survive = 1.0
    for todo in _todo(stage, failed):
        stage_model = model.stages.get(todo)
        if stage_model is None or stage_model.runs < MIN_RUNS:
            continue  # too little seen: no time, no risk (and no ETA: see forecast)
        budget = int(model.max_retries.get(ACTIVE_STAGES_BY_NAME[todo], 1))
        tries = max(budget - used[ACTIVE_STAGES_BY_NAME[todo]] + (stage == todo), 0)
        f = stage_model.failure_rate
        survive *= 1 - f**tries if tries > 0 else 0.0
        steps.append((stage_model, tries, sum(f**i for i in range(tries))))
    return steps, survive


def _attempts(snap: Snapshot) -> tuple[int, int, int]:
    a = snap.attempts
    return a.get("download", 0), a.get("conversion", 0), a.get("upload", 0)


def episode_outlook(model: Model, snap: Snapshot, now: float) -> dict[str, Any] | None:
    """Risk of ending skipped and remaining work (seconds) of one unfinished episode; None
    for an episode with nothing left to do."""
    if not _todo(snap.stage, snap.failed_stage):
        return None
    steps, survive = _plan(model, snap.stage, snap.failed_stage, _attempts(snap))
    p50 = p90 = mean = var = 0.0
    for stage_model, tries, runs in steps:
        value = getattr(snap, stage_model.feature) if stage_model.feature else None
        q50, q90, _ = stage_model.quantiles(value)
        mu = stage_model.base(value) + stage_model.mean
        if snap.stage == stage_model.stage:  # part of the current attempt is done
            elapsed = max(now - snap.since, 0.0)
            q50, q90, mu = (max(q - elapsed, 0.0) for q in (q50, q90, mu))
        p50 += runs * q50
        p90 += runs * q90
        mean += runs * mu  # retry delays are waiting, not work: other episodes fill them
        var += runs * stage_model.stdev**2 + mu**2 * _attempt_variance(stage_model, tries)
    return {
        "episode_id": snap.episode_id,
        "stage": snap.stage,
        "risk": round(1 - survive, 4),
        "work_p50_seconds": round(p50, 1),
        "work_p90_seconds": round(p90, 1),
        "_mean": mean,
        "_var": var,
    }


def _attempt_variance(stage_model: StageModel, tries: int) -> float:
    f = stage_model.failure_rate
    return min(f / (1 - f) ** 2 if f < 1 else 0.0, float(tries**2))


def _group_work(model: Model, group: Group) -> tuple[float, float, float, float]:
    """(risk, summed mean work, summed variance, the longest p90 chain) of a group; the
    same sums as adding up ``episode_outlook`` of each member (not in an active stage)."""
    steps, survive = _plan(model, group.stage, group.failed_stage, group.attempts)
    mean = var = chain = 0.0
    for stage_model, tries, runs in steps:
        n = group.n
        a = stage_model.intercept + stage_model.mean if stage_model.feature else stage_model.mean
        b = stage_model.slope if stage_model.feature else 0.0
        known, total, squares, low, high = group.sums.get(
            stage_model.feature or "", [0, 0.0, 0.0, math.inf, -math.inf]
        )
        missing = n - known
        sx = total + missing * stage_model.fallback_x
        sxx = squares + missing * stage_model.fallback_x**2
        mean += runs * (n * a + b * sx)
        square_sum = n * a * a + 2 * a * b * sx + b * b * sxx
        var += n * runs * stage_model.stdev**2 + square_sum * _attempt_variance(stage_model, tries)
        extreme = None
        if stage_model.feature and known:
            extreme = high if b >= 0 else low
            if missing and (stage_model.fallback_x > extreme) == (b >= 0):
                extreme = stage_model.fallback_x
        chain += runs * stage_model.quantiles(extreme)[1]
    return 1 - survive, mean, var, chain


def predict(
    model: Model, snapshots: list[Snapshot], now: float, limit: int | None = None
) -> dict[str, Any]:
    """ETA range, remaining work, per-stage models and the riskiest episodes (``limit`` of
    them; all when None)."""
    groups: dict[Any, Group] = {}
    members: dict[Any, list[Snapshot]] = {}
    active: list[Snapshot] = []
    for snap in snapshots:
        if not _todo(snap.stage, snap.failed_stage):
            continue
        if snap.stage in ORDER:
            active.append(snap)
            continue
        key = (snap.stage, snap.failed_stage, _attempts(snap))
        group = groups.get(key) or groups.setdefault(key, Group(*key))
        group.add(snap)
        members.setdefault(key, []).append(snap)

    def listed(key: Any) -> list[Snapshot]:
        mine = sorted(members[key], key=lambda s: s.episode_id)
        return mine if limit is None else mine[:limit]

    return forecast(model, list(groups.values()), active, now, listed, limit)


def forecast(
    model: Model,
    groups: list[Group],
    active: list[Snapshot],
    now: float,
    members: Any,
    limit: int | None = None,
) -> dict[str, Any]:
    """``predict`` from groups of waiting or failed episodes plus the episodes in an active
    stage (each on its own: part of its run is done); ``members(group.key)`` lists a group's
    episodes, asked only for the riskiest groups."""
    outlooks = [o for s in active if (o := episode_outlook(model, s, now)) is not None]
    mean = sum(o["_mean"] for o in outlooks)
    var = sum(o["_var"] for o in outlooks)
    chain = max((o["work_p90_seconds"] for o in outlooks), default=0.0)
    skips = sum(o["risk"] for o in outlooks)
    rated = []
    for group in groups:
        risk, g_mean, g_var, g_chain = _group_work(model, group)
        mean, var, chain = mean + g_mean, var + g_var, max(chain, g_chain)
        skips += group.n * risk
        rated.append((round(risk, 4), group))
    count = len(outlooks) + sum(g.n for g in groups)
    rated.sort(key=lambda rg: -rg[0])
    listed = [o for o in outlooks]
    for i, (risk, group) in enumerate(rated):
        if limit is not None and len(listed) >= limit and risk < rated[i - 1][0]:
            break
        listed += [o for s in members(group.key) if (o := episode_outlook(model, s, now))]
    for o in listed:
        o.pop("_mean", None), o.pop("_var", None)
    listed.sort(key=lambda o: (-o["risk"], o["episode_id"]))
    work = (mean, mean + Z90 * math.sqrt(max(var, 0.0)))
    result: dict[str, Any] = {
        "eta_p50": None,
        "eta_p90": None,
        "note": None,
        "remaining_episodes": count,
        "remaining_work_seconds": {"p50": round(work[0], 1), "p90": round(work[1], 1)},
        "parallelism": None,
        "expected_skips": round(skips, 2),
        "stages": {s: m.as_dict() for s, m in model.stages.items()},
        "episodes": listed[:limit] if limit is not None else listed,
    }
    if not count:
        result["note"] = "no work left before upload"
        return result
    needed = {s for g in groups for s in _todo(g.stage, g.failed_stage)}
    needed |= {s for a in active for s in _todo(a.stage, a.failed_stage)}
    thin = [
        s
        for s in ORDER
        if s in needed and (s not in model.stages or model.stages[s].runs < MIN_RUNS)
    ]
    if thin:
        result["note"] = (
            f"not enough history: fewer than {MIN_RUNS} timed runs of {', '.join(thin)}"
        )
        return result
    if model.rate is None:
        result["note"] = "not enough history: no timed runs in the last 7 days"
        return result
    fast, slow = model.rate
    result["parallelism"] = {"p50": round(fast, 2), "p10": round(slow, 2)}
    result["eta_p50"] = _iso(now + work[0] / fast)
    # p90: the slow rate, plus the tail list scheduling allows (Graham: the longest remaining
    # chain of one episode, less what runs beside it) and one late failure's retry delay
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

_WAITING = ("discovered", "downloaded", "converted", "failed")


runs_from_log = trained.runs_from_log  # where the tests and the back-test find it


def _snapshot(r: Any) -> Snapshot:
    attempts = {"download": r[3], "conversion": r[4], "upload": r[5]}
    return Snapshot(r[0], r[1], r[2], attempts, parse_time(r[6]).timestamp(), r[7], r[8])


def _group(r: Any) -> Group:
    group = Group(r[0], r[1], (r[2], r[3], r[4]), r[5])
    for i, feature in enumerate(FEATURES):
        known, total, squares, low, high = r[6 + 5 * i : 11 + 5 * i]
        if known:
            group.sums[feature] = [known, total, squares, low, high]
    return group


def predict_summary(ws: Workspace, now: datetime | None = None, limit: int = 10) -> dict[str, Any]:
    """Predictions from the cache of ``manager`` (what ``status``, the reports and the metrics
    show): the model from the most recent runs, waiting and failed episodes in groups, the
    ``limit`` riskiest episodes listed."""
    now = now or datetime.now(UTC)
    cache = ws.cache
    groups = [_group(r) for r in forecast_queries.waiting_groups(cache, _WAITING, FEATURES)]
    active = [_snapshot(r) for r in forecast_queries.active_snapshots(cache)]

    def members(key: tuple[str, str | None, tuple[int, int, int]]) -> list[Snapshot]:
        stage, failed, attempts = key
        return [
            _snapshot(r)
            for r in forecast_queries.group_members(cache, stage, failed, attempts, limit)
        ]

    stamp = now.timestamp()
    model = trained_model(
        cache,
        ws.config.get("recovery.max_retries"),
        float(ws.config.get("recovery.retry_delay")),
        stamp,
    )
    return forecast(model, groups, active, stamp, members, limit)


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
    elif not prediction["remaining_episodes"]:
        lines.append(f"predicted completion: nothing to predict ({prediction['note']})")
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
    if prediction["eta_p50"]:
        lines.append(f"expected to end skipped: {prediction['expected_skips']:g} episodes")
    return lines


def _short(stamp: str | None) -> str:
    return stamp[:16].replace("T", " ") if stamp else "?"
