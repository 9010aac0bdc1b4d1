"""hystate.integrations.airflow with the real Airflow 3: `airflow dags test` on SQLite."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import git, run_hystate
from tests.harness.orchestrators import configure, keep, replay_uploading

AIRFLOW = str(Path(sys.executable).with_name("airflow"))

WORK = """
import os, time

LOG = os.environ["DONE_LOG"]


def _done(stage, episode, fields):
    with open(LOG, "a") as out:
        out.write(f"{stage} {episode.episode_id}\\n")
    return fields


def download(episode):
    if episode.episode_id in os.environ.get("FLAKY", "").split(","):
        if episode.attempts["download"] == 1:
            raise ConnectionResetError("connection reset by peer after 18.2 MB")
    return _done("downloading", episode, {"files.audio_file": f"a/{episode.episode_id}.mp3"})


def convert(episode):
    return _done("converting", episode, {"files.video_file": f"v/{episode.episode_id}.mp4"})


def upload(episode):
    if os.environ.get("BLOCK") == episode.episode_id:
        open(LOG + ".blocked", "w").close()
        time.sleep(3600)  # killed here
    time.sleep(float(os.environ.get("UPLOAD_SECONDS", "0")))
    return _done("uploading", episode, {"youtube.video_id": "abcdefghijk"})


def schedule(episode):
    return _done("scheduled", episode, {"youtube.scheduled_date": "2026-01-01T00:00:00+00:00"})


def publish(episode):
    return _done("published", episode, {"youtube.published_date": "2026-01-01T00:00:00+00:00"})
"""

MIGRATION = """
from hystate.integrations.airflow import migration_dag

W = "hystate_test_work:"
works = {{
    "downloading": W + "download", "converting": W + "convert", "uploading": W + "upload",
    "scheduled": W + "schedule", "published": W + "publish",
}}
works = {{k: v for k, v in works.items() if k in {stages!r}}}
dag = migration_dag({dag_id!r}, works, state_dir={state_dir!r}, retry_wait=30)
"""

SENSOR = """
from airflow.sdk import DAG
from hystate.integrations.airflow import HystateStageSensor

with DAG({dag_id!r}, schedule=None) as dag:
    HystateStageSensor(
        task_id="wait", stage="downloaded", episode_ids={ids!r}, state_dir={state_dir!r},
        deferrable=True, poke_interval=0.5, timeout=600,
    )
"""


@pytest.fixture(scope="session")
def migrated_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One `airflow db migrate` for the session; each test copies the database."""
    home = tmp_path_factory.mktemp("airflow-template")
    env = airflow_env(home)
    proc = subprocess.run(
        [AIRFLOW, "db", "migrate"], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return home / "airflow.db"


def airflow_env(home: Path) -> dict[str, str]:
    (home / "dags").mkdir(parents=True, exist_ok=True)
    return {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "DONE_LOG": str(home.parent / "done.log"),
    }


class Airflow:
    """An Airflow home with the session's migrated database and the test's DAG files."""

    def __init__(self, home: Path, template: Path) -> None:
        self.home = home
        self.env = airflow_env(home)
        shutil.copy(template, home / "airflow.db")
        (home / "dags" / "hystate_test_work.py").write_text(WORK)
        self.log = Path(self.env["DONE_LOG"])

    def add_dag(self, text: str) -> None:
        (self.home / "dags" / "hystate_test_dag.py").write_text(text)
        proc = self.run("dags", "reserialize")
        assert proc.returncode == 0, proc.stderr[-3000:]

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [AIRFLOW, *args],
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=1200,
        )

    def start(self, *args: str, output: Path, **env: str) -> subprocess.Popen[bytes]:
        with output.open("wb") as out:
            return subprocess.Popen(
                [AIRFLOW, *args],
                env={**self.env, **env},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )


@pytest.fixture
def airflow(tmp_path: Path, migrated_db: Path) -> Iterator[Airflow]:
    yield Airflow(tmp_path / "airflow", migrated_db)


ALL = ["downloading", "converting", "uploading", "scheduled", "published"]


def test_the_dag_migrates_records_failures_and_run_ids(repo: Path, airflow: Airflow) -> None:
    manager = configure(repo, "state_management:\n  recovery:\n    retry_delay: 0.2\n")
    ids = keep(manager, 3)
    state_dir = str(repo / "processed")
    airflow.add_dag(MIGRATION.format(dag_id="hystate_all", stages=ALL, state_dir=state_dir))
    proc = airflow.run("dags", "test", "hystate_all", FLAKY=ids[0])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for eid in ids:
        assert manager.episode(eid).stage.value == "published"
    flaky = manager.episode(ids[0])
    assert flaky.attempts["download"] == 2
    error = flaky.error_history[0]
    assert error["error"] == "ConnectionResetError: connection reset by peer after 18.2 MB"
    assert "in download" in error["traceback"]
    failed = next(h for h in flaky.history if h["to"] == "failed")["run"]
    # the failed task instance was not retried by Airflow: its one try recorded the failure
    assert failed["task_id"] == "downloading_1" and failed["try_number"] == "1"
    retry = next(h for h in flaky.history if h["from"] == "failed")["run"]
    assert retry["task_id"] == "downloading_2" and retry["map_index"] == "0"
    body = git(repo, "log", "-1", "--format=%B")
    assert "Hystate-Orchestrator: airflow" in body and "Hystate-Dag-Id: hystate_all" in body
    assert "Hystate-Dag-Run: manual__" in body and "Hystate-Map-Index: " in body
    history = run_hystate(repo, "history", ids[0])
    assert "dag_run=manual__" in history.stdout and "task_id=published_1" in history.stdout
    done = airflow.log.read_text().splitlines()
    assert len(done) == len(set(done)) == 3 * 5


def test_the_deferrable_sensor_waits_in_the_trigger(
    repo: Path, airflow: Airflow, tmp_path: Path
) -> None:
    manager = configure(repo, "")
    ids = keep(manager, 2)
    airflow.add_dag(
        SENSOR.format(dag_id="hystate_wait", ids=ids, state_dir=str(repo / "processed"))
    )
    output = tmp_path / "sensor.out"
    proc = airflow.start("dags", "test", "hystate_wait", output=output)
    try:
        deadline = time.monotonic() + 600
        while "running trigger in line" not in output.read_text(errors="replace"):
            assert proc.poll() is None, output.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "the sensor never deferred"
            time.sleep(0.2)
        for eid in ids:  # the trigger fires only once both have arrived
            manager.update_state(eid, "downloading")
            manager.update_state(eid, "downloaded", fields={"files.audio_file": "a.mp3"})
        assert proc.wait(timeout=600) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = output.read_text(errors="replace")
    assert "state=success" in text


@pytest.mark.slow
def test_kill_9_mid_run_then_a_rerun_finishes_with_nothing_done_twice(
    repo: Path, airflow: Airflow, tmp_path: Path
) -> None:
    manager = configure(repo, "state_management:\n  recovery:\n    retry_delay: 0.2\n")
    ids = keep(manager, 3)
    state_dir = str(repo / "processed")
    airflow.add_dag(MIGRATION.format(dag_id="hystate_kill", stages=ALL, state_dir=state_dir))
    first = airflow.start("dags", "test", "hystate_kill", output=tmp_path / "1.out", BLOCK=ids[1])
    try:
        deadline = time.monotonic() + 600
        while True:
            counts = manager.count_by_stage()
            blocked = Path(f"{airflow.log}.blocked").exists()
            if blocked and counts["uploading"] == 1:
                break
            assert first.poll() is None, (tmp_path / "1.out").read_text()[-3000:]
            assert time.monotonic() < deadline, f"never got to the upload: {counts}"
            time.sleep(0.2)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    rerun = airflow.run("dags", "test", "hystate_kill")
    assert rerun.returncode == 0, rerun.stdout[-3000:]
    for eid in ids:
        assert manager.episode(eid).stage.value == "published"
    done = airflow.log.read_text().splitlines()
    assert len(done) == len(set(done)) == 3 * 5
    killed = manager.episode(ids[1])
    assert killed.attempts["upload"] == 2
    assert killed.error_history[-1]["error"].startswith("worker lost")


@pytest.mark.slow
def test_four_airflows_at_once_keep_the_upload_limits(
    repo: Path, tmp_path: Path, migrated_db: Path
) -> None:
    text = "state_management:\n  limits:\n    uploading: {concurrency: 2, per_day: 6}\n"
    manager = configure(repo, text)
    ids = keep(manager, 10)
    for eid in ids:
        manager.update_state(eid, "downloading")
        manager.update_state(eid, "downloaded", fields={"files.audio_file": f"a/{eid}.mp3"})
        manager.update_state(eid, "converting")
        manager.update_state(eid, "converted", fields={"files.video_file": f"v/{eid}.mp4"})
    dag = MIGRATION.format(
        dag_id="hystate_up", stages=["uploading"], state_dir=str(repo / "processed")
    )
    runners = []
    for number in range(4):  # four Airflow installations (nodes), one state repository
        node = Airflow(tmp_path / f"node{number}", migrated_db)
        node.add_dag(dag)
        pools = subprocess.run(
            [
                sys.executable,
                "-m",
                "hystate.integrations.airflow",
                "pools",
                str(repo / "processed"),
            ],
            env=node.env,
            capture_output=True,
            text=True,
        )
        assert pools.returncode == 0 and "hystate_uploading: 2 slots" in pools.stdout
        runners.append(node)
    procs = [
        node.start(
            "dags", "test", "hystate_up", output=tmp_path / f"up{n}.out", UPLOAD_SECONDS="0.3"
        )
        for n, node in enumerate(runners)
    ]
    for proc in procs:
        assert proc.wait(timeout=1200) == 0
    most, entries = replay_uploading(repo)
    assert most <= 2 and entries == 6
    counts = manager.count_by_stage()
    assert (counts["uploaded"], counts["converted"], counts["uploading"]) == (6, 4, 0)
