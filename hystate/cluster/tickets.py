"""Claims on per-episode refs (``sync.claims: refs``, docs/SYNC.md "Claims on their own refs").

Every move of an episode (a claim, a person's ``skip`` of a waiting episode, a retry out of
``failed``, and leaving an active stage too: done, failed, a take-over) takes the episode's
*ticket*: the remote's ``refs/hystate/claims/<id>``, set compare-and-swap to the very commit that
made the move. Pushes to different refs never race, so nodes claiming different episodes do not
wait for one another; the branch follows later, carrying many moves per push
(``hystate.cluster.sync`` pushes it atomically with the tickets of any move not ticketed yet).

Why the branch cannot drop such a move: a node takes a ticket only when the ticket it knows is
already in its own view of the episode (``integrated``), and sets it only if the remote's
ticket is still that one. So nothing moved the episode on the remote since the node's view:
the node's move is legal on whatever the branch holds, and a replay re-applies it. Leaving an
active stage takes the ticket as well: a take-over (``fsck --repair``, ``--force``) and the old
holder finishing are two moves out of the same stage, and only one of them may hold the ticket
(else the holder's next claim, ticketed on top of its finish, could never be replayed on the
take-over's branch). A node's moves of an episode waiting for the ticket take it at once, by
the latest (``plan``); a ticket holds the moves before it (its replay carries them).

Any node's sync replays onto the branch every ticket whose move is not there yet (``ahead_of``),
its own and other nodes': one push carries the claims of all nodes, and a ticket whose node went
away before it pushed the branch still reaches it (nobody could claim the episode meanwhile),
so an acknowledged claim is never dropped. All of a node's ticket
pushes are made under its sync lock (``hystate.cluster.batch``), so a rejected ticket is
another node's, never a push of this node still in flight.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import TYPE_CHECKING, Any

from hystate.cluster.replay import Move
from hystate.core.errors import GitError
from hystate.core.paths import write_atomic
from hystate.core.yamlio import YAMLError, load
from hystate.git import audit, checkout
from hystate.git import remote as gr

if TYPE_CHECKING:
    from hystate.core.model import EpisodeState
    from hystate.engine.workspace import Workspace

KIND = "claims"
PUSHED = "refs/hystate/claims/"
TRACKED = "refs/hystate/remote-claims/"
FLUSH_AFTER = 4.0  # seconds a ticketed move may wait for the branch before a claim pushes it
FLUSH_COUNT = 32  # ticketed moves off the branch that make a claim push it at once
LOST = "another node took the episode's ticket first (refs/hystate/claims): withdrawn"
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*$")
_HISTORIES: dict[tuple[str, str], list[Any] | None] = {}  # (commit, id): the file's history
HISTORIES = 4096  # histories kept at most (a long-lived process, ``hystate serve``, claims on)
# (clone, commit): moves whose ticket this node saw hold them, and commits that are no move:
# ``plan`` looks at them no more (a claiming process plans over every commit off the branch,
# many when the node's turn to push it is far: ``ticket_claims._due``)
_SETTLED: set[tuple[str, str]] = set()
SEEN = "tickets-seen.json"  # the tickets whose move this node saw on the branch
WALK = 10_000  # commits walked back from a ticket for the moves of its episode it builds on


def on(ws: Workspace) -> bool:
    """Whether moves through the shared remote take tickets (``sync.claims: refs``)."""
    return bool(ws.config.get("sync.claims") == "refs")


def name(episode_id: str) -> str:
    """The ticket's last ref component: the id itself when git takes it as one."""
    if _SAFE.match(episode_id) and not episode_id.endswith(".lock") and len(episode_id) < 200:
        return episode_id
    return "sha1-" + hashlib.sha1(episode_id.encode()).hexdigest()


def known(ws: Workspace, episode_id: str) -> str | None:
    """The remote's ticket of the episode as this node last saw it (a fetch, or its own push)."""
    return ws.repo.refs.resolve(TRACKED + name(episode_id))


def history(ws: Workspace, sha: str, episode_id: str) -> list[Any] | None:
    """The episode's history in commit ``sha`` (a move of it: the file the commit changed),
    None if the commit has no readable episode file of that id."""
    key = (sha, episode_id)
    if key not in _HISTORIES:
        if len(_HISTORIES) >= HISTORIES:
            _HISTORIES.clear()
        _HISTORIES[key] = _read_history(ws, sha, episode_id)
    return _HISTORIES[key]


def entry(ws: Workspace, sha: str, episode_id: str) -> dict[str, Any] | None:
    """The history entry the move of commit ``sha`` made (its episode file's last)."""
    found = history(ws, sha, episode_id)
    last = found[-1] if found else None
    return last if isinstance(last, dict) else None


def _read_history(ws: Workspace, sha: str, episode_id: str) -> list[Any] | None:
    objects = ws.repo.objects
    try:
        info = gr.commit_info(ws.repo, sha)
        parent = objects.commit_tree(bytes.fromhex(info.parents[0])) if info.parents else None
        path = _path(ws, parent, info.tree, episode_id)
        return _history_at(ws, info.tree, path)
    except (GitError, ValueError):
        return None


def _history_at(ws: Workspace, tree: bytes, path: str | None) -> list[Any] | None:
    objects = ws.repo.objects
    found = objects.lookup(tree, path) if path else None
    if found is None or found[0] not in checkout.REGULAR_MODES:
        return None
    try:
        doc = load(objects.read(found[1])[1])
    except (YAMLError, UnicodeDecodeError):
        return None
    history = doc.get("history") if isinstance(doc, dict) else None
    return history if isinstance(history, list) else None


def _path(ws: Workspace, parent: bytes | None, tree: bytes, episode_id: str) -> str | None:
    end = f"/{episode_id}.yaml"
    prefix = ws.rel_state_dir.rstrip("/") + "/"
    for path in ws.repo.objects.diff(parent, tree):
        if path.endswith(end) and path.startswith(prefix):
            return path
    return None


def integrated(ws: Workspace, episode_id: str, history: list[Any]) -> tuple[bool, str | None]:
    """Whether the ticket this node knows is in ``history`` (the episode as the move starts
    from it), so the move may take the ticket from it; and that ticket (None: none yet)."""
    sha = known(ws, episode_id)
    if sha is None:
        return True, None
    made = entry(ws, sha, episode_id)
    return made is not None and made in history, sha


def ahead(ws: Workspace, episode: EpisodeState) -> bool:
    """Whether another move of the episode holds its ticket and is not in this view yet."""
    return not integrated(ws, episode.episode_id, episode.history)[0]


def is_mine(ws: Workspace, episode_id: str, made: dict[str, Any]) -> bool:
    """Whether the ticket as last seen holds the move that made history entry ``made``: it is
    that move, or a later move of the episode whose history has it (a replay of the ticket
    carries the moves before it, ``ahead_of``)."""
    sha = known(ws, episode_id)
    found = history(ws, sha, episode_id) if sha is not None else None
    return found is not None and made in found


def take(
    ws: Workspace,
    remote: str,
    moves: list[tuple[str, str, str | None]],
    branch: tuple[str, str, str | None] | None = None,
    leases: tuple[str, str] | None = None,
) -> bool:
    """Push the tickets ``(episode id, commit, expected ticket)``, each compare-and-swap: each
    on its own, or, with ``branch`` (``(commit, ref, expected tip)``), all of them and the
    branch in one atomic push. True: all landed. Otherwise the tickets are fetched again, so
    the next ``plan`` knows which moves lost theirs to another node. ``leases``: the node's
    lease table (``(sha, ref)``), force-pushed along."""
    updates = [(sha, PUSHED + name(eid), expect) for eid, sha, expect in moves]
    if branch is not None:
        updates.append(branch)
    answers = gr.push_refs(
        ws.repo, remote, updates, _timeout(ws), atomic=branch is not None, forced=leases
    )
    taken = [(eid, sha) for eid, sha, _ in moves if answers[PUSHED + name(eid)]]
    gr.set_refs(ws.repo, [(TRACKED + name(eid), sha) for eid, sha in taken])
    if len(taken) < len(moves):
        fetch(ws, remote)
    return all(answers[ref] for _, ref, _ in updates)


def push_branch(
    ws: Workspace,
    remote: str,
    new: str,
    ref: str,
    tip: str | None,
    moves: list[tuple[str, str, str | None]],
) -> bool:
    """Push ``new`` onto the branch ``ref`` (compare-and-swap on ``tip``), with the tickets of
    ``moves`` in the same atomic push: all land, or none."""
    if not moves:
        return gr.push(ws.repo, remote, new, ref, _timeout(ws), expect=tip)
    return take(ws, remote, moves, branch=(new, ref, tip))


def fetch(ws: Workspace, remote: str) -> None:
    """Bring every ticket the remote holds (and their commits)."""
    gr.fetch_kind(ws.repo, remote, KIND, _timeout(ws))


def _timeout(ws: Workspace) -> float:
    return float(ws.config.get("sync.timeout"))


def plan(
    ws: Workspace, commits: list[gr.CommitInfo]
) -> tuple[list[str], list[tuple[str, str, str | None]]]:
    """Of ``commits`` (this node's, not on the branch yet), the moves whose ticket this node
    has not set: those that may take it now (``(episode id, commit, expected ticket)``: one
    per episode, its latest move, whose history holds the others), and the commits of those
    that no longer may (another move holds the ticket, not in this one's view: to withdraw)."""
    lost: list[str] = []
    latest: dict[str, str] = {}
    ok: dict[str, bool] = {}  # (the episode's first move not ticketed decides for all)
    clone = str(ws.repo.common_dir)
    if len(_SETTLED) >= HISTORIES:
        _SETTLED.clear()
    for commit in commits:
        if (clone, commit.sha) in _SETTLED:
            continue
        move = _move(commit.message)
        if move is None or move[1] is None or not _known(move[1]):
            _SETTLED.add((clone, commit.sha))
            continue
        eid = move[0]
        after = history(ws, commit.sha, eid)
        if not after or is_mine(ws, eid, after[-1]):
            _SETTLED.add((clone, commit.sha))  # (a ticket that holds a move holds it for good)
            continue
        if eid not in ok:
            ok[eid] = integrated(ws, eid, after[:-1])[0]
        if ok[eid]:
            latest[eid] = commit.sha
        else:
            lost.append(commit.sha)
    moves = [(eid, sha, known(ws, eid)) for eid, sha in latest.items()]
    return lost, moves


def with_branch(ws: Workspace, info: gr.CommitInfo) -> bool:
    """Whether the move of commit ``info`` enters a stage with ``limits``: its ticket is taken
    only together with the branch (``hystate.cluster.sync``), where the limit is judged
    against every node's moves; a ticket alone would acknowledge a move the branch may
    refuse (the stage filled by another node's claims meanwhile)."""
    from hystate.core.model import ProcessingStage
    from hystate.engine import limits

    try:
        stage = ProcessingStage(_trailers(info.message).get(audit.TO, ""))
    except ValueError:
        return False
    return limits.limited(ws, stage)


def move_of(info: gr.CommitInfo) -> Move | None:
    """What a transition commit of another node says it did (its trailers)."""
    values = _trailers(info.message)
    if not (values.get(audit.EPISODE) and values.get(audit.FROM) and values.get(audit.TO)):
        return None
    return Move(
        values[audit.EPISODE],
        values[audit.FROM],
        values[audit.TO],
        values.get(audit.WORKER),
        values.get(audit.LEASE),
    )


def _trailers(message: bytes) -> dict[str, str]:
    """The ``Hystate-*`` trailers of a commit message (its last paragraph)."""
    block = message.decode(errors="replace").rstrip("\n").rpartition("\n\n")[2]
    values: dict[str, str] = {}
    for line in block.splitlines():
        key, sep, value = line.partition(": ")
        if sep and key.startswith("Hystate-"):
            values[key] = value.strip()
    return values


def _move(message: bytes) -> tuple[str, str | None] | None:
    """(episode id, stage it left) from a transition commit's trailers."""
    values = _trailers(message)
    if audit.EPISODE not in values or audit.TO not in values:
        return None
    before = values.get(audit.FROM)
    return values[audit.EPISODE], (None if before in (None, "", "none", "null") else before)


def _known(stage: str) -> bool:
    from hystate.core.model import ProcessingStage

    try:
        ProcessingStage(stage)
    except ValueError:
        return False  # (not a stage hystate knows: nothing to ticket)
    return True


def ahead_of(ws: Workspace, tip: str | None) -> list[gr.CommitInfo]:
    """The tickets, as last fetched, whose move is not on the branch at ``tip`` yet (any
    node's: a sync carries them all, so a node that went away after taking a ticket leaves
    nothing behind), each after the moves of its episode it builds on that the branch lacks
    (its node's, made before it without a ticket of their own): to replay onto the branch,
    tickets oldest first. A ticket whose move is on the branch is not looked at again
    (``.git/hystate/tickets-seen.json``)."""
    if tip is None:
        return []
    path = ws.repo.git_dir / "hystate" / SEEN
    try:
        seen = json.loads(path.read_bytes())
        if not isinstance(seen, list):
            seen = []
    except (OSError, ValueError):
        seen = []
    done = set(seen)
    tree = ws.repo.objects.commit_tree(bytes.fromhex(tip))
    kept = []
    found = []
    for ref, sha in gr.refs_under(ws.repo, TRACKED):
        if sha not in done:
            chain = _orphan(ws, tree, sha, ref[len(TRACKED) :])
            if chain:
                found.append(chain)
                continue
        kept.append(sha)  # on the branch (or no move): never looked at again
    if set(kept) != done:
        write_atomic(path, json.dumps(kept).encode(), sync=False)
    ordered: dict[str, gr.CommitInfo] = {}
    for chain in sorted(found, key=lambda c: when(c[-1])):
        ordered.update((info.sha, info) for info in chain if info.sha not in ordered)
    return list(ordered.values())


def _orphan(ws: Workspace, tree: bytes, sha: str, ticket: str) -> list[gr.CommitInfo]:
    """The ticket's commit, after the moves of its episode before it that are not in ``tree``
    either (oldest first); none if the ticket's move is in ``tree``, or is no move of the
    episode the ticket is named after."""
    try:
        info = gr.commit_info(ws.repo, sha)
    except GitError:
        return []
    move = _move(info.message)
    if move is None or name(move[0]) != ticket:
        return []
    made = entry(ws, sha, move[0])
    if made is None:
        return []
    objects = ws.repo.objects
    parent = objects.commit_tree(bytes.fromhex(info.parents[0])) if info.parents else None
    here = _history_at(ws, tree, _path(ws, parent, info.tree, move[0])) or []
    if made in here:
        return []
    return _chain(ws, info, move[0], here)[::-1]


def _chain(ws: Workspace, info: gr.CommitInfo, eid: str, here: list[Any]) -> list[gr.CommitInfo]:
    """``info`` and the moves of ``eid`` among its ancestors, newest first, back to where
    the episode's history is all in ``here`` (the branch's)."""
    chain = [info]
    before = (history(ws, info.sha, eid) or [])[:-1]
    for _ in range(WALK):
        if all(e in here for e in before) or not info.parents:
            break
        try:
            info = gr.commit_info(ws.repo, info.parents[0])
        except GitError:
            break
        move = _move(info.message)
        if move is None or move[0] != eid:
            if not here and _creates(ws, info, eid):
                chain.append(info)  # (a discovery of several episodes, the branch lacks it)
                break
            continue
        found = history(ws, info.sha, eid)
        if not found:
            break
        if found[-1] not in here:
            chain.append(info)
        before = found[:-1]
    return chain


def _creates(ws: Workspace, info: gr.CommitInfo, eid: str) -> bool:
    """Whether commit ``info`` made the episode's file."""
    objects = ws.repo.objects
    try:
        parent = objects.commit_tree(bytes.fromhex(info.parents[0])) if info.parents else None
        path = _path(ws, parent, info.tree, eid)
        return path is not None and (parent is None or objects.lookup(parent, path) is None)
    except (GitError, ValueError):
        return False


def when(info: gr.CommitInfo) -> float:
    """The ticket's commit time (its author date: kept by every replay)."""
    try:
        return float(info.author.rsplit(b" ", 2)[1])
    except (IndexError, ValueError):
        return 0.0
