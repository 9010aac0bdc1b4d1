"""Making a commit the way git makes one (see ``repo.GitRepo.commit``): the blobs ``git add``
would store, the trees along the changed paths, the commit object (by ``git commit-tree`` when
git must sign it or parse dates), HEAD moved compare-and-swap, all under ``index.lock``."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from hystate.core.errors import GitError
from hystate.core.paths import read_open
from hystate.git import hooks
from hystate.git import index as index_mod
from hystate.git.objects import EXEC_MODE, FILE_MODE, FLUSH_EACH, FLUSH_SYNC, object_id
from hystate.git.refs import Head, StaleHead
from hystate.git.settings import Identity

if TYPE_CHECKING:
    from hystate.git.base import RepoBase


BULK = 32  # files in one commit past which blobs are flushed together, not one by one


def make_commit(
    repo: RepoBase,
    files: Mapping[str, bytes],
    message: str,
    expect: Mapping[str, bytes | None] | None = None,
) -> str | None:
    """See ``GitRepo.commit``."""
    repo.check_writable()
    repo.settings.refresh()
    sync = durability(repo)
    bulk = len(files) > BULK and "loose-object" in sync
    repo.objects.fsync = None if bulk else sync.get("loose-object")
    if not bulk:  # the commit's few objects synced together, in place before HEAD moves
        repo.objects.defer(object_flush(repo))
    try:
        with repo.index_lock() as lock:
            # Only what is stat-ed and read back here, under index.lock, is vouched for in
            # the index: a person's stash, restore or checkout since the write is never hidden.
            stats = {rel: read_back(repo, rel, data) for rel, data in files.items()}
            entries = _entries(repo, files, stats)
            if bulk:  # one flush for a batch's blobs (a discovery), as core.fsyncMethod=batch
                os.sync()
                repo.objects.fsync = sync["loose-object"]
            updates = [
                index_mod.Update(rel.encode(), sha, int(mode, 8), stats[rel])
                for rel, (mode, sha) in entries.items()
            ]
            lock.stage(updates, repo.root)
            sha = _commit_head(repo, entries, message, expect or {}, sync.get("reference"))
            try:
                lock.commit(sync.get("index"))
                hooks.run_hook(repo, "post-index-change", ["0", "0"])  # as git after the index
            except OSError as exc:  # HEAD has moved: the transition is done; say what is not
                repo.warnings.append(f"the commit is made, but git's index was not updated: {exc}")
    finally:
        repo.objects.abandon()  # objects of a commit that was not made: never put in place
    return sha


def read_back(
    repo: RepoBase, rel: str, data: bytes, same_as: Callable[[bytes], bool] | None = None
) -> os.stat_result:
    """The stat data of the work-tree file ``rel``, which must hold exactly ``data`` (or what
    ``same_as`` accepts), read and compared now, unchanged while read; GitError when it does
    not: nothing is committed."""
    try:
        fd = os.open(repo.root / rel, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise GitError(f"{rel} cannot be read back for the commit: {exc.strerror}") from None
    try:
        before, content, after = read_open(fd)
    finally:
        os.close(fd)
    stable = (before.st_mtime_ns, before.st_ctime_ns, before.st_size) == (
        after.st_mtime_ns,
        after.st_ctime_ns,
        after.st_size,
    )
    if not stable or not (same_as(content) if same_as else content == data):
        raise GitError(
            f"{rel} was changed by someone else after hystate wrote it (git stash, restore or "
            "checkout, or an editor): nothing committed, the file is left as it is",
            hint="run the command again",
        )
    return before


def durability(repo: RepoBase) -> dict[str, str]:
    """Component (``loose-object``, ``index``, ``reference``) -> the call that syncs it
    (``fsync``, or ``fdatasync`` for core.fsyncMethod=writeout-only), for those
    ``GitSettings.fsync`` says are synced."""
    call = "fdatasync" if repo.settings.fsync_method() == "writeout-only" else "fsync"
    return dict.fromkeys(repo.settings.fsync(), call)


def object_flush(repo: RepoBase) -> str:
    """How a commit's objects are flushed before HEAD moves: each fsynced in turn, or one
    ``os.sync()`` for all where ``core.fsyncMethod=batch`` asks git's batch mode (one flush
    per batch of objects; docs/INDEX_FLOOR.md, section 7, has the trade-off)."""
    return FLUSH_SYNC if repo.settings.fsync_method() == "batch" else FLUSH_EACH


def _entries(
    repo: RepoBase,
    files: Mapping[str, bytes],
    stats: Mapping[str, os.stat_result] | None = None,
) -> dict[str, tuple[bytes, bytes]]:
    """(mode, blob sha) of each file as ``git add`` would store it (``stats``: the files'
    stat data as just read back, else they are stat-ed)."""
    if repo.plain_attributes(files):
        shas = {rel: repo.objects.write(b"blob", data) for rel, data in files.items()}
    else:
        shas = {rel: object_id(b"blob", data) for rel, data in files.items()}
        store_with_git(repo, shas)
    return with_modes(repo, shas, stats)


def store_with_git(repo: RepoBase, shas: Mapping[str, bytes]) -> None:
    """``git hash-object -w`` of every file (git's attributes applied): refused when git would
    store any of them other than as written (blob ids ``shas``)."""
    stored = _hash_with_git(repo, list(shas), write=True)
    for rel, sha in shas.items():
        if stored[rel] != sha:
            raise GitError(
                f"git's attributes would store {rel} other than as written (a filter, "
                "ident or working-tree-encoding applies to it): refused, so HEAD never "
                "holds a state hystate cannot read back",
                hint="remove that attribute for the state files (`hystate init` pins them)",
            )


def with_modes(
    repo: RepoBase,
    shas: Mapping[str, bytes],
    stats: Mapping[str, os.stat_result] | None = None,
) -> dict[str, tuple[bytes, bytes]]:
    """(mode, blob sha) of each file: its executable bit as ``git add`` keeps it (from the
    file, its ``stats`` when given, or from HEAD's tree where core.fileMode is false)."""
    head = repo.head_tree() if not repo.settings.trust_file_mode() else None
    entries = {}
    for rel, sha in shas.items():
        if head is None:
            known = stats.get(rel) if stats else None
            mode = known.st_mode if known is not None else os.stat(repo.root / rel).st_mode
            executable = mode & 0o100
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
    repo: RepoBase,
    entries: Mapping[str, tuple[bytes, bytes]],
    message: str,
    expect: Mapping[str, bytes | None],
    sync: str | None = None,
) -> str | None:
    settings = repo.settings
    author, committer = settings.author(), settings.committer()
    subject = message.split("\n", 1)[0]
    for _ in range(50):
        head = repo.refs.head()
        base = repo.head_tree(head)
        _check_base(repo, head, base, expect)
        tree = repo.objects.rewrite(base, entries)
        if tree == base:
            return None
        commit = commit_object(repo, tree, head.sha, message, author, committer)
        repo.objects.remember_commit(commit, tree)
        sha = commit.hex()
        repo.objects.publish()  # every object on disk and in place before HEAD names them
        try:
            warnings = repo.refs.update(
                head, sha, committer.line(), f"commit: {subject}", settings.reflog, sync
            )
        except StaleHead:
            continue
        repo.warnings += warnings
        return sha
    raise GitError("HEAD kept moving while hystate tried to commit; try again")


def _check_base(
    repo: RepoBase, head: Head, base: bytes | None, expect: Mapping[str, bytes | None]
) -> None:
    """Each file of ``expect`` must still have, in HEAD, the blob the change was made from:
    a commit of it by someone else meanwhile (a person's ``git commit -a``) is never taken
    for this one."""
    for rel, blob in expect.items():
        found = repo.objects.lookup(base, rel)
        if (None if found is None else found[1]) != blob:
            raise GitError(
                f"{rel} was committed by someone else (HEAD is now {(head.sha or '')[:8]}) "
                "while hystate waited to commit it: nothing committed by hystate",
                hint="`hystate history` shows that commit; run the command again if still wanted",
            )


def commit_object(
    repo: RepoBase,
    tree: bytes,
    parent: str | None,
    message: str,
    author: Identity,
    committer: Identity,
) -> bytes:
    """The commit object of ``tree`` on ``parent``, stored; its binary sha."""
    if repo.settings.sign() or repo.settings.dates_from_env():
        repo.objects.publish()  # git reads the tree
        return _commit_with_git(repo, tree, parent, message, author, committer)
    body = b"tree %s\n" % tree.hex().encode()
    if parent:
        body += b"parent %s\n" % parent.encode()
    body += b"author %s\ncommitter %s\n\n%s" % (
        author.line(),
        committer.line(),
        message.encode(),
    )
    return repo.objects.write(b"commit", body)


def _commit_with_git(
    repo: RepoBase,
    tree: bytes,
    parent: str | None,
    message: str,
    author: Identity,
    committer: Identity,
) -> bytes:
    """``git commit-tree``: git signs (commit.gpgSign) and parses GIT_*_DATE itself."""
    args = ["commit-tree", tree.hex()]
    if parent:
        args += ["-p", parent]
    if repo.settings.sign():
        args.append("-S")
    env = {
        "GIT_AUTHOR_NAME": author.name,
        "GIT_AUTHOR_EMAIL": author.email,
        "GIT_COMMITTER_NAME": committer.name,
        "GIT_COMMITTER_EMAIL": committer.email,
    }
    return bytes.fromhex(repo.run_input(args, message.encode(), env).decode().strip())
