"""Prometheus metrics: episodes per stage (zeros included), transitions and failures counters
from the history, the last transition's time, the completion ratio and the forecast's figures.
No episode ids. ``prometheus_client`` is imported only when metrics are asked for."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from hystate.cache import queries
from hystate.core.model import ProcessingStage, parse_time
from hystate.engine.layout import check_output
from hystate.reports.forecast import predict_summary
from hystate.reports.generator import write_output

if TYPE_CHECKING:
    from hystate.engine.workspace import Workspace


def metrics_text(ws: Workspace) -> bytes:
    """Prometheus text exposition of ``manager``'s state."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    registry.register(_Collector(ws))
    return bytes(generate_latest(registry))


def write_textfile(ws: Workspace, path: Path) -> None:
    """Atomically write the metrics for node_exporter's textfile collector."""
    check_output(ws, path)
    write_output(path, metrics_text(ws).decode())


class _Collector:
    def __init__(self, ws: Workspace) -> None:
        self.manager = ws

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        counts = self.manager.count_by_stage()
        episodes = GaugeMetricFamily(
            "hystate_episodes", "Episodes in each stage.", labels=["stage"]
        )
        for stage, n in counts.items():
            episodes.add_metric([stage], n)
        yield episodes
        cache = self.manager.cache
        transitions = CounterMetricFamily(
            "hystate_transitions",
            "Transitions recorded in the episodes' history, by stage entered.",
            labels=["to"],
        )
        entered = queries.transitions_by_stage(cache)
        for stage in (s.value for s in ProcessingStage):
            transitions.add_metric([stage], entered.get(stage, 0))
        yield transitions
        failures = CounterMetricFamily(
            "hystate_failures", "Failures recorded, by the stage that failed.", labels=["stage"]
        )
        failed = queries.failures_by_stage(cache)
        for stage in ("downloading", "converting", "uploading"):
            failures.add_metric([stage], failed.get(stage, 0))
        yield failures
        last = queries.last_entry_time(cache)
        stamp = GaugeMetricFamily(
            "hystate_last_transition_timestamp_seconds", "Unix time of the newest history entry."
        )
        stamp.add_metric([], last.timestamp() if last else 0.0)
        yield stamp
        total = GaugeMetricFamily(
            "hystate_completion_ratio", "Share of episodes published or skipped."
        )
        all_ = sum(counts.values())
        total.add_metric([], (counts["published"] + counts["skipped"]) / all_ if all_ else 0.0)
        yield total
        yield from _prediction_metrics(self.manager)


def _prediction_metrics(ws: Workspace) -> Any:
    """hystate.reports.fit's figures; a quantile without enough history is left out."""
    from prometheus_client.core import GaugeMetricFamily

    p = predict_summary(ws)
    eta = GaugeMetricFamily(
        "hystate_predicted_completion_timestamp_seconds",
        "Predicted Unix time when every episode is uploaded or skipped.",
        labels=["quantile"],
    )
    for quantile, key in (("0.5", "eta_p50"), ("0.9", "eta_p90")):
        if p[key]:
            eta.add_metric([quantile], parse_time(p[key]).timestamp())
    yield eta
    work = GaugeMetricFamily(
        "hystate_predicted_remaining_work_seconds",
        "Predicted run time still needed by the active stages, summed over episodes.",
        labels=["quantile"],
    )
    work.add_metric(["0.5"], p["remaining_work_seconds"]["p50"])
    work.add_metric(["0.9"], p["remaining_work_seconds"]["p90"])
    yield work
    rate = GaugeMetricFamily(
        "hystate_stage_failure_rate", "Share of runs of a stage that failed.", labels=["stage"]
    )
    for stage, model in p["stages"].items():
        rate.add_metric([stage], model["failure_rate"])
    yield rate
    skips = GaugeMetricFamily(
        "hystate_predicted_skips", "Expected number of unfinished episodes that end skipped."
    )
    skips.add_metric([], p["expected_skips"])
    yield skips
