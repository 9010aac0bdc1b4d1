"""No step of the user's path grows quadratically with the number of episodes.

The user's path (init, discover, rebuild, status, list, next --claim, a transition then status,
report, validate, fsck) runs through the CLI at n and at 10n episodes in one test run; each
step's time at 10n over its time at n must stay below 20 (linear is 10, quadratic 100). Only ratios
from one run are compared, never absolute times. `bench/scale.py` has the figures at 100,000.

Why 10n and not 4n: at a few thousand episodes parsing the files (linear, ~0.3 ms each) hides a
quadratic term until ~10,000; the quadratic commit attribution of the first release made a
rebuild grow 7.8x from 4,000 to 16,000 episodes (a bound of 10 let it pass) but 20x from 2,000
to 16,000, on a loaded machine.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

import pytest

from hystate.cache import tables as cache_schema
from hystate.manager import StateManager
from tests.conftest import Cli, git

N = int(os.environ.get("HYSTATE_SCALE_N", "1500"))
FACTOR = 10
BOUND = 20.0
FLOOR = 0.05  # s: below this a step's time is noise (a few queries), not a trend


def catalog(path: Path, n: int) -> Path:
    with path.open("w") as out:
        for i in range(n):
            date = f"{2004 + i % 20}-{1 + i // 20 % 12:02d}-{1 + i // 240 % 28:02d}"
            record = {"identifier": f"hy_{date}_{i:06d}", "title": f"Episode {i}", "date": date}
            out.write(json.dumps(record) + "\n")
    return path


def user_path(tmp: Path, sizes: list[int]) -> list[dict[str, float]]:
    """Seconds per step at each size. The sizes take turns at every step (and a step that can
    be repeated takes the best of a few turns), so a burst of load on this shared machine
    weighs on both sizes rather than on one."""
    runs = []
    for n in sizes:
        root = tmp / f"repo-{n}"
        root.mkdir()
        runs.append((n, Cli(root), {}))

    def step(name: str, *args: str, repeat: int = 1) -> None:
        for _ in range(repeat):
            for _n, run, times in runs:
                started = time.perf_counter()
                result = run(*args)
                took = time.perf_counter() - started
                assert result.exit_code == 0, (args, result.output)
                times[name] = min(took, times.get(name, float("inf")))

    step("init", "init")
    for n, run, times in runs:
        started = time.perf_counter()
        result = run("discover", "--from", str(catalog(tmp / f"catalog-{n}.jsonl", n)))
        times["discover"] = time.perf_counter() - started
        assert result.exit_code == 0, result.output
        assert not git(run.cwd, "status", "--porcelain").strip()
    step("rebuild", "rebuild", repeat=2)
    step("status", "status", repeat=3)
    step("list", "list", "--stage", "failed", repeat=3)
    step("claim", "next", "downloading", "--claim", "--worker", "w", repeat=3)
    for _ in range(3):
        for _n, run, times in runs:
            claimed = json.loads(run("list", "--stage", "downloading", "--json").output)
            args = (
                "advance",
                claimed[0]["episode_id"],
                "downloaded",
                "--set",
                "files.audio_file=a",
                "--lease",  # the claim's token, as its worker would present it
                claimed[0]["history"][-1]["lease"],
            )
            assert run(*args).exit_code == 0
            started = time.perf_counter()
            assert run("status").exit_code == 0
            took = time.perf_counter() - started
            times["status after a transition"] = min(
                took, times.get("status after a transition", 9e9)
            )
    step("report", "report", "--format", "html", "-o", str(tmp / "report.html"), repeat=2)
    step("validate", "validate", repeat=2)
    step("fsck", "fsck", repeat=2)
    for n, run, _times in runs:  # and the answers are right
        counts = json.loads(run("status", "--json").output)["progress"]
        assert counts["discovered"] == n - 3 and counts["downloaded"] == 3
    return [times for _n, _run, times in runs]


@pytest.mark.slow
def test_every_step_of_the_user_path_grows_linearly(tmp_path: Path) -> None:
    small, large = user_path(tmp_path, [N, FACTOR * N])
    ratios = {name: large[name] / max(small[name], FLOOR) for name in small}
    shown = ", ".join(f"{k} {small[k]:.2f}s -> {large[k]:.2f}s" for k in small)
    print(f"n={N} -> {FACTOR}n: {shown}")
    assert max(ratios.values()) < BOUND, f"grew faster than linear: {ratios} ({shown})"


def test_commit_attribution_never_scans_a_stage(tmp_path: Path) -> None:
    """The (to_stage, timestamp) index made each attribution scan every row of a stage."""
    db = sqlite3.connect(tmp_path / "plan.db")
    for statement in cache_schema.SCHEMA.split(";"):
        if statement.strip():
            db.execute(statement)
    db.execute(
        "CREATE TEMP TABLE attribution (seq INTEGER PRIMARY KEY, sha TEXT, episode_id TEXT,"
        " from_stage TEXT, to_stage TEXT)"
    )
    plan = " ".join(row[3] for row in db.execute("EXPLAIN QUERY PLAN " + cache_schema.ATTRIBUTE))
    assert "processing_log_to" not in plan and "processing_log_time" not in plan
    assert "USING INDEX processing_log_episode" in plan


def test_repeated_moves_get_their_own_commits_in_order(
    manager: StateManager, episode_id: str
) -> None:
    manager.recovery.retry_delay = 0
    manager.update_state(episode_id, "downloading")
    manager.fail(episode_id, "timeout")
    manager.retry([episode_id], now=True)
    manager.fail(episode_id, "timeout again")
    expected = git(manager.repo.root, "log", "--reverse", "--format=%H", "--", str(
        manager.path_of(episode_id)
    )).split()  # fmt: skip
    for fresh in (False, True):  # as refreshed step by step, and rebuilt from scratch
        manager.refresh(force=fresh)
        events = manager.events(episode_id=episode_id)
        assert [e["to"] for e in events] == [
            "discovered", "downloading", "failed", "downloading", "failed"
        ]  # fmt: skip
        assert [e["commit"] for e in events] == expected


def whole_index(manager: StateManager) -> str:
    """index.json as generated whole from the cache."""
    out = manager.state_dir / "whole.json"
    with manager.cache.connect() as db:
        db.write_index(out)
    return out.read_text()


def test_index_json_is_spliced_and_stays_equal_to_a_whole_write(
    manager: StateManager, episode_id: str
) -> None:
    index = manager.cache.index_path
    manager.refresh()
    ids = sorted(p.stem for p in manager.store.iter_paths())
    for eid in (ids[0], ids[7], ids[-1]):  # the first, a middle and the last entry
        inode = index.stat().st_ino
        manager.update_state(eid, "downloading")
        manager.refresh()
        assert index.read_text() == whole_index(manager)
        assert index.stat().st_ino != inode  # replaced (temp file, rename), never edited in place
    assert json.loads(index.read_text())[ids[7]]["stage"] == "downloading"


def test_an_index_json_not_written_by_hystate_is_generated_again(
    manager: StateManager, episode_id: str
) -> None:
    index = manager.cache.index_path
    manager.refresh()
    index.write_text(index.read_text().replace('"discovered"', '"published"'))
    manager.update_state(episode_id, "downloading")
    manager.refresh()
    assert index.read_text() == whole_index(manager)
    index.unlink()
    manager.count_by_stage()  # a reading call, nothing else changed
    assert index.read_text() == whole_index(manager)


def test_next_reads_the_waiting_episodes_a_page_at_a_time(
    manager: StateManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Failed episodes whose retry is not due yet come first in date order: the later pages are
    read until enough ready ones are found, and the answer is the same as reading them all."""
    from hystate.engine import claims as work

    ids = [e.episode_id for e in manager.list_episodes()]
    for eid in ids[:7]:
        manager.update_state(eid, "downloading")
        manager.fail(eid, "HTTP 503")
    everything = [e.episode_id for e in manager.get_next_for_processing("downloading", 50)]
    assert everything == ids[7:]  # the failed ones are not due: the retry delay has not passed
    monkeypatch.setattr(work, "FIRST_PAGE", 1)
    reads: list[int | None] = []
    list_episodes = manager.list_episodes

    def counted(*args: object, limit: int | None = None) -> list[object]:
        reads.append(limit)
        return list_episodes(*args, limit=limit)  # type: ignore[arg-type]

    monkeypatch.setattr(manager, "list_episodes", counted)
    assert [e.episode_id for e in manager.get_next_for_processing("downloading", 3)] == ids[7:10]
    assert reads == [6, 24]  # 6 read, all failed and not due; then 24, enough


def test_index_json_splice_finds_entries_by_bisection_in_a_large_file(tmp_path: Path) -> None:
    """Past 64 KB the changed entries are found by bisecting the mapped file; titles holding
    `},"` (escaped inside a JSON string) must never be taken for an entry boundary."""
    from hystate.cache import jsonindex

    def entry(eid: str, stage: str, title: str) -> str:
        body = {"path": f"processed/2004/{eid}.yaml", "stage": stage, "title": title}
        return json.dumps(eid) + ":" + json.dumps(body, separators=(",", ":"), ensure_ascii=False)

    ids = [f"hy_{i:06d}" for i in range(3000)]
    titles = {eid: f'T{i} }},"hy_{i + 1:06d}":{{ é' for i, eid in enumerate(ids)}
    old = {eid: entry(eid, "discovered", titles[eid]) for eid in ids}
    index = tmp_path / "index.json"
    index.write_text("{" + ",".join(old[e] for e in ids) + "}\n")
    assert index.stat().st_size > 4 * 65536
    changed = [ids[0], ids[1], ids[1499], ids[1500], ids[2998], ids[2999]]
    new = dict(old)
    for eid in changed:
        new[eid] = entry(eid, "downloading", titles[eid])
    jsonindex.write(
        None,  # type: ignore[arg-type]  # never asked: the splice succeeds
        index,
        before={e: old[e] for e in changed},
        after={e: new[e] for e in changed},
    )
    assert index.read_text() == "{" + ",".join(new[e] for e in ids) + "}\n"
    assert json.loads(index.read_text())[ids[1500]]["stage"] == "downloading"


def test_index_json_splice_lets_go_of_the_replaced_file_before_freeing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The replaced index.json is unlinked by a thread, off the refresh's path, only once the
    splice has unmapped and closed it: whoever lets go of an unlinked file last frees its
    blocks, and that was the refresh's close (~13 ms at 100,000 episodes, issue 29)."""
    from hystate.cache import jsonindex

    index = tmp_path / "index.json"
    old = {f"hy_{i:06d}": json.dumps(f"hy_{i:06d}") + ':{"stage":"discovered"}' for i in range(9)}
    index.write_text("{" + ",".join(old.values()) + "}\n")
    inode = index.stat().st_ino
    held: list[bool] = []
    free = jsonindex._free

    def checked(path: Path | None) -> None:
        assert path is not None and path.stat().st_ino == inode
        fds = [Path("/proc/self/fd") / fd for fd in os.listdir("/proc/self/fd")]
        opened = {os.stat(fd).st_ino for fd in fds if fd.exists()}
        mapped = Path("/proc/self/maps").read_text()
        held.append(inode in opened or f" {inode} " in mapped)
        free(path)

    monkeypatch.setattr(jsonindex, "_free", checked)
    eid = "hy_000004"
    after = {eid: old[eid].replace("discovered", "downloading")}
    jsonindex.write(None, index, before={eid: old[eid]}, after=after)  # type: ignore[arg-type]
    assert held == [False]
    assert json.loads(index.read_text())[eid]["stage"] == "downloading"


def test_index_json_spliced_beside_the_refresh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``jsonindex.write_beside`` splices in a thread while the refresh goes on; waiting for it
    gives the spliced file, raises what the thread raised, or writes the file whole (with the
    database, in the waiting thread) where the splice could not be done."""
    import threading

    from hystate.cache import jsonindex

    index = tmp_path / "index.json"
    old = {f"hy_{i}": json.dumps(f"hy_{i}") + ':{"stage":"discovered"}' for i in range(5)}
    index.write_text("{" + ",".join(old.values()) + "}\n")
    after = {"hy_2": old["hy_2"].replace("discovered", "downloading")}
    wait = jsonindex.write_beside(None, index, before={"hy_2": old["hy_2"]}, after=after)  # type: ignore[arg-type]
    wait()
    assert json.loads(index.read_text())["hy_2"]["stage"] == "downloading"

    whole: list[tuple[object, Path, str]] = []
    monkeypatch.setattr(jsonindex, "_splice", lambda *args: False)
    monkeypatch.setattr(
        jsonindex,
        "write",
        lambda db, path: whole.append((db, path, threading.current_thread().name)),
    )
    jsonindex.write_beside("db", index, before={}, after={})()  # type: ignore[arg-type]
    assert whole == [("db", index, threading.main_thread().name)]

    def broken(*args: object) -> bool:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(jsonindex, "_splice", broken)
    wait = jsonindex.write_beside("db", index, before={}, after={})  # type: ignore[arg-type]
    with pytest.raises(OSError, match="No space left"):
        wait()
