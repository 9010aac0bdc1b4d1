"""The remote's tip as this node's last landed push of the branch left it
(``.git/hystate/landed``, written by ``cluster.sync`` after every push that landed, whoever of
the node's processes made it): the commits after it on the remote are other nodes'
(``cluster.turns`` counts them to tell whether other nodes contend and had their turns)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hystate.engine.workspace import Workspace


def _path(ws: Workspace) -> str:
    return str(ws.repo.git_dir / "hystate" / "landed")


def note(ws: Workspace, sha: str) -> None:
    path = _path(ws)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(f"{path}.{os.getpid()}.tmp", "w") as fh:
            fh.write(sha)
        os.replace(f"{path}.{os.getpid()}.tmp", path)
    except OSError:
        pass  # best effort (fair turns only): a full disk must not fail the push that landed


def last(ws: Workspace) -> str | None:
    try:
        with open(_path(ws)) as fh:
            sha = fh.read(64).strip()
    except OSError:
        return None
    return sha if len(sha) in (40, 64) and all(c in "0123456789abcdef" for c in sha) else None
