"""``hystate serve`` (issue 26): an action's query takes only its own keys, each once (a
misspelt dry run is a 400, never a real skip: skipped is final), and the Host check against
DNS rebinding holds on every loopback address, not three spellings of it."""

from __future__ import annotations

from pathlib import Path

from hystate.manager import StateManager
from tests.conftest import git
from tests.harness.serve import serving

TOKEN = "t" * 32
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_unknown_or_repeated_query_keys_are_refused(repo: Path) -> None:
    manager = StateManager(cwd=repo, worker="w1")
    eid = sorted(p.stem for p in manager.store.iter_paths())[0]
    before = git(repo, "rev-parse", "HEAD")
    with (
        serving(
            repo, "--reports-every", "0", "--allow-actions", env={"HYSTATE_SERVE_TOKEN": TOKEN}
        ) as srv,
        srv.client() as http,
    ):
        for query in (
            "dry-run=1",
            "dryrun",
            "DRY_RUN",
            "Dry_Run=1",
            "dry_run=1&dry_run=0",
            "dry_run=0&dry_run=1",
            "reason=a&reason=b",
            "dry_run=1&verbose=1",
        ):
            answer = http.post(f"/api/actions/skip/{eid}?{query}&reason=x", headers=AUTH)
            assert answer.status_code == 400, (query, answer.text)
            assert answer.json()["error"], query
        assert git(repo, "rev-parse", "HEAD") == before
        assert StateManager(cwd=repo).episode(eid).stage.value == "discovered"
        # the right spelling still works, both ways
        plan = http.post(f"/api/actions/skip/{eid}?dry_run=1&reason=gone", headers=AUTH)
        assert plan.status_code == 200 and plan.json()["dry_run"] is True, plan.text
        assert git(repo, "rev-parse", "HEAD") == before
        done = http.post(f"/api/actions/skip/{eid}?reason=gone", headers=AUTH)
        assert done.status_code == 200 and done.json()["dry_run"] is False, done.text


def test_host_check_holds_on_every_loopback_address(repo: Path) -> None:
    with serving(repo, "--reports-every", "0", host="127.0.0.2") as srv, srv.client() as http:
        assert http.get("/api/status").status_code == 200
        assert http.get("/api/status", headers={"host": "evil.example"}).status_code == 400
        assert http.get("/api/status", headers={"host": "localhost:1"}).status_code == 200


def test_named_hosts_are_the_only_ones_allowed_elsewhere(repo: Path) -> None:
    """Listening beyond loopback, ``--allowed-host`` names the names the server answers to."""
    with (
        serving(
            repo, "--reports-every", "0", "--allowed-host", "state.example", host="0.0.0.0"
        ) as srv,
        srv.client() as http,
    ):
        assert http.get("/api/status", headers={"host": "state.example"}).status_code == 200
        assert http.get("/api/status", headers={"host": "evil.example"}).status_code == 400
        assert "state.example" in srv.output()
