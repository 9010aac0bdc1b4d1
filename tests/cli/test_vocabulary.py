"""One vocabulary wherever JSON leaves hystate: every command's ``--json``, the event stream
(``events tail`` and the entries in Redis), the HTTP API and GraphQL name an episode
``episode_id``, whoever did a thing ``worker`` and when it happened ``at``: never ``by``,
``episode``, ``episodeId``, ``time``, ``timestamp`` or ``when``, and no camel case. The episode
file's own keys (``show --json``, the API's ``state``) keep the file format, ``by`` included
(SPEC section 2); ``status --json`` keeps the seed's ``timestamp`` (SPEC section 7).

Besides the names, the values are checked: a string that is one of the test's episode ids or
worker names must stand under ``episode_id`` or ``worker`` (``last_episode_id``; or in a list), whatever other name a
new field might give it (``id``, ``holder``, ``who``)."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hystate.cli import cli, load_all
from tests.cli.test_json_and_completion import NO_JSON, commands
from tests.conftest import (
    HYSTATE,
    REPO_ROOT,
    catalog_rows,
    git,
    run_hystate,
    write_search_json,
)
from tests.harness.redis import RedisServer, needs_redis
from tests.harness.serve import serving

FORBIDDEN = {"by", "episode", "episodeId", "time", "timestamp", "when"}
CAMEL = re.compile(r"[a-z][A-Z]")
WORKERS = ("w-vocab-1", "w-vocab-2", "w-vocab-3")
EVENTS = {"events publish", "events status", "events tail"}  # in the test with a broker
TOKEN = "vocabulary-token-0123456789abcdef"


def is_episode_file(value: dict[str, Any]) -> bool:
    """The episode file's own document (its keys are the file format's, SPEC section 2)."""
    return {"episode_id", "stage", "history", "archive_identifier"} <= set(value)


def violations(value: Any, ids: set[str], where: str = "$") -> Iterator[str]:
    """Every place in ``value`` that breaks the one vocabulary."""
    if isinstance(value, dict):
        if is_episode_file(value):
            return
        for key, item in value.items():
            path = f"{where}.{key}"
            if key in ids:  # a mapping keyed by episode id: its keys are data
                yield from violations(item, ids, path)
                continue
            if key in FORBIDDEN or CAMEL.search(key):
                yield f"{path}: the key {key!r} (one vocabulary: episode_id, worker, at)"
            if isinstance(item, str) and item in ids and not key.endswith("episode_id"):
                yield f"{path}: an episode id under {key!r}, not 'episode_id'"
            if isinstance(item, str) and item in WORKERS and not key.endswith("worker"):
                yield f"{path}: a worker under {key!r}, not 'worker'"
            yield from violations(item, ids, path)
    elif isinstance(value, list):
        for item in value:  # a list of ids ("added", "not_locked") says what they are by its name
            if not isinstance(item, str):
                yield from violations(item, ids, f"{where}[]")


def parsed(text: str) -> list[Any]:
    """A JSON document, or JSON lines."""
    try:
        return [json.loads(text)]
    except ValueError:
        return [json.loads(line) for line in text.splitlines() if line.strip()]


def known_ids(repo: Path) -> set[str]:
    return {p.stem for p in (repo / "processed").glob("*/*.yaml")} | {"hy0_vocab_added"}


class Runner:
    """Runs commands with --json in a real process and keeps what each printed."""

    def __init__(self, repo: Path) -> None:
        self.repo = repo
        self.ran: set[str] = set()
        self.outputs: dict[str, list[Any]] = {}

    def __call__(self, *args: str, ok: bool = True) -> Any:
        name = " ".join(a for a in args[:2] if not a.startswith("-") and a in self.names())
        done = run_hystate(self.repo, *args, "--json", timeout=120)
        if ok:
            assert done.returncode == 0, (args, done.stdout, done.stderr)
        docs = parsed(done.stdout)
        assert docs, (args, done.stderr)
        self.ran.add(name)
        self.outputs[" ".join(args)] = docs
        return docs[0]

    @staticmethod
    def names() -> set[str]:
        load_all()
        return {word for name in commands(cli) for word in name.split()}


def worked_on(repo: Path, run: Runner) -> list[str]:
    """Transitions of every kind, by named workers."""
    ids = sorted(p.stem for p in (repo / "processed").glob("*/*.yaml"))
    held = run("advance", ids[0], "downloading", "--worker", WORKERS[0])
    assert held["episode_id"] == ids[0] and (held["from"], held["to"]) == (
        "discovered",
        "downloading",
    )
    run("heartbeat", ids[0], "--lease", held["lease"], "--worker", WORKERS[0])
    other = run("advance", ids[1], "downloading", "--worker", WORKERS[1])
    run("fail", ids[1], "--error", "HTTP 503", "--lease", other["lease"], "--worker", WORKERS[1])
    run("skip", ids[2], "--reason", "a rebroadcast", "--worker", WORKERS[0])
    run("next", "downloading", "--claim", "--limit", "1", "--worker", WORKERS[2])
    run("add", "hy0_vocab_added", "--title", "T", "--date", "2010-01-01", "--worker", WORKERS[0])
    return ids


def test_every_command_json_speaks_one_vocabulary(repo: Path, tmp_path: Path) -> None:
    load_all()
    remote = tmp_path / "remote.git"
    git(repo, "clone", "-q", "--bare", str(repo), str(remote))
    git(repo, "remote", "add", "origin", str(remote))
    run = Runner(repo)
    ids = worked_on(repo, run)
    run("retry", ids[1], "--now", "--dry-run")
    run("retry", ids[1], "--now", "--worker", WORKERS[2])
    run("next", "discovered", "--limit", "3")
    run("show", ids[0])
    run("list")
    run("status")
    history = run("history", ids[1])
    assert [row["worker"] for row in history if row["to"] == "failed"] == [WORKERS[1]]
    log = run("log")
    assert any(e["worker"] == WORKERS[1] and e["to"] == "failed" for e in run.outputs["log"])
    assert log["episode_id"] and log["at"]
    run("config")
    run("warm", "status", "--socket", str(tmp_path / "warm.sock"), ok=False)  # none: exit 1
    run("metrics")
    run("locks")
    run("unlock", ids[3])
    run("fsck")
    run("validate")
    run("validate", "--base", git(repo, "rev-list", "--max-parents=0", "HEAD").strip())
    run("rebuild")
    run("report", "--format", "json")
    catalog = write_search_json(tmp_path / "more.json", catalog_rows(3, start_year=1990))
    run("discover", "--from", str(catalog))
    run("import", "--from", str(REPO_ROOT / "tests/data/legacy-archive-org"), "--dry-run")
    bundle = tmp_path / "state.bundle"
    run("backup", "-o", str(bundle))
    run("backup", "--verify", str(bundle))
    run("restore", str(bundle), str(tmp_path / "restored"))
    run("init")
    synced = run("sync", "--remote", "origin")
    assert synced["pushed"] and all(row["commit"] for row in synced["pushed"])
    run("show", "hy0_nope", ok=False)  # an error, as JSON

    every = set(commands(cli)) - NO_JSON - EVENTS
    assert run.ran == every, sorted(every ^ run.ran)
    ids_now = known_ids(repo)
    found = [
        f"{args}: {problem}"
        for args, docs in run.outputs.items()
        for doc in docs
        for problem in violations(doc, ids_now)
        if not (args == "status" and problem.startswith("$.timestamp:"))  # the seed's shape
    ]
    assert found == []


def test_the_walker_finds_what_breaks_the_vocabulary() -> None:
    ids = {"hy0_a"}
    assert list(violations({"episode_id": "hy0_a", "worker": "w-vocab-1", "at": "x"}, ids)) == []
    bad = {
        "episode": "hy0_a",
        "rows": [{"id": "hy0_a", "by": "w-vocab-1", "holder": "w-vocab-2", "when": "now"}],
        "gql": {"episodeId": "hy0_a", "toStage": "failed"},
    }
    found = list(violations(bad, ids))
    assert len(found) == 10, found
    # the file's own document keeps its keys; a mapping keyed by id is data
    doc = {"episode_id": "hy0_a", "stage": "failed", "archive_identifier": "a", "history": []}
    assert list(violations({"state": doc, "notes": {"hy0_a": ["x"]}}, ids)) == []


@needs_redis
def test_events_speak_one_vocabulary(repo: Path, broker: RedisServer) -> None:
    (repo / "hystate.yaml").write_text(
        f"state_management:\n  events:\n    enabled: true\n    url: {broker.url}\n"
    )
    run = Runner(repo)
    ids = worked_on(repo, run)
    published = run("events", "publish")
    assert published["published"] >= 0
    status = run("events", "status")
    assert status["last_episode_id"] in known_ids(repo)
    run("events", "tail")
    tail = run.outputs["events tail"]
    assert {e["episode_id"] for e in tail} >= set(ids[:3])
    assert {e["worker"] for e in tail if e["to"] == "failed"} == {WORKERS[1]}
    assert run.ran >= EVENTS
    raw = [fields for _, fields in broker.client().xrange("hystate:transitions")]
    assert raw and all("episode_id" in f and "episode" not in f for f in raw)
    docs = [doc for out in run.outputs.values() for doc in out] + raw
    assert [p for doc in docs for p in violations(doc, known_ids(repo))] == []


@needs_redis
def test_a_stream_from_before_the_vocabulary_goes_on(repo: Path, broker: RedisServer) -> None:
    """A stream whose last entry was published before the one vocabulary (``episode``): the
    publisher still knows where it stands (nothing published twice, the next one once), and
    readers are given ``episode_id``."""
    (repo / "hystate.yaml").write_text(
        f"state_management:\n  events:\n    enabled: true\n    url: {broker.url}\n"
    )
    client = broker.client()
    assert json.loads(run_hystate(repo, "events", "publish", "--json").stdout)["published"] == 20
    last_id, fields = client.xrevrange("hystate:transitions", count=1)[0]
    client.xdel("hystate:transitions", last_id)
    old = {("episode" if k == "episode_id" else k): v for k, v in fields.items()}
    client.xadd("hystate:transitions", old)  # as an older hystate wrote it
    status = json.loads(run_hystate(repo, "events", "status", "--json").stdout)
    assert status["backlog"] == 0 and status["last_episode_id"] == fields["episode_id"]
    ids = sorted(p.stem for p in (repo / "processed").glob("*/*.yaml"))
    assert run_hystate(repo, "skip", ids[5], "--reason", "r").returncode == 0  # publishes
    got = client.xrange("hystate:transitions")
    assert len(got) == 21 and got[-1][1]["episode_id"] == ids[5]
    tail = parsed(run_hystate(repo, "events", "tail", "--json").stdout)
    assert [e["episode_id"] for e in tail[-2:]] == [fields["episode_id"], ids[5]]
    assert all("episode" not in e for e in tail)


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    return path


def test_api_and_graphql_speak_one_vocabulary(repo: Path, token_file: Path) -> None:
    run = Runner(repo)
    ids = worked_on(repo, run)
    args = ("--reports-every", "0", "--allow-actions", "--token-file", str(token_file))
    got: dict[str, Any] = {}
    with serving(repo, *args) as srv, srv.client() as http:
        for path in (
            "/api/status",
            "/api/episodes",
            f"/api/episodes/{ids[1]}",
            f"/api/episodes/{ids[1]}/history",
            "/api/in-progress",
            "/api/workers",
            "/api/episodes/hy0_nope",
        ):
            got[path] = http.get(path).json()
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        got["retry"] = http.post(f"/api/actions/retry/{ids[1]}?dry_run=1", headers=bearer).json()
        query = (
            '{ status { total counts { stage count } } episodes(stage: "failed") { total'
            f' per_page items {{ episode_id last_error }} }} episode(episode_id: "{ids[1]}") '
            "{ episode_id stage history { at from to worker commit } } }"
        )
        answer = http.post("/graphql", json={"query": query}).json()
        assert "errors" not in answer, answer
        with http.stream("GET", "/events", headers={"Accept": "text/event-stream"}) as stream:
            first = next(line for line in stream.iter_lines() if line.startswith("data:"))
        got["sse"] = json.loads(first[5:])
    history = got[f"/api/episodes/{ids[1]}/history"]
    assert [row["worker"] for row in history if row["to"] == "failed"] == [WORKERS[1]]
    assert got[f"/api/episodes/{ids[1]}"]["state"]["stage"] == "failed"  # the file's own keys
    data = answer["data"]
    assert data["episodes"]["items"][0]["episode_id"] == ids[1]
    entry = data["episode"]["history"][-1]  # `episode` is the query's field, named by its caller
    assert (entry["from"], entry["to"], entry["worker"]) == ("downloading", "failed", WORKERS[1])
    got["graphql"] = {"status": data["status"], "episodes": data["episodes"], **data["episode"]}
    found = [f"{name}: {p}" for name, doc in got.items() for p in violations(doc, known_ids(repo))]
    assert found == []


def test_graphql_schema_has_no_camel_case() -> None:
    from hystate.serve.gql import schema

    names = re.findall(r"\b([A-Za-z_]+)\s*[:(]", schema.as_str())
    assert "episode_id" in names and "per_page" in names
    assert [n for n in names if CAMEL.search(n)] == []
    assert "by" not in names and "episodeId" not in names


def test_json_error_for_every_command(tmp_path: Path) -> None:
    """Every command with --json says its error as JSON on stdout (and one line on stderr),
    here outside any repository (init: where git cannot make one)."""
    load_all()
    outside = tmp_path / "outside"
    outside.mkdir()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / ".git").write_text("gitdir: /nonexistent\n")
    values = {"stage": "downloading", "bundle": str(tmp_path / "none.bundle")}
    for name, command in sorted(commands(cli).items()):
        if name in NO_JSON or name == "warm status":  # (needs no repository: says exit 1)
            continue
        args = name.split()
        for param in command.params:
            if param.required and param.param_type_name == "argument":
                args.append(values.get(str(param.name), str(tmp_path / "restored")))
            elif param.required:
                args += [param.opts[0], str(tmp_path / "none")]
        done = subprocess.run(
            [*HYSTATE, *args, "--json"],
            cwd=broken if name == "init" else outside,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode not in (0, 1), (name, done.stdout, done.stderr)
        error = json.loads(done.stdout)
        assert set(error) == {"error", "exit_code", "kind"}, (name, error)
        assert error["exit_code"] == done.returncode and error["error"], name
        assert done.stderr.count("hystate: ") == 1 or error["kind"] == "usage_error", name


def test_errors_that_are_no_hystate_error_have_a_snake_case_kind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A read-only disk met outside hystate's own writers (backup -o on a read-only mount) was
    kind "error" where the same cause elsewhere is "cannot_write"; an internal error's kind was
    "internal error", with a space."""
    import errno

    import click
    from click.testing import CliRunner

    from hystate.cli.app import json_option

    raised: dict[str, BaseException] = {
        "ro": OSError(errno.EROFS, "Read-only file system", "/mnt/ro/b.bundle"),
        "bug": RuntimeError("a bug"),
    }

    @click.command("raise-it")
    @click.argument("which")
    @json_option
    def raise_it(which: str, as_json: bool) -> None:
        raise raised[which]

    monkeypatch.setitem(cli.commands, "raise-it", raise_it)
    kinds = {}
    for which, code in (("ro", 7), ("bug", 1)):
        result = CliRunner().invoke(cli, ["raise-it", which, "--json"])
        assert result.exit_code == code, result.output
        kinds[which] = json.loads(result.stdout.splitlines()[0])["kind"]
    assert kinds == {"ro": "cannot_write", "bug": "internal_error"}
