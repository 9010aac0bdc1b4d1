"""Kept answers carried from tree to tree (``hystate.cache.follow``): after any change (a
transition here, one by another process, a person's commits with plain git, a rebuild), what
the cache carried for the new tree equals what a cache rebuilt from that tree computes."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from hystate.cache import follow, forecast_queries, training_text
from hystate.cache.state_cache import StateCache
from hystate.manager import StateManager
from hystate.reports import fit, summary, trained
from tests.conftest import git, run_hystate

PERSON = ("-c", "user.name=P", "-c", "user.email=p@x", "-c", "core.hooksPath=/dev/null")
NEXT = {
    "discovered": "downloading",
    "downloading": "downloaded",
    "downloaded": "converting",
    "converting": "converted",
    "converted": "uploading",
    "uploading": "uploaded",
    "uploaded": "scheduled",
    "scheduled": "published",
    "failed": "downloading",
}


def memo_rows(cache: StateCache) -> dict[str, Any]:
    """The kept answers for the tree the cache reflects now (each kept as ``json.dumps``
    writes it: the training set carried in its text too)."""
    with cache.connect() as db:
        tree = db.meta()["tree"]
        try:
            found = db.db.execute("SELECT name, stamp, value FROM memo").fetchall()
        except Exception:  # no memo table
            return {}
    for name, _, value in found:
        assert value == json.dumps(json.loads(value)), name
    return {name: json.loads(value) for name, stamp, value in found if stamp.endswith(tree)}


def rebuilt(manager: StateManager, other: StateCache, now: datetime) -> dict[str, Any]:
    """Every answer ``status`` keeps, computed by a cache rebuilt from HEAD's tree."""
    other.refresh(force=True)
    mine = manager._cache
    manager._cache = other
    try:
        summary.generate_summary(manager, now)
    finally:
        manager._cache = mine
    return memo_rows(other)


def move(manager: StateManager, repo: Path, rng: random.Random, step: int, others: bool) -> str:
    """One random change of the state (``others``: some by another process); its kind."""
    episodes = sorted(manager.list_episodes(), key=lambda e: e.episode_id)
    episode = rng.choice(episodes)
    eid, stage = episode.episode_id, episode.stage.value
    kinds = ["advance"] * 6 + ["fail", "skip", "person", "revert", "rebuild"]
    kind = rng.choice(kinds + ["process"] * others)
    if kind == "fail" and stage in forecast_queries.ACTIVE:
        manager.fail(eid, f"failed at step {step}", take_over=True)
    elif kind == "skip" and stage not in ("published", "skipped", *forecast_queries.ACTIVE):
        manager.skip(eid, f"skipped at step {step}")
    elif kind == "process" and stage in NEXT:
        sets = {"downloaded": ["--set", f"files.audio_file=a/{eid}.mp3"]}
        sets["converted"] = ["--set", f"files.video_file=v/{eid}.mp4"]
        proc = run_hystate(repo, "advance", eid, NEXT[stage], "--force", *sets.get(NEXT[stage], []))
        assert proc.returncode == 0, proc.stderr
    elif kind == "person":
        path = next((repo / "processed").rglob(f"{eid}.yaml"))
        lines = path.read_text().splitlines(keepends=True)
        for i, line in enumerate(lines):
            if line.startswith("title: "):
                lines[i] = f"title: 'renamed at step {step}'\n"
            if line.startswith("  audio_duration: "):
                lines[i] = f"  audio_duration: {rng.choice([1834.5, 0.1, 7200])}\n"
        path.write_text("".join(lines))
        git(repo, "add", str(path))
        git(repo, *PERSON, "commit", "-q", "-m", "a person renames an episode")
    elif kind == "revert":
        git(repo, *PERSON, "revert", "--no-edit", "HEAD")
    elif kind == "rebuild":
        manager.cache.refresh(force=True)
    elif stage in NEXT:
        fields = {}
        if NEXT[stage] == "downloaded":
            fields = {"metrics.audio_size": rng.choice([20_000_000, 30_000_000 + step])}
            fields["files.audio_file"] = f"a/{eid}.mp3"
        if NEXT[stage] == "converted":
            fields = {"files.video_file": f"v/{eid}.mp4"}
        manager.update_state(eid, NEXT[stage], fields=fields, force=True, take_over=True)
    else:
        return "none"
    return kind


@pytest.mark.parametrize("training", [None, 4])
def test_carried_answers_equal_rebuilt_ones(
    manager: StateManager, repo: Path, monkeypatch: pytest.MonkeyPatch, training: int | None
) -> None:
    """``training``: the model learns from the runs of this many episodes (the default, all
    of them here; 4: episodes join and leave its training set as they move). The clock moves
    a minute a step (no two entries at once: which of two tied entries is the most recent is
    up to SQLite)."""
    import hystate.engine.steps as steps_module

    clock = [datetime.now(UTC) - timedelta(hours=6)]

    def tick() -> str:
        clock[0] += timedelta(minutes=1)
        return clock[0].isoformat(timespec="seconds")

    monkeypatch.setattr(steps_module, "now_utc", tick)
    if training is not None:
        monkeypatch.setattr(trained, "MAX_TRAINING_RUNS", training)
        monkeypatch.setattr(trained, "NAME", trained.NAME.replace("/3000/", f"/{training}/"))
    rng = random.Random(29 + (training or 0))
    now = datetime.now(UTC)
    other = StateCache(manager.store, manager.repo, "rebuilt.db")
    summary.generate_summary(manager, now)  # keeps every answer
    carried_kinds: set[str] = set()
    kinds = []
    for step in range(40):
        kinds.append(move(manager, repo, rng, step, others=training is None))
        manager.cache.refresh()
        carried = memo_rows(manager.cache)
        carried_kinds |= {name.split("/")[0] for name in carried}
        expected = rebuilt(manager, other, now)
        for name, value in carried.items():
            assert value == expected.get(name), (step, kinds[-1], name)
        summary.generate_summary(manager, now)  # computes again what was not carried
        assert memo_rows(manager.cache) == expected, (step, kinds[-1])
    assert {"advance", "person", "rebuild"} <= set(kinds)
    assert {"count_by_stage", "entered_span", "first_entry_time", "waiting_groups"} <= (
        carried_kinds
    )
    assert {"forecast.model", "group_members", "training_runs"} <= carried_kinds


def test_the_runs_are_those_of_the_forecast() -> None:
    """``follow`` tells runs as ``reports.trained.runs_from_log`` does: entered an active stage
    of ``fit.ORDER`` and left it."""
    assert forecast_queries.ACTIVE == fit.ORDER


@pytest.mark.parametrize("first", [0, 1])
def test_tied_entries_choose_the_same_training_set_as_a_rebuild(
    manager: StateManager, repo: Path, monkeypatch: pytest.MonkeyPatch, first: int
) -> None:
    """Two episodes enter an active stage in the same second and the model learns from one:
    which one is a function of the tree (the cache refreshed after each transition and a
    cache rebuilt from the tree choose the same), not of the order the rows were written."""
    import hystate.engine.steps as steps_module

    same = (datetime.now(UTC) - timedelta(hours=1)).isoformat(timespec="seconds")
    monkeypatch.setattr(steps_module, "now_utc", lambda: same)
    two = sorted(e.episode_id for e in manager.list_episodes())[:2]
    for eid in (two[first], two[1 - first]):
        manager.update_state(eid, "downloading", force=True, take_over=True)
        manager.cache.refresh()
    chosen = forecast_queries.training_runs(manager.cache, 1)["candidates"]
    other = StateCache(manager.store, manager.repo, "rebuilt.db")
    other.refresh(force=True)
    assert forecast_queries.training_runs(other, 1)["candidates"] == chosen


@pytest.mark.parametrize("training", [1, 3])
def test_candidates_found_again_with_offsets_ties_and_reverts(
    manager: StateManager, repo: Path, monkeypatch: pytest.MonkeyPatch, training: int
) -> None:
    """The training set's candidates carried through transitions equal a rebuilt cache's when
    the history's times are written with other offsets than UTC (their order as text is not
    their order in time), several entries share a second, and commits are reverted (entries
    of the newest go away): the partial indexes the candidates are read through
    (``follow.CANDIDATES``) order them as the entries' times and ids do."""
    import hystate.engine.steps as steps_module

    rng = random.Random(2029 + training)
    start = datetime.now(UTC) - timedelta(hours=3)
    zones = [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]
    clock = [start]

    def tick() -> str:
        clock[0] += timedelta(seconds=rng.choice([0, 0, 1, 45, 3600]))
        return clock[0].astimezone(rng.choice(zones)).isoformat(timespec="seconds")

    monkeypatch.setattr(steps_module, "now_utc", tick)
    monkeypatch.setattr(trained, "MAX_TRAINING_RUNS", training)
    monkeypatch.setattr(trained, "NAME", trained.NAME.replace("/3000/", f"/{training}/"))
    other = StateCache(manager.store, manager.repo, "rebuilt.db")
    now = datetime.now(UTC)
    summary.generate_summary(manager, now)
    name = f"training_runs/1/{training}"
    for step in range(30):
        kind = "revert" if step % 7 == 6 else "advance"  # a revert undoes a transition
        if kind == "revert":
            git(repo, *PERSON, "revert", "--no-edit", "HEAD")
        else:
            movable = [e for e in manager.list_episodes() if e.stage.value in NEXT]
            episode = rng.choice(sorted(movable, key=lambda e: e.episode_id))
            target = NEXT[episode.stage.value]
            fields = {"files.audio_file": "a/x.mp3"} if target == "downloaded" else {}
            fields |= {"files.video_file": "v/x.mp4"} if target == "converted" else {}
            manager.update_state(
                episode.episode_id, target, fields=fields, force=True, take_over=True
            )
        manager.cache.refresh()
        carried = memo_rows(manager.cache).get(name)
        expected = rebuilt(manager, other, now)
        if carried is not None:
            assert carried == expected[name], (step, kind)
        summary.generate_summary(manager, now)
        assert memo_rows(manager.cache) == expected, (step, kind)


def test_the_candidates_are_read_in_order_never_sorted(manager: StateManager) -> None:
    """``follow.CANDIDATES`` walks the partial indexes of the entries into an active stage
    (the indexes alone: no row is looked up) and stops after the newest: at 100,000 episodes
    sorting every such entry took ~43 ms of each status after a transition (issue 29)."""
    manager.cache.refresh()
    with manager.cache.connect() as db:
        plan = db.db.execute("EXPLAIN QUERY PLAN " + follow.CANDIDATES, (2999, 3000)).fetchall()
    steps = " | ".join(row[3] for row in plan)
    assert "USING COVERING INDEX processing_log_active_rank" in steps
    assert "USING COVERING INDEX processing_log_active_time" in steps
    assert "TEMP B-TREE" not in steps


def test_a_training_set_is_spliced_in_its_text_as_json_dumps_would_write_it() -> None:
    """``training_text.Body.splice`` puts in, replaces and cuts out episodes' entries where a
    bisection finds them in the text ``json.dumps`` wrote: the text ``json.dumps`` writes for
    the result, at each step of random changes (first, last, only, absent, neighbours); and
    ``_training_body`` declines any other shape, which is then decoded."""
    rng = random.Random(29)
    runs: dict[str, list[list[object]]] = {}
    ids = [f"hy_{n:03d}{rng.choice(['', '.2', '-x'])}" for n in range(40)]
    for _ in range(300):
        text = json.dumps({"candidates": sorted(runs), "runs": dict(sorted(runs.items()))})
        parts = training_text.parse(text)
        assert parts is not None
        candidates, body = parts
        assert candidates == sorted(runs)
        new = dict(runs)
        for episode in rng.sample(ids, rng.randint(1, 4)):
            if rng.random() < 0.4:
                new.pop(episode, None)
            else:
                size = rng.choice([None, rng.randint(1, 10**9), 1.5])
                new[episode] = [
                    ["downloading", rng.random(), 2, rng.choice(["failed", 'x]], "y']), size, None]
                    for _ in range(rng.randint(1, 3))
                ]
        changed = {e for e in set(runs) | set(new) if runs.get(e) != new.get(e)}
        changed |= set(rng.sample(ids, 2))  # read again, the same as before
        entries = {e: training_text.entry(e, new[e]) if e in new else None for e in changed}
        spliced, same = body.splice(entries)
        want = json.dumps({"candidates": [], "runs": dict(sorted(new.items()))})
        assert training_text.compose([], spliced) == want
        assert same == (new == runs)
        runs = new
    assert training_text.parse(json.dumps({"candidates": [], "runs": {}})) is not None
    good = {"hy_a": [["downloading", 1.5, 2.0, "downloaded", 28000000, None]]}
    for other in (
        json.dumps({"runs": good, "candidates": []}),  # another order
        json.dumps({"candidates": [], "runs": {"hy_a": [1, 2]}}),  # not runs
        json.dumps({"candidates": {}, "runs": {}}),
        json.dumps({"candidates": [], "runs": good}, separators=(",", ":")),
    ):
        assert training_text.parse(other) is None
    # an entry that does not start where a separator ends: declined, not guessed
    odd = training_text.parse(json.dumps({"candidates": [], "runs": {"hy_a": [[1]], "é": [[2]]}}))
    assert odd is not None
    with pytest.raises(training_text.Shape):
        odd[1].splice({"zz": None})
    fake = {"hy_a": [["a]], ", 1]], "hy_b": [[2]]}  # a separator inside a stage name
    found = training_text.parse(json.dumps({"candidates": [], "runs": fake}))
    assert found is not None
    with pytest.raises(training_text.Shape):
        found[1].splice({"hy_a": None})
