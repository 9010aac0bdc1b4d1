"""The operator's figures on a finished demo repository (``hystate.demo`` on 24 of the project's
own episodes, 30% failures, every episode published or skipped within seconds), on the same with
one episode added afterwards, and on an empty repository: the throughput, the ETA, the recent
failures, the HTML report's completion and the Prometheus counters say what happened."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from hystate.manager import StateManager
from hystate.reports.generator import ReportGenerator
from hystate.reports.prometheus import metrics_text
from hystate.reports.summary import NO_EPISODES, NOTHING_LEFT
from hystate.serve.readmodel import ReadModel
from tests.conftest import REPO_ROOT, git

EPISODES = 24


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished demo repository (made once for the module; tests copy it to change it)."""
    base = tmp_path_factory.mktemp("demo")
    catalog = base / "catalog"
    for year in ("2004", "2005"):
        (catalog / year).mkdir(parents=True)
        for path in sorted((REPO_ROOT / "processed" / year).glob("*.yaml"))[: EPISODES // 2]:
            shutil.copyfile(path, catalog / year / path.name)
    target = base / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "hystate.demo", "--dir", str(target), "--catalog", str(catalog),
         "--workers", "2", "--failure-rate", "0.3"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return target


@pytest.fixture
def demo(finished: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "demo"
    shutil.copytree(finished, copy, symlinks=True)
    return copy


@pytest.fixture
def empty(tmp_path: Path) -> Path:
    root = tmp_path / "empty"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    StateManager(cwd=root, worker="t").ensure_layout()
    return root


def discoveries(repo: Path) -> int:
    manager = StateManager(cwd=repo)
    return sum(1 for e in manager.list_episodes() for h in e.data["history"] if h["from"] is None)


def test_a_finished_migration_reads_done_everywhere(demo: Path) -> None:
    manager = StateManager(cwd=demo)
    summary = ReportGenerator(manager).generate_summary()
    assert summary["completion_percentage"] == 100.0
    assert summary["throughput"]["note"] == NOTHING_LEFT
    status = ReadModel(manager).dashboard()
    assert status["finished"] and status["failed_now"] == 0
    # the HTML report: done, never "Completion: unknown" beside "nothing left to do"
    html = ReportGenerator(manager).generate_html_report("daily")
    assert "nothing left to do" in html and "Completion: unknown" not in html
    assert "Completion: nothing left to predict" in html
    # every failure was retried to the end: none of the recent ones is shown as current
    failures = status["recent_failures"]
    assert failures, "a 30% failure rate gave no failure"
    for f in failures:
        assert f["now"] in ("published", "skipped")
        assert f["recovered"] is (f["now"] == "published")
    assert any(f["recovered"] for f in failures)


def test_one_episode_added_afterwards(demo: Path) -> None:
    manager = StateManager(cwd=demo, worker="late")
    manager.add_episode("hy0_late_addition", title="Late", date="2020-01-01")
    before = datetime.now(UTC)
    summary = ReportGenerator(manager).generate_summary()
    finished = summary["throughput"]["finished_last_7_days"]
    assert finished == EPISODES
    # the history is seconds old: the episodes finished in it count as one day's work
    assert summary["throughput"]["per_day"] == float(EPISODES)
    eta = datetime.fromisoformat(summary["estimated_completion"])
    assert eta >= before.replace(microsecond=0), "the ETA is in the past"
    status = ReadModel(manager).dashboard()
    assert not status["finished"] and status["per_day"] == float(EPISODES)
    # prometheus: every discovery is a transition to discovered
    text = metrics_text(manager).decode()
    found = re.search(r'hystate_transitions_total\{to="discovered"\} (\S+)', text)
    assert found and float(found.group(1)) == discoveries(demo) == EPISODES + 1


def test_an_empty_repository(empty: Path) -> None:
    manager = StateManager(cwd=empty)
    summary = ReportGenerator(manager).generate_summary()
    assert summary["total_episodes"] == 0 and summary["estimated_completion"] is None
    assert summary["throughput"] == {
        "finished_last_7_days": 0,
        "per_day": None,
        "note": NO_EPISODES,
    }
    status = ReadModel(manager).dashboard()
    assert not status["finished"] and status["recent_failures"] == []
    html = ReportGenerator(manager).generate_html_report("daily")
    assert "Completion: unknown" not in html and NO_EPISODES.split(":")[0] in html
    text = metrics_text(manager).decode()
    assert 'hystate_transitions_total{to="discovered"} 0.0' in text


def test_a_failure_still_failed_is_not_recovered(demo: Path) -> None:
    manager = StateManager(cwd=demo, worker="w")
    manager.add_episode("hy0_broken", title="Broken", date="2020-01-02")
    manager.update_state("hy0_broken", "downloading")
    manager.fail("hy0_broken", "HTTP 503")
    newest = ReadModel(manager).dashboard()["recent_failures"][0]
    assert newest["episode_id"] == "hy0_broken"
    assert newest["now"] == "failed" and newest["recovered"] is False
