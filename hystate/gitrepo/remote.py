"""A shared remote: fetch, push, how far apart two commits are, and moving the checkout
forward to a new commit the way git does. Git plumbing only; what the commits mean is decided
elsewhere (``hystate.sync``).

- ``fetch`` brings the remote's branch into ``refs/remotes/<remote>/<branch>`` and every node's
  published ref under ``refs/hystate/<kind>/*`` into ``refs/hystate/remote-<kind>/*``.
- ``push`` is a plain push of a commit to the branch: the server accepts it only as a
  fast-forward of its current tip, so it is compare-and-swap by nature; a rejection is
  ``False`` (fetch and replay again), an unreachable server is ``Unreachable`` (exit 7).
- ``fast_forward`` moves the checkout from HEAD ``old`` to ``new``: git's own two-tree checkout
  (``read-tree -m -u``) computes the index and writes the changed files (refusing to overwrite
  a person's local changes), run on a private copy of the index while hystate holds
  ``index.lock``; the branch moves compare-and-swap before the lock is renamed over the index,
  the same order as every hystate commit (``commit.py``).
"""

from __future__ import annotations

import os
import random
import re
import stat
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from hystate.errors import GitError
from hystate.gitrepo import index as index_mod
from hystate.gitrepo import lockfile
from hystate.gitrepo.objects import EXEC_MODE, FILE_MODE, Tree
from hystate.gitrepo.refs import Head, StaleHead

if TYPE_CHECKING:
    from hystate.gitrepo.repo import GitRepo

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_UNREACHABLE = (
    "could not read from remote",
    "connection refused",
    "unable to connect",
    "unable to access",
    "could not resolve host",
    "timed out",
    "connection reset",
    "broken pipe",
    "the remote end hung up",
    "does not appear to be a git repository",
    "early eof",
    "unexpected disconnect",
    "protocol error",
)
# a concurrent fetch (a person's `git pull`) updating the same tracking ref: not a failure
_LOCAL_REF_RACE = ("cannot lock ref", "unable to update local ref")
LOCAL_REF_RACES = 8
STAMP = "last-fetch"
REGULAR_MODES = (FILE_MODE, EXEC_MODE)  # a file's modes; not a symlink, submodule or folder


class Unreachable(GitError):
    """The remote could not be reached (or answered garbage): work offline, sync later."""


@dataclass(frozen=True)
class CommitInfo:
    sha: str
    tree: bytes
    parents: tuple[str, ...]
    author: bytes  # the whole ``author`` line's value, date included
    message: bytes


def check_name(name: str, what: str = "remote") -> str:
    if not _NAME.match(name):
        raise GitError(f"invalid {what} name {name[:60]!r}")
    return name


def tracking_ref(remote: str, branch: str) -> str:
    return f"refs/remotes/{remote}/{branch}"


def branch_of(repo: GitRepo) -> str:
    head = repo.refs.head()
    if head.ref is None or not head.ref.startswith("refs/heads/"):
        raise GitError(f"{repo.root}: HEAD is detached", hint="check out the state branch")
    return head.ref.removeprefix("refs/heads/")


def has_remote(repo: GitRepo, remote: str) -> bool:
    return bool(repo.git("config", "--get", f"remote.{remote}.url", check=False).strip())


def _run(repo: GitRepo, args: list[str], timeout: float) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_SSH_COMMAND": _ssh_command()}
    try:
        return subprocess.run(
            ["git", *args],
            cwd=repo.root,
            capture_output=True,
            timeout=timeout,
            check=False,
            env=env,
        )
    except subprocess.TimeoutExpired as exc:
        raise Unreachable(f"git {args[0]}: no answer from the remote in {timeout:g} s") from exc


def _ssh_command() -> str:
    # never ask for a password on a terminal: a worker has nobody to answer
    return os.environ.get("GIT_SSH_COMMAND") or "ssh -o BatchMode=yes"


def _last_line(proc: subprocess.CompletedProcess[bytes]) -> str:
    """git's reason in one line: its first ``fatal:``/``error:`` line (with the next one when
    it ends in a colon), else its last line; credentials in URLs redacted."""
    lines = [ln.strip() for ln in proc.stderr.decode(errors="replace").splitlines() if ln.strip()]
    if not lines:
        return f"exit status {proc.returncode}"
    first = next((i for i, ln in enumerate(lines) if ln.startswith(("fatal:", "error:"))), None)
    if first is None:
        text = lines[-1]
    else:
        text = lines[first]
        if text.endswith(":") and first + 1 < len(lines):
            text += " " + lines[first + 1]
    return redact(text)[:300]


_URL_USERINFO = re.compile(r"(://)[^\s/@'\"]+@")
_USER_PASSWORD = re.compile(r"(?<![\w.:-])[^\s/@'\":]+:[^\s/@'\"]+@")


def redact(text: str) -> str:
    """``scheme://user:token@host`` and ``user:password@host`` without the secret."""
    return _USER_PASSWORD.sub("***@", _URL_USERINFO.sub(r"\1***@", text))


def _unreachable(proc: subprocess.CompletedProcess[bytes]) -> bool:
    text = proc.stderr.decode(errors="replace").lower()
    return any(marker in text for marker in _UNREACHABLE)


def fetch(
    repo: GitRepo, remote: str, branch: str, timeout: float, kinds: tuple[str, ...] = ()
) -> str | None:
    """Fetch ``branch`` (and the nodes' ``refs/hystate/<kind>/*``); the remote's tip, or None
    when the remote has no such branch yet."""
    specs = [f"+refs/heads/{branch}:{tracking_ref(remote, branch)}"]
    specs += [f"+refs/hystate/{k}/*:refs/hystate/remote-{k}/*" for k in kinds]
    # --prune: a ref a node no longer publishes (or a bad one removed) goes here too
    prune = ["--prune"] if kinds else []
    for attempt in range(LOCAL_REF_RACES):
        proc = _run(
            repo,
            ["fetch", "--quiet", "--no-tags", "--no-write-fetch-head", *prune, remote, *specs],
            timeout,
        )
        text = proc.stderr.decode(errors="replace")
        if proc.returncode == 0 or not any(m in text for m in _LOCAL_REF_RACE):
            break
        time.sleep(min(0.05 * 2**attempt, 1.0))  # a person's `git fetch` held the ref: again
    if proc.returncode != 0:
        message = _last_line(proc)
        if "couldn't find remote ref" in message.lower():
            return None
        if _unreachable(proc):
            raise Unreachable(f"remote {remote} unreachable: {message}")
        raise GitError(f"git fetch {remote} failed: {message}")
    stamp = repo.git_dir / "hystate" / STAMP
    stamp.parent.mkdir(exist_ok=True)
    stamp.write_text(f"{remote}\n")
    return repo.refs.resolve(tracking_ref(remote, branch))


def last_fetch(repo: GitRepo) -> str | None:
    """When the last fetch by hystate ended (ISO 8601, UTC), or None."""
    try:
        mtime = (repo.git_dir / "hystate" / STAMP).stat().st_mtime
    except OSError:
        return None
    return datetime.fromtimestamp(mtime, UTC).isoformat(timespec="seconds")


def push(
    repo: GitRepo, remote: str, sha: str, ref: str, timeout: float, *, force: bool = False
) -> bool:
    """Push commit ``sha`` to ``ref`` on the remote. True: the remote took it; False: rejected
    (not a fast-forward of the remote's tip, or another push held the ref); Unreachable."""
    spec = f"{'+' if force else ''}{sha}:{ref}"
    proc = _run(repo, ["push", "--porcelain", "--quiet", remote, spec], timeout)
    out = proc.stdout.decode(errors="replace")
    status = next(
        (
            ln
            for ln in out.splitlines()
            if ln.endswith(ref) or f"\t{sha}:{ref}\t" in ln or f":{ref}\t" in ln
        ),
        "",
    )
    if proc.returncode == 0:
        return True
    if status.startswith("!"):
        return False  # [rejected] (fetch first / non-fast-forward) or [remote rejected] (lock)
    if _unreachable(proc):
        raise Unreachable(f"remote {remote} unreachable: {_last_line(proc)}")
    raise GitError(f"git push {remote} failed: {_last_line(proc)}")


def set_ref(repo: GitRepo, ref: str, sha: str) -> None:
    """Point a ref hystate owns (a remote-tracking one after a push) at ``sha``."""
    repo.git("update-ref", ref, sha)


def ahead_behind(repo: GitRepo, mine: str, theirs: str) -> tuple[int, int]:
    """(commits in ``mine`` not in ``theirs``, commits in ``theirs`` not in ``mine``)."""
    out = repo.git("rev-list", "--left-right", "--count", f"{mine}...{theirs}").split()
    return int(out[0]), int(out[1])


def is_ancestor(repo: GitRepo, older: str, newer: str) -> bool:
    return (
        subprocess.run(
            ["git", "merge-base", "--is-ancestor", older, newer],
            cwd=repo.root,
            capture_output=True,
            check=False,
        ).returncode
        == 0
    )


def merge_base(repo: GitRepo, a: str, b: str) -> str | None:
    return repo.git("merge-base", a, b, check=False).strip() or None


def commits_between(repo: GitRepo, base: str | None, head: str) -> list[CommitInfo]:
    """Commits of ``base..head``, oldest first."""
    rev = f"{base}..{head}" if base else head
    shas = repo.git("rev-list", "--reverse", "--topo-order", rev).split()
    return [commit_info(repo, sha) for sha in shas]


def commit_info(repo: GitRepo, sha: str) -> CommitInfo:
    kind, data = repo.objects.read(bytes.fromhex(sha))
    if kind != b"commit":
        raise GitError(f"object {sha} is not a commit")
    header, _, message = data.partition(b"\n\n")
    tree = b""
    parents: list[str] = []
    author = b""
    for line in header.split(b"\n"):
        key, _, value = line.partition(b" ")
        if key == b"tree":
            tree = bytes.fromhex(value.decode())
        elif key == b"parent":
            parents.append(value.decode())
        elif key == b"author":
            author = value
    return CommitInfo(sha, tree, tuple(parents), author, message)


def write_commit(repo: GitRepo, tree: bytes, parent: str, author: bytes, message: bytes) -> str:
    """A commit of ``tree`` on ``parent`` keeping ``author`` (name, email, date) and the
    message; the committer is this repository's identity, now (as a rebase does)."""
    committer = repo.settings.committer().line()
    body = b"tree %s\nparent %s\nauthor %s\ncommitter %s\n\n%s" % (
        tree.hex().encode(),
        parent.encode(),
        author,
        committer,
        message,
    )
    commit = repo.objects.write(b"commit", body)
    repo.objects.remember_commit(commit, tree)
    return commit.hex()


def fast_forward(repo: GitRepo, old: Head, new: str, reason: str) -> None:
    """Move the checkout from ``old`` (HEAD as read) to commit ``new``: files and index as
    ``git checkout`` would leave them, the branch compare-and-swap. StaleHead when HEAD is no
    longer ``old``; GitError naming the file when a local change would be overwritten."""
    repo.check_writable()
    repo.settings.refresh()
    if old.sha is None:
        raise GitError("the branch has no commit yet: clone the remote instead")
    owners = lockfile.owners_dir(repo.common_dir)
    with index_mod.IndexLock(repo.git_dir, owners, repo.lock_wait, repo.index_memo) as lock:
        if repo.refs.head() != old:
            raise StaleHead(old.ref or "HEAD")
        try:
            lock.stage_with_git(
                ["read-tree", "-m", "-u", old.sha, new],
                repo.root,
                _already_there(repo, old.sha, new),
            )
        except GitError as exc:
            local = any(m in exc.message for m in ("overwritten", "not uptodate", "untracked"))
            raise GitError(
                f"cannot move the checkout to the remote's state: {exc.message}",
                hint=(
                    "commit or stash your changes to those files, then sync again"
                    if local
                    else "git will not check that commit out here: mend the remote's branch"
                ),
            ) from None
        committer = repo.settings.committer().line()
        repo.refs.update(old, new, committer, f"hystate sync: {reason}", repo.settings.reflog)
        try:
            lock.commit()
        except OSError as exc:
            repo.warnings.append(f"the branch moved, but git's index was not updated: {exc}")


def _already_there(repo: GitRepo, old: str, new: str) -> list[str]:
    """Paths ``old..new`` changes that the work tree already holds as ``new`` has them (a
    regular file with the same blob and mode, or absent where ``new`` deletes it): what a
    move forward killed after git wrote the files and before the branch moved leaves behind.
    The checkout takes them as they are instead of refusing them as local changes."""
    objects = repo.objects
    old_tree, new_tree = (objects.commit_tree(bytes.fromhex(sha)) for sha in (old, new))
    changed = objects.diff(old_tree, new_tree)
    if not changed:
        return []
    staged = _index_entries(repo, changed)
    found = []
    for rel in changed:
        before = objects.lookup(old_tree, rel)
        if staged.get(rel) != (None if before is None else (before[0], before[1].hex())):
            continue  # a person staged something there: git's checkout decides
        entry = objects.lookup(new_tree, rel)
        try:
            st = os.lstat(repo.root / rel)
        except (FileNotFoundError, NotADirectoryError):
            if entry is None:
                found.append(rel)
            continue
        except OSError:
            continue
        if entry is None or not stat.S_ISREG(st.st_mode) or entry[0] not in REGULAR_MODES:
            continue
        if (entry[0] == EXEC_MODE) != bool(st.st_mode & 0o100) or st.st_size > 64 << 20:
            continue
        try:
            data = (repo.root / rel).read_bytes()
        except OSError:
            continue
        if repo.blob_id(rel, data) == entry[1]:
            found.append(rel)
    return found


def _index_entries(repo: GitRepo, rels: list[str]) -> dict[str, tuple[bytes, str]]:
    """(mode, blob sha) of each of ``rels`` in git's index (stage 0), absent when not there."""
    specs = [f":(literal){r}" for r in rels] if len(rels) <= 1000 else []  # argv stays short
    out = repo.git_bytes("ls-files", "-s", "-z", "--", *specs).decode("utf-8", "surrogateescape")
    entries = {}
    for item in out.split("\0"):
        meta, _, rel = item.partition("\t")
        parts = meta.split()
        if len(parts) == 3 and parts[2] == "0":
            entries[rel] = (parts[0].encode(), parts[1])
    return entries


def publish_blob_ref(repo: GitRepo, data: bytes, name: str) -> str:
    """A parentless commit holding ``name`` = ``data`` (a node's own table, replaced every time:
    it never enters the branch's history); its sha."""
    blob = repo.objects.write(b"blob", data)
    tree = repo.objects.write_tree(Tree([]).with_changes({name.encode(): (FILE_MODE, blob)}))
    ident = repo.settings.committer().line()
    body = b"tree %s\nauthor %s\ncommitter %s\n\n%s\n" % (
        tree.hex().encode(),
        ident,
        ident,
        name.encode(),
    )
    return repo.objects.write(b"commit", body).hex()


def ref_files(repo: GitRepo, prefix: str, name: str) -> dict[str, bytes]:
    """``name`` in the commit of every ref under ``prefix`` (e.g. the fetched lease tables),
    keyed by the ref's last part."""
    out = repo.git("for-each-ref", "--format=%(refname) %(objectname)", prefix, check=False)
    found = {}
    for line in out.splitlines():
        ref, _, sha = line.partition(" ")
        try:
            tree = repo.objects.commit_tree(bytes.fromhex(sha))
            entry = repo.objects.lookup(tree, name)
            if entry is not None:
                found[ref.rpartition("/")[2]] = repo.objects.read(entry[1])[1]
        except (GitError, ValueError):
            continue
    return found


def wait_backoff(attempt: int) -> None:
    """After a rejected push: a short random pause (full jitter), so that nodes racing for the
    branch spread out; capped low, as a longer pause only lets the others win again."""
    time.sleep(random.uniform(0, min(0.02 * 2**attempt, 0.3)))
