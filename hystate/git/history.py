"""Reading history for a publisher: commits of a range with their trailers and the files they
changed, ancestry, and many blobs through one git process.

Nothing here knows what the trailers or files mean. Fields are separated by NUL, which a commit
message cannot carry, so a hostile subject or body cannot shift a field.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from hystate.core.errors import GitError
from hystate.git.repo import GitRepo

_START, _END = "\x00\x01", "\x02"
_IN_PROCESS = 8  # blobs read in-process (loose objects: no git process); more go to cat-file


@dataclass(frozen=True)
class LogEntry:
    sha: str
    parents: tuple[str, ...]
    subject: str
    body: str
    trailers: dict[str, str]  # "" where absent
    files: tuple[str, ...]  # changed against the first parent; empty for a merge

    @property
    def is_merge(self) -> bool:
        return len(self.parents) > 1


def commits(
    repo: GitRepo,
    revs: Sequence[str],
    trailer_keys: Sequence[str],
    *,
    listed: bool = False,
) -> list[LogEntry]:
    """``git log --reverse --topo-order revs`` (``listed``: exactly the commits ``revs`` names,
    in that order), each with its trailers (parsed by git) and the names of the files it
    changed."""
    keys = "".join(f"%(trailers:key={k},valueonly,separator=%x2c)%x00" for k in trailer_keys)
    fmt = f"%x00%x01%H%x00%P%x00{keys}%s%x00%b%x00%x02"
    args = ["-c", "core.quotePath=false", "log", "--name-only"]
    args += ["--no-walk=unsorted"] if listed else ["--reverse", "--topo-order"]
    out = _run(repo, [*args, f"--format={fmt}", *revs, "--"])
    entries = []
    for record in out.split(_START)[1:]:
        parts = record.split("\x00")
        if len(parts) != 5 + len(trailer_keys) or not parts[-1].startswith(_END):
            continue  # not a record this format writes (a message cut at a NUL)
        sha, parents, *values = parts[: 2 + len(trailer_keys)]
        subject, body, tail = parts[-3:]
        names = tuple(line for line in tail[1:].split("\n") if line)
        trail = {k: v.strip() for k, v in zip(trailer_keys, values, strict=True)}
        entries.append(LogEntry(sha, tuple(parents.split()), subject, body, trail, names))
    return entries


def first_parent_path(repo: GitRepo, since: str, tip: str, limit: int = 64) -> list[str] | None:
    """The commits after ``since`` up to ``tip`` on ``tip``'s first-parent line, oldest first,
    when ``since`` is at most ``limit`` steps down that line; else None. Read in-process: the
    usual case after a commit (one step) costs no git process."""
    chain: list[str] = []
    sha = tip
    while len(chain) <= limit:
        if sha == since:
            chain.reverse()
            return chain
        chain.append(sha)
        parents = _parents(repo, sha)
        if not parents:
            return None
        sha = parents[0]
    return None


def _parents(repo: GitRepo, sha: str) -> list[str]:
    kind, data = repo.objects.read(bytes.fromhex(sha))
    if kind != b"commit":
        raise GitError(f"object {sha} is not a commit")
    header = data.split(b"\n\n", 1)[0]
    return [line[7:47].decode() for line in header.split(b"\n") if line.startswith(b"parent ")]


def first_parents(repo: GitRepo, since: str | None, tip: str) -> list[str]:
    """The commits of ``tip``'s first-parent line after ``since`` (all when None), oldest
    first."""
    rev = f"{since}..{tip}" if since else tip
    return _run(repo, ["rev-list", "--first-parent", "--reverse", rev, "--"]).split()


def reachable(repo: GitRepo, tip: str) -> set[str]:
    """Every commit reachable from ``tip``."""
    return set(_run(repo, ["rev-list", tip, "--"]).split())


def is_ancestor(repo: GitRepo, older: str, newer: str) -> bool:
    """Whether ``older`` is ``newer`` or one of its ancestors (False when unknown here)."""
    proc = subprocess.run(
        ["git", "merge-base", "--is-ancestor", older, newer],
        cwd=repo.root,
        capture_output=True,
        check=False,
    )
    return proc.returncode == 0


def resolve(repo: GitRepo, ref: str | None) -> str | None:
    """The commit ``ref`` names (a full ref name such as ``refs/remotes/origin/main``), or
    HEAD's when None; None when it names nothing yet. Read in-process: cheap enough to poll."""
    if ref is None:
        return repo.refs.head().sha
    sha = repo.refs.resolve(ref)
    if sha is None and not ref.startswith("refs/"):
        sha = repo.refs.resolve(f"refs/heads/{ref}")
    return sha


def read_blobs(repo: GitRepo, specs: Sequence[str]) -> list[bytes | None]:
    """The contents of ``<commit>:<path>`` specs, in order (None where there is no such file),
    through one ``git cat-file --batch``."""
    if not specs:
        return []
    if len(specs) <= _IN_PROCESS:
        return [_read_blob(repo, spec) for spec in specs]
    if any("\n" in spec for spec in specs):
        raise GitError("a blob name contains a newline")
    proc = subprocess.run(
        ["git", "cat-file", "--batch"],
        input="".join(f"{spec}\n" for spec in specs).encode(),
        cwd=repo.root,
        capture_output=True,
        check=False,
    )
    if proc.returncode != 0:
        raise GitError(f"git cat-file failed: {proc.stderr.decode(errors='replace').strip()}")
    out, pos = proc.stdout, 0
    found: list[bytes | None] = []
    for _ in specs:
        end = out.index(b"\n", pos)
        header = out[pos:end].split()
        pos = end + 1
        if len(header) == 3 and header[1] == b"blob":
            size = int(header[2])
            found.append(out[pos : pos + size])
            pos += size + 1
        elif len(header) == 3:  # a tree or a commit: no content a caller wants
            pos += int(header[2]) + 1
            found.append(None)
        else:
            found.append(None)  # "<spec> missing" or "ambiguous"
    return found


def _read_blob(repo: GitRepo, spec: str) -> bytes | None:
    commit, _, path = spec.partition(":")
    entry = repo.objects.lookup(repo.objects.commit_tree(bytes.fromhex(commit)), path)
    if entry is None:
        return None
    kind, data = repo.objects.read(entry[1])
    return data if kind == b"blob" else None


def _run(repo: GitRepo, args: list[str]) -> str:
    proc = subprocess.run(["git", *args], cwd=repo.root, capture_output=True, check=False)
    if proc.returncode != 0:
        lines = proc.stderr.decode(errors="replace").strip().splitlines()
        name = args[2] if args[0] == "-c" else args[0]
        raise GitError(f"git {name} failed: {lines[-1] if lines else proc.returncode}")
    return proc.stdout.decode(errors="replace")
