"""``Finding``: one thing ``fsck`` found, and what it did about it (its JSON shape is part of
``hystate fsck --json``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class Finding:
    # uncommitted | reverted | temp-file | index-drift | stale-lock | stuck | orphan |
    # missing-media | invalid | cache | power-cut | group-commit
    kind: str
    path: str
    message: str
    repaired: bool = False
    action: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
