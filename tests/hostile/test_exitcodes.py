"""Exit codes and leftovers: every case that used to end in "internal error" (exit 1) gets its
documented code and one line; nothing spins forever; nothing is left behind."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.hostile.checks import (
    HYSTATE,
    accepted,
    commit_all,
    episode_files,
    refused,
    run,
)

# -- YAML keys ------------------------------------------------------------------------------

KEYS = ["1: x", "null: x", "on: x", "? [a, b]\n: x", "~: x", "1.5: x", "0x1f: x"]


@pytest.mark.parametrize("line", KEYS, ids=["int", "null", "bool", "seq", "tilde", "float", "hex"])
def test_non_string_keys_in_an_episode_file_are_invalid_data(repo: Path, line: str) -> None:
    path = episode_files(repo)[0]
    path.write_text(path.read_text() + line + "\n")
    commit_all(repo)
    refused(repo, ["advance", path.stem, "downloading"], 5, contains="keys must be strings")


@pytest.mark.parametrize(
    "text",
    ["state_management:\n  1: 2\n", "1: 2\n", "state_management:\n  locks:\n    30: timeout\n"],
    ids=["section", "top", "nested"],
)
def test_integer_config_keys_are_invalid_data(repo: Path, text: str) -> None:
    (repo / "hystate.yaml").write_text(text)
    refused(repo, ["status"], 5, contains="hystate.yaml")


@pytest.mark.parametrize("key", ["state_directory", "database_file"])
def test_nul_in_a_configured_path_is_invalid_data(repo: Path, key: str) -> None:
    (repo / "hystate.yaml").write_text(f'state_management:\n  {key}: "a\\0b"\n')
    refused(repo, ["status"], 5)


# -- caches ---------------------------------------------------------------------------------

META_DAMAGE = {
    "tree-not-hex": "UPDATE meta SET value = 'zz' WHERE key = 'tree'",
    "head-not-a-commit": "UPDATE meta SET value = 'zz' WHERE key = 'head'",
    "index-an-int": "UPDATE meta SET value = 5 WHERE key = 'index'",
    "tree-of-nothing": "UPDATE meta SET value = '00' WHERE key = 'tree'",
    "format-an-int": "UPDATE meta SET value = 3 WHERE key = 'format'",
    "wrong-columns": "DROP TABLE meta; CREATE TABLE meta (a, b)",
    "extra-column": "DROP TABLE meta; CREATE TABLE meta (key, value, x)",
    "no-rows": "DELETE FROM meta",
}


@pytest.mark.parametrize("name", sorted(META_DAMAGE))
def test_corrupt_cache_meta_is_rebuilt_not_a_crash(repo: Path, name: str) -> None:
    assert run(repo, "list").code == 0
    db = sqlite3.connect(repo / ".git" / "hystate" / "cache" / "processed" / "state.db")
    db.executescript(META_DAMAGE[name])
    db.commit()
    db.close()
    result = run(repo, "list", "--json")
    assert result.code == 0, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) <= 1
    assert len(json.loads(result.stdout)) == 20


# -- names that are not UTF-8 ------------------------------------------------------------------


@pytest.mark.parametrize("command", [["list"], ["status"], ["next", "downloading"]])
def test_a_file_name_that_is_not_utf8_is_named_not_a_crash(repo: Path, command: list[str]) -> None:
    """Committed (reads follow HEAD's tree; an uncommitted one is validate's and fsck's)."""
    bad = os.path.join(os.fsencode(repo / "processed" / "2004"), b"\xff\xfe.yaml")
    with open(bad, "wb") as fh:
        fh.write(b"title: x\n")
    commit_all(repo, "a bad name")
    refused(repo, command, 5, contains="\\udcff")
    os.unlink(bad)
    commit_all(repo, "gone")
    assert run(repo, *command).code == 0  # and forgotten once it is gone


def test_validate_lists_a_name_that_is_not_utf8(repo: Path) -> None:
    bad = os.path.join(os.fsencode(repo / "processed" / "2004"), b"\xff.yaml")
    with open(bad, "wb") as fh:
        fh.write(b"title: x\n")
    result = run(repo, "validate")
    assert result.code == 1 and "Traceback" not in result.stderr
    assert "\\udcff" in result.stdout


def test_fsck_names_an_uncommitted_file_that_is_not_utf8_and_repairs_it(repo: Path) -> None:
    """fsck read git status with the bytes replaced (U+FFFD), so such a file was "deleted but
    not committed", a name that is not on disk, and --repair could never mend it."""
    bad = os.path.join(os.fsencode(repo / "processed" / "2004"), b"hy0_\xff\xfe.yaml")
    with open(bad, "wb") as fh:
        fh.write(episode_files(repo)[0].read_bytes())
    found = run(repo, "fsck", "--json")
    assert found.code == 1 and "Traceback" not in found.stderr
    kinds = {(f["kind"], f["path"]) for f in json.loads(found.stdout)["findings"]}
    assert ("uncommitted", "processed/2004/hy0_\udcff\udcfe.yaml") in kinds
    assert "deleted" not in found.stdout and "\ufffd" not in found.stdout
    assert run(repo, "fsck", "--repair").code == 0
    assert not os.path.lexists(bad)
    assert run(repo, "fsck").code == 0


# -- locks ----------------------------------------------------------------------------------


def lock_of(repo: Path, eid: str) -> Path:
    path = repo / "processed" / ".locks" / f"{eid}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


@pytest.mark.parametrize("pid", [2**70, 2**31, -1, 0, "12", 1.5, None])
def test_a_lock_with_an_impossible_pid_is_stale(repo: Path, pid: object) -> None:
    eid = episode_files(repo)[0].stem
    lock = lock_of(repo, eid)
    lock.write_text(
        json.dumps({"host": os.uname().nodename, "pid": pid, "acquired_at": "2026-01-01"})
    )
    old = (datetime.now(UTC) - timedelta(minutes=5)).timestamp()
    os.utime(lock, (old, old))  # past the grace an unwritten lock gets
    accepted(repo, ["advance", eid, "downloading"])
    assert not lock.exists()


@pytest.mark.parametrize("kind", ["directory", "dangling-symlink", "symlink-to-file", "fifo"])
def test_a_lock_that_is_not_a_file_is_refused_at_once(repo: Path, kind: str) -> None:
    """Before: a directory was an internal error; a dangling symlink spun at 100% CPU forever."""
    (repo / "hystate.yaml").write_text("state_management:\n  locks:\n    timeout: 600\n")
    eid = episode_files(repo)[0].stem
    lock = lock_of(repo, eid)
    target = repo.parent / "outside-target"
    if kind == "directory":
        lock.mkdir()
    elif kind == "dangling-symlink":
        lock.symlink_to(repo.parent / "nowhere")
    elif kind == "symlink-to-file":
        target.write_text('{"host": "x", "pid": 1, "acquired_at": "y"}')
        lock.symlink_to(target)
    else:
        os.mkfifo(lock)
    refused(repo, ["advance", eid, "downloading"], 6, contains="not a lock file", timeout=30)
    assert os.path.lexists(lock)  # never removed automatically: hystate did not make it


# -- usage and git errors ----------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["bad id", "../escape", "x" * 200, ".hidden", "a/b"])
def test_add_with_a_bad_id_is_a_usage_error(repo: Path, bad: str) -> None:
    refused(repo, ["add", bad, "--title", "T", "--date", "2004-01-01"], 2, contains="episode id")


def test_a_broken_object_store_is_a_git_error(repo: Path) -> None:
    objects = repo / ".git" / "objects"
    made = []
    for i in range(256):
        folder = objects / f"{i:02x}"
        if folder.exists():  # moved aside, so no write can land in an existing folder
            folder.rename(objects / f"{i:02x}.aside")
        folder.write_text("")  # a file where git wants a folder
        made.append(folder)
    eid = episode_files(repo)[0].stem
    refused(repo, ["advance", eid, "downloading"], 7)


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv"
)
def test_permission_denied_in_git_is_exit_7(repo: Path) -> None:
    """The repository belongs to another user who may not write .git/objects. The process keeps
    CAP_DAC_READ_SEARCH (read and search anything, write nothing more), so the checkout's own
    parent folders need not be readable by uid 65534 (a checkout under a private home)."""
    subprocess.run(["chown", "-R", "65534:65534", str(repo.parent)], check=True)
    os.chmod(repo.parent, 0o777)
    for folder, _dirs, _ in os.walk(repo / ".git" / "objects"):
        os.chmod(folder, 0o555)
    eid = episode_files(repo)[0].stem
    proc = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
         "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search", "--",
         *HYSTATE,
         "advance", eid, "downloading"],
        cwd=repo, capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "HOME": str(repo.parent), "GIT_CONFIG_GLOBAL": os.devnull,
             "PYTHONDONTWRITEBYTECODE": "1"},
    )  # fmt: skip
    for folder, _dirs, _ in os.walk(repo / ".git" / "objects"):
        os.chmod(folder, 0o755)
    assert proc.returncode == 7, proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and "Traceback" not in proc.stderr


# -- leftovers ------------------------------------------------------------------------------


def test_fsck_cleans_a_dead_writers_temp_file_and_exits_0(repo: Path) -> None:
    eid = episode_files(repo)[0].stem
    gone = subprocess.Popen(["true"])
    gone.wait()  # its pid is free now
    tmp = episode_files(repo)[0].with_name(f".{eid}.{gone.pid}.tmp")
    tmp.write_text("half")
    result = run(repo, "fsck")
    assert result.code == 0, result.stdout + result.stderr
    assert not tmp.exists()
    assert "Traceback" not in result.stderr


# -- log --since -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("since", "expect_all"),
    [
        ("yesterday", True),
        ("2 hours ago", True),
        ("an hour ago", True),
        ("2000-01-01", True),
        ("2000-01-01T00:00:00+14:00", True),
        ("tomorrow-ish", None),
        ("2999-01-01T00:00:00-05:00", False),
        ("0001-01-01", True),
        ("9999-12-31T23:59:59", False),
    ],
)
def test_log_since_reads_real_times(repo: Path, since: str, expect_all: bool | None) -> None:
    if expect_all is None:
        refused(repo, ["log", "--since", since, "--json"], 2, contains="time")
        return
    result = accepted(repo, ["log", "--since", since, "--json"])
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert (len(events) == 20) if expect_all else (events == [])


def test_log_since_an_offset_is_compared_as_a_time_not_a_string(repo: Path) -> None:
    """An event at 10:00Z is after 11:00+02:00 (= 09:00Z); as strings it sorts before."""
    result = accepted(repo, ["log", "--json"])
    first = json.loads(result.stdout.splitlines()[0])["at"]
    at = datetime.fromisoformat(first)
    bound = (at - timedelta(hours=1)).astimezone(timezone(timedelta(hours=2)))
    assert bound.isoformat() > first  # a string comparison would drop every event
    result = accepted(repo, ["log", "--since", bound.isoformat(), "--json"])
    assert len(result.stdout.splitlines()) == 20


@pytest.mark.parametrize(("until", "expect_all"), [("9999-12-31", True), ("0001-01-01", False)])
def test_log_until_at_the_ends_of_the_calendar(repo: Path, until: str, expect_all: bool) -> None:
    """The bounds are widened by two days before the SQL query: at year 1 or 9999 that
    overflowed (internal error)."""
    result = accepted(repo, ["log", "--until", until, "--json"])
    assert len(result.stdout.splitlines()) == (20 if expect_all else 0)


@pytest.mark.parametrize("claim", [[], ["--claim"]], ids=["list", "claim"])
def test_next_with_a_limit_beyond_64_bits_is_every_ready_episode(
    repo: Path, claim: list[str]
) -> None:
    """A limit SQLite cannot hold was an OverflowError (internal error, exit 1)."""
    result = accepted(repo, ["next", "downloading", "--limit", str(10**30), "--json", *claim])
    assert len(json.loads(result.stdout)) == 20


# -- found by the second adversarial run ------------------------------------------------------


@pytest.mark.parametrize("tag", ["!!set {a}", "!!binary AAAA", "!!timestamp 2004-04-14T10:00:00Z"])
def test_explicit_yaml_tags_of_non_json_types_are_invalid_data(repo: Path, tag: str) -> None:
    path = episode_files(repo)[0]
    text = path.read_text()
    path.write_text(
        "\n".join(
            f"title: {tag}" if line.startswith("title:") else line for line in text.splitlines()
        )
        + "\n"
    )
    commit_all(repo)
    refused(repo, ["list"], 5, contains="not allowed")
    refused(repo, ["advance", episode_files(repo)[1].stem, "downloading", "--set",
                   f"title={tag}"], 5, contains="not allowed")  # fmt: skip


def test_a_catalog_without_a_size_is_read_only_up_to_the_limit(repo: Path) -> None:
    refused(repo, ["discover", "--from", "/dev/zero"], 5, contains="bytes", timeout=120)


def test_a_lock_breaker_that_is_a_folder_is_lock_busy(repo: Path) -> None:
    eid = episode_files(repo)[0].stem
    locks = repo / "processed" / ".locks"
    locks.mkdir(exist_ok=True)
    (locks / f"{eid}.lock").write_text("garbage")
    (locks / f"{eid}.lock.break").mkdir()
    hour_ago = datetime.now(UTC).timestamp() - 3600
    for name in (f"{eid}.lock", f"{eid}.lock.break"):
        os.utime(locks / name, (hour_ago, hour_ago))
    result = run(repo, "advance", eid, "downloading")
    assert result.code == 6 and "not a lock file hystate made" in result.stderr, result.stderr
    assert len(result.stderr.splitlines()) == 1


# -- readers gone away ------------------------------------------------------------------------


@pytest.mark.parametrize("closed", ["stdout", "stderr", "both"])
@pytest.mark.parametrize("as_json", [True, False], ids=["json", "text"])
def test_an_error_keeps_its_exit_code_when_the_reader_is_gone(
    repo: Path, closed: str, as_json: bool
) -> None:
    """`hystate show nope --json | true` exited 1 (click's broken-pipe exit), not 4: writing
    the error failed; so did a closed stderr (a terminal that hung up)."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader went away before anything was written
    with open(repo.parent / "kept.txt", "wb") as kept:
        proc = subprocess.run(
            [*HYSTATE, "show", "hy0_nope", *(["--json"] if as_json else [])],
            cwd=repo,
            stdout=write_end if closed in ("stdout", "both") else kept,
            stderr=write_end if closed in ("stderr", "both") else kept,
            timeout=60,
            check=False,
        )
    os.close(write_end)
    assert proc.returncode == 4
    assert b"Traceback" not in (repo.parent / "kept.txt").read_bytes()
