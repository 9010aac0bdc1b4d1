"""``git bundle`` for backups: writing one, checking one in a scratch repository, and cloning a
working repository from one. Kept apart from repo.py: these calls work on paths outside the
state repository (the bundle file, a scratch bare repository, the restore target)."""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hystate.core.errors import GitError, InvalidData
from hystate.git.repo import GitRepo

_HEADERS = (b"# v2 git bundle\n", b"# v3 git bundle\n")
_REPO_VARS = {
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_COMMON_DIR",
}


@dataclass(frozen=True)
class BundleInfo:
    refs: dict[str, str]  # ref name -> sha, as the bundle lists them
    commits: int  # commits reachable from those refs
    head: str | None  # the sha the bundle's HEAD names


def _run(args: list[str], cwd: Path, what: str) -> str:
    # GIT_DIR and friends of the caller must not redirect these commands to another repository
    env = {k: v for k, v in os.environ.items() if k not in _REPO_VARS}
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, env=env, check=False)
    if proc.returncode != 0:
        lines = proc.stderr.decode(errors="replace").strip().splitlines()
        command = next(a for a in args if not a.startswith("-") and "=" not in a)
        raise GitError(f"{what}: git {command} failed: {lines[-1] if lines else proc.returncode}")
    return proc.stdout.decode(errors="replace")


def create_bundle(repo: GitRepo, target: Path) -> list[str]:
    """Write a bundle of HEAD and every branch and tag to ``target``; returns the refs."""
    if repo.refs.head().sha is None:
        raise GitError(f"{repo.root}: no commits yet; nothing to back up")
    _run(
        ["bundle", "create", "--quiet", str(target), "HEAD", "--branches", "--tags"],
        repo.root,
        "backup",
    )
    return sorted(list_refs(repo).keys())


def list_refs(repo: GitRepo) -> dict[str, str]:
    """HEAD, branches and tags of ``repo`` with their commits (tags peeled to what they name)."""
    out = _run(
        ["for-each-ref", "--format=%(refname) %(objectname)", "refs/heads", "refs/tags"],
        repo.root,
        "backup",
    )
    refs = {}
    for line in out.splitlines():
        name, _, sha = line.partition(" ")
        refs[name] = sha
    head = repo.refs.head().sha
    if head:
        refs["HEAD"] = head
    return refs


def commit_list(repo_dir: Path) -> list[str]:
    """Every commit reachable from any ref or HEAD, with its tree, sorted: two repositories
    with equal lists hold the same history (the ids cover every byte of every commit)."""
    out = _run(["rev-list", "--all", "--format=%H %T", "--no-commit-header"], repo_dir, "history")
    return sorted(out.split("\n")[:-1]) if out else []


def verify_bundle(path: Path) -> BundleInfo:
    """Check a bundle completely: header, ``git bundle verify``, and every object fetched into a
    scratch repository with fsck on. InvalidData (exit 5) names what is wrong."""
    try:
        with open(path, "rb") as handle:
            header = handle.read(20)
    except OSError as exc:
        raise InvalidData(f"{path}: cannot read: {exc.strerror}") from exc
    if not any(header.startswith(h) for h in _HEADERS):
        raise InvalidData(f"{path}: not a git bundle")
    with tempfile.TemporaryDirectory(prefix="hystate-verify-") as scratch:
        work = Path(scratch)
        _run(["init", "--quiet", "--bare", str(work)], work, "verify")
        try:
            _run(["bundle", "verify", "--quiet", str(path.resolve())], work, "verify")
            listed = _run(["bundle", "list-heads", str(path.resolve())], work, "verify")
            _run(
                [
                    "-c",
                    "transfer.fsckObjects=true",
                    "fetch",
                    "--quiet",
                    str(path.resolve()),
                    "refs/*:refs/*",
                    # HEAD may name commits on no branch (detached): keep them for the count
                    *(["HEAD:refs/bundle/HEAD"] if " HEAD\n" in f"{listed}\n" else []),
                ],
                work,
                "verify",
            )
        except GitError as exc:
            raise InvalidData(f"{path}: damaged or incomplete bundle ({exc.message})") from exc
        refs = {}
        for line in listed.splitlines():
            sha, _, name = line.partition(" ")
            refs[name] = sha
        if not refs:
            raise InvalidData(f"{path}: the bundle holds no refs")
        _run(["fsck", "--full", "--no-dangling", "--no-progress"], work, f"{path}")
        count = len(commit_list(work))
    return BundleInfo(refs, count, refs.get("HEAD"))


def clone_bundle(path: Path, target: Path, info: BundleInfo) -> GitRepo:
    """A working (non-bare) repository at ``target`` holding every branch and tag of the bundle,
    HEAD on the branch the bundle's HEAD names, the work tree checked out; no remote is left
    pointing at the bundle file."""
    source = str(path.resolve())
    _run(["init", "--quiet", str(target)], target.parent, "restore")
    _run(
        [
            "fetch",
            "--quiet",
            "--update-head-ok",
            source,
            "refs/heads/*:refs/heads/*",
            "refs/tags/*:refs/tags/*",
        ],
        target,
        "restore",
    )
    if info.head is not None:
        branches = sorted(
            (
                name
                for name, sha in info.refs.items()
                if name.startswith("refs/heads/") and sha == info.head
            ),
            key=lambda name: (name not in ("refs/heads/main", "refs/heads/master"), name),
        )
        if branches:
            _run(["symbolic-ref", "HEAD", branches[0]], target, "restore")
        else:  # a detached HEAD: its commits may be on no branch, so fetch them too
            _run(["fetch", "--quiet", source, "HEAD"], target, "restore")
            _run(["update-ref", "--no-deref", "HEAD", info.head], target, "restore")
        _run(["reset", "--hard", "--quiet", "HEAD"], target, "restore")
    return GitRepo.discover(target)
