"""Hostile configuration: every path in ``hystate.yaml`` or on the command line stays inside the
work tree, out of ``.git``, off the root, never through a symlink, never a file or another
repository (exit 5 for the config file, 2 for ``--state-dir`` / ``HYSTATE_STATE_DIR``); and
``validate --base`` shows reviewers the changes that steer hystate."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.hostile.conftest import commit
from tests.hostile.harness import run_hostile


def _config(repo: Path, body: str) -> None:
    (repo / "hystate.yaml").write_text("state_management:\n" + body)


def _outside(repo: Path) -> Path:
    photos = repo.parent / "photos"
    photos.mkdir(exist_ok=True)
    (photos / "holiday.jpg").write_bytes(b"precious")
    return photos


def _symlink(repo: Path, name: str) -> None:
    (repo / name).symlink_to(_outside(repo))


def _file(repo: Path, name: str) -> None:
    (repo / name).write_text("a tracked file\n")
    commit(repo, name)


def _nested_repo(repo: Path, name: str) -> None:
    (repo / name).mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo / name, check=True)


def _gitlink(repo: Path, name: str) -> None:
    """A submodule entry in HEAD (not checked out)."""
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.strip()
    subprocess.run(
        ["git", "update-index", "--add", "--cacheinfo", f"160000,{head},{name}"],
        cwd=repo,
        check=True,
    )
    subprocess.run(
        ["git", "-c", "user.name=M", "-c", "user.email=m@x.invalid", "commit", "-q", "-m", "sub"],
        cwd=repo,
        check=True,
    )


Prepare = Callable[[Path], None] | None

# value of state_directory -> (preparation, fragment of the one stderr line)
STATE_DIRECTORY: dict[str, tuple[str, Prepare, str]] = {
    "dot": (".", None, "root of the work tree"),
    "dot-slash": ("./", None, "root of the work tree"),
    "back-to-root": ("processed/..", None, "root of the work tree"),
    "git": (".git", None, "inside .git"),
    "git-hooks": (".git/hooks", None, "inside .git"),
    "git-upper": (".GIT", None, "inside .git"),
    "git-nested": ("./data/.git/x", None, "inside .git"),
    "parent": ("..", None, "outside the work tree"),
    "sibling": ("../photos", None, "outside the work tree"),
    "absolute": ("/etc", None, "outside the work tree"),
    "absolute-tmp": ("/tmp/hystate-state", None, "outside the work tree"),
    "sneaky-parent": ("a/../../x", None, "outside the work tree"),
    "nul": ('"a\\0b"', None, "not a usable folder name"),
    "newline": ('"a\\nb"', None, "not a usable folder name"),
    "config-file": ("hystate.yaml", None, "is a file, not a folder"),
    "tracked-file": ("notes.txt", lambda r: _file(r, "notes.txt"), "is a file, not a folder"),
    "symlink": ("linked", lambda r: _symlink(r, "linked"), "linked is a symlink"),
    "symlink-parent": ("linked/processed", lambda r: _symlink(r, "linked"), "is a symlink"),
    "nested-repo": ("vendored", lambda r: _nested_repo(r, "vendored"), "another git repository"),
    "submodule": ("vendored", lambda r: _gitlink(r, "vendored"), "is a submodule in HEAD"),
    "name-too-long": ("x" * 300, None, "too long"),
    "path-too-long": ("x/" * 3000, None, "too long"),
}


@pytest.mark.parametrize("name", sorted(STATE_DIRECTORY))
def test_state_directory_setting(name: str, repo: Path) -> None:
    value, prepare, fragment = STATE_DIRECTORY[name]
    if prepare is not None:
        prepare(repo)
    _config(repo, f"  state_directory: {value}\n")
    result = run_hostile(repo, ["status"], 5)
    assert "state_directory" in result.line and fragment in result.line, result.line


def test_a_deep_state_directory_keeps_its_caches(repo: Path) -> None:
    """Five folders of 60 letters are a usable state directory; its cache folder under
    .git/hystate/cache (the path %-quoted into one name) was over 255 bytes: exit 7."""
    deep = "/".join(["d" * 60] * 5)
    _config(repo, f"  state_directory: {deep}\n")
    run_hostile(repo, ["init"], 0)
    assert run_hostile(repo, ["status", "--json"], 0, unchanged=True).code == 0


@pytest.mark.parametrize("value", [".", ".git/hooks", "processed/.."])
def test_init_never_takes_the_root_or_git(value: str, repo: Path) -> None:
    (repo / ".gitignore").write_text("my-own-rules\n")
    commit(repo, ".gitignore")
    _config(repo, f"  state_directory: {value}\n")
    run_hostile(repo, ["init"], 5)


DATABASE_FILE = {
    "gitignore": ".gitignore",
    "dotdot": "..",
    "dot": ".",
    "slash": "a/b",
    "parent": "../state.db",
    "index": "index.json",
    "empty": '""',
    "dash": "-rf",
    "space": '"state db"',
    "too-long": "x" * 101,
    "backslash": '"a\\\\b"',
    "nul": '"state\\0.db"',
}


@pytest.mark.parametrize("name", sorted(DATABASE_FILE))
def test_database_file_setting(name: str, repo: Path) -> None:
    _config(repo, f"  database_file: {DATABASE_FILE[name]}\n")
    result = run_hostile(repo, ["status"], 5)
    assert "database_file" in result.line, result.line


def test_database_file_is_kept_in_the_git_directory(repo: Path) -> None:
    _config(repo, "  database_file: cache.sqlite\n")
    run_hostile(repo, ["rebuild"], 0)
    assert (repo / ".git" / "hystate" / "cache" / "processed" / "cache.sqlite").is_file()


# value of media.directories -> (state_directory, preparation, fragment)
MEDIA: dict[str, tuple[str, str | None, Prepare, str]] = {
    "root": (".", None, None, "root of the work tree"),
    "root-slash": ("./", None, None, "root of the work tree"),
    "empty": ('""', None, None, "not a usable folder name"),
    "state-dir": ("processed", None, None, "overlaps the state directory"),
    "year-folder": ("processed/2004", None, None, "overlaps the state directory"),
    "state-dir-parent": ("data", "data/processed", None, "overlaps the state directory"),
    "parent": ("..", None, None, "outside the work tree"),
    "photos": ("../photos", None, None, "outside the work tree"),
    "git": (".git", None, None, "inside .git"),
    "git-objects": (".git/objects", None, None, "inside .git"),
    "absolute": ("/tmp", None, None, "outside the work tree"),
    "climb": ("media/../..", None, None, "outside the work tree"),
    "symlink": ("linked", None, lambda r: _symlink(r, "linked"), "linked is a symlink"),
    "file": ("notes.txt", None, lambda r: _file(r, "notes.txt"), "is a file"),
    "nested-repo": ("vendored", None, lambda r: _nested_repo(r, "vendored"), "another git"),
}


@pytest.mark.parametrize("name", sorted(MEDIA))
def test_media_directories_setting(name: str, repo: Path) -> None:
    value, state_dir, prepare, fragment = MEDIA[name]
    if prepare is not None:
        prepare(repo)
    _outside(repo)
    body = f"  media:\n    directories: [{value}]\n"
    if state_dir:
        subprocess.run(["git", "mv", "processed", "data"], cwd=repo, check=True)
        (repo / "data").rename(repo / "data.tmp")
        (repo / "data").mkdir()
        (repo / "data.tmp").rename(repo / "data" / "processed")
        body = f"  state_directory: {state_dir}\n" + body
    _config(repo, body)
    result = run_hostile(repo, ["fsck", "--repair", "--remove-orphans"], 5)
    assert "media.directories" in result.line and fragment in result.line, result.line


# --state-dir / HYSTATE_STATE_DIR -> (preparation, fragment)
CLI_STATE_DIR: dict[str, tuple[str, Prepare, str]] = {
    "git": (".git", None, "inside .git"),
    "git-hooks": (".git/hooks", None, "inside .git"),
    "root": (".", None, "root of the work tree"),
    "parent": ("..", None, "outside the work tree"),
    "slash": ("/", None, "outside the work tree"),
    "sibling": ("../photos", None, "outside the work tree"),
    "file": ("hystate.yaml", lambda r: (r / "hystate.yaml").write_text("{}\n"), "is a file"),
    "symlink": ("linked", lambda r: _symlink(r, "linked"), "linked is a symlink"),
    "nested-repo": ("vendored", lambda r: _nested_repo(r, "vendored"), "another git"),
    "name-too-long": ("x" * 300, None, "too long"),
}


@pytest.mark.parametrize("how", ["option", "env"])
@pytest.mark.parametrize("name", sorted(CLI_STATE_DIR))
def test_state_dir_option(name: str, how: str, repo: Path) -> None:
    value, prepare, fragment = CLI_STATE_DIR[name]
    if prepare is not None:
        prepare(repo)
    if how == "option":
        result = run_hostile(repo, ["--state-dir", value, "init"], 2)
    else:
        result = run_hostile(repo, ["init"], 2, env={"HYSTATE_STATE_DIR": value})
    assert "--state-dir" in result.line and fragment in result.line, result.line


def test_state_dir_option_from_a_subfolder_is_relative_to_it(repo: Path) -> None:
    sub = repo / "processed" / "2004"
    result = run_hostile(repo, ["--state-dir", "../..", "status"], 2, cwd=sub)
    assert "root of the work tree" in result.line
    assert run_hostile(repo, ["--state-dir", "..", "status"], 0, cwd=sub).code == 0


# -- validate --base shows reviewers what steers hystate ------------------------------------------


def _branch(repo: Path) -> None:
    subprocess.run(["git", "branch", "-f", "base"], cwd=repo, check=True)


def change_config(repo: Path) -> str:
    _config(repo, "  recovery:\n    retry_delay: 1\n")
    commit(repo, "hystate.yaml")
    return "hystate.yaml"


def change_attributes(repo: Path) -> str:
    with (repo / ".gitattributes").open("a") as fh:
        fh.write("*.yaml -merge\n")
    commit(repo, ".gitattributes")
    return ".gitattributes"


def nested_attributes(repo: Path) -> str:
    (repo / "processed" / "2004" / ".gitattributes").write_text("*.yaml filter=evil\n")
    commit(repo, "processed/2004/.gitattributes")
    return "processed/2004/.gitattributes"


def change_gitignore(repo: Path) -> str:
    (repo / "processed" / ".gitignore").write_text("*\n")
    commit(repo, "processed/.gitignore")
    return "processed/.gitignore"


WARNINGS = {
    "config": change_config,
    "attributes": change_attributes,
    "nested-attributes": nested_attributes,
    "gitignore": change_gitignore,
}


@pytest.mark.parametrize("name", sorted(WARNINGS))
def test_validate_base_flags_what_steers_hystate(name: str, repo: Path) -> None:
    _branch(repo)
    path = WARNINGS[name](repo)
    result = run_hostile(repo, ["validate", "--base", "base", "--github"], 0)
    assert f"::warning file={path}::changes " in result.stdout, result.stdout
    assert "0 errors" in result.line


def link_episode(repo: Path) -> str:
    episode = sorted((repo / "processed").glob("*/*.yaml"))[0]
    episode.unlink()
    episode.symlink_to("../../../secret.env")
    rel = episode.relative_to(repo).as_posix()
    commit(repo, rel)
    return rel


def link_year(repo: Path) -> str:
    (repo / "processed" / "2031").symlink_to("/tmp")
    commit(repo, "processed/2031")
    return "processed/2031"


def submodule_in_state(repo: Path) -> str:
    _gitlink(repo, "processed/2031")
    return "processed/2031"


def commit_cache(repo: Path) -> str:
    (repo / "processed" / "state.db").write_bytes(b"SQLite format 3\0")
    commit(repo, "processed/state.db")
    return "processed/state.db"


ERRORS = {
    "episode-link": (link_episode, "a symlink in the state folder"),
    "year-link": (link_year, "a symlink in the state folder"),
    "submodule": (submodule_in_state, "a submodule in the state folder"),
    "cache": (commit_cache, "cache file committed"),
}


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_validate_base_fails_on_links_and_caches(name: str, repo: Path) -> None:
    _branch(repo)
    make, fragment = ERRORS[name]
    path = make(repo)
    result = run_hostile(repo, ["validate", "--base", "base", "--json"], 1)
    found = json.loads(result.stdout)["problems"]
    assert any(p["file"] == path and fragment in p["message"] for p in found), found


def test_case_count() -> None:
    cases = (
        len(STATE_DIRECTORY) + 3 + len(DATABASE_FILE) + len(MEDIA) + 2 * len(CLI_STATE_DIR)
        + len(WARNINGS) + len(ERRORS)
    )  # fmt: skip
    assert cases >= 70
