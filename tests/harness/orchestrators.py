"""What the Prefect and Airflow tests share: a repository configured for a test, the episodes
it keeps, and the upload limit replayed from the commits' trailers (the limits tests too)."""

from __future__ import annotations

from pathlib import Path

from hystate.manager import StateManager
from tests.conftest import git


def configure(repo: Path, text: str) -> StateManager:
    (repo / "hystate.yaml").write_text(text)
    return StateManager(cwd=repo, worker="setup")


def keep(manager: StateManager, count: int) -> list[str]:
    """The first ``count`` episodes stay; the others are skipped out of the way."""
    ids = [e.episode_id for e in manager.list_episodes()]
    for eid in ids[count:]:
        manager.skip(eid, "not in this test")
    return ids[:count]


def replay_uploading(repo: Path) -> tuple[int, int]:
    """(most episodes in uploading at once, entries into uploading), from the commits in order."""
    log = git(repo, "log", "--reverse", "--format=%(trailers:key=Hystate-From,key=Hystate-To)")
    running = most = entries = 0
    for block in log.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if fields.get("Hystate-To") == "uploading":
            running, entries = running + 1, entries + 1
        if fields.get("Hystate-From") == "uploading":
            running -= 1
        most = max(most, running)
    return most, entries
