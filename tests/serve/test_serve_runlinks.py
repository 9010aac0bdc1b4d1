"""The episode page shows an orchestrator's run ids, linked to its UI when its address is set."""

from __future__ import annotations

from pathlib import Path

import pytest

from hystate.manager import StateManager
from hystate.serve.runlinks import links
from tests.harness.serve import serving


def test_links_quote_every_id_and_need_an_http_address(monkeypatch: pytest.MonkeyPatch) -> None:
    run = {
        "orchestrator": "airflow",
        "dag_id": "hystate_migration",
        "dag_run": "manual__2026-12-07T00:00:00+00:00",
        "task_id": "uploading_1",
        "map_index": "3",
    }
    monkeypatch.delenv("AIRFLOW_UI_URL", raising=False)
    assert links(run)[0] == ("airflow", None) and all(url is None for _, url in links(run))
    monkeypatch.setenv("AIRFLOW_UI_URL", "javascript:alert(1)")
    assert all(url is None for _, url in links(run))
    monkeypatch.setenv("AIRFLOW_UI_URL", "http://airflow.local:8080/")
    found = dict(links(run))
    base = "http://airflow.local:8080/dags/hystate_migration/runs/"
    assert found["dag_run=manual__2026-12-07T00:00:00+00:00"] == (
        base + "manual__2026-12-07T00%3A00%3A00%2B00%3A00"
    )
    assert found["task_id=uploading_1"].endswith("/tasks/uploading_1/mapped/3")
    assert (
        links(None) == [] and links({"orchestrator": "prefect", "flow_run": "../x"})[1][1] is None
    )


def test_the_episode_page_links_the_prefect_runs(repo: Path) -> None:
    manager = StateManager(cwd=repo, worker="prefect:simple-snail")
    manager.run_ids = {"orchestrator": "prefect", "flow_run": "3c4e", "task_run": "01a2"}
    eid = sorted(p.stem for p in manager.store.iter_paths())[0]
    manager.update_state(eid, "downloading")
    env = {"PREFECT_UI_URL": "http://127.0.0.1:4200"}
    with serving(repo, "--reports-every", "0", env=env) as srv, srv.client() as http:
        page = http.get(f"/episodes/{eid}").text
    assert (
        '<a href="http://127.0.0.1:4200/runs/flow-run/3c4e" rel="noreferrer">flow_run=3c4e</a>'
        in page
    )
    assert "/runs/task-run/01a2" in page
