"""``hystate serve`` as a real uvicorn process on a temporary repository: the JSON API, the
GraphQL endpoint and its limits, the headers, the scheduled reports, the CLI's refusals."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from hystate.manager import StateManager
from tests.conftest import commits, run_hystate
from tests.harness.serve import serving


@pytest.fixture
def served_repo(repo: Path) -> Path:
    manager = StateManager(cwd=repo, worker="w1")
    ids = sorted(p.stem for p in manager.store.iter_paths())
    manager.update_state(ids[0], "downloading")
    manager.fail(ids[0], "HTTP 503 <b>upstream</b>")
    manager.update_state(ids[1], "downloading")
    return repo


def test_status_and_list(served_repo: Path) -> None:
    manager = StateManager(cwd=served_repo)
    expected = manager.count_by_stage()
    with serving(served_repo, "--reports-every", "0") as srv, srv.client() as http:
        status = http.get("/api/status").json()
        assert status["counts"] == expected
        assert status["total"] == 20
        assert status["head"] == commits(served_repo)[0]
        assert [f["error"] for f in status["recent_failures"]] == ["HTTP 503 <b>upstream</b>"]

        page = http.get("/api/episodes", params={"per_page": 7, "page": 2}).json()
        assert (page["total"], page["pages"], len(page["items"])) == (20, 3, 7)
        everything = [
            e["episode_id"]
            for n in (1, 2, 3)
            for e in http.get("/api/episodes", params={"per_page": 7, "page": n}).json()["items"]
        ]
        assert sorted(everything) == sorted(p.stem for p in manager.store.iter_paths())

        failed = http.get("/api/episodes", params={"stage": "failed"}).json()
        assert [e["last_error"] for e in failed["items"]] == ["HTTP 503 <b>upstream</b>"]
        year = everything[0][17:21]
        by_year = http.get("/api/episodes", params={"year": year}).json()
        assert by_year["total"] == sum(1 for e in everything if e[17:21] == year)
        found = http.get("/api/episodes", params={"q": "Episode 13 &"}).json()
        assert [e["title"] for e in found["items"]] == [
            'Hooting Yard On The Air: Episode 13 & "Friends"'
        ]
        assert http.get("/api/episodes", params={"q": "100%"}).json()["total"] == 0

        for bad in ({"stage": "nope"}, {"year": "20x4"}, {"per_page": "500"}, {"page": "-1"}):
            response = http.get("/api/episodes", params=bad)
            assert response.status_code == 400, bad
            assert response.json()["error"]


def test_episode_history_and_diffs(served_repo: Path) -> None:
    manager = StateManager(cwd=served_repo)
    eid = sorted(p.stem for p in manager.store.iter_paths())[0]
    with serving(served_repo, "--reports-every", "0") as srv, srv.client() as http:
        data = http.get(f"/api/episodes/{eid}").json()
        assert data["state"]["stage"] == "failed"
        assert data["file"] == manager.path_of(eid).read_text()
        steps = [(row["from"], row["to"]) for row in data["history"]]
        assert steps == [
            (None, "discovered"),
            ("discovered", "downloading"),
            ("downloading", "failed"),
        ]
        shas = [row["commit"] for row in data["history"]]
        newest_first = commits(served_repo)  # ids[1]'s advance, ids[0]'s fail, advance, discover
        assert shas == [newest_first[3], newest_first[2], newest_first[1]]
        assert all(row["author"] and row["subject"] for row in data["history"])
        # the diff of each transition is that commit's change to this file
        assert "+stage: downloading" in data["history"][1]["diff"]
        assert "-stage: downloading" in data["history"][2]["diff"]
        assert "+stage: failed" in data["history"][2]["diff"]
        history = http.get(f"/api/episodes/{eid}/history").json()
        assert [r["commit"] for r in history] == shas
        missing = http.get("/api/episodes/hy0_no_such_episode")
        assert missing.status_code == 404
        assert http.get("/api/episodes/..%2F..%2Fetc").status_code in (400, 404)
        page = http.get(f"/episodes/{eid}")
        assert page.status_code == 200
        assert "HTTP 503 &lt;b&gt;upstream&lt;/b&gt;" in page.text
        assert "<b>upstream" not in page.text


def test_graphql_read_only_with_limits(served_repo: Path) -> None:
    manager = StateManager(cwd=served_repo)
    eid = sorted(p.stem for p in manager.store.iter_paths())[0]
    before = commits(served_repo)
    with serving(served_repo, "--reports-every", "0") as srv, srv.client() as http:

        def gql(query: str) -> dict[str, object]:
            response = http.post("/graphql", json={"query": query})
            return dict(response.json())

        ok = gql(
            '{ status { total counts { stage count } } episodes(stage: "failed") { total items'
            f' {{ episode_id last_error }} }} episode(episode_id: "{eid}") {{ stage history'
            " { to worker commit author } } }"
        )
        assert "errors" not in ok, ok
        data = ok["data"]
        assert isinstance(data, dict)
        assert data["status"]["total"] == 20
        assert {c["stage"]: c["count"] for c in data["status"]["counts"]}["failed"] == 1
        assert data["episodes"]["items"] == [
            {"episode_id": eid, "last_error": "HTTP 503 <b>upstream</b>"}
        ]
        assert [h["to"] for h in data["episode"]["history"]] == [
            "discovered",
            "downloading",
            "failed",
        ]
        assert gql('{ episode(episode_id: "hy0_nope") { stage } }')["data"] == {"episode": None}

        too_deep = gql("{ episodes { items { history { commit } } } }")
        assert "exceeds maximum operation depth" in json.dumps(too_deep["errors"])
        aliases = " ".join(f"a{i}: status {{ total }}" for i in range(12))
        assert "alias" in json.dumps(gql("{ " + aliases + " }")["errors"]).lower()
        tokens = "{ status { " + "total " * 1200 + "} }"
        assert "token" in json.dumps(gql(tokens)["errors"]).lower()
        mutation = gql('mutation { skip(episode_id: "x") { stage } }')
        assert mutation.get("errors"), mutation
        got = http.get("/graphql", params={"query": "{ status { total } }"})
        assert got.json()["data"]["status"]["total"] == 20
        assert http.get("/graphql", headers={"accept": "text/html"}).status_code != 200  # no IDE
    assert commits(served_repo) == before


def test_headers_and_hosts(served_repo: Path) -> None:
    with serving(served_repo, "--reports-every", "0") as srv, srv.client() as http:
        page = http.get("/")
        assert page.status_code == 200
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "default-src 'none'" in csp
        assert page.headers["x-content-type-options"] == "nosniff"
        assert http.get("/api/status").headers["content-security-policy"] == csp
        # a page asked for under another name (DNS rebinding) is refused
        assert http.get("/api/status", headers={"host": "evil.example"}).status_code == 400


def test_reports_on_schedule(served_repo: Path) -> None:
    reports = served_repo / "processed" / "reports"
    with serving(served_repo, "--reports-every", "1"):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            names = {p.name for p in reports.glob("*")} if reports.is_dir() else set()
            daily = any(n.startswith("daily_report_") for n in names)
            weekly = any(n.startswith("weekly_report_") for n in names)
            if daily and weekly and "summary.json" in names:
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"reports not written: {names}")
        first = (reports / "summary.json").stat().st_mtime_ns
        deadline = time.monotonic() + 60
        while (reports / "summary.json").stat().st_mtime_ns == first:
            assert time.monotonic() < deadline, "the reports were not written again"
            time.sleep(0.2)
    summary = json.loads((reports / "summary.json").read_text())
    assert summary["total_episodes"] == 20
    assert "<b>upstream" not in next(reports.glob("daily_report_*.html")).read_text()


def test_cli_refusals(served_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HYSTATE_SERVE_TOKEN", raising=False)
    done = run_hystate(served_repo, "serve", "--allow-actions", "--port", "1")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "hystate: error: --allow-actions needs a token: --token-file FILE or $HYSTATE_SERVE_TOKEN"
    ]
    short = tmp_path / "short"
    short.write_text("abc\n")
    done = run_hystate(served_repo, "serve", "--allow-actions", "--token-file", str(short))
    assert done.returncode == 2 and "at least 16" in done.stderr

    import hystate.serve
    from tests.conftest import Cli

    monkeypatch.setattr(hystate.serve, "missing_extra", lambda: "starlette")
    result = Cli(served_repo)("serve")
    assert result.exit_code == 2
    assert result.output.strip() == (
        "hystate: error: `hystate serve` needs the serve extra: pip install 'hystate[serve]'"
    )
