"""Durability (issue 26): what a transition syncs follows ``core.fsync``/``core.fsyncMethod``,
and by default hystate syncs its own loose objects and the branch it moves; an object file
already on disk is never trusted unread (a power cut can leave it empty)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from hystate.manager import StateManager
from tests.conftest import HYSTATE, git
from tests.harness.faketime import faketime_env


@pytest.fixture
def synced(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, str]]]:
    """(call, path) of every fsync/fdatasync this process makes."""
    calls: list[tuple[str, str]] = []
    for name in ("fsync", "fdatasync"):
        real = getattr(os, name)

        def spy(fd: int, real=real, name=name) -> None:  # type: ignore[no-untyped-def]
            calls.append((name, os.readlink(f"/proc/self/fd/{fd}")))
            real(fd)

        monkeypatch.setattr(os, name, spy)
    yield calls


def kinds(calls: list[tuple[str, str]], repo: Path) -> dict[str, set[str]]:
    """What was synced, by kind: object, ref, index, episode (file and folder syncs)."""
    found: dict[str, set[str]] = {}
    git_dir = str(repo / ".git")
    for call, path in calls:
        if os.path.isdir(path):
            continue  # a folder, after a rename into it: always a full fsync
        if "/.git/objects/" in path or path == f"{git_dir}/objects":
            kind = "object"
        elif path.startswith(f"{git_dir}/refs/heads"):
            kind = "ref"
        elif path in (f"{git_dir}/index", f"{git_dir}/index.lock"):
            kind = "index"
        elif path == git_dir:
            kind = "git-dir"
        elif "/processed/" in path:
            kind = "episode"
        else:
            kind = "other"
        found.setdefault(kind, set()).add(call)
    return found


def move(repo: Path) -> str:
    manager = StateManager(cwd=repo, worker="w")
    eid = sorted(p.stem for p in manager.store.iter_paths())[0]
    result = manager.update_state(eid, "downloading")
    assert result.commit
    return result.commit


def test_by_default_objects_and_the_branch_are_synced(
    repo: Path, synced: list[tuple[str, str]]
) -> None:
    move(repo)
    found = kinds(synced, repo)
    assert found.get("object") == {"fsync"}, synced
    assert found.get("ref") == {"fsync"}, synced
    assert "index" not in found, synced
    assert found.get("episode") == {"fsync"}


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ({"core.fsync": "none"}, set()),
        ({"core.fsync": "all"}, {"object", "ref", "index"}),
        ({"core.fsync": "committed,-reference"}, {"object"}),
        ({"core.fsync": "reference,index"}, {"ref", "index"}),
        ({"core.fsyncObjectFiles": "false"}, set()),
        ({"core.fsyncObjectFiles": "true"}, {"object"}),
    ],
)
def test_core_fsync_is_honoured(
    repo: Path, synced: list[tuple[str, str]], setting: dict[str, str], expected: set[str]
) -> None:
    for key, value in setting.items():
        git(repo, "config", key, value)
    move(repo)
    found = kinds(synced, repo)
    assert {k for k in found if k in ("object", "ref", "index")} == expected, synced


def test_writeout_only_asks_for_fdatasync(repo: Path, synced: list[tuple[str, str]]) -> None:
    git(repo, "config", "core.fsync", "all")
    git(repo, "config", "core.fsyncMethod", "writeout-only")
    move(repo)
    found = kinds(synced, repo)
    assert found["object"] == found["ref"] == found["index"] == {"fdatasync"}, synced


def test_an_empty_object_file_is_never_trusted(repo: Path) -> None:
    """A power cut left the blob of the next state as an empty file: the transition writes it
    again instead of committing a tree that names a broken object."""
    eid = sorted(p.stem for p in (repo / "processed").rglob("*.yaml"))[0]
    rel = next((repo / "processed").rglob(f"{eid}.yaml")).relative_to(repo).as_posix()
    other = repo.parent / "other"
    subprocess.run(["git", "clone", "-q", str(repo), str(other)], check=True)
    frozen = faketime_env("2027-01-01 00:00:00")  # both moves write the very same file

    def advance(where: Path) -> None:
        # skipped, not an active stage: no lease token, so both clones write the same bytes
        subprocess.run(
            [*HYSTATE, "skip", eid, "--reason", "power cut test", "--worker", "w"],
            cwd=where, env=frozen, check=True,
        )  # fmt: skip

    advance(other)  # the same transition made elsewhere tells which blob this one writes
    blob = git(other, "rev-parse", f"HEAD:{rel}").strip()
    target = repo / ".git" / "objects" / blob[:2] / blob[2:]
    target.parent.mkdir(exist_ok=True)
    target.write_bytes(b"")  # as a power cut leaves a never-synced new file
    advance(repo)
    assert git(repo, "rev-parse", f"HEAD:{rel}").strip() == blob
    assert target.stat().st_size > 0
    assert git(repo, "fsck", "--no-dangling", "--connectivity-only").strip() == ""
    assert git(repo, "cat-file", "blob", blob) == (repo / rel).read_text()


def test_a_discovery_batch_is_flushed_once(
    tmp_path: Path, synced: list[tuple[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A commit of many new files (a discovery) flushes their blobs together, not one fsync
    each (100,000 fsyncs would take minutes); the trees, commit and branch are synced."""
    from hystate.engine.catalog import read_records
    from tests.conftest import catalog_rows, write_search_json

    flushes: list[int] = []
    real_sync = os.sync
    monkeypatch.setattr(os, "sync", lambda: flushes.append(1) or real_sync())
    root = tmp_path / "batch"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    manager = StateManager(cwd=root, worker="w")
    manager.ensure_layout()
    synced.clear()
    before = int(git(root, "rev-list", "--count", "HEAD"))
    catalog = write_search_json(tmp_path / "catalog.json", catalog_rows(200))
    manager.discover(read_records(catalog), source="catalog.json")
    made = int(git(root, "rev-list", "--count", "HEAD")) - before
    objects = [path for call, path in synced if "/.git/objects/" in path]
    assert 1 <= len(flushes) <= made + 1, (flushes, made)  # discovery flushes its files too
    assert 0 < len(objects) < 40 * made, len(objects)  # trees and commits, not 200 blobs
    assert kinds(synced, root).get("ref") == {"fsync"}
