"""Predictions: per-stage duration models and failure rates, the ETA range, per-episode risk,
and how status, the reports and the metrics show them."""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hystate.manager import StateManager
from hystate.reports import fit as predict
from hystate.reports import forecast
from hystate.reports.fit import Run, Snapshot
from tests.conftest import Cli, run_hystate

RETRIES = {"download": 3, "conversion": 2, "upload": 3}
NOW = 1_800_000_000.0


def lanes(count: int, seconds: Callable[[int], float], workers: int = 4) -> list[Run]:
    """``count`` download runs back to back on ``workers`` lanes ending at NOW."""
    runs = []
    ends = [NOW] * workers
    for i in range(count):
        lane = i % workers
        took = seconds(i)
        size = 20_000_000 + 1_000_000 * (i % 50)
        runs.append(Run("downloading", ends[lane] - took, ends[lane], True, size, 1800.0))
        ends[lane] -= took
    return runs


def test_a_duration_that_follows_the_size_gets_a_line() -> None:
    rng = random.Random(1)
    runs = [
        Run("downloading", 0, 3 + size / 1e6 + rng.uniform(-1, 1), True, size, 1800.0)
        for size in (rng.randint(20_000_000, 80_000_000) for _ in range(200))
    ]
    model = predict.fit_stage("downloading", runs)
    assert model is not None and model.feature == "audio_size"
    assert model.r2 is not None and model.r2 > 0.9
    p50, p90, _ = model.quantiles(50_000_000)
    assert 52 < p50 < 54 and p50 < p90 < 54.5
    small, _, _ = model.quantiles(20_000_000)
    assert small < p50 - 25  # the line, not the average


def test_without_a_relation_the_distribution_is_used() -> None:
    rng = random.Random(2)
    runs = [
        Run(
            "converting",
            0,
            rng.uniform(50, 100),
            True,
            rng.randint(1, 10**8),
            rng.uniform(1000, 2000),
        )
        for _ in range(300)
    ]
    model = predict.fit_stage("converting", runs)
    assert model is not None and model.feature is None
    p50, p90, _ = model.quantiles(123.0)
    assert 70 < p50 < 80 and 90 < p90 < 100


def test_failure_rate_and_risk_follow_attempts_left() -> None:
    runs = [Run("downloading", 0, 10, i % 5 != 0, None, None) for i in range(100)]  # 20% fail
    runs += [
        Run(s, 0, 10, True, None, None) for s in ("converting", "uploading") for _ in range(50)
    ]
    model = predict.fit(runs, RETRIES, 300, 10)
    f = model.stages["downloading"].failure_rate
    assert f == pytest.approx(20.5 / 101)
    fresh = Snapshot("a", "discovered", None, {"download": 0, "conversion": 0, "upload": 0}, 0)
    last_try = Snapshot(
        "b", "failed", "downloading", {"download": 2, "conversion": 0, "upload": 0}, 0
    )
    spent = Snapshot("c", "failed", "downloading", {"download": 3, "conversion": 0, "upload": 0}, 0)
    outlook = {
        s.episode_id: forecast.episode_outlook(model, s, 10) for s in (fresh, last_try, spent)
    }
    fc = model.stages["converting"].failure_rate
    fu = model.stages["uploading"].failure_rate
    survive = (1 - fc**2) * (1 - fu**3)
    assert outlook["a"]["risk"] == pytest.approx(1 - (1 - f**3) * survive, abs=1e-4)  # type: ignore[index]
    assert outlook["b"]["risk"] == pytest.approx(1 - (1 - f) * survive, abs=1e-4)  # type: ignore[index]
    assert outlook["c"]["risk"] == 1.0  # type: ignore[index]
    done = Snapshot("d", "uploaded", None, {"download": 1, "conversion": 1, "upload": 1}, 0)
    assert forecast.episode_outlook(model, done, 10) is None


def test_the_eta_is_the_work_left_over_the_parallelism_seen() -> None:
    runs = lanes(400, lambda i: 60.0)
    model = predict.fit(runs, RETRIES, 300, NOW)
    assert model.rate is not None and model.rate[0] == pytest.approx(4.0, rel=0.01)
    left = [
        Snapshot(f"e{i}", "converted", None, {"download": 1, "conversion": 1, "upload": 0}, NOW)
        for i in range(100)
    ]
    # no upload runs seen yet: no ETA rather than one that leaves the uploads out
    early = forecast.predict(model, left, NOW)
    assert early["eta_p50"] is None
    assert early["note"] == "not enough history: fewer than 10 timed runs of uploading"
    runs += [
        Run("uploading", r.start, r.end, True, r.audio_size, 1800.0)
        for r in lanes(40, lambda i: 60.0)
    ]
    model = predict.fit(runs, RETRIES, 300, NOW)
    result = forecast.predict(model, left, NOW)
    f = model.stages["uploading"].failure_rate
    work = 100 * 60 * (1 + f + f**2)  # expected attempts x duration
    assert result["remaining_work_seconds"]["p50"] == pytest.approx(work, rel=0.01)
    eta50 = datetime.fromisoformat(result["eta_p50"]).timestamp()
    eta90 = datetime.fromisoformat(result["eta_p90"]).timestamp()
    assert eta50 - NOW == pytest.approx(work / model.rate[0], rel=0.02)
    assert eta90 > eta50


def test_groups_add_up_to_the_episodes() -> None:
    """The grouped forecast (what status uses at any scale) equals the sum of the episodes'."""
    rng = random.Random(3)
    runs = [
        Run(stage, 0, 3 + size / 1e6 * rng.uniform(0.8, 1.2), rng.random() > 0.15, size, 1800.0)
        for stage in predict.ORDER
        for size in (rng.randint(20_000_000, 80_000_000) for _ in range(100))
    ]
    model = predict.fit(runs, RETRIES, 300, 1000)
    snaps = []
    for i in range(300):
        stage = rng.choice(["discovered", "downloaded", "converted", "failed", "converting"])
        failed = rng.choice(predict.ORDER) if stage == "failed" else None
        attempts = {"download": rng.randint(0, 3), "conversion": rng.randint(0, 2), "upload": 0}
        size = rng.choice([None, rng.randint(20_000_000, 80_000_000)])
        snaps.append(Snapshot(f"e{i:03d}", stage, failed, attempts, 900, size, 1800.0))
    result = forecast.predict(model, snaps, 1000)
    outlooks = [o for s in snaps if (o := forecast.episode_outlook(model, s, 1000))]
    mean = sum(o["_mean"] for o in outlooks)
    assert result["remaining_work_seconds"]["p50"] == pytest.approx(mean, rel=1e-9, abs=0.1)
    assert result["expected_skips"] == pytest.approx(sum(o["risk"] for o in outlooks), abs=0.01)
    assert result["remaining_episodes"] == len(outlooks)
    assert len(result["episodes"]) == len(outlooks)
    top = forecast.predict(model, snaps, 1000, limit=5)["episodes"]
    assert top == result["episodes"][:5]


def test_no_history_no_eta() -> None:
    model = predict.fit([], RETRIES, 300, NOW)
    snap = Snapshot("a", "discovered", None, {"download": 0, "conversion": 0, "upload": 0}, NOW)
    result = forecast.predict(model, [snap], NOW)
    assert result["eta_p50"] is None and "not enough history" in result["note"]


# -- through the cache, status, reports and metrics --------------------------------------------


@pytest.fixture
def worked(manager: StateManager, monkeypatch: pytest.MonkeyPatch) -> StateManager:
    """12 episodes taken through the pipeline on a clock that moves like real work: downloads
    take 20-80 s in proportion to the mp3 size, conversions ~90 s, uploads ~50 s; one fails."""
    import hystate.engine.steps as steps_module

    clock = [datetime.now(UTC) - timedelta(hours=6)]
    monkeypatch.setattr(steps_module, "now_utc", lambda: clock[0].isoformat(timespec="seconds"))

    def tick(seconds: float) -> None:
        clock[0] += timedelta(seconds=seconds)

    ids = sorted(e.episode_id for e in manager.list_episodes())
    for n, eid in enumerate(ids[:12]):
        size = 20_000_000 + 5_000_000 * n
        manager.update_state(eid, "downloading")
        tick(size / 1_000_000)
        manager.update_state(
            eid,
            "downloaded",
            fields={
                "files.audio_file": f"a/{eid}.mp3",
                "metrics.audio_size": size,
                "metrics.audio_duration": 1800.0,
            },
        )
        manager.update_state(eid, "converting")
        tick(90 + n % 3)
        if n == 5:
            manager.fail(eid, "ffmpeg exited with status 1")
            continue
        manager.update_state(eid, "converted", fields={"files.video_file": f"v/{eid}.mp4"})
        manager.update_state(eid, "uploading")
        tick(50 + n % 4)
        manager.update_state(eid, "uploaded", fields={"youtube.video_id": f"vid{n}"})
    return manager


def test_status_shows_the_predictions(worked: StateManager, run: Cli) -> None:
    result = run("status", "--json")
    assert result.exit_code == 0, result.output
    p = json.loads(result.output)["predictions"]
    assert p["stages"]["downloading"]["model"] == "line on audio_size"
    assert p["stages"]["converting"]["failures"] == 1
    assert p["eta_p50"] and p["eta_p90"] and p["eta_p50"] <= p["eta_p90"]
    assert p["remaining_episodes"] == 9  # 8 discovered, 1 failed
    riskiest = p["episodes"][0]
    assert riskiest["stage"] == "failed" and riskiest["risk"] > p["episodes"][-1]["risk"]
    text = run("status")
    assert "predicted completion of the work:" in text.output
    assert "downloading" in text.output and "line on audio_size" in text.output
    assert f"most at risk of ending skipped: {riskiest['episode_id']}" in text.output


def test_reports_show_the_predictions(worked: StateManager, run: Cli) -> None:
    data = json.loads(run("report", "--format", "json", "-o", "-").output)
    assert data["predictions"]["eta_p50"]  # the summary keys are at the top level
    html = run("report", "--format", "html", "-o", "-").output
    assert "<h2>Predictions</h2>" in html and "Most at risk of ending skipped" in html
    riskiest = data["predictions"]["episodes"][0]["episode_id"]
    assert riskiest in html


def test_runs_from_the_cache_match_the_files(worked: StateManager) -> None:
    worked.refresh()
    rows = worked.cache.query(
        "SELECT episode_id, timestamp, from_stage, to_stage, audio_size, audio_duration"
        " FROM processing_log JOIN episode_states USING (episode_id)"
        " ORDER BY episode_id, timestamp, id"
    )
    runs = forecast.runs_from_log([tuple(r) for r in rows])
    expected = 0
    for episode in worked.list_episodes():
        history = episode.history
        expected += sum(
            1
            for a, b in itertools.pairwise(history)
            if a["to"] in predict.ORDER and b["from"] == a["to"]
        )
    assert len(runs) == expected == 12 + 12 + 11
    assert sum(not r.ok for r in runs) == 1


GRAFANA = Path(__file__).resolve().parents[2] / "docs" / "grafana-dashboard.json"


def test_the_grafana_dashboard_uses_only_emitted_metrics(worked: StateManager) -> None:
    import re

    proc = run_hystate(worked.repo.root, "metrics")
    assert proc.returncode == 0, proc.stderr
    samples: dict[str, set[str]] = {}
    for line in proc.stdout.splitlines():
        if line and not line.startswith("#"):
            name = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line)
            assert name
            labels = set(re.findall(r'(\w+)="', line))
            samples.setdefault(name.group(0), set()).update(labels)
    dashboard = json.loads(GRAFANA.read_text())
    assert dashboard["uid"] and dashboard["schemaVersion"] >= 30
    used: set[str] = set()
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            expr = target["expr"]
            names = set(re.findall(r"\bhystate_[a-z_]+\b", expr))
            assert names, f"{panel['title']}: {expr}"
            for name in names:
                assert name in samples, f"{panel['title']}: {name} is not emitted"
                used.add(name)
            for label in re.findall(r"\b(?:by \(|\{)(\w+)", expr):
                assert any(label in samples[n] for n in names), f"{panel['title']}: {label}"
            for label in re.findall(r"\{\{(\w+)\}\}", target.get("legendFormat", "")):
                assert any(label in samples[n] for n in names), f"{panel['title']}: {label}"
    assert used == set(samples), f"not on the dashboard: {set(samples) - used}"
