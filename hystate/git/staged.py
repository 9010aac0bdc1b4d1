"""What git would commit for the state files, and what earlier commits did to them.

The guard against a person's plain ``git commit`` reverting transitions reads only what it
needs: the index entries that differ from HEAD (``git diff-index --cached``: the cache-tree
makes that cheap at 100,000 files), the changes of the few commits made without hystate, and
the blobs of those entries (one ``git cat-file --batch`` for all of them). Resetting index
entries goes through ``git update-index --index-info``, the one git command that takes
``index.lock`` before it reads the index.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hystate.core.errors import GitError
from hystate.git.objects import EMPTY_TREE

if TYPE_CHECKING:
    from hystate.git.repo import GitRepo

_ZERO = "0" * 40


@dataclass(frozen=True)
class Change:
    """One file changed between two trees (or HEAD and the index): blob shas as hex, None
    when the file is absent on that side."""

    path: str
    old: str | None
    new: str | None


def staged_changes(repo: GitRepo, rel_dir: str) -> list[Change]:
    """Index entries under ``rel_dir`` that differ from HEAD: what a plain ``git commit``
    would record for them. Honours ``GIT_INDEX_FILE`` (set by git for its hooks)."""
    base = "HEAD" if repo.head().sha is not None else EMPTY_TREE.hex()
    out = repo.git_bytes(
        "diff-index", "--cached", "--raw", "-z", "--no-renames", "--no-abbrev", base,
        "--", _pathspec(rel_dir),
    )  # fmt: skip
    return [change for _, change in _parse_raw(out)]


def trailerless_commits(repo: GitRepo, marker: str) -> list[str]:
    """Non-merge commits reachable from HEAD whose message has no line starting with
    ``marker`` (hystate's trailers), newest first."""
    if repo.head().sha is None:
        return []
    out = repo.git(
        "log", "--no-merges", "--invert-grep", f"--grep=^{marker}", "--format=%H", "HEAD"
    )
    return out.split()


def commit_changes(repo: GitRepo, commits: Sequence[str], rel_dir: str) -> dict[str, list[Change]]:
    """commit -> the files under ``rel_dir`` it changed relative to its (first) parent."""
    if not commits:
        return {}
    proc = subprocess.run(
        ["git", "diff-tree", "-r", "--raw", "-z", "--no-renames", "--no-abbrev", "--root",
         "--stdin", "--", _pathspec(rel_dir)],
        cwd=repo.root, input="\n".join(commits).encode() + b"\n", capture_output=True,
        check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise GitError(f"git diff-tree failed: {_last_line(proc.stderr)}")
    found: dict[str, list[Change]] = {}
    for commit, change in _parse_raw(proc.stdout):
        found.setdefault(commit, []).append(change)
    return found


def read_blobs(repo: GitRepo, shas: Iterable[str]) -> dict[str, bytes]:
    """The content of each blob (hex sha), read by one ``git cat-file --batch``."""
    wanted = sorted(set(shas))
    if not wanted:
        return {}
    proc = subprocess.run(
        ["git", "cat-file", "--batch"], cwd=repo.root, capture_output=True, check=False,
        input="\n".join(wanted).encode() + b"\n",
    )  # fmt: skip
    if proc.returncode != 0:
        raise GitError(f"git cat-file failed: {_last_line(proc.stderr)}")
    out, pos, blobs = proc.stdout, 0, {}
    for sha in wanted:
        end = out.index(b"\n", pos)
        header = out[pos:end].split()
        if len(header) != 3:
            raise GitError(f"git cat-file: object {sha} is missing", hint="run `git fsck`")
        size = int(header[2])
        blobs[sha] = out[end + 1 : end + 1 + size]
        pos = end + 1 + size + 1
    return blobs


def reset_index_entries(repo: GitRepo, paths: Sequence[str], wait: float = 10.0) -> None:
    """Set the index entries of ``paths`` back to HEAD's (mode and blob), nothing else.

    ``git update-index --index-info`` takes ``index.lock`` before reading the index, so an
    entry another process updates meanwhile is not overwritten with a stale copy. A busy
    ``index.lock`` (git fails at once) is broken if a killed hystate process left it, else
    retried with backoff for up to ``wait`` seconds."""
    if not paths:
        return
    listing = repo.git_bytes("ls-tree", "-z", "--full-tree", "HEAD", "--", *paths)
    info = b"".join(entry + b"\n" for entry in listing.split(b"\0") if entry)
    present = {entry.split(b"\t", 1)[1].decode() for entry in listing.split(b"\0") if entry}
    # a path HEAD does not have leaves the index (mode 0 removes an entry)
    gone = [p for p in paths if p not in present]
    info += b"".join(b"0 %s\t%s\n" % (_ZERO.encode(), p.encode()) for p in gone)
    deadline, delay = time.monotonic() + wait, 0.01
    while True:
        proc = subprocess.run(
            ["git", "update-index", "--index-info"], cwd=repo.root, input=info,
            capture_output=True, check=False,
        )  # fmt: skip
        if proc.returncode == 0:
            return
        busy = b"index.lock" in proc.stderr
        if not busy or time.monotonic() >= deadline:
            raise GitError(f"git update-index failed: {_last_line(proc.stderr)}")
        if repo.break_stale_index_lock():  # a killed hystate process left it: never git's own
            continue
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


def _pathspec(rel_dir: str) -> str:
    return "." if rel_dir in ("", ".") else rel_dir.rstrip("/") + "/"


def _parse_raw(out: bytes) -> list[tuple[str, Change]]:
    """(commit, change) pairs of ``--raw -z`` output; commit is "" for diff-index."""
    tokens = out.split(b"\0")
    found, commit, i = [], "", 0
    while i < len(tokens):
        token = tokens[i].decode(errors="surrogateescape")
        if token.startswith(":"):
            _, _, old, new, _status = token[1:].split(" ", 4)
            path = tokens[i + 1].decode(errors="surrogateescape")
            found.append(
                (commit, Change(path, None if old == _ZERO else old, None if new == _ZERO else new))
            )
            i += 2
            continue
        if token.strip():
            commit = token.strip()
        i += 1
    return found


def _last_line(stderr: bytes) -> str:
    lines = stderr.decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else "no message"
