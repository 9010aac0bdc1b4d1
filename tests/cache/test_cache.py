"""state.db and index.json follow the tree by themselves, and losing them loses nothing."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hystate.core.errors import IllegalTransition, InvalidData
from hystate.fsck.recovery import RecoveryManager
from hystate.manager import StateManager
from hystate.reports.summary import generate_summary
from tests.conftest import Cli, git

ID = ("-c", "user.name=u", "-c", "user.email=u@x", "-c", "core.hooksPath=/dev/null")


def answers(manager: StateManager) -> tuple[object, ...]:
    return (
        manager.count_by_stage(),
        manager.count_all_episodes(),
        [e.data for e in manager.list_episodes()],
        [e.episode_id for e in manager.get_next_for_processing("downloading", 5)],
        [(e["episode_id"], e["to"], e["commit"]) for e in manager.events()],
    )


def fresh_read(manager: StateManager) -> list[dict[str, object]]:
    return sorted(
        (e.data for e in manager.iter_episodes()), key=lambda d: (d["date"], d["episode_id"])
    )  # type: ignore[arg-type,return-value]


def committed_read(manager: StateManager) -> list[dict[str, object]]:
    """Every episode as HEAD has it, read with git itself (not hystate's tree reading)."""
    import yaml

    repo = manager.repo.root
    names = git(repo, "ls-tree", "-r", "--name-only", "HEAD", "--", "processed").split()
    docs = [yaml.safe_load(git(repo, "show", f"HEAD:{n}")) for n in names if n.endswith(".yaml")]
    return sorted(docs, key=lambda d: (d["date"], d["episode_id"]))


def test_counts_and_lists(manager: StateManager, episode_id: str) -> None:
    manager.update_state(episode_id, "downloading")
    counts = manager.count_by_stage()
    assert counts["discovered"] == 19 and counts["downloading"] == 1 and counts["published"] == 0
    assert [e.episode_id for e in manager.get_episodes_by_stage("downloading")] == [episode_id]
    assert manager.count_all_episodes() == 20
    index = json.loads(manager.cache.index_path.read_text())
    assert index[episode_id]["stage"] == "downloading" and set(index[episode_id]) == {
        "path", "stage", "year", "title", "last_updated"
    }  # fmt: skip


@pytest.mark.parametrize("damage", ["delete", "garbage", "old-format"])
def test_deleted_or_damaged_caches_give_the_same_answers(
    manager: StateManager, episode_id: str, damage: str
) -> None:
    manager.update_state(episode_id, "downloading")
    before = answers(manager)
    db = manager.cache.db_path
    if damage == "delete":
        for p in manager.cache.cache_dir.glob("state.db*"):
            p.unlink()
        manager.cache.index_path.unlink()
    elif damage == "garbage":
        for p in manager.cache.cache_dir.glob("state.db*"):
            p.unlink()
        db.write_bytes(b"this is not a database" * 100)
    else:
        with sqlite3.connect(db) as conn:
            conn.execute("UPDATE meta SET value = '0' WHERE key = 'format'")
    fresh = StateManager(cwd=manager.repo.root)
    assert answers(fresh) == before
    assert manager.cache.index_path.exists()


def test_refresh_after_one_transition_rereads_one_file(
    manager: StateManager, episode_id: str
) -> None:
    manager.refresh()
    manager.update_state(episode_id, "downloading")
    result = manager.refresh()
    assert result.reread == 1 and not result.rebuilt
    assert manager.refresh().reread == 0


def test_a_plain_git_pull_shows_up(repo: Path, tmp_path: Path, episode_id: str) -> None:
    clone = tmp_path / "clone"
    git(repo, "clone", "-q", str(repo), str(clone))
    StateManager(cwd=repo).refresh()
    other = StateManager(cwd=clone, worker="elsewhere")
    other.update_state(episode_id, "downloading")
    other.update_state(episode_id, "downloaded", fields={"files.audio_file": "a.mp3"})
    git(
        repo,
        "-c",
        "user.name=u",
        "-c",
        "user.email=u@x",
        "pull",
        "-q",
        "--ff-only",
        str(clone),
        "main",
    )
    manager = StateManager(cwd=repo)
    assert [e.episode_id for e in manager.list_episodes(["downloaded"])] == [episode_id]
    commits = [e["commit"] for e in manager.events(episode_id=episode_id)]
    assert all(commits) and len(commits) == 3


def test_checkout_of_another_branch_shows_up(
    manager: StateManager, repo: Path, episode_id: str
) -> None:
    git(repo, "checkout", "-q", "-b", "side")
    manager.update_state(episode_id, "downloading")
    assert manager.count_by_stage()["downloading"] == 1
    git(repo, "checkout", "-q", "main")
    assert manager.count_by_stage()["downloading"] == 0


def test_reads_follow_head_and_a_hand_edit_is_for_fsck(
    manager: StateManager, episode_id: str
) -> None:
    """The caches reflect HEAD (the design of issue 17; before, they followed the work tree
    through `git status`). An uncommitted edit changes what `show` reads (the file itself) and
    what fsck reports, never what the cache-backed reads say; once committed, it shows up."""
    repo = manager.repo.root
    path = manager.path_of(episode_id)
    manager.refresh()
    path.write_text(
        path.read_text().replace("status_message: null", "status_message: edited by hand")
    )
    listed = next(e for e in manager.list_episodes() if e.episode_id == episode_id)
    assert listed.data["status_message"] is None
    assert manager.episode(episode_id).data["status_message"] == "edited by hand"
    assert "uncommitted" in {f.kind for f in RecoveryManager(manager).fsck()}
    git(repo, *ID, "commit", "-q", "--no-verify", "-m", "by hand", "--", str(path))
    listed = next(e for e in manager.list_episodes() if e.episode_id == episode_id)
    assert listed.data["status_message"] == "edited by hand"
    path.write_text("stage: [unclosed\n")
    assert manager.count_all_episodes() == 20  # not committed: HEAD's episode is counted
    git(repo, *ID, "commit", "-q", "--no-verify", "-m", "broken by hand", "--", str(path))
    with pytest.raises(InvalidData, match=path.name):  # committed: reads stop and name it
        manager.count_by_stage()
    git(repo, *ID, "revert", "--no-edit", "HEAD")
    assert manager.count_all_episodes() == 20


def test_summary_shape_and_eta(manager: StateManager) -> None:
    summary = generate_summary(manager)
    assert set(summary) >= {
        "timestamp",
        "total_episodes",
        "progress",
        "completion_percentage",
        "estimated_completion",
    }
    assert (
        summary["estimated_completion"] is None
        and "not enough history" in summary["throughput"]["note"]
    )
    ids = [e.episode_id for e in manager.list_episodes()][:3]
    for eid in ids:
        manager.skip(eid, "rebroadcast")
    # the three skips happened within a second or two: give them distinct times for the rate
    summary = generate_summary(manager)
    assert summary["progress"]["skipped"] == 3
    assert summary["completion_percentage"] == 15.0


def test_processing_log_events_carry_errors_and_commits(
    manager: StateManager, episode_id: str
) -> None:
    manager.update_state(episode_id, "downloading")
    manager.fail(episode_id, "HTTP 503")
    events = manager.events(episode_id=episode_id)
    assert [e["event"] for e in events] == ["discovered", "transition", "failed"]
    assert events[-1]["error"] == "HTTP 503" and events[-1]["commit"]


def test_next_includes_due_retries_and_claims_are_commits(
    manager: StateManager, repo: Path
) -> None:
    ids = [e.episode_id for e in manager.list_episodes()]
    manager.update_state(ids[0], "downloading")
    manager.fail(ids[0], "timeout")
    assert ids[0] not in [e.episode_id for e in manager.get_next_for_processing("downloading", 50)]
    manager.recovery.retry_delay = 0
    assert manager.get_next_for_processing("downloading", 1)[0].episode_id == ids[0]
    claimed = manager.claim_next("downloading", 3, worker="dl-9")
    assert [r.episode.episode_id for r in claimed] == ids[:3]
    assert all(r.episode.worker == "dl-9" for r in claimed)
    log = git(repo, "log", "-3", "--format=%(trailers:key=Hystate-Worker,valueonly)").split()
    assert log == ["dl-9"] * 3


def claim(args: tuple[str, int]) -> list[str]:
    root, n = args
    manager = StateManager(cwd=root, worker=f"w{n}")
    got = []
    for _ in range(3):
        got += [r.episode.episode_id for r in manager.claim_next("downloading", 2)]
    return got


@pytest.mark.slow
def test_concurrent_claims_are_disjoint(repo: Path) -> None:
    with ProcessPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(claim, [(str(repo), n) for n in range(4)]))
    every = [eid for r in results for eid in r]
    assert len(every) == len(set(every)) == 20  # 4 workers x 3 rounds x 2, capped at 20 episodes
    manager = StateManager(cwd=repo)
    assert manager.count_by_stage()["downloading"] == 20


def test_cli_reading_commands(run: Cli, episode_id: str) -> None:
    run("advance", episode_id, "downloading", "--worker", "dl-1")
    assert json.loads(run("status", "--json").output)["progress"]["downloading"] == 1
    listed = json.loads(run("list", "--stage", "downloading", "--json").output)
    assert [e["episode_id"] for e in listed] == [episode_id]
    csv_out = run("list", "--csv").output.splitlines()
    assert csv_out[0].startswith("episode_id,date,stage") and len(csv_out) == 21
    history = json.loads(run("history", episode_id, "--json").output)
    assert [h["to"] for h in history] == ["discovered", "downloading"] and all(
        h["commit"] for h in history
    )
    lines = run("log", "--json", "--episode", episode_id).output.splitlines()
    assert [json.loads(line)["to"] for line in lines] == ["discovered", "downloading"]
    claimed = json.loads(
        run("next", "downloading", "--limit", "2", "--claim", "--worker", "w2", "--json").output
    )
    assert len(claimed) == 2 and all(c["stage"] == "downloading" for c in claimed)
    assert "rebuilt state.db" in run("rebuild").output
    assert run("list", "--stage", "bogus").exit_code == 2


def test_log_follow_prints_new_events(repo: Path, episode_id: str) -> None:
    import queue
    import sys
    import threading

    proc = subprocess.Popen(
        [sys.executable, "-m", "hystate.cli", "log", "--follow", "--json", "--interval", "0.2", "--episode", episode_id],
        cwd=repo, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()  # type: ignore[union-attr]
    try:
        first = json.loads(lines.get(timeout=30))
        StateManager(cwd=repo).update_state(episode_id, "downloading")
        second = json.loads(lines.get(timeout=30))
    finally:
        proc.kill()
        proc.wait()
    assert (first["to"], second["to"]) == ("discovered", "downloading")


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 19), st.sampled_from(["advance", "fail", "skip", "edit", "refresh"])
        ),
        max_size=12,
    )
)
def test_cache_equals_a_fresh_read_after_random_operations(
    manager: StateManager, ops: list[tuple[int, str]]
) -> None:
    ids = sorted(p.stem for p in manager.store.iter_paths())
    for index, op in ops:
        eid = ids[index]
        try:
            if op == "advance":
                episode = manager.get_episode_state(eid)
                allowed = [s for s in ("downloading", "downloaded") if s != episode.stage.value]
                manager.update_state(
                    eid,
                    allowed[0],
                    fields={"files.audio_file": "a.mp3"} if allowed[0] == "downloaded" else None,
                    force=True,
                )
            elif op == "fail":
                manager.fail(eid, "boom")
            elif op == "skip":
                manager.skip(eid, "because")
            elif op == "edit":
                path = manager.path_of(eid)
                git(manager.repo.root, "checkout", "--", str(path))
                path.write_text(
                    path.read_text().replace("status_message: null", "status_message: x")
                )
            else:
                manager.refresh()
        except (IllegalTransition, InvalidData) as exc:
            assert "not committed" not in str(exc)
        except Exception as exc:  # a transition refused because of a hand edit is expected
            assert "not committed" in str(exc), exc
    cached = sorted(
        (e.data for e in manager.list_episodes()), key=lambda d: (d["date"], d["episode_id"])
    )  # type: ignore[arg-type,return-value]
    assert cached == committed_read(manager)  # hand edits stay out until committed


def test_a_deletion_shows_up_once_committed(manager: StateManager, episode_id: str) -> None:
    manager.refresh()
    path = manager.path_of(episode_id)
    path.unlink()
    assert manager.count_all_episodes() == 20  # HEAD still has it; fsck reports the deletion
    assert "uncommitted" in {f.kind for f in RecoveryManager(manager).fsck()}
    git(manager.repo.root, *ID, "commit", "-q", "--no-verify", "-m", "gone", "--", str(path))
    assert manager.count_all_episodes() == 19
    git(manager.repo.root, *ID, "revert", "--no-edit", "HEAD")
    assert manager.count_all_episodes() == 20


def test_a_cache_whose_tree_git_pruned_is_rebuilt(manager: StateManager, episode_id: str) -> None:
    """History rewritten and gc'd: the tree the cache reflected is gone from git. The refresh
    cannot diff against it, so it rebuilds (before the tree diff, this could not happen)."""
    repo = manager.repo.root
    manager.update_state(episode_id, "downloading")
    manager.refresh()
    git(repo, "reset", "-q", "--hard", "HEAD~1")
    git(repo, "reflog", "expire", "--expire=now", "--all")
    git(repo, "gc", "-q", "--prune=now")
    fresh = StateManager(cwd=repo)  # a new process: no tree held in memory
    notices: list[str] = []
    fresh.cache.notice = notices.append
    assert fresh.count_by_stage()["downloading"] == 0
    assert notices and "gone from git" in notices[0]
    assert fresh.count_all_episodes() == 20


def test_a_duplicate_id_comes_stays_and_goes_with_commits(
    manager: StateManager, episode_id: str
) -> None:
    """With a warm cache: a copy in another year folder committed, then edited, then removed.
    (A plain transition does not look for copies; a file added or removed, or one already a
    duplicate, does.)"""
    repo = manager.repo.root
    path = manager.path_of(episode_id)
    manager.refresh()
    copy = path.parent.parent / "2031" / path.name
    copy.parent.mkdir()
    copy.write_bytes(path.read_bytes())
    git(repo, "add", str(copy))
    git(repo, *ID, "commit", "-q", "-m", "a copy")
    with pytest.raises(InvalidData, match="duplicate id"):
        manager.count_all_episodes()
    copy.write_text(copy.read_text().replace("status_message: null", "status_message: x"))
    git(repo, *ID, "commit", "-q", "-am", "the copy edited")
    with pytest.raises(InvalidData, match="duplicate id"):
        manager.count_all_episodes()
    git(repo, "rm", "-q", str(copy))
    git(repo, *ID, "commit", "-q", "-m", "the copy removed")
    assert manager.count_all_episodes() == 20
    assert manager.episode(episode_id).stage.value == "discovered"
    manager.update_state(episode_id, "downloading")  # a plain transition: no copies looked for
    assert manager.count_by_stage()["downloading"] == 1
