"""The project's own processed/: the real catalog, made by `hystate discover` (read only)."""

from __future__ import annotations

import collections
from pathlib import Path

from hystate.core.store import EpisodeStore

PROCESSED = Path(__file__).resolve().parents[2] / "processed"


def test_the_real_catalog_is_525_valid_episodes() -> None:
    store = EpisodeStore(PROCESSED, PROCESSED.parent)
    paths = list(store.iter_paths())
    assert len(paths) == 525
    problems = [p for path in paths for p in store.load(path)[2]]
    assert problems == []
    years = collections.Counter(path.parent.name for path in paths)
    assert min(years) == "2004" and max(years) == "2019" and years["2004"] == 17
    dateless = store.find("hooting-yard-live")
    assert dateless is not None and dateless.parent.name == "2008"  # the year comes from the date
