"""Leases across hosts, without polluting history.

Renewals never commit (``hystate.engine.leases``): a node's renewals live in its ``.locks/*.lease``
files. To make them visible to the other nodes, each node publishes its table of live leases
as a parentless commit on its own ref, ``refs/hystate/leases/<node>``, force-pushed (only its
own ref, replaced every time: the branch's history never sees it). ``hystate sync`` fetches
every node's ref into ``refs/hystate/remote-leases/<node>``; ``leases.current_lease`` then
judges an episode by the latest deadline any node published for the same lease (same stage,
same start), so ``fsck --repair`` on any node recovers an episode only once its lease has
expired everywhere.

The node's name: ``HYSTATE_NODE``, else ``git config hystate.node``, else the host name plus a
short hash of the clone's path (several clones on one host stay apart).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hystate.core.errors import HystateError
from hystate.core.model import parse_time
from hystate.git import remote as gr

if TYPE_CHECKING:
    from hystate.engine.workspace import Workspace

KIND = "leases"
FILE = "leases.json"
_BAD = re.compile(r"[^A-Za-z0-9._-]+")
_CACHE: dict[str, tuple[float, dict[str, list[dict[str, Any]]]]] = {}
CACHE_SECONDS = 1.0
MAX_TABLE = 4 << 20  # bytes of another node's table read at most (a lease is ~250 bytes)


_NAMES: dict[tuple[str, str], str] = {}  # (clone, $HYSTATE_NODE): the configured name


def node_name(ws: Workspace) -> str:
    env = os.environ.get("HYSTATE_NODE", "")
    key = (str(ws.repo.common_dir), env)
    if key not in _NAMES:  # one `git config` per clone and process (a claim asks each time)
        _NAMES[key] = env or ws.repo.git("config", "--get", "hystate.node", check=False).strip()
    name = _NAMES[key]
    if not name:
        digest = hashlib.sha1(str(ws.repo.common_dir).encode()).hexdigest()[:6]
        name = f"{socket.gethostname()}-{digest}"
    cleaned = _BAD.sub("-", name).replace("..", "-").strip(".-")[:100]
    if cleaned.endswith(".lock"):  # git refuses such a ref name (and "..")
        cleaned = cleaned[: -len(".lock")] + "-lock"
    return cleaned or "node"


def table(ws: Workspace) -> dict[str, Any]:
    """This node's live leases (the renewals in its ``.locks/``), keyed by episode."""
    now = datetime.now(UTC)
    leases: dict[str, Any] = {}
    for path in sorted(ws.locks_dir.glob("*.lease")):
        try:
            data = json.loads(path.read_bytes())
            if now > parse_time(str(data["expires_at"])):
                continue
            leases[path.name[: -len(".lease")]] = {
                k: data.get(k)
                for k in ("stage", "entered_at", "worker", "expires_at", "renewed_at")
            }
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return leases


def publish(
    ws: Workspace,
    remote: str,
    timeout: float,
    *,
    only_if_changed: bool = False,
    quiet: bool = False,
) -> bool:
    """Force-push this node's lease table to its own ref; best effort (False: not pushed)."""
    if not quiet:  # (a claim publishes quietly and spares the git process; sync tells)
        _tell_if_shared(ws, node_name(ws), clone_id(ws))
    try:
        update = prepare(ws, remote, only_if_changed)
        if update is None:
            return True  # (before any git process: a claim publishes each time)
        sha, ref, digest = update
        if not gr.push(ws.repo, remote, sha, ref, timeout, force=True):
            return False
    except HystateError as exc:
        if not quiet:
            ws.notice(f"leases not published ({exc})")
        return False
    published(ws, digest)
    return True


def prepare(ws: Workspace, remote: str, only_if_changed: bool) -> tuple[str, str, str] | None:
    """This node's lease table as a commit to force-push: ``(sha, ref, digest)``; None when
    ``only_if_changed`` and it is the table last published (``published(ws, digest)``)."""
    table_doc = {"node": node_name(ws), "clone": clone_id(ws), "leases": table(ws)}
    data = json.dumps(table_doc, sort_keys=True, indent=1).encode()
    digest = hashlib.sha1(remote.encode() + b"\0" + data).hexdigest()
    try:
        if only_if_changed and _stamp(ws).read_text() == digest:
            return None
    except OSError:
        pass
    sha = gr.publish_blob_ref(ws.repo, data, FILE)
    return sha, f"refs/hystate/{KIND}/{node_name(ws)}", digest


def published(ws: Workspace, digest: str) -> None:
    stamp = _stamp(ws)
    stamp.parent.mkdir(exist_ok=True)
    stamp.write_text(digest)


def _stamp(ws: Workspace) -> Path:
    return ws.repo.git_dir / "hystate" / "leases-published"


def _tell_if_shared(ws: Workspace, node: str, clone: str) -> None:
    other = _published_by(ws, node)
    if other is not None and other != clone:  # two clones overwrite each other's table
        ws.notice(
            f"another clone published leases as node {node!r} too (or this clone replaced it):"
            " give each clone its own name (`git config hystate.node NAME`)"
        )


def clone_id(ws: Workspace) -> str:
    """A random id of this clone (kept in ``.git/hystate``), told apart from a node name
    another clone was given by mistake."""
    path = ws.repo.git_dir / "hystate" / "clone-id"
    try:
        found = path.read_text().strip()
        if re.fullmatch(r"[0-9a-f]{16}", found):
            return found
    except OSError:
        pass
    made = os.urandom(8).hex()
    path.parent.mkdir(exist_ok=True)
    path.write_text(made + "\n")
    return made


def _published_by(ws: Workspace, node: str) -> str | None:
    """The clone id in the table last fetched from ``node``'s ref, if any."""
    raw = gr.ref_files(ws.repo, f"refs/hystate/remote-{KIND}/{node}", FILE).get(node)
    if raw is None or len(raw) > MAX_TABLE:
        return None
    try:
        clone = json.loads(raw).get("clone")
    except (ValueError, AttributeError, RecursionError):
        return None
    return clone if isinstance(clone, str) else None


def remote_leases(ws: Workspace) -> dict[str, list[dict[str, Any]]]:
    """Every node's published leases (as last fetched), by episode. What another node
    published is checked like any input: a table too large or nested too deep, or an entry
    without a stage, a start and an instant with its offset as the deadline, is left out."""
    key = str(ws.repo.common_dir)
    cached = _CACHE.get(key)
    if cached is not None and time.monotonic() - cached[0] < CACHE_SECONDS:
        return cached[1]
    found: dict[str, list[dict[str, Any]]] = {}
    for node, raw in gr.ref_files(ws.repo, f"refs/hystate/remote-{KIND}/", FILE).items():
        if len(raw) > MAX_TABLE:
            continue
        try:
            leases = json.loads(raw).get("leases", {})
        except (ValueError, AttributeError, RecursionError):
            continue
        if not isinstance(leases, dict):
            continue
        for episode_id, entry in leases.items():
            checked = _checked(entry)
            if checked is not None:
                found.setdefault(str(episode_id), []).append({**checked, "node": node})
    _CACHE[key] = (time.monotonic(), found)
    return found


def _checked(entry: Any) -> dict[str, Any] | None:
    """A published lease entry with the fields ``latest`` compares, or None."""
    if not isinstance(entry, dict):
        return None
    out: dict[str, Any] = {}
    for name in ("stage", "entered_at", "expires_at", "renewed_at", "worker"):
        value = entry.get(name)
        if isinstance(value, str) and len(value) <= 200 and value.isprintable():
            out[name] = value
        elif name in ("stage", "entered_at", "expires_at"):
            return None
        else:
            out[name] = None
    for name in ("expires_at", "renewed_at"):
        if out[name] is None:
            continue
        try:
            aware = parse_time(out[name]).tzinfo is not None
        except ValueError:
            aware = False
        if not aware:
            if name == "expires_at":
                return None
            out[name] = None
    return out


def latest(ws: Workspace, episode_id: str, stage: str, entered_at: str) -> dict[str, Any] | None:
    """The published renewal of this very lease with the latest deadline, or None."""
    best: dict[str, Any] | None = None
    for entry in remote_leases(ws).get(episode_id, []):
        if entry.get("stage") != stage or entry.get("entered_at") != entered_at:
            continue
        try:
            deadline = parse_time(str(entry["expires_at"]))
        except (KeyError, TypeError, ValueError):
            continue
        if best is None or deadline > parse_time(str(best["expires_at"])):
            best = entry
    return best
