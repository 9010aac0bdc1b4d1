"""Reviewing state in pull requests: validate --base on real branches, the merge driver."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hystate.core.schema import episode_problems
from hystate.core.store import dump, parse_content
from hystate.manager import StateManager
from hystate.review.merge_driver import merge_files
from tests.conftest import Cli, full_walk, git

U = ["-c", "user.name=u", "-c", "user.email=u@x"]


def branch(repo: Path, name: str, base: str = "main") -> None:
    git(repo, "checkout", "-q", "-b", name, base)


def validate_base(repo: Path, base: str = "main") -> tuple[int, list[dict[str, object]]]:
    result = Cli(repo)("validate", "--base", base, "--json")
    return result.exit_code, json.loads(result.stdout)["problems"]


def test_init_installs_the_merge_driver(repo: Path) -> None:
    assert "*.yaml -text -eol -filter" in (repo / "processed/.gitattributes").read_text()
    assert "merge-driver %O %A %B" in git(repo, "config", "merge.hystate.driver")
    assert git(repo, "check-attr", "merge", "processed/2004/x.yaml").strip().endswith("hystate")
    assert git(repo, "check-attr", "text", "processed/2004/x.yaml").strip().endswith("unset")


@pytest.mark.parametrize("base", ["no-such-branch", "HEAD~99", "HEAD:processed", "@{u}"])
def test_a_base_that_is_no_commit_is_named_in_one_line(repo: Path, base: str) -> None:
    """Was "git rev-parse failed: 1" (or git's own words about ^{commit}), naming nothing."""
    result = Cli(repo)("validate", "--base", base)
    assert result.exit_code == 7, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and f"--base {base!r} is not a commit" in lines[0], lines


def test_a_legal_branch_and_its_squash_pass(
    repo: Path, manager: StateManager, episode_id: str
) -> None:
    branch(repo, "work")
    full_walk(manager, episode_id)
    code, problems = validate_base(repo)
    assert code == 0 and problems == []
    git(repo, "checkout", "-q", "main")
    branch(repo, "squashed")
    git(repo, *U, "merge", "-q", "--squash", "work")
    git(repo, *U, "commit", "-q", "-m", "squash of work")
    code, problems = validate_base(repo)
    assert code == 0
    assert [p["level"] for p in problems] == ["warning"]  # the squash commit has no trailers


def test_a_hand_edit_from_discovered_to_published_is_refused(
    repo: Path, manager: StateManager, episode_id: str
) -> None:
    branch(repo, "hand")
    path = manager.path_of(episode_id)
    doc = parse_content(path.read_bytes(), "x")[0]
    doc["stage"] = "published"
    doc["files"].update(audio_file="a.mp3", video_file="v.mp4")
    doc["youtube"].update(
        video_id="abc", scheduled_date=doc["last_updated"], published_date=doc["last_updated"]
    )
    doc["history"].append(
        {"at": doc["last_updated"], "from": "discovered", "to": "published", "by": "me"}
    )
    path.write_bytes(dump(doc))
    git(repo, *U, "commit", "-qam", "publish by hand")
    code, problems = validate_base(repo)
    errors = [p for p in problems if p["level"] == "error"]
    assert code == 1 and len(errors) == 1
    assert errors[0]["episode_id"] == episode_id and errors[0]["file"].endswith(
        f"{episode_id}.yaml"
    )
    assert "illegal move discovered -> published" in errors[0]["message"] and errors[0]["line"]


def test_stage_history_mismatch_is_refused(
    repo: Path, manager: StateManager, episode_id: str
) -> None:
    branch(repo, "mismatch")
    path = manager.path_of(episode_id)
    path.write_text(path.read_text().replace("stage: discovered", "stage: skipped"))
    git(repo, *U, "commit", "-qam", "skip by hand")
    code, problems = validate_base(repo)
    assert code == 1 and any(
        "stage differs from the last history entry" in p["message"] for p in problems
    )


def test_deleted_moved_and_cache_files_are_flagged(repo: Path, manager: StateManager) -> None:
    branch(repo, "mess")
    first, second = sorted(manager.store.iter_paths())[:2]
    git(repo, "rm", "-q", str(first))
    target = second.parent.parent / "2020" / second.name
    target.parent.mkdir()
    git(repo, "mv", str(second), str(target))
    (repo / "processed" / "index.json").write_text("{}")
    git(repo, "add", "-f", "processed/index.json")
    git(repo, *U, "commit", "-qm", "mess")
    code, problems = validate_base(repo)
    messages = " | ".join(str(p["message"]) for p in problems)
    assert code == 1
    assert (
        "deleted" in messages
        and "moved to processed/2020/" in messages
        and "cache file committed" in messages
    )


def test_rewritten_history_is_refused(repo: Path, manager: StateManager, episode_id: str) -> None:
    manager.update_state(episode_id, "downloading")
    branch(repo, "rewrite")
    path = manager.path_of(episode_id)
    path.write_text(path.read_text().replace("by: test-worker", "by: someone-else"))
    git(repo, *U, "commit", "-qam", "rewrite history")
    code, problems = validate_base(repo)
    assert code == 1 and any("history was rewritten" in p["message"] for p in problems)


def test_branches_advancing_different_episodes_merge_cleanly(
    repo: Path, manager: StateManager
) -> None:
    a, b = sorted(p.stem for p in manager.store.iter_paths())[:2]
    branch(repo, "left")
    StateManager(cwd=repo).update_state(a, "downloading")
    branch(repo, "right", "main")
    StateManager(cwd=repo).update_state(b, "downloading")
    git(repo, *U, "merge", "-q", "--no-edit", "left")
    assert StateManager(cwd=repo).count_by_stage()["downloading"] == 2
    assert validate_base(repo)[0] == 0


def test_same_episode_both_moved_conflicts_through_the_driver(
    repo: Path, manager: StateManager, episode_id: str
) -> None:
    branch(repo, "left")
    StateManager(cwd=repo).update_state(episode_id, "downloading")
    branch(repo, "right", "main")
    StateManager(cwd=repo).skip(episode_id, "not wanted")
    merge = git(repo, *U, "merge", "--no-edit", "left", check=False)
    assert "CONFLICT" in merge
    path = next((repo / "processed").glob(f"*/{episode_id}.yaml"))
    text = path.read_text()
    assert "<<<<<<< ours" in text and ">>>>>>> theirs" in text
    result = Cli(repo)("validate")
    assert result.exit_code == 1 and "conflict marker" in result.output


def test_driver_merges_a_transition_with_a_field_edit(
    repo: Path, manager: StateManager, episode_id: str
) -> None:
    branch(repo, "left")
    StateManager(cwd=repo).update_state(episode_id, "downloading")
    branch(repo, "right", "main")
    path = manager.path_of(episode_id)
    doc = parse_content(path.read_bytes(), "x")[0]
    doc["title"] = "A corrected title"
    path.write_bytes(dump(doc))
    git(repo, *U, "commit", "-qam", "fix title")
    git(repo, *U, "merge", "-q", "--no-edit", "left")
    merged = StateManager(cwd=repo).get_episode_state(episode_id)
    assert merged.stage.value == "downloading" and merged.title == "A corrected title"


FIELDS = [("title", st.sampled_from(["T1", "T2", ""])), ("files.audio_file", st.sampled_from(["a.mp3", None])),
          ("metrics.audio_size", st.sampled_from([1, -1, None, "x"])), ("stage", st.sampled_from(["downloading", "skipped", "published"]))]  # fmt: skip


def _mutate(doc: dict[str, object], data: st.DataObject) -> dict[str, object]:
    import copy

    doc = copy.deepcopy(doc)
    for key, values in FIELDS:
        if data.draw(st.booleans()):
            target = doc
            *parents, leaf = key.split(".")
            for part in parents:
                target = target[part]  # type: ignore[assignment]
            target[leaf] = data.draw(values)
    return doc


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.data())
def test_the_driver_never_writes_an_invalid_file(
    tmp_path: Path, manager: StateManager, data: st.DataObject
) -> None:
    base = manager.list_episodes()[0].data
    files = []
    for name, doc in (
        ("base", base),
        ("ours", _mutate(base, data)),
        ("theirs", _mutate(base, data)),
    ):
        path = tmp_path / name
        path.write_bytes(dump(doc))
        files.append(path)
    clean, _ = merge_files(*files, name="e.yaml")
    doc, problems = parse_content(files[1].read_bytes(), "e.yaml")
    if clean:
        assert not problems and episode_problems(doc, "e.yaml", expect_id=base["episode_id"]) == []
    else:
        assert problems and "conflict marker" in problems[0].message
