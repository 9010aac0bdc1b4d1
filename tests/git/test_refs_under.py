"""``Refs.under`` (refs read from their files, not ``git for-each-ref``) against hostile ref
stores: a ref name that is not UTF-8 in packed-refs, peeled tag lines, a ref both loose and
packed with different values, a FIFO where a ref goes. Its answer is git's own, compared with
``git for-each-ref`` run on the same repository (before the FIFO: git blocks reading it)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from hystate.git import GitRepo
from tests.conftest import git


def for_each_ref(repo: Path, prefix: str) -> list[tuple[str, str]]:
    out = subprocess.run(
        ["git", "for-each-ref", "--format=%(refname) %(objectname)", prefix],
        cwd=repo,
        capture_output=True,
        check=True,
    ).stdout.decode("utf-8", "surrogateescape")
    return [tuple(line.split(" ")) for line in out.splitlines()]  # type: ignore[misc]


def test_a_ref_name_that_is_not_utf8_in_packed_refs_breaks_no_other_ref(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    git(tmp_path, "init", "-q", "-b", "main", str(repo))
    git(
        repo,
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@t",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "x",
    )
    head = git(repo, "rev-parse", "HEAD").strip()
    # (a name git takes: any byte but a few; a node could push it, a fetch and a gc pack it)
    hostile = os.fsdecode(b"refs/hystate/a/\xff\xfe")
    subprocess.run(["git", "update-ref", os.fsencode(hostile), head], cwd=repo, check=True)
    git(repo, "update-ref", "refs/hystate/a/ok", head)
    git(
        repo,
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@t",
        "tag",
        "-a",
        "-m",
        "t",
        "refs/hystate/a/t",
    )
    git(repo, "pack-refs", "--all")
    assert "^" in (repo / ".git" / "packed-refs").read_bytes().decode("latin-1")  # (peeled)
    other = git(
        repo,
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@t",
        "commit-tree",
        "-m",
        "y",
        f"{head}^{{tree}}",
    ).strip()
    git(repo, "update-ref", "refs/hystate/a/ok", other)  # loose now, packed still holds head
    refs = GitRepo.discover(repo).refs
    assert refs.resolve("refs/heads/main") == head  # (read from packed-refs)
    for prefix in ("refs/hystate/", "refs/hystate/a", "refs/tags/", "refs/heads/main"):
        assert refs.under(prefix) == for_each_ref(repo, prefix), prefix
    assert (hostile, head) in refs.under("refs/hystate/a/")
    listed = refs.under("refs/hystate/")
    # a FIFO where a ref goes is no ref, and is not waited on (git itself would block on it)
    os.mkfifo(repo / ".git" / "refs" / "hystate" / "a" / "fifo")
    assert refs.under("refs/hystate/") == listed
