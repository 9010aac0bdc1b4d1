"""Making a commit the way git makes one (see ``repo.GitRepo.commit``): the blobs ``git add``
would store, the trees along the changed paths, the commit object (by ``git commit-tree`` when
git must sign it or parse dates), HEAD moved compare-and-swap, all under ``index.lock``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from hystate.core.errors import GitError
from hystate.git import index as index_mod
from hystate.git import lockfile
from hystate.git.objects import EXEC_MODE, FILE_MODE, object_id
from hystate.git.refs import Head, StaleHead
from hystate.git.settings import Identity

if TYPE_CHECKING:
    from hystate.git.base import RepoBase


def make_commit(repo: RepoBase, files: Mapping[str, bytes], message: str) -> str | None:
    """See ``GitRepo.commit``."""
    repo.check_writable()
    repo.settings.refresh()
    owners = lockfile.owners_dir(repo.common_dir)
    with index_mod.IndexLock(repo.git_dir, owners, repo.lock_wait, repo.index_memo) as lock:
        entries = _entries(repo, files)
        updates = [
            index_mod.Update(rel.encode(), sha, int(mode, 8), os.stat(repo.root / rel))
            for rel, (mode, sha) in entries.items()
        ]
        lock.stage(updates, repo.root)
        sha = _commit_head(repo, entries, message)
        try:
            lock.commit()
        except OSError as exc:  # HEAD has moved: the transition is done; say what is not
            repo.warnings.append(f"the commit is made, but git's index was not updated: {exc}")
    return sha


def _entries(repo: RepoBase, files: Mapping[str, bytes]) -> dict[str, tuple[bytes, bytes]]:
    """(mode, blob sha) of each file as ``git add`` would store it."""
    if repo.plain_attributes(files):
        shas = {rel: repo.objects.write(b"blob", data) for rel, data in files.items()}
    else:
        shas = _hash_with_git(repo, list(files), write=True)
        for rel, data in files.items():
            if shas[rel] != object_id(b"blob", data):
                raise GitError(
                    f"git's attributes would store {rel} other than as written (a filter, "
                    "ident or working-tree-encoding applies to it): refused, so HEAD never "
                    "holds a state hystate cannot read back",
                    hint="remove that attribute for the state files (`hystate init` pins them)",
                )
    head = repo.head_tree() if not repo.settings.trust_file_mode() else None
    entries = {}
    for rel, sha in shas.items():
        if head is None:
            executable = os.stat(repo.root / rel).st_mode & 0o100
        else:
            old = repo.objects.lookup(head, rel)
            executable = old is not None and old[0] == EXEC_MODE
        entries[rel] = (EXEC_MODE if executable else FILE_MODE, sha)
    return entries


def blob_id(repo: RepoBase, rel: str, data: bytes) -> bytes:
    """The sha git would store for ``data`` at ``rel`` (its attributes applied)."""
    if repo.plain_attributes([rel]):
        return object_id(b"blob", data)
    proc = repo.run_input(["hash-object", f"--path={rel}", "--stdin"], data)
    return bytes.fromhex(proc.decode().strip())


def _hash_with_git(repo: RepoBase, rels: list[str], *, write: bool) -> dict[str, bytes]:
    if any("\n" in rel for rel in rels):
        raise GitError("a path with a line break cannot be committed by hystate")
    args = ["hash-object", *(["-w"] if write else []), "--stdin-paths"]
    out = repo.run_input(args, "".join(f"{rel}\n" for rel in rels).encode()).decode().split()
    if len(out) != len(rels):
        raise GitError("git hash-object answered an unexpected number of objects")
    return {rel: bytes.fromhex(sha) for rel, sha in zip(rels, out, strict=True)}


def _commit_head(
    repo: RepoBase, entries: Mapping[str, tuple[bytes, bytes]], message: str
) -> str | None:
    settings = repo.settings
    author, committer = settings.author(), settings.committer()
    subject = message.split("\n", 1)[0]
    for _ in range(50):
        head = repo.refs.head()
        base = repo.head_tree(head)
        tree = repo.objects.rewrite(base, entries)
        if tree == base:
            return None
        if settings.sign() or settings.dates_from_env():
            commit = _commit_with_git(repo, tree, head, message, author, committer)
        else:
            body = b"tree %s\n" % tree.hex().encode()
            if head.sha:
                body += b"parent %s\n" % head.sha.encode()
            body += b"author %s\ncommitter %s\n\n%s" % (
                author.line(),
                committer.line(),
                message.encode(),
            )
            commit = repo.objects.write(b"commit", body)
        repo.objects.remember_commit(commit, tree)
        sha = commit.hex()
        try:
            repo.refs.update(head, sha, committer.line(), f"commit: {subject}", settings.reflog)
        except StaleHead:
            continue
        return sha
    raise GitError("HEAD kept moving while hystate tried to commit; try again")


def _commit_with_git(
    repo: RepoBase, tree: bytes, head: Head, message: str, author: Identity, committer: Identity
) -> bytes:
    """``git commit-tree``: git signs (commit.gpgSign) and parses GIT_*_DATE itrepo."""
    args = ["commit-tree", tree.hex()]
    if head.sha:
        args += ["-p", head.sha]
    if repo.settings.sign():
        args.append("-S")
    env = {
        "GIT_AUTHOR_NAME": author.name,
        "GIT_AUTHOR_EMAIL": author.email,
        "GIT_COMMITTER_NAME": committer.name,
        "GIT_COMMITTER_EMAIL": committer.email,
    }
    return bytes.fromhex(repo.run_input(args, message.encode(), env).decode().strip())
