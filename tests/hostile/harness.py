"""The hostile-input harness: run the real ``hystate`` command in a subprocess and check what
every hostile case promises.

- the documented exit code;
- exactly one line on stderr (the error), never a traceback;
- on refusal, the repository (work tree and ``.git``, hystate's caches aside) byte-identical;
- nothing written, changed or deleted outside the repository (the rest of ``tmp_path``).

``refused(repo, args, code)`` does all of it for one command; ``Watch`` and ``run`` are the
pieces, for cases that need something in between.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

HYSTATE = [sys.executable, "-m", "hystate.cli"]
# hystate's own derived files: caches, locks, reports (alerts.log), temp files being renamed
CACHES = ("state.db", "index.json", ".locks", "reports")


@dataclass(frozen=True)
class Outcome:
    code: int
    stdout: str
    stderr: str

    @property
    def lines(self) -> list[str]:
        return self.stderr.splitlines()

    def __str__(self) -> str:
        return f"exit {self.code}\nstdout: {self.stdout[:2000]!r}\nstderr: {self.stderr[:2000]!r}"


def run(
    cwd: Path,
    *args: str,
    env: dict[str, str] | None = None,
    input: str | None = None,
    timeout: float = 60,
) -> Outcome:
    """The real command in a real process (the environment of the test, plus ``env``)."""
    full = {**os.environ, **(env or {})}
    proc = subprocess.run(
        [*HYSTATE, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        errors="backslashreplace",
        timeout=timeout,
        input=input,
        env=full,
        check=False,
    )
    return Outcome(proc.returncode, proc.stdout, proc.stderr)


def snapshot(root: Path, *, skip: tuple[Path, ...] = ()) -> dict[str, str]:
    """Every entry under ``root`` (``.git`` included, caches aside) -> a hash of its content;
    symlinks by their target, directories by their presence. Never follows a symlink."""
    found: dict[str, str] = {}
    for folder, dirs, files in os.walk(root, followlinks=False):
        here = Path(folder)
        if any(here == s or s in here.parents for s in skip):
            dirs[:] = []
            continue
        for name in dirs + files:
            path = here / name
            rel = path.relative_to(root).as_posix()
            if any(part.startswith(CACHES) for part in rel.split("/")):
                continue
            if path.is_symlink():
                found[rel] = "-> " + os.readlink(path)
            elif path.is_dir():
                found[rel] = "dir"
            elif path.is_file():
                found[rel] = hashlib.sha1(path.read_bytes()).hexdigest()
            else:
                found[rel] = "special"
    return found


class Watch:
    """Snapshots of the repository and of everything around it (``outside``), taken now, to
    compare after a command."""

    def __init__(self, repo: Path, outside: Path | None = None) -> None:
        self.repo = repo
        self.outside = outside if outside is not None else repo.parent
        self.before = snapshot(repo)
        self.around = snapshot(self.outside, skip=(repo,))

    def repo_changes(self) -> list[str]:
        after = snapshot(self.repo)
        keys = self.before.keys() | after.keys()
        return sorted(k for k in keys if self.before.get(k) != after.get(k))

    def outside_changes(self) -> list[str]:
        after = snapshot(self.outside, skip=(self.repo,))
        keys = self.around.keys() | after.keys()
        return sorted(k for k in keys if self.around.get(k) != after.get(k))

    def assert_untouched(self) -> None:
        assert self.repo_changes() == [], "the repository changed"
        self.assert_nothing_outside()

    def assert_nothing_outside(self) -> None:
        assert self.outside_changes() == [], "something outside the repository changed"


def assert_one_line(outcome: Outcome, code: int, *, contains: str | None = None) -> None:
    """The exit code, one line on stderr naming the problem, no traceback."""
    assert outcome.code == code, str(outcome)
    assert "Traceback" not in outcome.stderr + outcome.stdout, str(outcome)
    assert len(outcome.lines) == 1, str(outcome)
    assert outcome.lines[0].startswith("hystate: "), str(outcome)
    assert "internal error" not in outcome.stderr, str(outcome)
    if contains is not None:
        assert contains.lower() in outcome.stderr.lower(), str(outcome)


def refused(
    repo: Path,
    args: list[str] | tuple[str, ...],
    code: int,
    *,
    contains: str | None = None,
    env: dict[str, str] | None = None,
    input: str | None = None,
    outside: Path | None = None,
    timeout: float = 60,
) -> Outcome:
    """Run one command that must be refused: ``code``, one stderr line, no traceback, the
    repository byte-identical, nothing changed outside it."""
    watch = Watch(repo, outside)
    outcome = run(repo, *args, env=env, input=input, timeout=timeout)
    assert_one_line(outcome, code, contains=contains)
    assert watch.repo_changes() == [], f"the repository changed\n{outcome}"
    assert watch.outside_changes() == [], f"something outside the repository changed\n{outcome}"
    return outcome


def accepted(
    repo: Path,
    args: list[str] | tuple[str, ...],
    *,
    env: dict[str, str] | None = None,
    outside: Path | None = None,
    stderr_lines: int = 0,
    timeout: float = 60,
) -> Outcome:
    """Run one command that must succeed: exit 0, ``stderr_lines`` lines on stderr, no
    traceback, nothing changed outside the repository."""
    watch = Watch(repo, outside)
    outcome = run(repo, *args, env=env, timeout=timeout)
    assert outcome.code == 0, str(outcome)
    assert "Traceback" not in outcome.stderr, str(outcome)
    assert len(outcome.lines) == stderr_lines, str(outcome)
    assert watch.outside_changes() == [], f"something outside the repository changed\n{outcome}"
    return outcome


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
