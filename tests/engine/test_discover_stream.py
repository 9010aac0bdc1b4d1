"""A discovery writes each chunk's files and blobs as it is rendered and commits from the blob
ids: a process killed or interrupted between two chunks leaves a state ``fsck --repair`` mends
(or nothing at all), and a file changed under it is never committed as hystate's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hystate.core.parallel import CHUNK
from hystate.engine.catalog import read_records
from hystate.manager import StateManager
from tests.conftest import catalog_rows, git, write_search_json

# stops this process (the signal named) at the n-th open of a path holding the trigger
WRAPPER = r"""
import os, signal, sys
trigger, signame = sys.argv[1:3]
def hook(event, args):
    if event == "open" and isinstance(args[0], str) and trigger in args[0]:
        os.kill(os.getpid(), getattr(signal, signame))
sys.addaudithook(hook)
sys.argv = ["hystate", *sys.argv[3:]]
from hystate.cli import main
main()
"""


def files_in(repo: Path) -> list[Path]:
    return list((repo / "processed").glob("*/*.yaml"))


N = CHUNK + 300  # two chunks: the first is written when the second is rendered


def hystate(repo: Path, *args: str, stop_at: str = "", sig: str = "SIGKILL") -> int:
    argv = [sys.executable, "-c", WRAPPER, stop_at or "/never/", sig, *args]
    return subprocess.run(argv, cwd=repo, capture_output=True, timeout=300, check=False).returncode


def second_chunk_catalog(tmp_path: Path) -> tuple[Path, str]:
    rows = catalog_rows(N, start_year=1980)
    catalog = write_search_json(tmp_path / "big.json", rows)
    return catalog, rows[CHUNK + 10]["identifier"]


def test_killed_between_chunks_is_mended_by_fsck_and_a_second_run(
    repo: Path, tmp_path: Path
) -> None:
    catalog, later = second_chunk_catalog(tmp_path)
    head = git(repo, "rev-parse", "HEAD")
    assert hystate(repo, "discover", "--from", str(catalog), stop_at=f".{later}.") == -9
    assert git(repo, "rev-parse", "HEAD") == head  # nothing committed
    assert len(files_in(repo)) >= 20 + CHUNK  # the first chunk's files were written
    assert hystate(repo, "fsck", "--repair") == 0
    assert hystate(repo, "discover", "--from", str(catalog)) == 0
    assert hystate(repo, "fsck") == 0
    committed = git(repo, "ls-files", "--", "processed/*.yaml").split()
    assert len(committed) == len(files_in(repo)) == 20 + N
    assert git(repo, "status", "--porcelain", "--", "processed") == ""


def test_interrupted_between_chunks_leaves_nothing(repo: Path, tmp_path: Path) -> None:
    catalog, later = second_chunk_catalog(tmp_path)
    head, before = git(repo, "rev-parse", "HEAD"), sorted(files_in(repo))
    code = hystate(repo, "discover", "--from", str(catalog), stop_at=f".{later}.", sig="SIGINT")
    assert code == 130
    assert git(repo, "rev-parse", "HEAD") == head
    assert sorted(files_in(repo)) == before
    assert list((repo / "processed").glob("*/.*.tmp")) == []
    assert git(repo, "status", "--porcelain", "--", "processed") == ""


def test_a_file_changed_before_the_commit_is_not_committed(repo: Path, tmp_path: Path) -> None:
    """A person's edit of a freshly written file before the commit reads it back: refused
    (the blob id no longer matches), nothing committed, every new file taken back."""
    from hystate.git import bulk

    rows = catalog_rows(30, start_year=1980)
    catalog = write_search_json(tmp_path / "few.json", rows)
    manager = StateManager(cwd=repo, worker="w")
    head = git(repo, "rev-parse", "HEAD")
    real = bulk.read_back

    def edited(r: object, rel: str, sha: bytes) -> object:
        path = r.root / rel  # type: ignore[attr-defined]
        if rows[5]["identifier"] in rel:
            path.write_bytes(path.read_bytes() + b"# a person's line\n")
        return real(r, rel, sha)  # type: ignore[arg-type]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(bulk, "read_back", edited)
        with pytest.raises(Exception, match="changed by someone else"):
            manager.discover(read_records(catalog), source="few.json")
    assert git(repo, "rev-parse", "HEAD") == head
    assert len(files_in(repo)) == 20
