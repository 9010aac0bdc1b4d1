"""Fixtures of the hostile-input suite: a repository with 20 episodes (tests/conftest.py's
``repo``), its first episode file, and a secret beside the repository that must never leak."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

SECRET = "SECRET-TOKEN-7f3a9c-do-not-print"


@pytest.fixture
def episode(repo: Path) -> Path:
    """The first episode file (processed/<year>/<id>.yaml)."""
    return sorted((repo / "processed").glob("*/*.yaml"))[0]


@pytest.fixture
def secret(repo: Path) -> Path:
    """A file outside the repository, as ``secret.env`` of the user's home would be."""
    path = repo.parent / "secret.env"
    path.write_text(f"API_TOKEN={SECRET}\n")
    return path


def commit(repo: Path, *paths: str, message: str = "a branch's change") -> None:
    """Commit ``paths`` (forced past .gitignore) as a person or a merged pull request would."""
    for args in (["add", "-A", "-f", "--", *paths], ["commit", "-q", "--no-verify", "-m", message]):
        subprocess.run(
            ["git", "-c", "user.name=Mallory", "-c", "user.email=m@example.invalid", *args],
            cwd=repo,
            check=True,
            capture_output=True,
        )
