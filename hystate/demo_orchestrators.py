"""``make demo-prefect`` / ``make demo-airflow``: the simulated migration of the real catalog
through a real Prefect 3 flow (its ephemeral local server) or a real Airflow 3 DAG (``airflow
dags test`` on a SQLite metadata database), in a scratch repository made like ``make demo``'s,
with ``limits: {uploading: {concurrency: 2}}``. Ends with ``hystate history`` of an episode,
showing the orchestrator's run ids, and the trailers of the last commit.

    python -m hystate.demo_orchestrators prefect --dir ../hystate-demo-prefect [--catalog processed]
    python -m hystate.demo_orchestrators airflow --dir ../hystate-demo-airflow [--catalog processed]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

CONFIG = """state_management:
  recovery:
    retry_delay: 0.5
  limits:
    uploading: {concurrency: 2, per_day: 5000}
"""
DAG_FILE = '''"""The hystate migration DAG of `make demo-airflow`."""
from hystate.integrations.airflow import migration_dag
from hystate.integrations.simulated import PATHS

dag = migration_dag(
    "hystate_migration", PATHS, state_dir={state_dir!r}, retry_wait=10, chunk={chunk},
    wait_for="published",
)
'''


def prepare(target: Path, catalog: Path, episodes: int | None) -> int:
    from hystate import demo

    count = demo.prepare(target, catalog)
    (target / "hystate.yaml").write_text(CONFIG)
    exclude = target / ".git" / "info" / "exclude"
    exclude.parent.mkdir(parents=True, exist_ok=True)
    with exclude.open("a") as out:
        out.write(".prefect-home/\n.airflow/\n")
    if episodes is not None and episodes < count:
        from hystate import StateManager

        manager = StateManager(cwd=target, worker="demo")
        for episode in manager.list_episodes()[episodes:]:
            manager.skip(episode.episode_id, "left out of this demo run (--episodes)")
        count = episodes
    return count


def run_prefect(target: Path, workers: int) -> None:
    home = target / ".prefect-home"
    home.mkdir(exist_ok=True)
    os.environ.setdefault("PREFECT_HOME", str(home / ".prefect"))
    os.environ["HOME"] = str(home)  # the ephemeral server writes $HOME/.prefect
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "CRITICAL")  # the progress lines say it
    os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "CRITICAL")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.chdir(target)
    from hystate import StateManager
    from hystate.demo import progress_line
    from hystate.integrations.prefect import migration_flow
    from hystate.integrations.simulated import WORKS

    manager = StateManager(cwd=target)
    started = time.monotonic()

    def on_round(stage: str, outcomes: list[dict[str, Any]]) -> None:
        print(f"{stage:<12} {len(outcomes):4d} task runs  " + progress_line(manager, started))

    flow = migration_flow(WORKS, retry_wait=10, max_workers=workers, batch=48, on_round=on_round)
    summary = flow()
    print(f"\nflow finished in {time.monotonic() - started:.0f}s: {summary}\n")


def run_airflow(target: Path, chunk: int) -> None:
    home = target / ".airflow"
    (home / "dags").mkdir(parents=True, exist_ok=True)
    state_dir = str(target / "processed")
    (home / "dags" / "hystate_migration.py").write_text(
        DAG_FILE.format(state_dir=state_dir, chunk=chunk)
    )
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
    }
    airflow = str(Path(sys.executable).with_name("airflow"))
    steps = [
        ("airflow db migrate", [airflow, "db", "migrate"]),
        ("pools", [sys.executable, "-m", "hystate.integrations.airflow", "pools", state_dir]),
        ("airflow dags reserialize", [airflow, "dags", "reserialize"]),
    ]
    for title, command in steps:
        print(f"$ {title}", flush=True)
        proc = subprocess.run(command, cwd=target, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"{title} failed:\n{proc.stderr[-3000:]}")
        if title == "pools":
            print(proc.stdout, end="")
    print("$ airflow dags test hystate_migration", flush=True)
    started = time.monotonic()
    log = home / "dags-test.log"
    with log.open("w") as out:
        test = subprocess.Popen(
            [airflow, "dags", "test", "hystate_migration"],
            cwd=target,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        from hystate import StateManager
        from hystate.demo import progress_line

        manager = StateManager(cwd=target)
        while test.poll() is None:
            time.sleep(5)
            print(progress_line(manager, started), flush=True)
    print(
        f"\nDAG run finished in {time.monotonic() - started:.0f}s (`airflow dags test` exit "
        f"{test.returncode}; its log: {log})\n"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("orchestrator", choices=["prefect", "airflow"])
    parser.add_argument("--dir", type=Path, required=True, help="scratch repository (made anew)")
    parser.add_argument("--catalog", type=Path, default=Path("processed"))
    parser.add_argument("--episodes", type=int, help="only the first N episodes (the rest skipped)")
    parser.add_argument("--workers", type=int, default=4, help="Prefect: task runs at once")
    parser.add_argument("--chunk", type=int, default=25, help="Airflow: episodes per task")
    args = parser.parse_args(argv)
    target = args.dir.resolve()
    print(f"demo repository: {target}")
    count = prepare(target, args.catalog.resolve(), args.episodes)
    print(f"discovered {count} episodes from {args.catalog}; limits: uploading concurrency 2")
    if args.orchestrator == "prefect":
        run_prefect(target, args.workers)
    else:
        run_airflow(target, args.chunk)
    hystate = [sys.executable, "-m", "hystate.cli"]
    subprocess.run([*hystate, "status"], cwd=target, check=True)
    from hystate import StateManager

    manager = StateManager(cwd=target)
    retried = [e for e in manager.list_episodes() if e.error_history and e.stage.value != "skipped"]
    shown = (retried or manager.list_episodes())[0].episode_id
    print(f"\n$ hystate history {shown}")
    subprocess.run([*hystate, "history", shown], cwd=target, check=True)
    print("\n$ git log -1 --format=%B")
    subprocess.run(["git", "log", "-1", "--format=%B"], cwd=target, check=True)


if __name__ == "__main__":
    main()
