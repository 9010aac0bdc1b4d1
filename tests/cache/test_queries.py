"""Cache queries compare times as times: a history entry written with another UTC offset is
ordered and bounded by the instant it names, not by its text."""

from __future__ import annotations

from datetime import UTC, datetime

from hystate.cache import forecast_queries, queries
from hystate.core.store import dump
from hystate.core.yamlio import load
from hystate.manager import StateManager
from tests.conftest import git

# Text order: EARLY_TEXT < LATE_TEXT; time order: LATE_TEXT (03:00Z) < EARLY_TEXT (04:30Z).
EARLY_TEXT = "2036-01-01T23:30:00-05:00"
LATE_TEXT = "2036-01-02T03:00:00+00:00"
SINCE = datetime(2036, 1, 2, 4, 0, tzinfo=UTC)
EARLY = datetime(2036, 1, 2, 4, 30, tzinfo=UTC)


def _set_times(manager: StateManager, stamps: dict[str, str]) -> None:
    """A person's commit rewriting the discovery time of some episodes (valid: any offset)."""
    for episode_id, stamp in stamps.items():
        path = manager.path_of(episode_id)
        doc = load(path.read_bytes())
        doc["history"][0]["at"] = stamp
        doc["last_updated"] = stamp
        path.write_bytes(dump(doc))
    person = ("-c", "user.name=P", "-c", "user.email=p@x")
    git(manager.repo.root, *person, "commit", "-qam", "times with offsets", "--no-verify")


def test_events_are_bounded_and_ordered_by_instant(manager: StateManager) -> None:
    first, second = sorted(p.stem for p in manager.store.iter_paths())[:2]
    _set_times(manager, {first: EARLY_TEXT, second: LATE_TEXT})
    assert manager.validate() == []
    found = manager.events(since=SINCE.isoformat())
    assert [e["episode_id"] for e in found if e["episode_id"] in (first, second)] == [first]
    until = manager.events(until=SINCE.isoformat())
    assert [e["episode_id"] for e in until if e["episode_id"] in (first, second)] == [second]
    both = [e["episode_id"] for e in manager.events() if e["episode_id"] in (first, second)]
    assert both == [second, first]  # 03:00Z before 04:30Z, whatever the text says


def test_entries_since_and_the_newest_entry_by_instant(manager: StateManager) -> None:
    first, second = sorted(p.stem for p in manager.store.iter_paths())[:2]
    _set_times(manager, {first: EARLY_TEXT, second: LATE_TEXT})
    manager.refresh()
    assert queries.entered_span(manager.cache, ("discovered",), SINCE) == (1, EARLY, EARLY)
    day_before = datetime(2036, 1, 1, tzinfo=UTC)
    late = datetime(2036, 1, 2, 3, 0, tzinfo=UTC)
    assert queries.entered_span(manager.cache, ("discovered",), day_before) == (2, late, EARLY)
    assert len(manager.events()) == 20
    assert queries.last_entry_time(manager.cache) == EARLY  # not LATE_TEXT, the larger text


def test_entries_per_day_are_counted_by_utc_date_and_instant(manager: StateManager) -> None:
    first, second = sorted(p.stem for p in manager.store.iter_paths())[:2]
    _set_times(manager, {first: EARLY_TEXT, second: LATE_TEXT})
    manager.refresh()
    assert queries.entered_per_day(manager.cache, ("discovered",), SINCE) == [
        ("2036-01-02", "discovered", 1)  # 04:30Z counts; 03:00Z is before SINCE
    ]
    day_before = datetime(2036, 1, 1, tzinfo=UTC)
    # EARLY_TEXT's own date is 2036-01-01, its UTC date 2036-01-02
    assert queries.entered_per_day(manager.cache, ("discovered",), day_before) == [
        ("2036-01-02", "discovered", 2)
    ]


def test_an_unfinished_stream_does_not_break_the_next_query(manager: StateManager) -> None:
    """A Python caller taking a few episodes from ``stream_episodes`` and asking the manager
    something else in the same thread (iterator neither finished nor closed) gets answers."""
    stream = manager.stream_episodes()
    first = next(stream)
    assert manager.count_all_episodes() == 20
    assert next(e.episode_id for e in manager.list_episodes()) == first.episode_id
    assert len(list(stream)) == 19
    again = manager.stream_episodes()
    next(again)
    del again
    assert manager.count_by_stage()


def test_the_first_few_of_some_stages_are_the_first_of_all_of_them(manager: StateManager) -> None:
    """`next` reads each stage's first few from the index and merges them: the same episodes,
    in the same order, as sorting every episode of those stages."""
    ids = sorted(p.stem for p in manager.store.iter_paths())
    for i, episode_id in enumerate(ids[:12]):
        if i % 3 == 1:
            manager.skip(episode_id, "not wanted")
            continue
        manager.update_state(episode_id, "downloading")
        if i % 3 == 0:
            manager.fail(episode_id, "HTTP 503")
    manager.refresh()
    cache = manager.cache
    every = [e.episode_id for e in queries.episodes(cache)]
    years = sorted({e.episode_id[17:21] for e in queries.episodes(cache)})
    for stages in (["failed"], ["discovered", "failed"], ["skipped", "failed", "discovered"],
                   ["failed", "failed"], ["published"], ["downloading", "skipped"]):  # fmt: skip
        for chosen in ([], years[:1], years[1:3]):
            full = [e.episode_id for e in queries.episodes(cache, stages, chosen)]
            assert set(full) <= set(every)
            for limit in (0, 1, 2, 5, 30):
                first = [e.episode_id for e in queries.episodes(cache, stages, chosen, limit)]
                assert first == full[:limit], (stages, chosen, limit)


def test_a_large_group_gives_the_same_members_as_a_small_one(manager: StateManager) -> None:
    """A group more than 8 times the limit is read in id order, a smaller one sorted: both
    give the group's first members by id."""
    manager.refresh()
    ids = sorted(p.stem for p in manager.store.iter_paths())  # 20 discovered
    for limit in (1, 2, 3, 5, 20, 100):
        rows = forecast_queries.group_members(manager.cache, "discovered", None, (0, 0, 0), limit)
        assert [r[0] for r in rows] == ids[:limit]
    assert (
        forecast_queries.group_members(manager.cache, "failed", "downloading", (1, 0, 0), 1) == []
    )
