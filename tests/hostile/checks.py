"""Part b's checks, on top of the shared harness (tests/hostile/harness.py): a refusal names
the problem in its one line and is never an "internal error"; an accepted command changes
nothing outside the repository and prints a known number of stderr lines."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.hostile.harness import HYSTATE, Result, compare, run_hostile, snapshot
from tests.hostile.harness import run as _run

__all__ = [
    "HYSTATE",
    "Result",
    "accepted",
    "assert_one_line",
    "commit_all",
    "episode_files",
    "refused",
    "run",
]


def run(repo: Path, *args: str, env: Mapping[str, str] | None = None) -> Result:
    """The real command, nothing checked."""
    return _run(repo, list(args), env=env)


def assert_one_line(result: Result, code: int, *, contains: str | None = None) -> None:
    """The exit code, one ``hystate: ...`` line on stderr, no traceback, no internal error."""
    where = f"exit {result.code}\n--- stdout\n{result.stdout[:2000]}\n--- stderr\n{result.stderr}"
    assert result.code == code, where
    assert "Traceback" not in result.output, where
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("hystate: "), where
    assert "internal error" not in result.stderr, where
    if contains is not None:
        assert contains.lower() in result.stderr.lower(), where


def refused(
    repo: Path,
    args: Sequence[str],
    code: int,
    *,
    contains: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 60,
) -> Result:
    """``run_hostile`` (code, one line, no traceback, sandbox byte-identical) and the above."""
    result = run_hostile(repo, args, code, env=env, timeout=timeout)
    assert_one_line(result, code, contains=contains)
    return result


def _outside(shot: dict[str, str], repo: Path) -> dict[str, str]:
    name = repo.resolve().name
    return {k: v for k, v in shot.items() if k != name and not k.startswith(name + "/")}


def accepted(
    repo: Path,
    args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    stderr_lines: int = 0,
) -> Result:
    """Exit 0, ``stderr_lines`` lines on stderr, no traceback, nothing changed outside."""
    before = _outside(snapshot(repo), repo)
    result = run_hostile(repo, args, 0, env=env, unchanged=False)
    assert len(result.stderr.splitlines()) == stderr_lines, result.stderr
    changes = compare(before, _outside(snapshot(repo), repo))
    assert not changes, "outside the repository:\n" + "\n".join(changes)
    return result


def episode_files(repo: Path, state_dir: str = "processed") -> list[Path]:
    """The repository's episode files, sorted by id."""
    return sorted((repo / state_dir).glob("[0-9][0-9][0-9][0-9]/*.yaml"), key=lambda p: p.stem)


def commit_all(repo: Path, message: str = "hand edit") -> None:
    """Commit the work tree as a person would (``git add -A && git commit``)."""
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "Person",
        "GIT_AUTHOR_EMAIL": "person@example.invalid",
        "GIT_COMMITTER_NAME": "Person",
        "GIT_COMMITTER_EMAIL": "person@example.invalid",
    }
    for args in (["add", "-A"], ["commit", "-q", "-m", message]):
        subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True)
