from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from hystate.cli import cli
from hystate.manager import StateManager
from tests.harness.redis import RedisServer

# The orchestrators' tests run in their own virtual environments (.venv-prefect, .venv-airflow:
# their pins differ); `make test` runs them there. Elsewhere they are not collected.
collect_ignore = [
    f"integrations/{name}"
    for name in ("prefect", "airflow")
    if importlib.util.find_spec(name) is None
]

HYSTATE = [sys.executable, "-m", "hystate.cli"]
REPO_ROOT = Path(__file__).resolve().parent.parent  # the checkout: tests read nothing outside it
NO_SKIPS = os.environ.get("HYSTATE_NO_SKIPS") == "1" or os.environ.get("CI", "").lower() in (
    "1",
    "true",
    "yes",
)
GIT_ENV_DROP = [
    "GIT_AUTHOR_NAME",
    "GIT_AUTHOR_EMAIL",
    "GIT_COMMITTER_NAME",
    "GIT_COMMITTER_EMAIL",
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "HYSTATE_STATE_DIR",
    "HYSTATE_WARM",  # a warm server of the developer's shell serves no test's command
]


def _skip_fails(report: pytest.CollectReport | pytest.TestReport) -> None:
    """Under CI (or ``make test``) a skipped test is a failure: a test that did not run proved
    nothing, and tools/deps.sh installs everything the suite needs."""
    if not (NO_SKIPS and report.skipped) or hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.outcome = "failed"
    report.longrepr = f"skipped, which fails the run under CI and `make test`: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    _skip_fails(outcome.get_result())  # type: ignore[attr-defined]


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    outcome = yield
    _skip_fails(outcome.get_result())  # type: ignore[attr-defined]


@pytest.fixture(autouse=True)
def isolated_git(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No global or system git config (so no identity), and a HOME of the test's own."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    for name in GIT_ENV_DROP:
        monkeypatch.delenv(name, raising=False)


def git(repo: Path, *args: str, check: bool = True) -> str:
    proc = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {proc.stderr}")
    return proc.stdout


def commits(repo: Path) -> list[str]:
    out = git(repo, "rev-list", "HEAD", check=False)
    return out.split()


def files_in(repo: Path, rev: str = "HEAD") -> list[str]:
    return git(repo, "diff-tree", "--no-commit-id", "--name-only", "-r", "--root", rev).split()


def catalog_rows(count: int, start_year: int = 2004) -> list[dict[str, str]]:
    """An advancedsearch-shaped list of ``count`` episodes spread over the years."""
    rows = []
    for i in range(count):
        year = start_year + i % 16
        day = f"{year}-{1 + i % 12:02d}-{1 + (i // 12) % 28:02d}"
        rows.append(
            {
                "identifier": f"hy0_hooting_yard_{day}_{i}",
                "title": f'Hooting Yard On The Air: Episode {i} & "Friends"',
                "date": f"{day}T00:00:00Z",
            }
        )
    return rows


def write_search_json(path: Path, rows: list[dict[str, str]]) -> Path:
    doc = {"responseHeader": {"status": 0}, "response": {"numFound": len(rows), "docs": rows}}
    path.write_text(json.dumps(doc))
    return path


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A new git repository with an initialised state directory and 20 discovered episodes."""
    root = tmp_path / "state-repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    monkeypatch.chdir(root)
    manager = StateManager(cwd=root, worker="test")
    manager.ensure_layout()
    catalog = write_search_json(tmp_path / "catalog.json", catalog_rows(20))
    from hystate.engine.catalog import read_records

    manager.discover(read_records(catalog), source="catalog.json")
    return root


@pytest.fixture
def manager(repo: Path) -> StateManager:
    return StateManager(cwd=repo, worker="test-worker")


@pytest.fixture
def episode_id(manager: StateManager) -> str:
    return sorted(p.stem for p in manager.store.iter_paths())[0]


class Cli:
    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.runner = CliRunner()

    def __call__(self, *args: str, input: str | None = None) -> Result:
        old = Path.cwd()
        os.chdir(self.cwd)
        try:
            return self.runner.invoke(cli, list(args), input=input, catch_exceptions=False)
        finally:
            os.chdir(old)


@pytest.fixture
def run(repo: Path) -> Iterator[Cli]:
    yield Cli(repo)


def run_hystate(cwd: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The real command in a real process."""
    return subprocess.run(
        [*HYSTATE, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )


def holder_token(path: Path) -> str | None:
    """The lease token of the episode's active stage, from its file (where the move into the
    stage recorded it): what the stage's holder presents to leave it; None in no active stage."""
    import yaml

    doc = yaml.safe_load(path.read_bytes())
    if doc.get("stage") not in ("downloading", "converting", "uploading"):
        return None
    return next((e["lease"] for e in reversed(doc["history"]) if e.get("lease")), None)


def holder_lease(repo: Path, episode_id: str) -> list[str]:
    """``["--lease", TOKEN]`` for an episode in an active stage (``holder_token``); [] in none."""
    (path,) = (repo / "processed").rglob(f"{episode_id}.yaml")
    token = holder_token(path)
    return ["--lease", token] if token else []


def full_walk(manager: StateManager, episode_id: str) -> None:
    """Take one episode from discovered to published through the API."""
    audio = f"audio/{episode_id}.mp3"
    steps: list[tuple[str, dict[str, object]]] = [
        ("downloading", {}),
        ("downloaded", {"files.audio_file": audio, "metrics.audio_size": 28_000_000}),
        ("converting", {}),
        ("converted", {"files.video_file": f"video/{episode_id}.mp4"}),
        ("uploading", {}),
        ("uploaded", {"youtube.video_id": "dQw4w9WgXcQ"}),
        ("scheduled", {"youtube.scheduled_date": "2027-01-01T18:00:00+00:00"}),
        ("published", {"youtube.published_date": "2027-01-01T18:00:05+00:00"}),
    ]
    for stage, fields in steps:
        manager.update_state(episode_id, stage, fields=fields)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[RedisServer]:
    """A real ``redis-server`` of the test's own (tests using it are marked ``needs_redis``)."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()
