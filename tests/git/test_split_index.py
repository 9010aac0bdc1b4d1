"""hystate on a split index (``core.splitIndex=true``, split by git): every transition is staged
in-process into a new small ``.git/index`` linked to the same shared index, and git agrees with
the result after each one (status, diff-index, ls-files against a plain twin, fsck, refresh)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from hystate.engine.catalog import read_records
from hystate.git import ewah
from hystate.git.extensions import extension_list
from hystate.git.index import IndexLock
from hystate.git.split_index import _entries_end
from hystate.manager import StateManager
from tests.conftest import catalog_rows, git, write_search_json
from tests.git.test_git_regressions import USER, hy, setup_state, state_files


def _split_repo(tmp_path: Path, episodes: int = 30) -> Path:
    root = setup_state(tmp_path / "r", episodes=episodes)
    git(root, "config", "core.splitIndex", "true")
    git(root, "update-index", "--split-index")
    assert _link(root) is not None
    return root


def _link(root: Path) -> bytes | None:
    """The ``link`` extension's body of the index, as git wrote it (None: not split)."""
    data = (root / ".git" / "index").read_bytes()
    ends = _entries_end(data)
    assert ends is not None
    found = [data[a:b] for sig, a, b in extension_list(data, ends) if sig == b"link"]
    return found[0] if found else None


def _shared(root: Path) -> str:
    link = _link(root)
    assert link is not None, "the index is no longer split"
    name = link[:20].hex()
    assert (root / ".git" / f"sharedindex.{name}").is_file()
    return name


def _git_agrees(root: Path) -> None:
    assert git(root, "status", "--porcelain") == ""
    assert git(root, "diff-index", "--cached", "HEAD") == ""
    assert git(root, "fsck", "--strict", "--no-progress", "--no-dangling") == ""
    git(root, "update-index", "--refresh")  # fails (check) if any entry needs an update
    assert git(root, "status", "--porcelain") == ""


def _same_as_plain_twin(root: Path, tmp_path: Path) -> None:
    """``git ls-files -s`` equals a plain (never split) clone's at the same commit."""
    twin = tmp_path / f"twin-{time.monotonic_ns()}"
    git(tmp_path, "clone", "-q", "--no-hardlinks", str(root), str(twin))
    assert not list((twin / ".git").glob("sharedindex.*"))
    assert git(root, "ls-files", "-s") == git(twin, "ls-files", "-s")


def _no_git_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> bytes:
        raise AssertionError("the split index was handed to git update-index")

    monkeypatch.setattr(IndexLock, "_with_git", refuse)


def _downloaded(manager: StateManager, eid: str) -> None:
    manager.update_state(eid, "downloaded", fields={"files.audio_file": f"a/{eid}.mp3"})


def _discover(manager: StateManager, tmp_path: Path, count: int, start_year: int) -> None:
    rows = catalog_rows(count, start_year=start_year)
    catalog = write_search_json(tmp_path / f"more-{start_year}.json", rows)
    manager.discover(read_records(catalog), source=catalog.name)


def test_transitions_write_the_split_index_in_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _split_repo(tmp_path)
    manager = StateManager(cwd=root, worker="w")
    first, second = (Path(p).stem for p in state_files(root)[:2])
    _no_git_fallback(monkeypatch)

    def step(transition: Callable[[], object]) -> None:
        shared = _shared(root)
        transition()
        assert _shared(root) == shared, "hystate re-split the index"
        _git_agrees(root)  # git itself may write a new shared index here

    step(lambda: manager.update_state(first, "downloading"))  # a shared path: replaced
    step(lambda: _downloaded(manager, first))  # already replaced: its entry updated
    step(lambda: manager.update_state(second, "downloading"))
    step(lambda: _discover(manager, tmp_path, 3, 2030))  # new paths: added entries
    added = [Path(p).stem for p in state_files(root) if "_203" in p]
    assert len(added) == 3
    step(lambda: manager.update_state(added[0], "downloading"))  # an added entry updated
    git(root, "update-index", "--split-index")  # all in the shared index again
    step(lambda: manager.update_state(added[1], "downloading"))
    step(lambda: _downloaded(manager, added[0]))
    assert len(state_files(root)) == 33
    _same_as_plain_twin(root, tmp_path)


def test_hystate_advance_processes_on_a_split_index(tmp_path: Path) -> None:
    root = _split_repo(tmp_path)
    eids = [Path(p).stem for p in state_files(root)[:3]]
    audio = ["--set", "files.audio_file=a/x.mp3", "--force"]
    for eid, *args in [(e, "downloading") for e in eids] + [(eids[0], "downloaded", *audio)]:
        shared = _shared(root)
        done = hy(root, "advance", eid, *args)
        assert done.returncode == 0, done.stderr
        assert _shared(root) == shared
        _git_agrees(root)
    _same_as_plain_twin(root, tmp_path)


def test_git_re_splits_past_max_percent_change_and_hystate_goes_on(tmp_path: Path) -> None:
    root = _split_repo(tmp_path, episodes=10)
    shared = _shared(root)
    manager = StateManager(cwd=root, worker="w")
    _discover(manager, tmp_path, 5, 2030)  # 5 of 15 entries not shared: past 20%, git re-splits
    _git_agrees(root)
    assert _shared(root) != shared
    eid = Path(state_files(root)[0]).stem
    manager.update_state(eid, "downloading")
    _git_agrees(root)
    for year in range(2031, 2036):
        _discover(manager, tmp_path, 2, year)
        _git_agrees(root)
    git(root, "update-index", "--split-index")  # git writes a new shared index of everything
    again = _shared(root)
    _downloaded(manager, eid)
    assert _shared(root) == again
    _git_agrees(root)
    done = hy(root, "advance", Path(state_files(root)[1]).stem, "downloading")
    assert done.returncode == 0, done.stderr
    _git_agrees(root)
    _same_as_plain_twin(root, tmp_path)


def _same_second_start() -> None:
    time.sleep(1.02 - time.time() % 1)


@pytest.mark.parametrize("where", ["split", "shared"])
def test_racy_same_second_edit_survives_a_transition(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """``git add`` of v1 and an edit to v2 (same size) in one second, the entry in the split
    part or (re-split in that second) in the shared index; hystate's transition in a later
    second must smudge it, so that ``git commit -a`` still sees v2."""
    root = _split_repo(tmp_path)
    manager = StateManager(cwd=root, worker="w")
    eid = Path(state_files(root)[0]).stem
    for _ in range(5):
        _same_second_start()
        start = int(time.time())
        (root / "notes.txt").write_text("v1\n")
        git(root, "add", "notes.txt")
        if where == "shared":
            git(root, "update-index", "--split-index")
        (root / "notes.txt").write_text("v2\n")
        if int(time.time()) == start:
            break
    else:
        pytest.fail("could not make a same-second edit in 5 tries")
    time.sleep(1.05 - time.time() % 1)
    _no_git_fallback(monkeypatch)

    manager.update_state(eid, "downloading")

    assert _link(root) is not None
    git(root, *USER, "commit", "-qam", "user")
    assert git(root, "show", "HEAD:notes.txt") == "v2\n", "git commit -a committed v1"
    _git_agrees(root)


def test_without_core_split_index_hystate_never_splits(tmp_path: Path) -> None:
    root = setup_state(tmp_path / "r", episodes=5)
    manager = StateManager(cwd=root, worker="w")
    eid = Path(state_files(root)[0]).stem
    manager.update_state(eid, "downloading")
    _discover(manager, tmp_path, 2, 2030)
    done = hy(root, "advance", eid, "downloaded", "--set", "files.audio_file=a/x", "--force")
    assert done.returncode == 0, done.stderr
    assert _link(root) is None
    assert not list((root / ".git").glob("sharedindex.*"))
    _git_agrees(root)


def test_a_split_index_without_the_setting_is_left_to_git(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _split_repo(tmp_path)
    git(root, "config", "core.splitIndex", "false")  # git merges it back on its next write
    manager = StateManager(cwd=root, worker="w")
    manager.update_state(Path(state_files(root)[0]).stem, "downloading")
    assert _link(root) is None
    _git_agrees(root)


def test_ewah_bytes_are_the_ones_git_writes(tmp_path: Path) -> None:
    root = _split_repo(tmp_path, episodes=200)
    paths = state_files(root)
    for rel in [*paths[3:140:2], *paths[150:190]]:  # literal words, and a word of all ones
        (root / rel).write_text((root / rel).read_text() + "# touched\n")
    git(root, "add", "-u")
    link = _link(root)
    assert link is not None
    deleted, after = ewah.decode(link, 20, len(link))
    replaced, end = ewah.decode(link, after, len(link))
    assert end == len(link) and not deleted and len(replaced) >= 69 + 40
    assert link[20:] == ewah.encode(deleted) + ewah.encode(replaced)


@pytest.mark.parametrize(
    "bits",
    [[], [0], [63], [64], list(range(64)), list(range(5, 300)), [1, 1000, 10**6, 10**6 + 64]],
)
def test_ewah_round_trip(bits: list[int]) -> None:
    data = ewah.encode(bits)
    assert ewah.decode(data, 0, len(data)) == (bits, len(data))


def test_a_staged_change_and_a_torn_shared_table_survive(tmp_path: Path) -> None:
    """The person's staged file (an added entry) stays staged; the table hystate keeps of the
    shared index is written, and a torn one is not believed (the next process walks again)."""
    root = _split_repo(tmp_path)
    (root / "user-notes.txt").write_text("mine\n")
    git(root, "add", "user-notes.txt")
    eids = [Path(p).stem for p in state_files(root)[:3]]
    done = hy(root, "advance", eids[0], "downloading")
    assert done.returncode == 0, done.stderr
    shared = _shared(root)
    table = root / ".git" / "hystate" / f"shared.{shared}.table"
    assert table.is_file()
    table.write_bytes(table.read_bytes()[:-9] + b"\x07" * 9)
    for eid in eids[1:]:
        done = hy(root, "advance", eid, "downloading")
        assert done.returncode == 0, done.stderr
        assert _shared(root) == shared
    assert git(root, "status", "--porcelain") == "A  user-notes.txt\n"
    assert git(root, "diff", "--cached", "--name-only") == "user-notes.txt\n"
    git(root, *USER, "commit", "-qm", "user")
    _git_agrees(root)
    _same_as_plain_twin(root, tmp_path)
