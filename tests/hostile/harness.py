"""Shared harness of the hostile-input suite (tests/hostile/).

Every hostile case runs the real ``hystate`` command in a real process and checks what an attacker
would look for:

- the documented exit code;
- on failure, exactly one line on stderr (no traceback, in stdout or stderr, unless ``-v``);
- on refusal, the repository (work tree and ``.git``, caches aside) byte-identical, and nothing
  outside the repository changed: the whole *sandbox* (the repository's parent directory, where a
  test puts its "outside" files, secrets and symlink targets) is snapshotted, not just the repo.

Lay a test out as ``tmp_path/<repo>`` plus siblings for anything "outside" (the ``repo`` fixture of
tests/conftest.py already does: ``tmp_path/state-repo``). The API is small on purpose:

    before = snapshot(repo)                      # path -> fingerprint, caches aside
    result = run_hostile(repo, ["validate"], 1)  # runs, checks code/one line/no traceback/unchanged
    assert "symlink" in result.line
    assert_unchanged(repo, before)               # explicit compare, when the command must succeed

``run_hostile`` takes its own snapshot before running, so a test needs ``snapshot`` only when it
compares across several commands.
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

HYSTATE = [sys.executable, "-m", "hystate.cli"]

#: Names that are caches or scratch space hystate may rebuild at any time, wherever they are in
#: the repository (a state directory may be configured anywhere). Matched against every path
#: component *inside the repository only*; outside it, everything counts.
CACHE_NAMES = frozenset(
    {
        "state.db",
        "state.db-wal",
        "state.db-shm",
        "state.db-journal",
        "index.json",
        ".locks",
        "reports",
        "hystate",  # .git/hystate/: the trusted cache directory (see the README's security model)
    }
)

Snapshot = dict[str, str]


@dataclass(frozen=True)
class Result:
    """One finished run of the command."""

    args: tuple[str, ...]
    code: int
    stdout: str
    stderr: str

    @property
    def line(self) -> str:
        """The single stderr line (``""`` when stderr is empty)."""
        lines = self.stderr.splitlines()
        return lines[0] if lines else ""

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def _fingerprint(path: Path) -> str:
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode):
        return "link:" + os.readlink(path)
    if stat.S_ISDIR(info.st_mode):
        return "dir"
    if stat.S_ISREG(info.st_mode):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        return f"file:{stat.S_IMODE(info.st_mode) & 0o111:o}:{digest}"
    return f"special:{stat.S_IFMT(info.st_mode):o}"


def snapshot(repo: Path, *, ignore: Iterable[str] = ()) -> Snapshot:
    """Fingerprint of the sandbox around ``repo`` (its parent directory, recursively).

    Symlinks are recorded by their target, never followed; files by content and exec bit. Inside
    ``repo``, paths with a component in :data:`CACHE_NAMES` or in ``ignore`` are left out.
    """
    repo = repo.resolve()
    root = repo.parent
    skip = CACHE_NAMES | frozenset(ignore)
    found: Snapshot = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        base = Path(dirpath)
        for name in sorted(dirnames + filenames):
            path = base / name
            rel = path.relative_to(root)
            if rel.parts[0] == repo.name and skip.intersection(rel.parts[1:]):
                continue
            found[rel.as_posix()] = _fingerprint(path)
    return found


def compare(before: Snapshot, after: Snapshot) -> list[str]:
    """What changed between two snapshots, one readable line per path (empty when identical)."""
    changes = []
    for path in sorted(before.keys() | after.keys()):
        old, new = before.get(path), after.get(path)
        if old == new:
            continue
        if old is None:
            changes.append(f"created {path} ({new})")
        elif new is None:
            changes.append(f"deleted {path} ({old})")
        else:
            changes.append(f"changed {path}: {old} -> {new}")
    return changes


def assert_unchanged(repo: Path, before: Snapshot, *, ignore: Iterable[str] = ()) -> None:
    changes = compare(before, snapshot(repo, ignore=ignore))
    assert not changes, "the sandbox changed:\n" + "\n".join(changes)


def run(
    repo: Path,
    args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    stdin: str | bytes | None = None,
    cwd: Path | None = None,
    timeout: float = 60,
) -> Result:
    """The real command in a real process, nothing checked."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    data = stdin.encode() if isinstance(stdin, str) else stdin
    proc = subprocess.run(
        [*HYSTATE, *args],
        cwd=cwd or repo,
        env=full_env,
        input=data,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    return Result(
        tuple(args),
        proc.returncode,
        proc.stdout.decode("utf-8", "replace"),
        proc.stderr.decode("utf-8", "replace"),
    )


def run_hostile(
    repo: Path,
    args: Sequence[str],
    expect_code: int,
    *,
    env: Mapping[str, str] | None = None,
    stdin: str | bytes | None = None,
    cwd: Path | None = None,
    unchanged: bool | None = None,
    ignore: Iterable[str] = (),
    timeout: float = 60,
) -> Result:
    """Run ``hystate *args`` in ``repo`` and check it as a hostile case.

    Checks: exit code ``expect_code``; no ``Traceback`` anywhere; when ``expect_code != 0``,
    exactly one non-empty stderr line; when ``unchanged`` (default: ``expect_code != 0``), the
    sandbox byte-identical (caches aside, see :func:`snapshot`).
    """
    ignore = tuple(ignore)
    if unchanged is None:
        unchanged = expect_code != 0
    before = snapshot(repo, ignore=ignore) if unchanged else None
    result = run(repo, args, env=env, stdin=stdin, cwd=cwd, timeout=timeout)
    where = f"hystate {' '.join(args)!r}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    assert result.code == expect_code, f"exit {result.code}, expected {expect_code}: {where}"
    assert "Traceback" not in result.output, where
    if expect_code != 0:
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].strip(), f"expected one stderr line: {where}"
    if before is not None:
        assert_unchanged(repo, before, ignore=ignore)
    return result
