"""``hystate import --from DIR`` (and ``discover --from DIR``): the first migration tool's state
directory becomes hystate's, in one commit, as hostile input."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from hystate.manager import StateManager
from tests.conftest import REPO_ROOT, Cli, commits, files_in, git, run_hystate

# the real legacy state directory's samples (3 episode files and their index), copied in
SHARED = REPO_ROOT / "tests" / "data" / "legacy-archive-org"

LONG_TEXT = "A long transcript line that must never reach a state file. " * 50


def legacy_doc(identifier: str, date: str, **over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "identifier": identifier,
        "title": f"Hooting Yard On The Air: {identifier}",
        "date": f"{date}T00:00:00",
        "collection": ["hooting-yard", "podcasts"],
        "creator": "Frank Key",
        "description": "Burnt Maps - 05:09",
        "full_text": LONG_TEXT,
        "mp3": {
            "filename": f"{identifier}.mp3",
            "size": 28363609,
            "duration": 1771.86,
            "md5": "7e10053385866b87e64a09314be58618",
        },
        "text_content": {"transcript_text": None, "subject_tags": [], "language": "en"},
        "discovery": {"discovered_at": "2025-09-19T00:31:39.182095"},
        "status": {
            "available": True,
            "download_url": f"https://archive.org/download/{identifier}/{identifier}.mp3",
        },
    }
    doc.update(over)
    return doc


def make_legacy(root: Path, docs: list[dict[str, Any]], index: bool = True) -> Path:
    base = root / "migration" / "state" / "archive_org"
    by_year: dict[str, list[str]] = {}
    for doc in docs:
        year = str(doc["date"])[:4]
        (base / year).mkdir(parents=True, exist_ok=True)
        (base / year / f"{doc['identifier']}.yaml").write_text(yaml.safe_dump(doc))
        by_year.setdefault(year, []).append(doc["identifier"])
    if index:
        meta = {"total_episodes": len(docs), "episodes_by_year": by_year}
        (base / "index.yaml").write_text(yaml.safe_dump(meta))
    return base


@pytest.fixture
def legacy(tmp_path: Path) -> Path:
    docs = [
        legacy_doc("hy0_legacy_2004-04-14", "2004-04-14"),
        legacy_doc("hy0_legacy_2017-10-12", "2017-10-12"),
        legacy_doc("hooting-yard-live", "2019-07-18"),
    ]
    return make_legacy(tmp_path / "legacy", docs)


def test_new_episodes_get_their_metadata_in_one_commit(
    repo: Path, run: Cli, legacy: Path, manager: StateManager
) -> None:
    before = commits(repo)
    result = run("import", "--from", str(legacy))
    assert result.exit_code == 0, result.output
    assert "3 added, 0 updated, 0 skipped" in result.output
    assert len(commits(repo)) == len(before) + 1
    assert sorted(files_in(repo)) == [
        "processed/2004/hy0_legacy_2004-04-14.yaml",
        "processed/2017/hy0_legacy_2017-10-12.yaml",
        "processed/2019/hooting-yard-live.yaml",
    ]
    episode = manager.get_episode_state("hy0_legacy_2004-04-14")
    assert episode.stage.value == "discovered"
    assert episode.data["metrics"]["audio_size"] == 28363609
    assert episode.data["metrics"]["audio_duration"] == 1771.86
    assert episode.data["files"]["source_url"].startswith("https://archive.org/download/")
    assert episode.data["files"]["source_md5"] == "7e10053385866b87e64a09314be58618"
    assert list(episode.data["files"])[:2] == ["source_url", "source_md5"]
    for path in manager.store.iter_paths():
        text = path.read_text()
        assert "long transcript" not in text and "Burnt Maps - 05:09" not in text
    # the cache attributes the episodes' discovery to the import commit
    manager.refresh()
    rows = manager.cache.query(
        "SELECT commit_sha FROM processing_log WHERE to_stage = 'discovered' AND episode_id IN"
        " ('hy0_legacy_2004-04-14', 'hooting-yard-live')"
    )
    assert [r[0] for r in rows] == [commits(repo)[0]] * 2
    assert git(repo, "status", "--porcelain") == ""


def test_known_episodes_keep_state_and_history_and_only_gain_missing_metadata(
    repo: Path, run: Cli, tmp_path: Path, manager: StateManager
) -> None:
    ids = sorted(p.stem for p in manager.store.iter_paths())
    first, second, third = ids[:3]
    manager.update_state(first, "downloading", worker="dl-1")
    manager.update_state(second, "downloading", worker="dl-1")
    manager.update_state(
        second, "downloaded", fields={"files.audio_file": "a.mp3", "metrics.audio_size": 5}
    )
    dates = {e.episode_id: e.date for e in manager.list_episodes()}
    docs = [
        legacy_doc(first, dates[first]),
        legacy_doc(second, dates[second]),  # has audio_size 5: kept, reported
        legacy_doc(third, "1999-01-01"),  # another air date: left alone, reported
        legacy_doc("hy0_brand_new", "2010-05-05"),
    ]
    source = make_legacy(tmp_path / "old", docs)
    before = {i: manager.get_episode_state(i).to_dict() for i in (first, second, third)}
    result = run("import", "--from", str(source), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["added"] == ["hy0_brand_new"]
    updated = {u["episode_id"]: u["fields"] for u in report["updated"]}
    assert updated[first] == [
        "files.source_url",
        "files.source_md5",
        "metrics.audio_duration",
        "metrics.audio_size",
    ]
    assert "metrics.audio_size" not in updated[second]
    skipped = {s["episode_id"]: s["reason"] for s in report["skipped"]}
    assert "air date differs" in skipped[third]
    kept = {n["episode_id"]: n["kept"] for n in report["notes"]}
    assert kept[second] == ["metrics.audio_size=5 (legacy: 28363609)"]
    assert len(files_in(repo)) == 3  # first, second, the new one; one commit
    for eid in (first, second):
        after = manager.get_episode_state(eid).to_dict()
        for key in ("stage", "history", "attempts", "worker", "last_updated", "error_history"):
            assert after[key] == before[eid][key]
    assert manager.get_episode_state(second).data["metrics"]["audio_size"] == 5
    assert manager.get_episode_state(third).to_dict() == before[third]
    # the import is not a transition: no history entry, no log row
    assert [h["to"] for h in manager.history(first) if h["to"]] == ["discovered", "downloading"]
    # again: nothing left to add, no commit
    head = commits(repo)[0]
    again = run("import", "--from", str(source))
    assert again.exit_code == 0 and "0 added, 0 updated, 4 skipped" in again.output
    assert commits(repo)[0] == head
    # and the work continues where it was
    manager.update_state(first, "downloaded", fields={"files.audio_file": "a.mp3"})


def test_discover_from_a_directory_is_the_import(repo: Path, run: Cli, legacy: Path) -> None:
    result = run("discover", "--from", str(legacy))
    assert result.exit_code == 0, result.output
    assert "3 added" in result.output


def test_the_parent_folder_of_archive_org_is_accepted(repo: Path, run: Cli, legacy: Path) -> None:
    result = run("import", "--from", str(legacy.parent), "--dry-run")
    assert result.exit_code == 0, result.output
    assert "would import" in result.output and "3 added" in result.output


def test_dry_run_writes_nothing(repo: Path, run: Cli, legacy: Path) -> None:
    head = commits(repo)
    result = run("import", "--from", str(legacy), "--dry-run")
    assert result.exit_code == 0
    assert commits(repo) == head
    assert git(repo, "status", "--porcelain") == ""


def test_the_shared_samples(repo: Path, run: Cli, manager: StateManager) -> None:
    result = run("import", "--from", str(SHARED), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert sorted(report["added"]) == [
        "hy0_hooting_yard_2004-04-14",
        "hy0_hooting_yard_2017-10-12",
        "hy0_hooting_yard_2019-07-18",
    ]
    episode = manager.get_episode_state("hy0_hooting_yard_2004-04-14")
    assert episode.data["metrics"] == {
        "audio_duration": 1771.86,
        "audio_size": 28363609,
        "video_size": None,
        "processing_time": None,
    }
    assert episode.data["files"]["source_md5"] == "7e10053385866b87e64a09314be58618"
    size = manager.store.find("hy0_hooting_yard_2004-04-14").stat().st_size  # type: ignore[union-attr]
    assert size < 2000  # the 11 KB of description and full_text stayed behind


BAD_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("id-mismatch", {"identifier": "hy0_other"}, "does not match the file name"),
    ("bad-id", {"identifier": "../../etc/passwd"}, "invalid episode id"),
    ("no-title", {"title": ""}, "title"),
    ("bad-date", {"date": "2004-13-45"}, "not a real date"),
    ("wrong-year", {"date": "2005-01-01T00:00:00"}, "is not in folder 2004"),
    ("size-text", {"mp3": {"size": "big"}}, "mp3.size"),
    # refused by hystate's YAML loader itself (named by file and line)
    ("size-huge", {"mp3": {"size": 2**70}}, "does not fit in 64 bits"),
    ("duration-nan", {"mp3": {"duration": float("nan")}}, "not finite"),
    ("md5", {"mp3": {"md5": "xyz"}}, "mp3.md5"),
    ("url", {"status": {"download_url": "javascript:alert(1)"}}, "download_url"),
    ("mp3-list", {"mp3": [1, 2]}, "mp3: expected a mapping"),
]


@pytest.mark.parametrize(("case", "over", "message"), BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_a_malformed_file_is_named_and_nothing_is_written(
    repo: Path, run: Cli, tmp_path: Path, case: str, over: dict[str, Any], message: str
) -> None:
    good = legacy_doc("hy0_good_2010-01-01", "2010-01-01")
    bad = {**legacy_doc("hy0_bad_2004-04-14", "2004-04-14"), **over}
    base = tmp_path / "legacy" / "archive_org"
    make_legacy(tmp_path / "legacy", [good], index=False)
    (base / "2004").mkdir(parents=True)
    (base / "2004" / "hy0_bad_2004-04-14.yaml").write_text(yaml.safe_dump(bad))
    head = commits(repo)
    result = run("import", "--from", str(base))
    assert result.exit_code == 5, result.output
    assert "2004/hy0_bad_2004-04-14.yaml" in result.output
    assert message in result.output
    assert "nothing was written" in result.output
    assert commits(repo) == head
    assert git(repo, "status", "--porcelain") == ""


def write_raw(base: Path, year: str, name: str, text: str | bytes) -> None:
    (base / year).mkdir(parents=True, exist_ok=True)
    data = text if isinstance(text, bytes) else text.encode()
    (base / year / name).write_bytes(data)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("identifier: [unclosed", "invalid YAML"),
        ("a: &x [1]\nb: *x\n", "anchors and aliases"),
        ("x: " + "[" * 40 + "]" * 40, "nested deeper"),
        (b"title: \xff\xfe", "not UTF-8"),
        ("identifier: a\nidentifier: b\n", "duplicate key"),
        ("- just\n- a list\n", "expected a mapping"),
    ],
)
def test_hostile_yaml_is_refused_before_it_is_built(
    repo: Path, run: Cli, tmp_path: Path, text: str | bytes, message: str
) -> None:
    base = tmp_path / "legacy"
    write_raw(base, "2004", "hy0_x.yaml", text)
    result = run("import", "--from", str(base))
    assert result.exit_code == 5, result.output
    assert message in result.output and "hy0_x.yaml" in result.output


def test_a_yaml_bomb_is_refused(repo: Path, run: Cli, tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 30)]
    base = tmp_path / "legacy"
    write_raw(base, "2004", "hy0_bomb.yaml", "\n".join(lines) + "\n")
    result = run("import", "--from", str(base))
    assert result.exit_code == 5
    assert "anchors and aliases" in result.output


def test_an_oversized_file_is_refused(repo: Path, run: Cli, tmp_path: Path) -> None:
    base = tmp_path / "legacy"
    doc = legacy_doc("hy0_big", "2004-04-14", full_text="x" * (5 * 1024 * 1024))
    write_raw(base, "2004", "hy0_big.yaml", yaml.safe_dump(doc))
    result = run("import", "--from", str(base))
    assert result.exit_code == 5
    assert "larger than" in result.output


def test_symlinks_are_refused_not_followed(repo: Path, run: Cli, tmp_path: Path) -> None:
    secret = tmp_path / "secret.yaml"
    secret.write_text(yaml.safe_dump(legacy_doc("hy0_secret", "2004-04-14")))
    base = make_legacy(tmp_path / "legacy", [legacy_doc("hy0_ok", "2004-01-01")], index=False)
    os.symlink(secret, base / "2004" / "hy0_secret.yaml")
    result = run("import", "--from", str(base))
    assert result.exit_code == 5
    assert "hy0_secret.yaml: is a symlink; refused" in result.output
    os.unlink(base / "2004" / "hy0_secret.yaml")
    os.symlink(tmp_path, base / "2005")
    result = run("import", "--from", str(base))
    assert result.exit_code == 5 and "2005: is a symlink" in result.output


def test_an_index_that_disagrees_with_the_files_is_reported_and_strict_refuses(
    repo: Path, run: Cli, legacy: Path
) -> None:
    (legacy / "2017" / "hy0_legacy_2017-10-12.yaml").unlink()
    head = commits(repo)
    strict = run("import", "--from", str(legacy), "--strict")
    assert strict.exit_code == 5 and commits(repo) == head
    assert "index.yaml: lists 1 episode(s) with no file: hy0_legacy_2017-10-12" in strict.output
    result = run("import", "--from", str(legacy))
    assert result.exit_code == 0, result.output
    assert "2 added" in result.output and "the legacy index.yaml is stale" in result.output
    assert "index.yaml: lists 1 episode(s) with no file: hy0_legacy_2017-10-12" in result.output
    assert "total_episodes is 3, the directory holds 2" in result.output


def test_a_stale_index_of_the_real_samples_imports_every_episode_file(
    repo: Path, run: Cli, tmp_path: Path
) -> None:
    """The real tool's index went stale: it lists one of the three episode files."""
    import shutil

    stale = tmp_path / "archive_org"
    shutil.copytree(SHARED, stale)
    index = yaml.safe_load((stale / "index.yaml").read_text())
    index["episodes_by_year"] = {"2004": ["hy0_hooting_yard_2004-04-14"]}
    index["total_episodes"] = 1
    (stale / "index.yaml").write_text(yaml.safe_dump(index))
    result = run("import", "--from", str(stale), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert len(report["added"]) == 3
    assert report["index_differences"] == [
        f"{stale}/index.yaml: does not list 2 episode file(s): hy0_hooting_yard_2017-10-12",
        f"{stale}/index.yaml: total_episodes is 1, the directory holds 3",
    ]
    refused = run("import", "--from", str(stale), "--strict", "--json")
    assert refused.exit_code == 5


def test_the_same_id_in_two_years_is_refused(repo: Path, run: Cli, tmp_path: Path) -> None:
    base = tmp_path / "legacy"
    write_raw(base, "2004", "hy0_twice.yaml", yaml.safe_dump(legacy_doc("hy0_twice", "2004-01-01")))
    write_raw(base, "2005", "hy0_twice.yaml", yaml.safe_dump(legacy_doc("hy0_twice", "2005-01-01")))
    result = run("import", "--from", str(base))
    assert result.exit_code == 5 and "is also in" in result.output


def test_an_empty_or_missing_directory(repo: Path, run: Cli, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert run("import", "--from", str(tmp_path / "empty")).exit_code == 5
    assert run("import", "--from", str(tmp_path / "nope")).exit_code == 5


def test_an_uncommitted_edit_of_a_known_episode_stops_the_import(
    repo: Path, run: Cli, tmp_path: Path, manager: StateManager
) -> None:
    episode = manager.list_episodes()[0]
    path = manager.store.find(episode.episode_id)
    assert path is not None
    path.write_text(path.read_text().replace("status_message: null", "status_message: hand"))
    source = make_legacy(tmp_path / "old", [legacy_doc(episode.episode_id, episode.date)])
    head = commits(repo)
    result = run("import", "--from", str(source))
    assert result.exit_code == 7
    assert "not committed" in result.output
    assert commits(repo) == head


def test_source_md5_can_be_set_on_a_file_written_before_it_existed(
    manager: StateManager, episode_id: str
) -> None:
    path = manager.store.find(episode_id)
    assert path is not None
    old = path.read_text().replace("  source_md5: null\n", "")
    manager.store.write(path, old.encode())
    git(manager.repo.root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "older")
    assert manager.store.read(path)[1].data["files"].get("source_md5", "absent") == "absent"
    manager.update_state(episode_id, "downloading", fields={"files.source_md5": "a" * 32})
    files = manager.get_episode_state(episode_id).data["files"]
    assert list(files)[:2] == ["source_url", "source_md5"]


def test_the_real_command(repo: Path, legacy: Path) -> None:
    proc = run_hystate(repo, "import", "--from", str(legacy))
    assert proc.returncode == 0, proc.stderr
    bad = legacy / "2004" / "hy0_legacy_2004-04-14.yaml"
    bad.write_text("identifier: [")
    proc = run_hystate(repo, "import", "--from", str(legacy))
    assert proc.returncode == 5
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_a_symlinked_directory_is_refused(
    repo: Path, run: Cli, legacy: Path, tmp_path: Path
) -> None:
    link = tmp_path / "link"
    os.symlink(legacy, link)
    result = run("import", "--from", str(link))
    assert result.exit_code == 5 and "is a symlink" in result.output


def test_an_episode_outside_a_sparse_checkout_is_not_made_anew(
    repo: Path, run: Cli, tmp_path: Path, manager: StateManager
) -> None:
    episode = manager.list_episodes()[0]
    year = episode.date[:4]
    git(repo, "sparse-checkout", "set", "--no-cone", "/*", f"!/processed/{year}/")
    assert manager.store.find(episode.episode_id) is None
    source = make_legacy(tmp_path / "old", [legacy_doc(episode.episode_id, episode.date)])
    head = commits(repo)
    result = run("import", "--from", str(source), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["added"] == [] and "sparse checkout" in report["skipped"][0]["reason"]
    assert commits(repo) == head
