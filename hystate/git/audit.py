"""The audit format: what a state commit's message says, and reading it back.

A transition's commit has the subject ``<id>: <from> -> <to>``, the status message (or error) as
its body, and the trailers ``Hystate-Episode``, ``Hystate-From``, ``Hystate-To`` and
``Hystate-Worker``, so ``git log --grep`` and ``git log --format=%(trailers)`` answer audit
questions. A discovery batch lists its episode ids in the body, one a line, and carries
``Hystate-To: discovered`` and ``Hystate-Count``. Reading goes through git's own trailer parsing
(``%(trailers:key=…)``), never a hand-made one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hystate.git import GitRepo

EPISODE, FROM, TO, WORKER, COUNT, REAPPLIES = (
    "Hystate-Episode",
    "Hystate-From",
    "Hystate-To",
    "Hystate-Worker",
    "Hystate-Count",
    "Hystate-Reapplies",
)
_READ = (EPISODE, FROM, TO, WORKER)


def trailers(**values: str) -> str:
    """``Hystate-<Key>: value`` lines (``from_`` and ``from`` both give ``Hystate-From``)."""
    return "\n".join(
        f"Hystate-{key.strip('_').replace('_', '-').title()}: {value}"
        for key, value in values.items()
    )


def transition_message(
    episode_id: str, old: str, new: str, worker: str, body: str | None = None
) -> str:
    parts = [f"{episode_id}: {old} -> {new}"]
    if body:
        parts.append(body)
    parts.append(trailers(episode=episode_id, from_=old, to=new, worker=worker))
    return "\n\n".join(parts) + "\n"


def discover_message(ids: list[str], source: str | None, worker: str) -> str:
    subject = f"discover: {len(ids)} new episode{'s' if len(ids) != 1 else ''}"
    if len(ids) == 1:
        subject = f"{ids[0]}: new -> discovered"
    origin = f"from {source}\n\n" if source else ""
    listing = "\n".join(ids)
    tail = trailers(
        **({"episode": ids[0]} if len(ids) == 1 else {}),
        to="discovered",
        worker=worker,
        count=str(len(ids)),
    )
    return f"{subject}\n\n{origin}{listing}\n\n{tail}\n"


def reapply_message(
    episode_id: str,
    older: str,
    current: str,
    *,
    behind: int,
    commit: str,
    subject: str,
    worker: str,
) -> str:
    """fsck --repair's commit restoring transitions that a commit made without hystate
    reverted: ``Hystate-Reapplies`` names the reverting commit."""
    return (
        f"{episode_id}: re-apply {older} -> {current} (reverted by {commit[:8]})\n\n"
        f"Commit {commit} ({subject!r}) was made without hystate and put this "
        f"file back to an older state, reverting {behind} transition(s); this commit "
        "restores the file as it was before it.\n\n"
        + trailers(episode=episode_id, reapplies=commit, worker=worker)
        + "\n"
    )


@dataclass(frozen=True)
class Transition:
    """One episode's step as a commit records it."""

    sha: str
    episode_id: str
    from_stage: str | None
    to_stage: str


def transitions(repo: GitRepo, since: str | None = None, until: str = "HEAD") -> list[Transition]:
    """hystate's transitions committed after ``since`` (all when None) up to ``until``, oldest
    first; a discovery batch gives one per episode it names."""
    rev = f"{since}..{until}" if since else until
    found = []
    for sha, body, trail in repo.log(rev, ["%H", "%b"], trailer_keys=_READ, reverse=True):
        episode, old, new = trail[EPISODE], trail[FROM], trail[TO]
        if not new:
            continue
        if episode:
            found.append(Transition(sha, episode, old or None, new))
        elif new == "discovered":
            ids = [
                line for line in body.splitlines() if line and ":" not in line and " " not in line
            ]
            found.extend(Transition(sha, eid, None, new) for eid in ids)
    return found


@dataclass(frozen=True)
class FileCommit:
    """A commit that touched one episode file, with its audit trailers ("" where absent)."""

    sha: str
    author: str
    email: str
    time: str
    subject: str
    trailers: dict[str, str]

    @property
    def is_transition(self) -> bool:
        return bool(self.trailers.get(TO))


def file_commits(repo: GitRepo, rel: str) -> list[FileCommit]:
    """Every commit that touched ``rel``, oldest first."""
    rows = repo.log(
        "HEAD", ["%H", "%an", "%ae", "%aI", "%s"], trailer_keys=_READ, paths=[rel], reverse=True
    )
    return [FileCommit(*row) for row in rows]


def trailerless(repo: GitRepo, rev: str, path: str) -> list[tuple[str, str]]:
    """(sha, subject) of the commits in ``rev`` touching ``path`` without hystate's trailers
    (a transition's or a re-application's)."""
    rows = repo.log(rev, ["%H", "%s"], trailer_keys=(TO, REAPPLIES), paths=[path])
    return [(sha, subject) for sha, subject, trail in rows if not (trail[TO] or trail[REAPPLIES])]


def join(history: Sequence[dict[str, Any]], commits: Sequence[FileCommit]) -> list[dict[str, Any]]:
    """A file's own history entries joined with the commits that made them (sha, author, time,
    subject); commits without hystate's trailers (hand edits) become rows of their own."""
    rows: list[dict[str, Any]] = []
    pending = list(commits)
    for entry in history:
        row = dict(entry)
        for i, commit in enumerate(pending):
            to = commit.trailers.get(TO)
            if to == entry["to"] and commit.trailers.get(FROM) in (entry["from"], ""):
                rows.extend(_commit_row(c) for c in pending[:i])  # hand edits before it
                row.update(_commit_fields(commit))
                del pending[: i + 1]
                break
        rows.append(row)
    rows.extend(_commit_row(c) for c in pending)
    return rows


def _commit_fields(commit: FileCommit) -> dict[str, Any]:
    return {
        "commit": commit.sha,
        "author": f"{commit.author} <{commit.email}>",
        "committed_at": commit.time,
        "subject": commit.subject,
    }


def _commit_row(commit: FileCommit) -> dict[str, Any]:
    """A commit that touched the file without being one of its transitions."""
    return {"at": commit.time, "from": None, "to": None, "by": None, **_commit_fields(commit)}
