"""Hostile paths and symlinks: what a branch can commit into the state folder (or a person can
plant beside it) never makes hystate read, print, write or delete anything outside its files.

Each case runs the real command (tests/hostile/harness.py): the documented exit code, one line on
stderr, no traceback, the sandbox (repository and its surroundings) byte-identical on refusal,
and the secret beside the repository never printed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.hostile.conftest import SECRET, commit
from tests.hostile.harness import run_hostile, snapshot

Setup = Callable[[Path, Path, Path], None]  # (repo, first episode file, secret file)


def _no_leak(result_output: str) -> None:
    assert SECRET not in result_output, "the secret was printed"


# -- an episode file that is a symlink -----------------------------------------------------------


def link_to_secret(repo: Path, episode: Path, secret: Path) -> None:
    """Committed as a symlink to a secret outside the repository (a merged pull request)."""
    episode.unlink()
    episode.symlink_to(os.path.relpath(secret, episode.parent))
    commit(repo, str(episode.relative_to(repo)))


def planted_link(repo: Path, episode: Path, secret: Path) -> None:
    """Replaced in the work tree only, not committed."""
    episode.unlink()
    episode.symlink_to(secret)


def dangling_link(repo: Path, episode: Path, secret: Path) -> None:
    episode.unlink()
    episode.symlink_to(repo.parent / "no-such-file")
    commit(repo, str(episode.relative_to(repo)))


def link_to_other_episode(repo: Path, episode: Path, secret: Path) -> None:
    other = sorted(p for p in episode.parent.parent.glob("*/*.yaml") if p != episode)[0]
    episode.unlink()
    episode.symlink_to(os.path.relpath(other, episode.parent))
    commit(repo, str(episode.relative_to(repo)))


def folder_named_like_it(repo: Path, episode: Path, secret: Path) -> None:
    episode.unlink()
    episode.mkdir()
    (episode / "x").write_text(SECRET)


def fifo_named_like_it(repo: Path, episode: Path, secret: Path) -> None:
    episode.unlink()
    os.mkfifo(episode)


LINK_COMMANDS: dict[str, tuple[list[str], int, str]] = {
    "validate": (["validate"], 1, "1 with problems"),
    "validate-github": (["validate", "--github"], 1, "1 with problems"),
    "validate-json": (["validate", "--json"], 1, "1 with problems"),
    "show": (["show", "{id}"], 5, "symlink"),
    "show-json": (["show", "{id}", "--json"], 5, "symlink"),
    "advance": (["advance", "{id}", "downloading"], 5, "symlink"),
    "fail": (["fail", "{id}", "--error", "boom"], 5, "symlink"),
    "skip": (["skip", "{id}", "--reason", "no"], 5, "symlink"),
    "history": (["history", "{id}"], 5, "symlink"),
    "list": (["list"], 5, "symlink"),
    "list-json": (["list", "--json"], 5, "symlink"),
    "list-csv": (["list", "--csv"], 5, "symlink"),
    "status": (["status"], 5, "symlink"),
    "next": (["next", "downloading"], 5, "symlink"),
    "next-claim": (["next", "downloading", "--claim"], 5, "symlink"),
    "report-stdout": (["report", "--format", "json", "-o", "-"], 5, "symlink"),
    "metrics": (["metrics"], 5, "symlink"),
    "fsck": (["fsck"], 1, "remaining"),
    "retry-all": (["retry", "--all"], 5, "symlink"),
}


@pytest.mark.parametrize("command", sorted(LINK_COMMANDS))
def test_episode_committed_as_link_to_secret(
    command: str, repo: Path, episode: Path, secret: Path
) -> None:
    link_to_secret(repo, episode, secret)
    argv, code, fragment = LINK_COMMANDS[command]
    argv = [a.replace("{id}", episode.stem) for a in argv]
    result = run_hostile(repo, argv, code)
    assert fragment in result.line, result.line
    _no_leak(result.output)
    assert episode.is_symlink()


OTHER_LINKS: dict[str, tuple[Setup, list[str], int, str]] = {
    "planted-show": (planted_link, ["show", "{id}"], 5, "symlink"),
    "planted-advance": (planted_link, ["advance", "{id}", "downloading"], 5, "symlink"),
    "planted-validate": (planted_link, ["validate", "--github"], 1, "with problems"),
    "dangling-validate": (dangling_link, ["validate"], 1, "with problems"),
    "dangling-list": (dangling_link, ["list"], 5, "symlink"),
    "dangling-show": (dangling_link, ["show", "{id}"], 5, "symlink"),
    "other-episode-advance": (
        link_to_other_episode,
        ["advance", "{id}", "downloading"],
        5,
        "symlink",
    ),
    "other-episode-status": (link_to_other_episode, ["status"], 5, "symlink"),
    "folder-show": (folder_named_like_it, ["show", "{id}"], 5, "is a folder"),
    "folder-validate": (folder_named_like_it, ["validate"], 1, "with problems"),
    "fifo-show": (fifo_named_like_it, ["show", "{id}"], 5, "special file"),
}

# Reads follow HEAD's tree (issue 17): what is only in the work tree never reaches them, so they
# answer with HEAD's episode and never open the link or the FIFO (before, they failed with 5).
UNCOMMITTED: dict[str, Setup] = {"planted": planted_link, "fifo": fifo_named_like_it}


@pytest.mark.parametrize("name", sorted(UNCOMMITTED))
def test_an_uncommitted_link_or_fifo_is_never_read(
    name: str, repo: Path, episode: Path, secret: Path
) -> None:
    UNCOMMITTED[name](repo, episode, secret)
    result = run_hostile(repo, ["list", "--json"], 0, timeout=20, unchanged=False)
    assert episode.stem in result.stdout
    _no_leak(result.output)
    assert run_hostile(repo, ["validate"], 1, unchanged=False).code == 1  # reported there


@pytest.mark.parametrize("name", sorted(OTHER_LINKS))
def test_episode_that_is_not_a_file(name: str, repo: Path, episode: Path, secret: Path) -> None:
    setup, argv, code, fragment = OTHER_LINKS[name]
    setup(repo, episode, secret)
    argv = [a.replace("{id}", episode.stem) for a in argv]
    result = run_hostile(repo, argv, code, timeout=20)  # a FIFO must never block a read
    assert fragment in result.line, result.line
    _no_leak(result.output)


def test_validate_names_the_link_and_never_its_target(
    repo: Path, episode: Path, secret: Path
) -> None:
    link_to_secret(repo, episode, secret)
    result = run_hostile(repo, ["validate", "--github"], 1)
    rel = episode.relative_to(repo).as_posix()
    assert f"::error file={rel}::$: is a symlink" in result.stdout
    _no_leak(result.output)


def test_fsck_repair_replaces_a_planted_link_with_the_committed_file(
    repo: Path, episode: Path, secret: Path
) -> None:
    committed = episode.read_bytes()
    planted_link(repo, episode, secret)
    before = secret.read_bytes()
    result = run_hostile(repo, ["fsck", "--repair"], 0)
    _no_leak(result.output)
    assert not episode.is_symlink() and episode.read_bytes() == committed
    assert secret.read_bytes() == before


# -- year folders, the state folder's own files ----------------------------------------------------


def _outside_year(repo: Path) -> Path:
    """A folder outside the repository holding an episode file, like a year folder would."""
    outside = repo.parent / "photos"
    outside.mkdir()
    (outside / "holiday.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return outside


def year_link_outside(repo: Path, episode: Path, secret: Path) -> None:
    outside = _outside_year(repo)
    shutil.copy(episode, outside / episode.name)
    (repo / "processed" / "2031").symlink_to(outside)


def year_link_committed(repo: Path, episode: Path, secret: Path) -> None:
    year_link_outside(repo, episode, secret)
    commit(repo, "processed/2031")


def year_link_inside(repo: Path, episode: Path, secret: Path) -> None:
    (repo / "processed" / "2031").symlink_to(episode.parent.name)


def year_is_a_file(repo: Path, episode: Path, secret: Path) -> None:
    (repo / "processed" / "2031").write_text("not a folder\n")


def locks_link(repo: Path, episode: Path, secret: Path) -> None:
    _outside_year(repo)
    shutil.rmtree(repo / "processed" / ".locks", ignore_errors=True)
    (repo / "processed" / ".locks").symlink_to(repo.parent / "photos")


def reports_link(repo: Path, episode: Path, secret: Path) -> None:
    _outside_year(repo)
    shutil.rmtree(repo / "processed" / "reports", ignore_errors=True)
    (repo / "processed" / "reports").symlink_to(repo.parent / "photos")


def gitignore_link(repo: Path, episode: Path, secret: Path) -> None:
    gitignore = repo / "processed" / ".gitignore"
    gitignore.unlink()
    gitignore.symlink_to(secret)


def gitattributes_link(repo: Path, episode: Path, secret: Path) -> None:
    attributes = repo / "processed" / ".gitattributes"
    attributes.unlink()
    attributes.symlink_to(secret)


def config_link(repo: Path, episode: Path, secret: Path) -> None:
    (repo / "hystate.yaml").symlink_to(secret)


ADD_2031 = ["add", "hy0_new_2031", "--title", "New", "--date", "2031-02-03"]

STATE_FOLDER: dict[str, tuple[Setup, list[str], int, str]] = {
    "year-link-add": (year_link_outside, ADD_2031, 5, "processed/2031 is a symlink"),
    "year-link-committed-add": (year_link_committed, ADD_2031, 5, "processed/2031 is a symlink"),
    "year-link-validate": (year_link_committed, ["validate"], 1, "with problems"),
    "year-link-inside-validate": (year_link_inside, ["validate"], 1, "with problems"),
    "year-link-inside-add": (year_link_inside, ADD_2031, 5, "processed/2031 is a symlink"),
    "year-file-add": (year_is_a_file, ADD_2031, 5, "processed/2031 is a file"),
    "year-file-validate": (year_is_a_file, ["validate"], 1, "with problems"),
    # reads named nothing and hid the linked folder's episodes with exit 0 (issue 11): they
    # stop and name it, as they do for a broken episode file (validate lists it too)
    "year-link-list": (year_link_outside, ["list"], 5, "processed/2031: $: is a symlink"),
    "year-link-status": (year_link_outside, ["status"], 5, "processed/2031: $: is a symlink"),
    "year-link-next": (year_link_outside, ["next", "downloading"], 5, "2031: $: is a symlink"),
    "year-link-metrics": (year_link_outside, ["metrics"], 5, "2031: $: is a symlink"),
    "year-link-committed-list": (year_link_committed, ["list"], 5, "2031: $: is a symlink"),
    "year-link-committed-status": (year_link_committed, ["status"], 5, "2031: $: is a symlink"),
    "year-link-inside-list": (year_link_inside, ["list"], 5, "2031: $: is a symlink"),
    "year-file-list": (year_is_a_file, ["list"], 5, "2031: $: year folder is not a folder"),
    "year-file-status": (year_is_a_file, ["status"], 5, "2031: $: year folder is not a folder"),
    "locks-link-advance": (
        locks_link,
        ["advance", "{id}", "downloading"],
        5,
        "processed/.locks is a symlink",
    ),
    "locks-link-locks": (locks_link, ["locks"], 5, "processed/.locks is a symlink"),
    "locks-link-unlock": (
        locks_link,
        ["unlock", "--all-stale"],
        5,
        "processed/.locks is a symlink",
    ),
    "locks-link-fsck": (locks_link, ["fsck", "--repair"], 5, "processed/.locks is a symlink"),
    "reports-link-report": (reports_link, ["report"], 5, "processed/reports is a symlink"),
    "reports-link-report-csv": (
        reports_link,
        ["report", "--format", "csv"],
        5,
        "processed/reports is a symlink",
    ),
    "reports-link-validate": (reports_link, ["validate"], 1, "with problems"),
    "gitignore-link-init": (gitignore_link, ["init"], 5, "symlink"),
    "gitattributes-link-init": (gitattributes_link, ["init"], 5, "symlink"),
    "config-link-status": (config_link, ["status"], 5, "hystate.yaml: is a symlink"),
    "config-link-validate": (config_link, ["validate"], 5, "hystate.yaml: is a symlink"),
}


@pytest.mark.parametrize("name", sorted(STATE_FOLDER))
def test_state_folder_links(name: str, repo: Path, episode: Path, secret: Path) -> None:
    setup, argv, code, fragment = STATE_FOLDER[name]
    setup(repo, episode, secret)
    argv = [a.replace("{id}", episode.stem) for a in argv]
    result = run_hostile(repo, argv, code)
    assert fragment in result.line, result.line
    _no_leak(result.output)


def test_year_link_copy_is_never_touched(repo: Path, episode: Path, secret: Path) -> None:
    """An id with a copy behind a linked year folder: only the real file moves."""
    year_link_outside(repo, episode, secret)
    outside = repo.parent / "photos" / episode.name
    before = outside.read_bytes()
    run_hostile(repo, ["advance", episode.stem, "downloading"], 0)
    assert outside.read_bytes() == before and "downloading" in episode.read_text()


def test_year_link_advance_never_rewrites_the_outside_file(
    repo: Path, episode: Path, secret: Path
) -> None:
    """The copy behind the link is the only file of a new id: it is unknown, never moved."""
    outside = _outside_year(repo)
    copy = outside / "hy0_only_outside.yaml"
    copy.write_text(episode.read_text().replace(episode.stem, "hy0_only_outside"))
    (repo / "processed" / "2031").symlink_to(outside)
    result = run_hostile(repo, ["advance", "hy0_only_outside", "downloading"], 4)
    assert "no episode 'hy0_only_outside'" in result.line


def test_state_folder_is_a_link(repo: Path, secret: Path) -> None:
    state = repo / "processed"
    moved = repo.parent / "elsewhere"
    shutil.move(state, moved)
    state.symlink_to(moved)
    result = run_hostile(repo, ["status"], 5)
    assert "processed" in result.line and "symlink" in result.line


# -- the same id twice; folders that are not years ------------------------------------------------


def duplicate(repo: Path, episode: Path, secret: Path) -> None:
    other = repo / "processed" / "2031"
    other.mkdir()
    shutil.copy(episode, other / episode.name)
    commit(repo, "processed/2031")


DUPLICATES: dict[str, tuple[list[str], int, str]] = {
    "list": (["list"], 5, "duplicate id"),
    "list-json": (["list", "--json"], 5, "duplicate id"),
    "status": (["status"], 5, "duplicate id"),
    "status-json": (["status", "--json"], 5, "duplicate id"),
    "next": (["next", "downloading"], 5, "duplicate id"),
    "show": (["show", "{id}"], 5, "more than one file"),
    "advance": (["advance", "{id}", "downloading"], 5, "more than one file"),
    "validate": (["validate"], 1, "with problems"),
    "report": (["report", "--format", "json", "-o", "-"], 5, "duplicate id"),
}


@pytest.mark.parametrize("command", sorted(DUPLICATES))
def test_same_id_in_two_year_folders(command: str, repo: Path, episode: Path, secret: Path) -> None:
    duplicate(repo, episode, secret)
    argv, code, fragment = DUPLICATES[command]
    argv = [a.replace("{id}", episode.stem) for a in argv]
    result = run_hostile(repo, argv, code)
    assert fragment in result.line, result.line
    if fragment == "duplicate id":
        assert "processed/2031/" in result.line or episode.parent.name in result.line


def test_duplicate_seen_after_a_refresh_and_gone_when_removed(repo: Path, episode: Path) -> None:
    """The cache notices a duplicate that appears after it was built, and its end."""
    run_hostile(repo, ["status"], 0)
    duplicate(repo, episode, episode)
    assert "duplicate id" in run_hostile(repo, ["list"], 5).line
    subprocess.run(["git", "rm", "-q", "-r", "processed/2031"], cwd=repo, check=True)
    commit(repo, "processed")
    result = run_hostile(repo, ["list", "--json"], 0)
    assert result.stdout.count('"episode_id"') == 20


FULL_WIDTH_2031 = "\uff12\uff10\uff13\uff11"
ARABIC_INDIC_2031 = "\u0662\u0660\u0663\u0661"


@pytest.mark.parametrize("folder", [FULL_WIDTH_2031, ARABIC_INDIC_2031, "2031x", "203"])
def test_folder_that_is_not_a_year(folder: str, repo: Path, episode: Path) -> None:
    odd = repo / "processed" / folder
    odd.mkdir()
    (odd / "hy0_odd.yaml").write_text(episode.read_text().replace(episode.stem, "hy0_odd"))
    result = run_hostile(repo, ["list", "--json"], 0)
    assert "hy0_odd" not in result.stdout and result.stdout.count('"episode_id"') == 20
    assert "no episode 'hy0_odd'" in run_hostile(repo, ["show", "hy0_odd"], 4).line


# -- media folders and orphans --------------------------------------------------------------------


def _media(repo: Path, *lines: str) -> Path:
    media = repo / "media"
    media.mkdir()
    (repo / "hystate.yaml").write_text(
        "state_management:\n  media:\n    directories: [media]\n" + "".join(lines)
    )
    return media


def test_remove_orphans_needs_repair(repo: Path) -> None:
    (_media(repo) / "orphan.mp3").write_bytes(b"x")
    result = run_hostile(repo, ["fsck", "--remove-orphans"], 2)
    assert "--remove-orphans deletes files" in result.line


def test_orphan_links_are_never_followed_or_removed(repo: Path, secret: Path) -> None:
    media = _media(repo)
    (media / "linked.mp3").symlink_to(secret)
    outside = _outside_year(repo)
    (media / "folder").symlink_to(outside)
    result = run_hostile(repo, ["fsck", "--repair", "--remove-orphans"], 1)
    assert "remaining" in result.line
    assert "never followed" in result.stdout and "holiday.jpg" not in result.stdout
    _no_leak(result.output)


def test_orphans_in_a_nested_repository_or_tracked_are_kept(repo: Path) -> None:
    media = _media(repo)
    nested = media / "vendored"
    nested.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=nested, check=True)
    (nested / "song.mp3").write_bytes(b"nested")
    (media / "tracked.mp3").write_bytes(b"tracked")
    commit(repo, "media/tracked.mp3", "hystate.yaml")
    result = run_hostile(repo, ["fsck", "--repair", "--remove-orphans"], 1)
    assert "tracked in git: not removed" in result.stdout
    assert (nested / "song.mp3").exists() and (media / "tracked.mp3").exists()


def test_real_orphans_are_removed_with_repair(repo: Path) -> None:
    media = _media(repo)
    (media / "orphan.mp3").write_bytes(b"x")
    _age(media / "orphan.mp3")
    before = snapshot(repo)
    result = run_hostile(repo, ["fsck", "--repair", "--remove-orphans"], 0)
    assert "media/orphan.mp3" in result.stdout and not (media / "orphan.mp3").exists()
    after = snapshot(repo)
    assert set(before) - set(after) == {"state-repo/media/orphan.mp3"}


def _age(path: Path) -> None:
    """Older than the sweep's grace period (a fresh file may be one a worker is writing)."""
    old = time.time() - 2 * 86_400
    os.utime(path, (old, old))


def test_case_count() -> None:
    """The README's reliability section quotes these counts."""
    assert len(LINK_COMMANDS) + len(OTHER_LINKS) + len(STATE_FOLDER) + len(DUPLICATES) >= 55


def test_remove_orphans_removes_only_regular_files(repo: Path) -> None:
    """A FIFO (or socket) in a media folder was removed like a file; it is listed and kept."""
    import socket

    media = _media(repo)
    os.mkfifo(media / "pipe.mp3")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(media / "sock.mp3"))
    (media / "orphan.mp3").write_bytes(b"x")
    _age(media / "orphan.mp3")
    try:
        result = run_hostile(repo, ["fsck", "--repair", "--remove-orphans"], 1, unchanged=False)
    finally:
        sock.close()
    assert "a FIFO, not a regular file: never removed" in result.stdout
    assert "a socket or device, not a regular file" in result.stdout
    assert os.path.lexists(media / "pipe.mp3") and os.path.lexists(media / "sock.mp3")
    assert not (media / "orphan.mp3").exists()  # the regular file of this user is removed


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a file of another user")
def test_remove_orphans_keeps_another_users_file(repo: Path) -> None:
    media = _media(repo)
    theirs = media / "theirs.mp3"
    theirs.write_bytes(b"x")
    os.chown(theirs, 65534, 65534)
    result = run_hostile(repo, ["fsck", "--repair", "--remove-orphans"], 1)
    assert "owned by uid 65534" in result.stdout and theirs.exists()


# -- lock paths that are not lock files -----------------------------------------------------------


def _lock_path(repo: Path, episode: Path) -> Path:
    locks = repo / "processed" / ".locks"
    locks.mkdir(exist_ok=True)
    return locks / f"{episode.stem}.lock"


LOCK_KINDS = ["empty-folder", "fifo", "full-folder", "symlink", "dangling-symlink"]


def _plant_lock(kind: str, lock: Path, secret: Path) -> None:
    if kind == "empty-folder":
        lock.mkdir()
    elif kind == "full-folder":
        lock.mkdir()
        (lock / "keep.txt").write_text("someone's")
    elif kind == "fifo":
        os.mkfifo(lock)
    elif kind == "symlink":
        lock.symlink_to(secret)
    else:
        lock.symlink_to(lock.parent / "nowhere")


@pytest.mark.parametrize("kind", LOCK_KINDS)
def test_fsck_reports_a_lock_that_is_not_a_file(
    kind: str, repo: Path, episode: Path, secret: Path
) -> None:
    """fsck said "clean" while the lock refused every transition of the episode (exit 6)."""
    lock = _lock_path(repo, episode)
    _plant_lock(kind, lock, secret)
    run_hostile(repo, ["advance", episode.stem, "downloading"], 6, timeout=60)
    result = run_hostile(repo, ["fsck"], 1, unchanged=False)
    assert f"{episode.stem}.lock" in result.stdout and "not a lock" in result.stdout
    _no_leak(result.output)
    assert os.path.lexists(lock)  # fsck without --repair changes nothing


@pytest.mark.parametrize("kind", ["empty-folder", "fifo"])
def test_fsck_repair_removes_an_unused_empty_folder_or_fifo_lock(
    kind: str, repo: Path, episode: Path, secret: Path
) -> None:
    lock = _lock_path(repo, episode)
    _plant_lock(kind, lock, secret)
    result = run_hostile(repo, ["fsck", "--repair"], 0, unchanged=False)
    assert "removed" in result.stdout and not os.path.lexists(lock)
    run_hostile(repo, ["advance", episode.stem, "downloading"], 0, unchanged=False)


@pytest.mark.parametrize("kind", ["full-folder", "symlink", "dangling-symlink"])
def test_fsck_repair_keeps_a_lock_it_cannot_remove_safely(
    kind: str, repo: Path, episode: Path, secret: Path
) -> None:
    lock = _lock_path(repo, episode)
    _plant_lock(kind, lock, secret)
    before = secret.read_bytes()
    result = run_hostile(repo, ["fsck", "--repair"], 1, unchanged=False)
    assert "kept" in result.stdout and os.path.lexists(lock)
    assert secret.read_bytes() == before
    if kind == "full-folder":
        assert (lock / "keep.txt").read_text() == "someone's"
    _no_leak(result.output)


def test_fsck_repair_keeps_a_fifo_lock_a_live_process_has_open(repo: Path, episode: Path) -> None:
    lock = _lock_path(repo, episode)
    os.mkfifo(lock)
    holder = subprocess.Popen(  # holds the FIFO open for reading and writing (never blocks)
        [sys.executable, "-c", "import os, sys, time; os.open(sys.argv[1], os.O_RDWR);"
         " print('open', flush=True); time.sleep(120)", str(lock)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        result = run_hostile(repo, ["fsck", "--repair"], 1, unchanged=False)
        assert f"in use by process {holder.pid}" in result.stdout and os.path.lexists(lock)
    finally:
        holder.kill()
        holder.wait()
