"""YAML files: fixed key order, atomic writes, round trips, and bad files reported —
never skipped, never overwritten."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from hystate.core import yamlio
from hystate.core.errors import InvalidData
from hystate.core.model import new_episode
from hystate.core.paths import write_atomic
from hystate.core.schema import episode_problems, schema_dir
from hystate.core.store import EpisodeStore, dump, parse_content
from hystate.manager import StateManager
from tests.conftest import commits

KEY_ORDER = [
    "episode_id", "archive_identifier", "date", "title", "stage", "status_message",
    "last_updated", "failed_stage", "worker", "files", "youtube", "metrics", "attempts",
    "error_history", "history",
]  # fmt: skip


@pytest.mark.parametrize("name", ["episode", "config"])
def test_schemas_pass_their_metaschema(name: str) -> None:
    schema = json.loads((schema_dir() / f"{name}.schema.json").read_text())
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_file_keys_are_in_the_fixed_order(manager: StateManager, episode_id: str) -> None:
    text = manager.path_of(episode_id).read_text()
    top = [
        line.split(":")[0]
        for line in text.splitlines()
        if line and not line[0].isspace() and line[0] != "-"
    ]
    assert top == KEY_ORDER


def test_a_transition_changes_few_lines(manager: StateManager, episode_id: str, repo: Path) -> None:
    from tests.conftest import git

    manager.update_state(episode_id, "downloading")
    diff = git(repo, "show", "--format=", "--unified=0", "HEAD")
    lines = diff.splitlines()
    changed = [x for x in lines if x[:1] in "+-" and not x.startswith(("+++", "---"))]
    # stage, last_updated (when the second ticked), worker and the attempt count: two lines
    # each; the history entry: five (at, from, to, by and the lease token).
    assert len(changed) <= 13, changed


titles = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=200
).filter(lambda t: t.strip() == t and t)


@settings(max_examples=200, deadline=None)
@given(titles)
def test_yaml_round_trip(title: str) -> None:
    doc = new_episode("ep", title=title, date="2004-04-14", at="2026-01-01T00:00:00+00:00", by="t")
    assert yamlio.load(dump(doc)) == doc


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "file is empty"),
        (b"   \n", "file is empty"),
        (b"a: [1, 2\n", "invalid YAML"),
        (b"\xff\xfe\x00binary", "not UTF-8"),
        (b"a: 1\n<<<<<<< HEAD\nstage: x\n=======\nstage: y\n>>>>>>> b\n", "conflict marker"),
        (b"a: !!python/object/apply:os.system [ls]\n", "invalid YAML"),
        (b"a: 1\na: 2\n", "duplicate key"),
    ],
)
def test_unparseable_content_is_reported(content: bytes, expected: str) -> None:
    doc, problems = parse_content(content, "f.yaml")
    assert doc is None and expected in problems[0].message


def test_conflict_marker_line_is_given() -> None:
    _, [problem] = parse_content(b"a: 1\nb: 2\n<<<<<<< ours\n", "f.yaml")
    assert problem.line == 3


def test_invalid_file_is_an_error_and_is_never_overwritten(
    manager: StateManager, episode_id: str, repo: Path
) -> None:
    from tests.conftest import git

    path = manager.path_of(episode_id)
    path.write_text(path.read_text().replace("stage: discovered", "stage: teleported"))
    git(repo, "-c", "user.name=u", "-c", "user.email=u@x", "commit", "-qam", "bad edit")
    before, head = path.read_bytes(), commits(repo)
    with pytest.raises(InvalidData, match=r"\$\.stage"):
        manager.update_state(episode_id, "downloading")
    assert path.read_bytes() == before and commits(repo) == head
    problems = manager.validate()
    assert [p.path for p in problems] == ["$.stage", "$.stage"]  # enum, and history mismatch
    assert problems[0].file.endswith(f"{episode_id}.yaml")


def test_validate_collects_every_problem(manager: StateManager) -> None:
    paths = list(manager.store.iter_paths())[:3]
    paths[0].write_text("")
    paths[1].write_text(paths[1].read_text().replace("download: 0", "download: -1"))
    text = paths[2].read_text().replace("stage: discovered", "stage: downloaded")
    paths[2].write_text(text.replace("  audio_file: null\n", "  audio_file: null\n  extra: 1\n"))
    problems = manager.validate()
    assert {p.file for p in problems} == {manager.store.name(p) for p in paths}
    third = [p.message for p in problems if p.file.endswith(paths[2].name)]
    assert any("audio_file is set" in m for m in third)
    assert any("unknown key 'extra'" in m for m in third)


def test_invariants_name_the_rule() -> None:
    doc = new_episode("ep", title="t", date="2004-04-14", at="2026-01-01T00:00:00+00:00", by="t")
    doc["stage"] = "failed"
    doc["history"].append(
        {"at": doc["last_updated"], "from": "discovered", "to": "failed", "by": "t"}
    )
    messages = {p.message for p in episode_problems(doc, "x.yaml")}
    assert any("failed needs failed_stage" in m for m in messages)


@pytest.mark.parametrize("bad", ["2004-02-30", "2004-4-1", "yesterday"])
def test_bad_dates_are_rejected(bad: str) -> None:
    doc = new_episode("ep", title="t", date=bad, at="2026-01-01T00:00:00+00:00", by="t")
    assert any(p.path == "$.date" for p in episode_problems(doc, "x.yaml"))


def test_timestamps_need_an_offset() -> None:
    doc = new_episode("ep", title="t", date="2004-04-14", at="2026-01-01T00:00:00", by="t")
    assert any(p.path == "$.last_updated" for p in episode_problems(doc, "x.yaml"))


def test_atomic_write_leaves_no_temp_file(tmp_path: Path) -> None:
    store = EpisodeStore(tmp_path)
    path = tmp_path / "2004" / "x.yaml"
    store.write(path, b"a: 1\n")
    store.write(path, b"a: 2\n")
    assert path.read_bytes() == b"a: 2\n"
    assert store.temp_files() == []


values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-5, max_value=10**12),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(
        ["", "x", "downloaded", "failed", "2004-04-14", "2004-02-30", "2026-01-01T00:00:00+00:00",
         "2026-01-01T00:00:00", "2026-01-01T00:00:00Z", "abc DEF", "a/b", "uploading"]
    ),
    st.lists(st.sampled_from(["PL1", "bad id", ""]), max_size=3),
    st.just({}),
)  # fmt: skip


def _leaf_paths(doc: object, prefix: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    if isinstance(doc, dict):
        return [p for k, v in doc.items() for p in _leaf_paths(v, (*prefix, k))] + [prefix]
    if isinstance(doc, list):
        return [p for i, v in enumerate(doc) for p in _leaf_paths(v, (*prefix, i))] + [prefix]
    return [prefix]


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_fast_and_reference_validators_agree(data: st.DataObject) -> None:
    """jsonschema-rs gates every read and write; jsonschema names the problems. They must
    agree on what is valid, or a problem could go unreported."""
    from hystate.core import schema as validation

    doc = new_episode("ep", title="t", date="2004-04-14", at="2026-01-01T00:00:00+00:00", by="t")
    doc["history"].append(
        {"at": "2026-01-01T00:00:01Z", "from": "discovered", "to": "downloading", "by": "w"}
    )
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        path = data.draw(st.sampled_from([p for p in _leaf_paths(doc) if p]))
        target = doc
        for part in path[:-1]:
            target = target[part]  # type: ignore[index]
        target[path[-1]] = data.draw(values)  # type: ignore[index]
    if data.draw(st.booleans()):
        doc["stage"] = data.draw(
            st.sampled_from(["downloaded", "failed", "published", "skipped", "uploading"])
        )
    fast = validation.is_valid("episode", doc)
    reference = not list(validation._validator("episode").iter_errors(doc))
    assert fast == reference


def test_write_atomic_syncs_the_file_then_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[bool] = []  # one entry per fsync: was it a folder?
    real = os.fsync

    def spy(fd: int) -> None:
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    write_atomic(tmp_path / "f", b"x")
    assert synced == [False, True] and (tmp_path / "f").read_bytes() == b"x"
    synced.clear()
    write_atomic(tmp_path / "g", [b"a", memoryview(b"bc")], sync=False)  # a batch or a cache
    assert synced == [] and (tmp_path / "g").read_bytes() == b"abc"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f", "g"]  # no temp file left


def test_an_interrupt_as_the_temp_file_is_made_leaves_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C during discover's writing left a ``.<id>.<pid>.tmp`` (fsck removed it later):
    Python handles a signal that came during a call right after the call returns, so the
    KeyboardInterrupt comes out of ``os.open`` with the temp file made."""
    real = os.open

    def interrupted(path: Any, flags: int, mode: int = 0o777) -> int:
        fd = real(path, flags, mode)
        if str(path).endswith(".tmp"):
            os.close(fd)
            raise KeyboardInterrupt
        return fd

    monkeypatch.setattr(os, "open", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_atomic(tmp_path / "f", b"x")
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []
