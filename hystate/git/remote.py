"""A shared remote: fetch, push, how far apart two commits are, replayed commits. Git plumbing
only; what the commits mean is decided elsewhere (``hystate.cluster.sync``); moving the checkout
forward to the result is ``gitrepo.checkout``.

- ``fetch`` brings the remote's branch into ``refs/remotes/<remote>/<branch>`` and every node's
  published ref under ``refs/hystate/<kind>/*`` into ``refs/hystate/remote-<kind>/*``.
- ``push`` is a plain push of a commit to the branch: the server accepts it only as a
  fast-forward of its current tip, so it is compare-and-swap by nature; a rejection is
  ``False`` (fetch and replay again), an unreachable server is ``Unreachable`` (exit 7), and
  a refusal no retry can change (a hook, a protected branch) a ``GitError`` with its reason.
"""

from __future__ import annotations

import random
import re
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from hystate.core.errors import GitError
from hystate.git import gitcmd
from hystate.git.objects import FILE_MODE
from hystate.git.transport import Unreachable as Unreachable
from hystate.git.transport import last_line as _last_line
from hystate.git.transport import redact as redact
from hystate.git.transport import run as _run
from hystate.git.transport import unreachable as _unreachable
from hystate.git.trees import Tree

if TYPE_CHECKING:
    from hystate.git.repo import GitRepo

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
# a concurrent fetch (a person's `git pull`) updating the same tracking ref: not a failure
_LOCAL_REF_RACE = ("cannot lock ref", "unable to update local ref")
LOCAL_REF_RACES = 8
STAMP = "last-fetch"
LOOSE = 5000  # objects a fetch of other nodes' claims stores loose (git's default: 100)
# a [remote rejected] another push caused (the server held or moved the ref meanwhile)
_RACED = ("lock", "failed to update ref", "stale info", "incorrect old value")


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


def fetch(
    repo: GitRepo,
    remote: str,
    branch: str,
    timeout: float,
    kinds: tuple[str, ...] = (),
    *,
    loose: bool = False,
) -> str | None:
    """Fetch ``branch`` (and the nodes' ``refs/hystate/<kind>/*``); the remote's tip, or None
    when the remote has no such branch yet. ``loose``: what arrives is stored as loose objects
    (``LOOSE``), which hystate reads without a git process."""
    # no "+": a branch rewritten on the remote (a forced push) is not taken silently
    specs = [f"refs/heads/{branch}:{tracking_ref(remote, branch)}"]
    specs += [f"+refs/hystate/{k}/*:refs/hystate/remote-{k}/*" for k in kinds]
    # --prune: a ref a node no longer publishes (or a bad one removed) goes here too
    prune = ["--prune"] if kinds else []
    args = ["fetch", "--no-progress", "--no-tags", "--no-write-fetch-head", *prune, remote]
    if loose:
        args = ["-c", f"fetch.unpackLimit={LOOSE}", *args]
    for attempt in range(LOCAL_REF_RACES):
        proc = _run(repo, [*args, *specs], timeout)
        text = proc.stderr.decode(errors="replace")
        if proc.returncode == 0 or not any(m in text for m in _LOCAL_REF_RACE):
            break
        time.sleep(min(0.05 * 2**attempt, 1.0))  # a person's `git fetch` held the ref: again
    if proc.returncode != 0:
        message = _last_line(proc)
        if "couldn't find remote ref" in message.lower():
            return None
        if "non-fast-forward" in proc.stderr.decode(errors="replace"):
            raise GitError(
                f"{remote}'s {branch} was rewritten (it no longer holds what this node last "
                "saw there): transitions acknowledged there may be gone",
                hint=f"find out who forced it; to build on it anyway: `git fetch {remote} "
                f"+{branch}:{tracking_ref(remote, branch)}`, then sync",
            )
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
    repo: GitRepo,
    remote: str,
    sha: str,
    ref: str,
    timeout: float,
    *,
    force: bool = False,
    expect: str | None = None,
) -> bool:
    """Push commit ``sha`` to ``ref`` on the remote. True: the remote took it; False: rejected
    (not a fast-forward of the remote's tip, or another push held the ref, or with ``expect``
    the remote's ref is not exactly that commit: a compare-and-swap on the very tip the push
    was built on, so a branch rewritten since the last fetch is never pushed onto);
    Unreachable."""
    spec = f"{'+' if force else ''}{sha}:{ref}"
    lease = [f"--force-with-lease={ref}:{expect}"] if expect else []
    proc = _run(repo, ["push", "--porcelain", "--quiet", *lease, remote, spec], timeout)
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
        reason = status.rpartition("\t")[2]
        if "[remote rejected]" not in reason or any(m in reason for m in _RACED):
            return False  # [rejected] (fetch first / non-fast-forward), or another push's lock
        lines = proc.stderr.decode(errors="replace").splitlines()
        said = [ln[7:].strip() for ln in lines if ln.startswith("remote:")]
        told = next((ln for ln in said if ln and ln.isprintable()), "")  # the server's "remote:"
        raise GitError(
            f"remote {remote} refused the push: {redact(reason)}"
            + (f": {redact(told)[:200]}" if told else ""),
            hint="no retry changes that: see the server's hooks or branch protection",
        )
    if _unreachable(proc):
        raise Unreachable(f"remote {remote} unreachable: {_last_line(proc)}")
    raise GitError(f"git push {remote} failed: {_last_line(proc)}")


def push_refs(
    repo: GitRepo,
    remote: str,
    updates: list[tuple[str, str, str | None]],
    timeout: float,
    *,
    atomic: bool = False,
    forced: tuple[str, str] | None = None,
) -> dict[str, bool]:
    """Push several refs in one connection, each compare-and-swap: ``(sha, ref, expect)``
    sets ``ref`` to commit ``sha`` only if the remote's ``ref`` is ``expect`` (None: only if
    it does not exist). Each ref is taken or rejected on its own, or, ``atomic``, all or none
    (``git push --atomic``); ``forced`` (``(sha, ref)``, a node's own ref) is replaced
    whatever it was. The answer per ref: True taken, False rejected (not as expected, or
    another push held it); Unreachable; a refusal no retry changes is a GitError."""
    leases = [f"--force-with-lease={ref}:{expect or ''}" for _, ref, expect in updates]
    specs = [f"{sha}:{ref}" for sha, ref, _ in updates]  # (a "+" would override the lease)
    if forced is not None:
        specs.append(f"+{forced[0]}:{forced[1]}")
    flags = ["--atomic"] if atomic else []
    proc = _run(repo, ["push", "--porcelain", *flags, *leases, remote, *specs], timeout)
    out = proc.stdout.decode(errors="replace")
    answers: dict[str, bool] = {}
    refused = []
    wanted = {r for _, r, _ in updates} | ({forced[1]} if forced else set())
    for line in out.splitlines():
        flag, _, rest = line.partition("\t")
        spec, _, reason = rest.partition("\t")
        ref = spec.rpartition(":")[2]
        if ref not in wanted:
            continue
        answers[ref] = flag in ("*", "+", " ", "-", "=")
        held = "atomic" in reason or any(m in reason for m in _RACED)
        if flag == "!" and "[remote rejected]" in reason and not held:
            refused.append(reason)
    if refused:
        raise GitError(
            f"remote {remote} refused the push: {redact(refused[0])}",
            hint="no retry changes that: see the server's hooks or branch protection",
        )
    if len(answers) < len(wanted):
        if _unreachable(proc) or proc.returncode not in (0, 1):
            raise Unreachable(f"remote {remote} unreachable: {_last_line(proc)}")
        raise GitError(f"git push {remote} failed: {_last_line(proc)}")
    return answers


def fetch_kind(repo: GitRepo, remote: str, kind: str, timeout: float) -> None:
    """Fetch the remote's ``refs/hystate/<kind>/*`` alone into ``refs/hystate/remote-<kind>/*``
    (refs gone from the remote are pruned)."""
    spec = f"+refs/hystate/{kind}/*:refs/hystate/remote-{kind}/*"
    args = ["fetch", "--no-progress", "--no-tags", "--no-write-fetch-head", "--prune", remote]
    proc = _run(repo, ["-c", f"fetch.unpackLimit={LOOSE}", *args, spec], timeout)
    if proc.returncode != 0:
        if _unreachable(proc):
            raise Unreachable(f"remote {remote} unreachable: {_last_line(proc)}")
        raise GitError(f"git fetch {remote} failed: {_last_line(proc)}")


def set_refs(repo: GitRepo, refs: list[tuple[str, str]]) -> None:
    """Point several refs only hystate writes at their shas (no git process)."""
    for ref, sha in refs:
        repo.refs.set_own(ref, sha)


def refs_under(repo: GitRepo, prefix: str) -> list[tuple[str, str]]:
    """``(ref, sha)`` of every local ref under ``prefix`` (read from the ref files: no git
    process)."""
    return repo.refs.under(prefix)


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
            gitcmd.argv("merge-base", "--is-ancestor", older, newer),
            cwd=repo.root,
            env=repo.env(),
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
    message; the committer is this repository's identity, now (as a rebase does). With
    ``commit.gpgSign`` git makes it and signs it, as a rebase would."""
    if repo.settings.sign():
        return _signed_commit(repo, tree, parent, author, message)
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


def _signed_commit(repo: GitRepo, tree: bytes, parent: str, author: bytes, message: bytes) -> str:
    """``git commit-tree -S`` with the author line taken apart into git's variables."""
    ident, seconds, zone = author.rsplit(b" ", 2)
    name, _, email = ident.partition(b" <")
    committer = repo.settings.committer()
    env = {
        "GIT_AUTHOR_NAME": name.decode(errors="surrogateescape"),
        "GIT_AUTHOR_EMAIL": email.rstrip(b">").decode(errors="surrogateescape"),
        "GIT_AUTHOR_DATE": f"@{seconds.decode()} {zone.decode()}",
        "GIT_COMMITTER_NAME": committer.name,
        "GIT_COMMITTER_EMAIL": committer.email,
    }
    args = ["commit-tree", tree.hex(), "-p", parent, "-S"]
    commit = bytes.fromhex(repo.run_input(args, message, env).decode().strip())
    repo.objects.remember_commit(commit, tree)
    return commit.hex()


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
    found = {}
    for ref, sha in repo.refs.under(prefix):
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
