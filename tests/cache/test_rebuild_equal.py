"""A rebuild fills its tables without their indexes and makes them once at the end: the cache
it leaves is the one an incremental refresh keeps, indexes and rows alike."""

from __future__ import annotations

import sqlite3

from hystate.manager import StateManager


def dump(manager: StateManager) -> tuple[object, ...]:
    db = sqlite3.connect(manager.cache.db_path)
    try:
        schema = sorted(db.execute("SELECT type, name, tbl_name, sql FROM sqlite_master"))
        states = sorted(db.execute("SELECT * FROM episode_states"))
        # the log's row ids are the order rows were inserted in: not part of the answer
        logs = sorted(
            db.execute(
                "SELECT episode_id, timestamp, from_stage, to_stage, event, details, commit_sha"
                " FROM processing_log"
            ),
            key=repr,
        )
        problems = sorted(db.execute("SELECT * FROM problems"))
        plan = db.execute(
            "EXPLAIN QUERY PLAN SELECT * FROM episode_states WHERE stage = 'failed'"
        ).fetchall()
        return schema, states, logs, problems, [row[-1] for row in plan]
    finally:
        db.close()


def test_a_rebuild_equals_the_incremental_cache(manager: StateManager) -> None:
    ids = sorted(p.stem for p in manager.store.iter_paths())
    manager.update_state(ids[0], "downloading")
    manager.update_state(ids[0], "downloaded", fields={"files.audio_file": "a.mp3"})
    manager.update_state(ids[1], "downloading")
    manager.fail(ids[1], "boom")
    manager.skip(ids[2], "because")
    manager.refresh()
    incremental = dump(manager)
    manager.refresh(force=True)
    rebuilt = dump(manager)
    assert rebuilt == incremental
    assert any("INDEX" in step for step in rebuilt[-1])  # the indexes are there and used
    assert sum(1 for row in rebuilt[0] if row[0] == "index" and row[3]) >= 7
