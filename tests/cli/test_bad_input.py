"""Bad input: each case gets the documented exit code, one clear line on stderr naming the
file or field, no traceback, and leaves the repository byte-identical."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Cli, git, run_hystate

CACHES = ("state.db", "index.json", ".locks", "reports")


def snapshot(repo: Path) -> dict[str, str]:
    """Every file of the work tree and .git (caches aside), by content hash."""
    found = {}
    for path in sorted(repo.rglob("*")):
        rel = path.relative_to(repo).as_posix()
        if path.is_file() and not any(part.startswith(CACHES) for part in rel.split("/")):
            found[rel] = hashlib.sha1(path.read_bytes()).hexdigest()
    return found


def edit(text: str) -> Callable[[Path, Path], list[str]]:
    """Replace the first episode's file with ``text`` (``{id}`` and ``{old}`` filled in)."""

    def setup(repo: Path, episode: Path) -> list[str]:
        episode.write_text(text.format(id=episode.stem, old=episode.read_text()))
        return ["advance", episode.stem, "downloading"]

    return setup


def edit_bytes(data: bytes) -> Callable[[Path, Path], list[str]]:
    def setup(repo: Path, episode: Path) -> list[str]:
        episode.write_bytes(data)
        return ["advance", episode.stem, "downloading"]

    return setup


def replace(old: str, new: str) -> Callable[[Path, Path], list[str]]:
    def setup(repo: Path, episode: Path) -> list[str]:
        episode.write_text(episode.read_text().replace(old, new, 1))
        return ["advance", episode.stem, "downloading"]

    return setup


def args(*argv: str) -> Callable[[Path, Path], list[str]]:
    return lambda repo, episode: [a.replace("{id}", episode.stem) for a in argv]


def catalog(name: str, content: str | bytes) -> Callable[[Path, Path], list[str]]:
    def setup(repo: Path, episode: Path) -> list[str]:
        path = repo.parent / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return ["discover", "--from", str(path)]

    return setup


def config(text: str) -> Callable[[Path, Path], list[str]]:
    def setup(repo: Path, episode: Path) -> list[str]:
        (repo / "hystate.yaml").write_text(text)
        return ["advance", episode.stem, "downloading"]

    return setup


def git_state(name: str) -> Callable[[Path, Path], list[str]]:
    def setup(repo: Path, episode: Path) -> list[str]:
        head = git(repo, "rev-parse", "HEAD").strip()
        target = repo / ".git" / name
        if name.startswith("rebase"):
            target.mkdir()
        else:
            target.write_text(head + "\n")
        return ["advance", episode.stem, "downloading"]

    return setup


ROW = {"identifier": "new-ep", "title": "A title", "date": "2009-09-09"}

CASES: dict[str, tuple[Callable[[Path, Path], list[str]], int, str]] = {
    # episode files: invalid data (5), reported with the file, never overwritten
    "yaml-malformed": (edit("episode_id: {id}\nstage: [downloading\n"), 5, "invalid YAML"),
    "yaml-binary": (edit_bytes(b"\x00\x01\x02\xff\xfe garbage"), 5, "not UTF-8"),
    "yaml-empty": (edit(""), 5, "file is empty"),
    "yaml-conflict-markers": (
        edit("<<<<<<< HEAD\n{old}=======\nstage: published\n>>>>>>> theirs\n"),
        5,
        "conflict marker",
    ),
    "yaml-python-tag": (edit("!!python/object/apply:os.system [echo pwned]\n"), 5, "invalid YAML"),
    "yaml-duplicate-key": (
        replace("stage: discovered\n", "stage: discovered\nstage: published\n"),
        5,
        "duplicate key",
    ),
    "yaml-not-a-mapping": (edit("- just\n- a list\n"), 5, "is not of type 'object'"),
    "schema-unknown-stage": (replace("stage: discovered", "stage: teleported"), 5, "$.stage"),
    "schema-wrong-type": (replace("download: 0", "download: lots"), 5, "$.attempts.download"),
    "schema-unknown-key": (
        replace("worker: null", "worker: null\ncolour: blue"),
        5,
        "unknown key 'colour'",
    ),
    "schema-renamed-key": (
        replace("title:", "not_title:"),
        5,
        "$.not_title: unknown key 'not_title'",
    ),
    "schema-missing-only": (
        replace("status_message: null\n", ""),
        5,
        "$.status_message: missing key 'status_message'",
    ),
    "schema-bad-timestamp": (
        replace("last_updated: '", "last_updated: 'yesterday "),
        5,
        "$.last_updated",
    ),
    "invariant-history": (
        replace("stage: discovered", "stage: skipped"),
        5,
        "stage differs from the last history entry",
    ),
    "invariant-folder": (replace("date: '20", "date: '19"), 5, "is not in folder"),
    "invariant-file-name": (
        replace("episode_id: ", "episode_id: x"),
        5,
        "does not match the file name",
    ),
    # command-line arguments
    "set-wrong-type": (
        args("advance", "{id}", "downloading", "--set", "metrics.audio_size=big"),
        5,
        "$.metrics.audio_size",
    ),
    "set-negative": (
        args("advance", "{id}", "downloading", "--set", "metrics.audio_size=-5"),
        5,
        "$.metrics.audio_size",
    ),
    "set-unknown-field": (
        args("advance", "{id}", "downloading", "--set", "files.nope=1"),
        5,
        "files.nope: unknown or read-only",
    ),
    "set-read-only": (
        args("advance", "{id}", "downloading", "--set", "attempts.download=0"),
        5,
        "unknown or read-only",
    ),
    "set-no-equals": (
        args("advance", "{id}", "downloading", "--set", "files.audio_file"),
        5,
        "expected FIELD=VALUE",
    ),
    "set-mapping": (
        args("advance", "{id}", "downloading", "--set", "files.audio_file={a: 1}"),
        5,
        "expected a single value",
    ),
    "set-bad-date": (
        args("advance", "{id}", "downloading", "--set", "youtube.scheduled_date=tomorrow"),
        5,
        "$.youtube.scheduled_date",
    ),
    "stage-unknown": (args("advance", "{id}", "dowloading"), 2, "unknown stage 'dowloading'"),
    "stage-illegal": (
        args("advance", "{id}", "published"),
        3,
        "allowed next: downloading, skipped",
    ),
    "id-slash": (args("advance", "a/b", "downloading"), 2, "invalid episode id"),
    "id-dotdot": (args("show", "../etc/passwd"), 2, "invalid episode id"),
    "id-space": (args("show", "a b"), 2, "invalid episode id"),
    "id-newline": (args("show", "a\nb"), 2, "invalid episode id"),
    "id-control": (args("show", "a\x07b"), 2, "invalid episode id"),
    "id-leading-dot": (args("show", ".hidden"), 2, "invalid episode id"),
    "id-too-long": (args("show", "a" * 129), 2, "invalid episode id"),
    "id-empty": (args("show", ""), 2, "invalid episode id"),
    "list-year-word": (args("list", "--year", "abc"), 2, "--year 'abc' is not a year like 2004"),
    "list-year-short": (args("list", "--year", "04"), 2, "is not a year like 2004"),
    "id-unknown": (args("show", "no-such-episode"), 4, "no episode 'no-such-episode'"),
    "message-forged-trailer": (
        args("advance", "{id}", "downloading", "-m", "ok\nHystate-To: published"),
        5,
        "trailer",
    ),
    "message-control": (
        args("advance", "{id}", "downloading", "-m", "bell\x07"),
        5,
        "control characters",
    ),
    "worker-newline": (
        args("advance", "{id}", "downloading", "--worker", "w\nHystate-To: x"),
        2,
        "invalid worker name",
    ),
    "skip-reason-too-long": (
        args("skip", "{id}", "--reason", "x" * 10_001),
        5,
        "reason is 10,001 characters long; at most 10,000",
    ),
    "fail-error-too-long": (
        args("fail", "{id}", "--error", "x" * 10_001),
        5,
        "error is 10,001 characters long; at most 10,000",
    ),
    "fail-empty-error": (args("fail", "{id}", "--error", " "), 5, "--error must not be empty"),
    "retry-not-failed": (args("retry", "{id}"), 3, "not failed"),
    "add-bad-date": (
        args("add", "x1", "--title", "t", "--date", "2004-02-30"),
        5,
        "not a real date",
    ),
    "add-date-word": (
        args("add", "x1", "--title", "t", "--date", "yesterday"),
        5,
        "not a real date",
    ),
    "add-empty-title": (
        args("add", "x1", "--title", " ", "--date", "2004-02-03"),
        5,
        "missing title",
    ),
    # discovery files: rejected whole before anything is written
    "discover-not-json": (catalog("c.json", "{oops"), 5, "not JSON"),
    "discover-shape": (catalog("c.json", json.dumps({"rows": []})), 5, "unknown JSON shape"),
    "discover-bad-id": (
        catalog("c.json", json.dumps([ROW, {**ROW, "identifier": "../x"}])),
        5,
        "[1]: invalid episode id",
    ),
    "discover-lone-surrogate": (
        catalog("c.json", json.dumps([ROW, {**ROW, "identifier": "hy_2", "title": "a \ud800"}])),
        5,
        "title contains a lone surrogate",
    ),
    "discover-bad-date": (
        catalog("c.json", json.dumps([{**ROW, "date": "09/09/2009"}])),
        5,
        "not a real date",
    ),
    "discover-no-title": (
        catalog("c.json", json.dumps([{**ROW, "title": None}])),
        5,
        "missing title",
    ),
    "discover-duplicate": (catalog("c.json", json.dumps([ROW, ROW])), 5, "listed twice"),
    "discover-csv-columns": (catalog("c.csv", "id;name\nx;y\n"), 5, "missing identifier"),
    "discover-jsonl-line": (
        catalog("c.jsonl", json.dumps(ROW) + "\n{bad\n"),
        5,
        "line 2: not JSON",
    ),
    "discover-binary": (catalog("c.json", b"\x89PNG\r\n\x1a\n\x00\x00"), 5, "not UTF-8"),
    # configuration
    "config-unknown-key": (
        config("state_management:\n  recovery:\n    max_retries:\n      downlaod: 3\n"),
        5,
        "unknown key 'downlaod'",
    ),
    "config-wrong-type": (
        config("state_management:\n  recovery:\n    retry_delay: soon\n"),
        5,
        "retry_delay: 'soon' is not of type 'number'",
    ),
    "config-top-key": (config("statemanagement: {}\n"), 5, "unknown key 'statemanagement'"),
    "config-bad-yaml": (config("state_management: [\n"), 5, "hystate.yaml: line"),
    "config-control-character": (
        config("state_management:\n  recovery: \x00\n"),
        5,
        "hystate.yaml: unacceptable character #x0000",  # no "line None" when PyYAML has none
    ),
    # repository state
    "git-merge": (git_state("MERGE_HEAD"), 7, "in the middle of a merge"),
    "git-rebase": (git_state("rebase-merge"), 7, "in the middle of a rebase"),
    "git-cherry-pick": (git_state("CHERRY_PICK_HEAD"), 7, "in the middle of a cherry-pick"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input(name: str, repo: Path, episode_id: str) -> None:
    setup, code, fragment = CASES[name]
    episode = next((repo / "processed").glob(f"*/{episode_id}.yaml"))
    argv = setup(repo, episode)
    before = snapshot(repo)
    result = Cli(repo)(*argv)
    assert result.exit_code == code, (result.output, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.output
    assert snapshot(repo) == before


def test_case_count() -> None:
    assert len(CASES) >= 40


def test_no_repository_real_process(tmp_path: Path) -> None:
    proc = run_hystate(tmp_path, "advance", "x", "downloading")
    assert proc.returncode == 7 and proc.stderr.count("\n") == 1 and "hystate init" in proc.stderr


@pytest.mark.parametrize("where", [".", "refs/heads"])
@pytest.mark.parametrize("command", ["status", "init"])
def test_a_bare_repository_is_refused_and_left_alone(
    tmp_path: Path, command: str, where: str
) -> None:
    """`hystate init` in a remote's bare repository made a second repository (.git/) and a
    processed/ folder inside it; `status` said "not in a git repository"."""
    bare = tmp_path / "state.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    before = snapshot(bare)
    proc = run_hystate(bare / where, command)
    assert proc.returncode == 7 and "bare repository" in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert snapshot(bare) == before


@pytest.mark.parametrize(
    "name",
    ["yaml-python-tag", "id-dotdot", "git-merge", "discover-bad-id", "discover-lone-surrogate"],
)
def test_bad_input_real_process(name: str, repo: Path, episode_id: str) -> None:
    setup, code, fragment = CASES[name]
    episode = next((repo / "processed").glob(f"*/{episode_id}.yaml"))
    argv = setup(repo, episode)
    before = snapshot(repo)
    proc = run_hystate(repo, *argv)
    assert proc.returncode == code and fragment in proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert snapshot(repo) == before
