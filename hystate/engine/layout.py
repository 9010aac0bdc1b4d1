"""The state directory's place and layout: where it may be (inside the work tree, never its
root, never in .git, never through a symlink, never a symlink or submodule in HEAD), and the
files ``hystate init`` commits in it (``.gitignore`` and ``.gitattributes``)."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from hystate.core.errors import GitError, HystateError, InvalidData, UnknownEpisode, UsageError
from hystate.core.paths import (
    NotRegularFile,
    check_real_dir,
    confine,
    ensure_dir,
    is_within,
    read_bytes,
)
from hystate.core.store import GITATTRIBUTES, gitignore_text
from hystate.git import GitRepo

if TYPE_CHECKING:
    from hystate.core.config import Config
    from hystate.core.locks import StateLock
    from hystate.core.store import EpisodeStore


class Workspace(Protocol):
    """What the layout needs of ``hystate.engine.workspace.Workspace`` (which imports this
    module, so it is named here by its shape)."""

    repo: GitRepo
    config: Config
    state_dir: Path
    store: EpisodeStore

    @property
    def rel_state_dir(self) -> str: ...

    def repo_lock(self) -> StateLock: ...


def find_repo(here: Path, state_dir: str | os.PathLike[str] | None) -> GitRepo:
    """The repository: the one holding the named state folder's parent, found without
    following a link (a linked folder is refused later, not taken for the repository it points
    into), else the one holding ``here`` (so an outside folder is a usage error later)."""
    if state_dir is not None:
        chosen = Path(os.path.normpath(here / state_dir))
        try:
            return GitRepo.discover(_real_ancestor(chosen.parent))
        except GitError:
            pass
    return GitRepo.discover(here)


def _real_ancestor(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists and is reached through no symlink."""
    while path != path.parent and not (path.exists() and os.path.realpath(path) == str(path)):
        path = path.parent
    return path


def check_output(ws: Workspace, path: Path) -> None:
    """``path``, a file the user named for hystate to write (a report, the metrics, a backup),
    must not replace hystate's own files or git's: nothing in the git directory, in the state
    directory (its ``reports/`` aside), ``hystate.yaml`` or a ``.git`` file (UsageError).
    Linked folders on the way count where they lead; a link at ``path`` itself is replaced,
    never written through, so it counts where it is."""
    from hystate.core.config import CONFIG_FILE

    given = Path(os.path.abspath(path))
    real = Path(os.path.realpath(given.parent)) / given.name
    repo = ws.repo
    root = Path(os.path.realpath(repo.root))
    state = Path(os.path.realpath(ws.state_dir))
    gits = [Path(os.path.realpath(d)) for d in (repo.git_dir, repo.common_dir)]
    if (
        real in (root / CONFIG_FILE, root / ".git")
        or any(is_within(real, d) for d in gits)
        or (is_within(real, state) and not is_within(real, state / "reports"))
    ):
        raise UsageError(
            f"{path} is among hystate's own files (the git directory, the state directory "
            "outside reports/, hystate.yaml); write the file somewhere else"
        )
    try:
        mode: int | None = os.stat(given).st_mode  # through a link: /dev/stdout is a pipe
    except OSError:
        mode = None
    if mode is not None and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        # the atomic write renames a new file over it: as root, `-o /dev/null` replaced the
        # system's /dev/null with a regular file
        raise UsageError(
            f"{path} is a device, a pipe or a socket, not a file (writing it would replace it); "
            "name a regular file"
        )


def locks_dir(ws: Workspace) -> Path:
    """``<state_dir>/.locks``; refused when it is a symlink or a file (a branch can commit one
    pointing anywhere), so no lock is ever made, read or removed through it."""
    path = ws.state_dir / ".locks"
    problem = check_real_dir(ws.repo.root, path)
    if problem is not None:
        raise InvalidData(
            f"{problem}: hystate never follows symlinks",
            hint="remove it (`git rm` it if it is committed), then run the command again",
        )
    return path


def not_found(ws: Workspace, episode_id: str) -> HystateError:
    """Why ``episode_id`` has no file: left out of a sparse checkout, or unknown (exit 4)."""
    rel_dir = ws.rel_state_dir
    for name in ws.repo.head_names(rel_dir, 1):
        if name.rpartition("/")[2] == f"{episode_id}.yaml":
            return GitError(
                f"{episode_id} is in HEAD but not in the work tree (sparse checkout?)",
                hint=f"`git sparse-checkout add {rel_dir}/{name.rpartition('/')[0]}` brings it in",
            )
    return UnknownEpisode(
        f"no episode {episode_id!r} in {rel_dir}/", hint="`hystate list` shows the known ids"
    )


def confined_state_dir(ws: Workspace, here: Path, given: str | os.PathLike[str] | None) -> Path:
    """The state directory: from the command line or the API (exit 2 when unusable), else
    ``state_directory`` of hystate.yaml (exit 5). Either way a real folder inside the work
    tree, not its root, not in .git, not through a symlink (see hystate.core.paths)."""
    root, git_dirs = ws.repo.root, (ws.repo.git_dir, ws.repo.common_dir)
    if given is not None:
        where = "--state-dir"
        state_dir = confine(
            root, os.fspath(given), where, error=UsageError, cwd=here, forbidden=git_dirs
        )
    else:
        where = f"{ws.config.source or 'hystate.yaml'}: state_directory"
        value = str(ws.config.get("state_directory"))
        state_dir = confine(root, value, where, error=InvalidData, forbidden=git_dirs)
    rel = state_dir.relative_to(root).as_posix()
    try:
        head_entry = ws.repo.objects.lookup(ws.repo.head_tree(), rel)
    except GitError:  # HEAD cannot be read (a power cut): `fsck --repair` mends it
        head_entry = None
    if head_entry is not None and head_entry[0] != b"40000":
        kind = {b"120000": "a symlink", b"160000": "a submodule"}.get(head_entry[0], "a file")
        error = UsageError if given is not None else InvalidData
        raise error(f"{where}: {rel} is {kind} in HEAD, not a folder")
    source = ws.config.source or "hystate.yaml"
    for value in ws.config.get("media.directories"):
        media = confine(
            root, str(value), f"{source}: media.directories", error=InvalidData,
            forbidden=git_dirs,
        )  # fmt: skip
        if is_within(media, state_dir) or is_within(state_dir, media):
            raise InvalidData(
                f"{source}: media.directories: {value!r} overlaps the state directory"
                f" {ws.repo.relpath(state_dir)}/"
            )
    return state_dir


def ensure_layout(ws: Workspace) -> str | None:
    """Create the state directory and its .gitignore (committed), and set the repository
    options hystate relies on. Safe to repeat."""
    ws.repo.configure()
    ensure_dir(ws.repo.root, ws.state_dir)
    ignore = gitignore_text(str(ws.config.get("database_file")), ws.rel_state_dir == ".")
    files = {
        ws.state_dir / ".gitignore": ignore.encode(),
        ws.state_dir / ".gitattributes": GITATTRIBUTES.encode(),
    }
    todo = {p: d for p, d in files.items() if _read_own(p) != d}
    if not todo:
        return None
    ws.repo.check_writable()
    with ws.repo_lock():
        for path, data in todo.items():
            ws.store.write(path, data)
        message = f"hystate: set up {ws.rel_state_dir}/ (gitignore, merge driver)\n"
        return ws.repo.commit({ws.repo.relpath(p): d for p, d in todo.items()}, message)


def _read_own(path: Path) -> bytes:
    """A file hystate writes (.gitignore, .gitattributes): its bytes, b"" when missing;
    never read through a symlink, never replaced when it is one."""
    try:
        return read_bytes(path)
    except FileNotFoundError:
        return b""
    except NotRegularFile as exc:
        raise InvalidData(
            f"{path} is {exc.kind}: hystate never writes through symlinks",
            hint="replace it with a plain file",
        ) from None
