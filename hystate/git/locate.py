"""Finding the repository as git finds it: ``git rev-parse`` answers, environment included
(``GIT_DIR``, ``GIT_WORK_TREE``, ``GIT_INDEX_FILE``, ``GIT_CEILING_DIRECTORIES``,
``core.worktree``), and what git refuses (an unknown repository extension, a repository owned
by another user: ``safe.directory``) hystate refuses too, in one line."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from hystate.core.errors import GitError

_ASK = (
    "rev-parse", "--is-bare-repository", "--is-inside-git-dir", "--path-format=absolute",
    "--git-dir", "--git-common-dir", "--git-path", "index", "--git-path", "objects",
    "--show-toplevel",
)  # fmt: skip


# every repository found by this process (a warm server's child reports them: cli/warmahead.py)
FOUND: list[Location] = []


class NotARepository(GitError):
    """No repository where git looked (``hystate init`` may make one when ``can_init``)."""

    def __init__(self, message: str, *, hint: str | None = None, can_init: bool = True) -> None:
        super().__init__(message, hint=hint)
        self.can_init = can_init


@dataclass(frozen=True)
class Location:
    root: Path  # the work tree's top
    git_dir: Path
    common_dir: Path
    index: Path  # GIT_INDEX_FILE, else <git dir>/index
    objects: Path  # GIT_OBJECT_DIRECTORY, else <common dir>/objects


def existing(start: Path) -> Path:
    """``start`` or its nearest ancestor that exists (git needs a cwd)."""
    here = Path(os.path.abspath(start))
    while not here.is_dir() and here != here.parent:
        here = here.parent
    return here


def locate(start: Path) -> Location:
    """Where git, run in ``start``, finds the repository; GitError (exit 7) where git refuses."""
    here = existing(start)
    proc = subprocess.run(["git", *_ASK], cwd=here, capture_output=True, check=False)
    lines = proc.stdout.decode(errors="surrogateescape").splitlines()
    if len(lines) >= 6 and lines[0] == "true":
        raise GitError(f"{lines[2]} is a bare repository (no work tree): run hystate in a clone")
    if len(lines) >= 6 and lines[1] == "true":
        raise GitError(
            f"{here} is inside the git directory {lines[2]}: run hystate in the work tree"
        )
    if proc.returncode != 0 or len(lines) != 7:
        raise _refusal(here, proc.stderr.decode(errors="replace"))
    _, _, git_dir, common, index, objects, top = lines
    found = Location(Path(top), Path(git_dir), Path(common), Path(index), Path(objects))
    FOUND.append(found)
    return found


def _refusal(here: Path, stderr: str) -> GitError:
    said = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    first = said[0].removeprefix("fatal: ") if said else "git rev-parse failed"
    if first.startswith("not a git repository"):
        given = os.environ.get("GIT_DIR")
        if given:
            return NotARepository(
                f"GIT_DIR={given} is not a git repository (as git says)",
                hint="unset GIT_DIR or point it at a repository",
                can_init=False,
            )
        return NotARepository(
            f"not in a git repository: {here}", hint="run `hystate init` to make one here"
        )
    if first.startswith("detected dubious ownership"):
        path = first.partition(" at ")[2].strip("'")
        return GitError(
            f"git refuses the repository at {path}: it is owned by another user",
            hint=f"if you trust it: git config --global --add safe.directory {path}",
        )
    return GitError("git refuses this repository: " + " ".join(said).removeprefix("fatal: "))


def inside_git_dir(path: Path) -> Path | None:
    """The git directory ``path`` is in (a folder named ``.git``, or one holding HEAD, objects/
    and refs/ as a git directory does), else None."""
    here = Path(os.path.abspath(path))
    for folder in (here, *here.parents):
        if folder.name == ".git" or (
            (folder / "HEAD").is_file()
            and (folder / "objects").is_dir()
            and (folder / "refs").is_dir()
        ):
            return folder
    return None
