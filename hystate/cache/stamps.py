"""What an answer kept by ``hystate.cache.memo`` is stamped with: the cache's format, the code
that computed it, and the tree the cache's tables reflect (see ``memo``)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

from hystate.cache.tables import FORMAT_VERSION

if TYPE_CHECKING:
    from hystate.cache.db import CacheDB

__all__ = ["CODE", "FORMAT_VERSION", "code_stamp", "stamp"]

# the code that computes what is kept: another version of it (an upgrade, a branch of hystate
# run on the same repository) computes again instead of believing this one's answers
CODE: tuple[str, ...] = ("cache/memo.py", "cache/queries.py", "cache/forecast_queries.py")
CODE += ("cache/follow.py", "cache/training_text.py", "cache/stamps.py")
CODE += ("cache/tables.py", "reports/fit.py", "reports/trained.py", "core/model.py")
_code: list[str] = []


def code_stamp() -> str:
    """A hash of ``CODE``'s sources (read once per process); "" without them (nothing is
    kept then: what computed an answer could not be told apart)."""
    if not _code:
        digest = hashlib.sha256()
        root = Path(__file__).resolve().parent.parent
        try:
            for name in CODE:
                digest.update((root / name).read_bytes())
            _code.append(digest.hexdigest()[:16])
        except OSError:
            _code.append("")
    return _code[0]


def stamp(db: CacheDB) -> str | None:
    """What an answer kept for the cache's tables as they are now is stamped with."""
    meta = db.meta()
    tree = meta.get("tree")
    if meta.get("format") != FORMAT_VERSION or tree is None or not code_stamp():
        return None
    return f"{FORMAT_VERSION}:{code_stamp()}:{tree}"
