"""Reports: HTML escapes every value from a file; JSON, CSV and Prometheus forms."""

from __future__ import annotations

import csv
import io
import json
import os
import stat
from pathlib import Path

from hystate.manager import StateManager
from hystate.reports.generator import ReportGenerator
from hystate.reports.prometheus import metrics_text
from tests.conftest import Cli, full_walk

EVIL = '<script>alert("x")</script> Cost O\' Cows & Horses'


def test_html_escapes_titles_and_errors(tmp_path: Path, run: Cli, repo: Path) -> None:
    manager = StateManager(cwd=repo, worker="w")
    manager.add_episode("evil-1", title=EVIL, date="2010-05-05")
    manager.update_state("evil-1", "downloading")
    manager.fail("evil-1", "<b>boom</b> & <img src=x onerror=alert(1)>")
    out = tmp_path / "r.html"
    assert run("report", "--format", "html", "-o", str(out)).exit_code == 0
    html = out.read_text()
    assert "<script>alert" not in html and "<img src=x" not in html and "<b>boom" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; Cost O&#39; Cows &amp; Horses" in html
    assert "&lt;b&gt;boom&lt;/b&gt; &amp; &lt;img src=x onerror=alert(1)&gt;" in html
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "")  # self-contained


def test_html_has_the_chart_and_counts(manager: StateManager) -> None:
    ids = [e.episode_id for e in manager.list_episodes()]
    for eid in ids[:3]:
        full_walk(manager, eid)
    html = ReportGenerator(manager).render_html(ReportGenerator(manager).collect())
    assert "<svg" in html and "<polyline" in html and "published (3)" in html


def test_default_report_paths(run: Cli, repo: Path) -> None:
    path = Path(run("report", "--period", "daily").output.strip())
    assert path.parent == repo / "processed" / "reports" and path.name.startswith("daily_report_")
    weekly = Path(run("report", "--period", "weekly").output.strip())
    assert weekly.name.startswith("weekly_report_") and "-W" in weekly.name
    summary = Path(run("report", "--format", "json").output.strip())
    assert (
        summary.name == "summary.json" and json.loads(summary.read_text())["total_episodes"] == 20
    )


def test_json_to_stdout_and_summary_shape(run: Cli) -> None:
    summary = json.loads(run("report", "--format", "json", "-o", "-").output)
    assert set(summary) >= {
        "timestamp",
        "total_episodes",
        "progress",
        "completion_percentage",
        "estimated_completion",
    }
    assert set(summary["progress"]) == {
        "discovered", "downloading", "downloaded", "converting", "converted", "uploading",
        "uploaded", "scheduled", "published", "failed", "skipped",
    }  # fmt: skip


def test_csv_one_row_per_episode(run: Cli, repo: Path) -> None:
    manager = StateManager(cwd=repo)
    manager.add_episode("comma-1", title='Quotes "and", commas', date="2011-01-01")
    rows = list(csv.DictReader(io.StringIO(run("report", "--format", "csv", "-o", "-").output)))
    assert len(rows) == 21
    assert next(r for r in rows if r["episode_id"] == "comma-1")["title"] == 'Quotes "and", commas'


def test_eta_from_history(manager: StateManager) -> None:
    import time

    ids = [e.episode_id for e in manager.list_episodes()]
    manager.skip(ids[0], "duplicate")
    time.sleep(1.1)
    manager.skip(ids[1], "duplicate")
    summary = ReportGenerator(manager).generate_summary()
    assert summary["estimated_completion"] is not None
    assert summary["throughput"]["per_day"] > 0


def test_metrics_text_format(manager: StateManager, tmp_path: Path, run: Cli) -> None:
    eid = manager.list_episodes()[0].episode_id
    manager.update_state(eid, "downloading")
    manager.fail(eid, "boom")
    text = metrics_text(manager).decode()
    assert 'hystate_episodes{stage="failed"} 1.0' in text
    assert 'hystate_episodes{stage="published"} 0.0' in text
    assert 'hystate_failures_total{stage="downloading"} 1.0' in text
    assert 'hystate_transitions_total{to="downloading"} 1.0' in text
    assert "hystate_last_transition_timestamp_seconds" in text
    assert eid not in text  # no episode ids as labels
    target = tmp_path / "hystate.reports.prometheus"
    assert run("metrics", "--textfile", str(target)).exit_code == 0
    assert target.read_text() == text


def test_an_output_path_that_cannot_hold_a_file_is_a_usage_error(
    tmp_path: Path, run: Cli, repo: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    report = blocker / "r.csv"
    metrics = blocker / "m.prom"
    for target, args in (
        (report, ("report", "--format", "csv", "-o", str(report))),
        (metrics, ("metrics", "--textfile", str(metrics))),
    ):
        result = run(*args)
        assert result.exit_code == 2, result.output
        assert f"cannot write {target}" in result.output
        assert "Traceback" not in result.output
    assert blocker.read_text() == "not a folder"


def test_an_output_path_that_is_a_device_or_a_pipe_is_refused_not_replaced(
    tmp_path: Path, run: Cli, repo: Path
) -> None:
    """`report -o /dev/null` as root renamed a regular file over the system's /dev/null (the
    atomic write replaces what is there); a pipe or a link to one likewise."""
    fifo = tmp_path / "a-pipe"
    os.mkfifo(fifo)
    link = tmp_path / "stdout-like"
    link.symlink_to(fifo)
    for target in (fifo, link):
        for args in (
            ("report", "--format", "csv", "-o", str(target)),
            ("metrics", "--textfile", str(target)),
            ("backup", "-o", str(target)),
        ):
            result = run(*args)
            assert result.exit_code == 2, (args, result.output)
            assert "not a file" in result.output and "Traceback" not in result.output
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and link.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
