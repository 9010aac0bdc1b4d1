"""Where this node stands against its shared remote, as of the last fetch (no network): commits
ahead and behind, for ``hystate status``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hystate.core.errors import GitError
from hystate.git import remote as gr

if TYPE_CHECKING:
    from hystate.engine.workspace import Workspace


def status(ws: Workspace) -> dict[str, Any] | None:
    """How far this node is from the remote, as of the last fetch (no network)."""
    repo = ws.repo
    try:
        branch = gr.branch_of(repo)
    except GitError:
        return None
    name = (
        ws.sync_remote
        or repo.git("config", "--get", f"branch.{branch}.remote", check=False).strip()
    )
    if not name or name == ".":
        return None
    tip = repo.refs.resolve(gr.tracking_ref(name, branch))
    head = repo.refs.head().sha
    ahead, behind = (0, 0)
    if head and tip:
        ahead, behind = gr.ahead_behind(repo, head, tip)
    elif head:
        ahead = len(repo.git("rev-list", head).split())
    return {
        "remote": name,
        "branch": branch,
        "ahead": ahead,
        "behind": behind,
        "as_of": gr.last_fetch(repo),
        "note": "as of the last fetch; `hystate sync` fetches and pushes",
    }


def describe_status(info: dict[str, Any]) -> str:
    when = (
        f"as of the last fetch ({info['as_of']})" if info["as_of"] else "never fetched by hystate"
    )
    return (
        f"remote {info['remote']}/{info['branch']}: {info['ahead']} commit(s) ahead, "
        f"{info['behind']} behind, {when}"
    )
