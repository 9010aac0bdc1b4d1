"""The pre-commit hook ``hystate init`` installs: ``hystate validate --staged`` before every
plain ``git commit`` in the checkout, so a stale index cannot revert a transition.

The hooks folder is git's (``git rev-parse --git-path hooks`` honours ``core.hooksPath``). An
existing hook is never overwritten: the caller is told which line to add to it.
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hystate.git.base import RepoBase

MARKER = "validate --staged"
_HEADER = "# hystate: refuse a commit that would put an episode file back to an older state"


@dataclass(frozen=True)
class HookResult:
    # installed | present | foreign (a hook of someone else's: not touched)
    status: str
    path: Path
    line: str


def hook_line() -> str:
    """The command the hook runs: this installation's hystate, else the one on PATH."""
    py = shlex.quote(sys.executable)
    return (
        f"if [ -x {py} ]; then {py} -m hystate.cli {MARKER} || exit 1; "
        f"elif command -v hystate >/dev/null 2>&1; then hystate {MARKER} || exit 1; "
        "else echo 'hystate: not installed here; staged episode files were not checked' >&2; fi"
    )


def hook_script() -> str:
    return f"#!/bin/sh\n{_HEADER}\n# (installed by `hystate init`; safe to edit)\n{hook_line()}\n"


def hooks_dir(repo: RepoBase) -> Path:
    where = Path(repo.git("rev-parse", "--git-path", "hooks").strip())
    return where if where.is_absolute() else (repo.root / where)


def install_pre_commit(repo: RepoBase) -> HookResult:
    """Install (or find) the guard in the repository's pre-commit hook. Safe to repeat."""
    path = hooks_dir(repo) / "pre-commit"
    if path.exists() or path.is_symlink():
        try:
            current = path.read_text(errors="replace")
        except OSError:
            current = ""
        # ours (perhaps edited since), or someone else's hook that already runs the check
        status = "present" if _HEADER in current or MARKER in current else "foreign"
        return HookResult(status, path, hook_line())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".pre-commit.{os.getpid()}.tmp")
    tmp.write_text(hook_script())
    tmp.chmod(0o755)
    try:
        os.link(tmp, path)  # never replaces a hook that appeared meanwhile
    except FileExistsError:
        return install_pre_commit(repo)
    finally:
        tmp.unlink()
    return HookResult("installed", path, hook_line())


_COMMIT_HOOKS = ("pre-commit", "prepare-commit-msg", "commit-msg", "post-commit")


def unrun_hooks(repo: RepoBase) -> list[str]:
    """Commit hooks of this repository that a hystate commit does not run (README: "Not run:
    git hooks"): executable ones, except a pre-commit hook that only runs hystate's own guard,
    and none at all once ``git config hystate.hooks skip`` acknowledges it."""
    if (repo.settings.get("hystate.hooks") or "").strip().lower() == "skip":
        return []
    folder = repo.settings.hooks_dir(repo.common_dir)
    found = []
    for name in _COMMIT_HOOKS:
        path = folder / name
        try:
            if not (path.is_file() and os.access(path, os.X_OK)):
                continue
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        commands = [line for line in lines if line.strip() and not line.lstrip().startswith("#")]
        if name == "pre-commit" and commands and all(MARKER in c for c in commands):
            continue
        found.append(name)
    return found
