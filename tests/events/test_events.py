"""The event stream against a real redis-server: fields, order, the broker down and back,
consumers resuming, rewritten and merged histories, two publishers, hostile values."""

from __future__ import annotations

from pathlib import Path

import pytest

from hystate.core.errors import InvalidData
from hystate.core.store import dump
from hystate.events import publisher as publishing
from hystate.events import stream as events
from hystate.events.source import FIELDS, LIMITS, Event, EventSource
from hystate.manager import StateManager
from tests.conftest import git, run_hystate
from tests.harness.redis import RedisServer, needs_redis

pytestmark = needs_redis


def enable(repo: Path, url: str, extra: str = "") -> StateManager:
    (repo / "hystate.yaml").write_text(
        f"state_management:\n  events:\n    enabled: true\n    url: {url}\n{extra}"
    )
    return StateManager(cwd=repo, worker="w1")


def person(repo: Path, *args: str) -> str:
    """git as a person with an identity of their own."""
    return git(repo, "-c", "user.name=P", "-c", "user.email=p@example.invalid", *args)


def entries(server: RedisServer) -> list[tuple[str, dict[str, str]]]:
    return [(i, f) for i, f in server.client().xrange("hystate:transitions")]


def transition_commits(repo: Path) -> list[str]:
    """First-parent commits carrying a transition, oldest first."""
    out = git(
        repo,
        "log",
        "--first-parent",
        "--reverse",
        "--format=%H %(trailers:key=Hystate-Episode,valueonly)",
    )
    return [line.split()[0] for line in out.splitlines() if len(line.split()) == 2]


def ids(manager: StateManager) -> list[str]:
    return sorted(p.stem for p in manager.store.iter_paths())


def test_every_transition_once_in_order_with_its_fields(repo: Path, broker: RedisServer) -> None:
    manager = enable(repo, broker.url)
    eid = ids(manager)[0]
    manager.update_state(eid, "downloading")
    manager.fail(eid, "HTTP 503")
    manager.retry([eid], now=True)
    got = entries(broker)
    # the 20 discovered in one batch commit (published by the first transition), then three
    assert [f["to"] for _, f in got] == ["discovered"] * 20 + [
        "downloading",
        "failed",
        "downloading",
    ]
    assert all(set(f) == set(FIELDS) for _, f in got)
    assert [f["commit"] for _, f in got[20:]] == transition_commits(repo)
    history = manager.episode(eid).data["history"]
    assert [(f["from"], f["to"], f["at"]) for _, f in got[20:]] == [
        (h["from"], h["to"], h["at"]) for h in history[1:]
    ]
    assert got[21][1]["message"] == "HTTP 503" and got[21][1]["worker"] == "w1"
    assert got[20][1]["subject"] == f"{eid}: discovered -> downloading"
    # publishing again adds nothing
    assert events.Publisher(manager).publish().published == 0
    assert len(entries(broker)) == 23


def test_broker_down_transitions_succeed_and_are_delivered_later(
    repo: Path, broker: RedisServer
) -> None:
    manager = enable(repo, broker.url)
    first, second = ids(manager)[:2]
    token = manager.update_state(first, "downloading").lease
    assert token is not None
    broker.stop()
    proc = run_hystate(repo, "advance", second, "downloading")
    assert proc.returncode == 0, proc.stderr
    notes = [line for line in proc.stderr.splitlines() if "events" in line]
    assert len(notes) == 1 and "not published yet" in notes[0]
    proc = run_hystate(repo, "events", "publish")
    assert proc.returncode == 7 and len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr
    assert run_hystate(repo, "events", "status").returncode == 7
    broker.start()
    # the next transition delivers the missed one too, in order
    assert (
        run_hystate(
            repo,
            "advance",
            first,
            "downloaded",
            "--set",
            "files.audio_file=a.mp3",
            "--lease",
            token,
        ).returncode
        == 0
    )
    got = [f for _, f in entries(broker)]
    assert [f["commit"] for f in got[20:]] == transition_commits(repo)
    assert [(f["episode_id"], f["to"]) for f in got[20:]] == [
        (first, "downloading"),
        (second, "downloading"),
        (first, "downloaded"),
    ]


def test_consumer_resumes_from_its_last_id(repo: Path, broker: RedisServer) -> None:
    manager = enable(repo, broker.url)
    for eid in ids(manager)[:5]:
        manager.update_state(eid, "downloading")
    seen = []
    for entry_id, fields in events.consume(manager.config, "0-0", follow=False):
        seen.append((entry_id, fields["commit"], fields["episode_id"]))
        if len(seen) == 22:
            break  # the consumer stops (crashes) here, keeping its last id
    last = seen[-1][0]
    for eid in ids(manager)[5:8]:
        manager.update_state(eid, "downloading")
    rest = [
        (i, f["commit"], f["episode_id"])
        for i, f in events.consume(manager.config, last, follow=False)
    ]
    assert len(seen) + len(rest) == 28
    assert {s[0] for s in seen}.isdisjoint(r[0] for r in rest)
    assert [r[1] for r in seen[20:] + rest] == transition_commits(repo)
    # the command: one JSON object a line, resuming the same way
    proc = run_hystate(repo, "events", "tail", "--from-id", last, "--json")
    assert proc.returncode == 0, proc.stderr
    assert [line.split('"id": "')[1].split('"')[0] for line in proc.stdout.splitlines()] == [
        r[0] for r in rest
    ]
    bad = run_hystate(repo, "events", "tail", "--from-id", "1-2-3")
    assert bad.returncode == 2


def test_hostile_values_are_bounded_and_safe(repo: Path, broker: RedisServer) -> None:
    manager = enable(repo, broker.url)
    eid = ids(manager)[0]
    manager.update_state(eid, "downloading")
    huge = "boom <script>" + "x" * 9_000  # the schema allows 10,000
    manager.fail(eid, huge)
    # a forged commit made with plain git: control characters in the subject, a trailer naming
    # no stage, and one naming an episode whose file it does not touch
    (repo / "notes.txt").write_text("hi\n")
    git(repo, "add", "notes.txt")
    msg = f"{eid}: \x07 \x1b[2J pwned\n\nHystate-Episode: {eid}\nHystate-From: failed\nHystate-To: <script>\n"
    person(repo, "commit", "-q", "-m", msg)
    person(
        repo,
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        f"x\n\nHystate-Episode: {eid}\nHystate-From: failed\nHystate-To: skipped\n",
    )
    # a batch whose body lists ids (made up, and a known one) whose files it does not touch
    (repo / "notes.txt").write_text("more\n")
    git(repo, "add", "notes.txt")
    body = f"fake-one\nfake-two\n{ids(manager)[1]}\n\nHystate-To: discovered\nHystate-Count: 3\n"
    person(repo, "commit", "-q", "-m", "discover: 3 new episodes\n\n" + body)
    assert events.Publisher(manager).publish().published == 0
    # a forged transition that does touch the file, with a hostile worker and a huge subject
    path = manager.path_of(eid)
    doc = manager.episode(eid).data
    doc["stage"], doc["status_message"] = "skipped", "\x1b[31m\u202e evil"
    path.write_bytes(dump(doc))
    git(repo, "add", str(path))
    msg = (
        "s" * 5000
        + f"\n\nHystate-Episode: {eid}\nHystate-From: failed\nHystate-To: skipped\nHystate-Worker: w\u202e\x1b[1mevil\n"
    )
    person(repo, "commit", "-q", "-m", msg)
    assert events.Publisher(manager).publish().published == 1
    got = [f for _, f in entries(broker)][20:]
    assert [f["to"] for f in got] == ["downloading", "failed", "skipped"]
    assert (
        got[2]["worker"] == "w\\u202e\\u001b[1mevil" and len(got[2]["subject"]) == LIMITS["subject"]
    )
    assert len(got[1]["message"]) == LIMITS["message"] and got[1]["message"].startswith(
        "boom <script>x"
    )
    assert got[2]["message"] == "\\u001b[31m\\u202e evil"
    for fields in got:
        assert all(len(v) <= 2000 and v.isprintable() for v in fields.values())


def test_a_rewritten_history_is_matched_not_duplicated(repo: Path, broker: RedisServer) -> None:
    manager = enable(repo, broker.url)
    a, b, c = ids(manager)[:3]
    token = manager.update_state(a, "downloading").lease
    manager.update_state(b, "downloading")
    assert len(entries(broker)) == 22
    # another node's history replaces ours: it has c's transition first, then ours replayed
    # (cherry-picked: new commits, same files, same history entries)
    old = git(repo, "rev-parse", "HEAD").strip()
    git(repo, "reset", "-q", "--hard", "HEAD~2")
    manager = StateManager(cwd=repo, worker="w2")
    manager.config.values["events"]["enabled"] = False
    manager.update_state(c, "downloading")
    person(repo, "cherry-pick", f"{old}~1", old)
    manager = StateManager(cwd=repo, worker="w2")
    result = events.Publisher(manager).publish()
    assert result.resynced and result.published == 1
    got = [f for _, f in entries(broker)]
    assert [(f["episode_id"], f["to"]) for f in got[20:]] == [
        (a, "downloading"),
        (b, "downloading"),
        (c, "downloading"),
    ]
    # the cursor now follows the new history: later transitions go on from there, once each
    manager.update_state(a, "downloaded", fields={"files.audio_file": "a.mp3"}, lease=token)
    later = [f for _, f in entries(broker)][23:]
    assert [(f["episode_id"], f["to"]) for f in later] == [(a, "downloaded")]
    assert events.Publisher(manager).publish().published == 0


def test_merged_transitions_are_published_at_the_merge(repo: Path, broker: RedisServer) -> None:
    manager = enable(repo, broker.url)
    a, b = ids(manager)[:2]
    git(repo, "checkout", "-q", "-b", "side")
    side = StateManager(cwd=repo, worker="node2")
    side.config.values["events"]["enabled"] = False
    side.update_state(b, "downloading")
    git(repo, "checkout", "-q", "main")
    manager.update_state(a, "downloading")
    person(
        repo,
        "merge",
        "-q",
        "--no-ff",
        "-m",
        "sync",
        "side",
    )
    merge = git(repo, "rev-parse", "HEAD").strip()
    assert events.Publisher(StateManager(cwd=repo)).publish().published == 1
    got = [f for _, f in entries(broker)][20:]
    assert [(f["episode_id"], f["to"], f["worker"]) for f in got] == [
        (a, "downloading", "w1"),
        (b, "downloading", "node2"),
    ]
    assert got[1]["via"] == merge and got[1]["commit"] != merge


def test_two_publishers_never_append_the_same_events(repo: Path, broker: RedisServer) -> None:
    """Publishers on two hosts share no lock file: the stream's compare-and-swap decides."""
    manager = enable(repo, broker.url)
    manager.config.values["events"]["enabled"] = False
    for eid in ids(manager)[:4]:
        manager.update_state(eid, "downloading")
    one, two = events.Publisher(manager), events.Publisher(manager)
    stale = one.plan()
    assert stale is not None
    planned = [e.fields() for e in stale.events(one.source)]
    assert len(planned) == 24
    assert two.publish_locked().published == 24
    ok, _ = one.stream.append(stale.expected, planned, stale.tip)
    assert not ok  # the plan was made before the other's append: refused whole
    assert one.publish_locked().published == 0
    assert len(entries(broker)) == 24


def test_a_publish_cut_short_resumes_inside_a_batch(
    repo: Path, broker: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    manager = enable(repo, broker.url)
    manager.config.values["events"]["enabled"] = False
    publisher = events.Publisher(manager)
    monkeypatch.setattr(publishing, "CHUNK", 7)  # the 20 discovered of one commit: 7 + 7 + 6
    result = publisher.publish_locked(deadline=0)  # past: stop after the first batch
    assert (result.published, result.complete) == (7, False)
    assert publisher.publish_locked().published == 13
    got = [f["episode_id"] for _, f in entries(broker)]
    assert len(got) == 20 and sorted(got) == ids(manager)  # the order of the commit body


def test_status_and_the_ref_a_node_publishes(repo: Path, broker: RedisServer) -> None:
    enable(repo, broker.url, "    ref: refs/heads/published\n")
    manager = StateManager(cwd=repo)
    manager.config.values["events"]["enabled"] = False
    manager.update_state(ids(manager)[0], "downloading")
    status = events.status(manager)
    assert status["tip"] is None and status["backlog"] == 0  # the ref does not exist yet
    git(repo, "branch", "published", "HEAD~1")
    assert events.status(manager)["backlog"] == 20
    proc = run_hystate(repo, "events", "publish")
    assert proc.returncode == 0 and "published 20 event(s)" in proc.stdout
    assert events.status(manager)["backlog"] == 0
    git(repo, "branch", "-f", "published", "HEAD")
    assert events.status(manager)["backlog"] == 1


def test_the_url_is_checked_and_its_password_never_shown(repo: Path) -> None:
    (repo / "hystate.yaml").write_text(
        "state_management:\n  events:\n    url: http://user:s3cret@host/0\n"
    )
    proc = run_hystate(repo, "events", "status")
    assert proc.returncode == 5 and "s3cret" not in proc.stderr and "events.url" in proc.stderr
    (repo / "hystate.yaml").write_text(  # nothing listens on port 1
        "state_management:\n  events:\n    url: redis://user:s3cret@127.0.0.1:1/0\n"
    )
    proc = run_hystate(repo, "events", "publish")
    assert proc.returncode == 7 and "s3cret" not in proc.stderr and "***@127.0.0.1" in proc.stderr
    with pytest.raises(InvalidData):
        from hystate.core.config import Config

        Config.parse(b"state_management:\n  events:\n    url: redis://h/x\n", repo / "hystate.yaml")


def test_a_follow_publisher_delivers_after_the_broker_returns(
    repo: Path, broker: RedisServer
) -> None:
    """Workers that do not publish themselves (events.enabled false), one daemon that does."""
    import signal
    import subprocess
    import sys
    import time

    (repo / "hystate.yaml").write_text(f"state_management:\n  events:\n    url: {broker.url}\n")
    manager = StateManager(cwd=repo, worker="w1")
    a, b = ids(manager)[:2]
    daemon = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hystate.cli",
            "events",
            "publish",
            "--follow",
            "--interval",
            "0.05",
        ],
        cwd=repo,
        stderr=subprocess.PIPE,
        text=True,
    )

    def wait_len(n: int) -> None:
        deadline = time.monotonic() + 60
        while not (broker.ping() and len(entries(broker)) >= n):
            assert time.monotonic() < deadline, f"the stream never reached {n} entries"
            time.sleep(0.05)

    try:
        manager.update_state(a, "downloading")
        wait_len(21)
        broker.stop()
        manager.update_state(b, "downloading")  # succeeds; the daemon keeps retrying
        time.sleep(0.5)
        broker.start()
        wait_len(22)
    finally:
        daemon.send_signal(signal.SIGINT)
        _, err = daemon.communicate(timeout=30)
    got = [f for _, f in entries(broker)]
    assert len(got) == 22 and [f["commit"] for f in got[20:]] == transition_commits(repo)
    assert "retrying" in err and "reachable again" in err


def test_a_long_history_is_read_a_window_at_a_time(
    repo: Path, broker: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    manager = enable(repo, broker.url)
    manager.config.values["events"]["enabled"] = False
    for eid in ids(manager)[:7]:
        manager.update_state(eid, "downloading")
        person(repo, "commit", "-q", "--allow-empty", "-m", "a person's commit")
    monkeypatch.setattr(publishing, "WINDOW", 3)
    reads: list[int] = []
    of_positions = EventSource.of_positions

    def spy(self: EventSource, shas: list[str]) -> list[Event]:
        reads.append(len(shas))
        return of_positions(self, shas)

    monkeypatch.setattr(EventSource, "of_positions", spy)
    assert events.Publisher(manager).publish().published == 27
    assert reads == [3, 3, 3, 3, 3, 1]  # 16 commits (init, discovery, 7 x 2), 3 at a time
    got = [f for _, f in entries(broker)]
    assert [f["commit"] for f in got[20:]] == transition_commits(repo)


def test_a_discovery_is_published_at_once(repo: Path, broker: RedisServer) -> None:
    manager = enable(repo, broker.url)
    manager.add_episode("hy-new-one", title="New <b>one</b>", date="2010-02-03")
    got = [f for _, f in entries(broker)]
    assert len(got) == 21 and got[-1]["episode_id"] == "hy-new-one"
    assert (got[-1]["from"], got[-1]["to"]) == ("", "discovered")
    assert got[-1]["at"] == manager.episode("hy-new-one").data["history"][0]["at"]


KILLED_PUBLISHER = """
import sys, time
from hystate.events import publisher
from hystate.manager import StateManager

publisher.CHUNK = 1
append = publisher.RedisStream.append

def slow(self, *args, **kwargs):
    time.sleep(0.02)
    return append(self, *args, **kwargs)

publisher.RedisStream.append = slow
publisher.Publisher(StateManager(cwd=sys.argv[1])).publish()
"""


def test_a_publisher_killed_mid_publish_leaves_nothing_twice(
    repo: Path, broker: RedisServer
) -> None:
    import signal
    import subprocess
    import sys
    import time

    manager = enable(repo, broker.url)
    manager.config.values["events"]["enabled"] = False
    for eid in ids(manager)[:10]:
        manager.update_state(eid, "downloading")
    for _ in range(3):  # killed three times at different points, each time with the lock held
        proc = subprocess.Popen([sys.executable, "-c", KILLED_PUBLISHER, str(repo)])
        start, deadline = len(entries(broker)), time.monotonic() + 60
        while len(entries(broker)) < start + 3 and proc.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    assert (repo / ".git" / "hystate" / "events.lock").exists()  # left by the last one
    before = len(entries(broker))
    assert 9 <= before < 30
    result = events.Publisher(manager).publish(lock_wait=10)  # breaks the dead one's lock
    got = [f for _, f in entries(broker)]
    assert len(got) == 30 and result.published == 30 - before
    assert sorted(f["episode_id"] for f in got[:20]) == ids(manager)
    assert [f["commit"] for f in got[20:]] == transition_commits(repo)


def test_matching_a_rewritten_history_cut_short_goes_on_matching(
    repo: Path, broker: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    manager = enable(repo, broker.url)
    a, b, c, d = ids(manager)[:4]
    manager.update_state(a, "downloading")
    manager.update_state(b, "downloading")
    old = git(repo, "rev-parse", "HEAD").strip()
    git(repo, "reset", "-q", "--hard", "HEAD~2")
    manager = StateManager(cwd=repo, worker="w2")
    manager.config.values["events"]["enabled"] = False
    manager.update_state(c, "downloading")
    person(repo, "cherry-pick", f"{old}~1", old)
    manager = StateManager(cwd=repo, worker="w2")
    manager.config.values["events"]["enabled"] = False
    manager.update_state(d, "downloading")
    monkeypatch.setattr(publishing, "CHUNK", 1)
    publisher = events.Publisher(manager)
    first = publisher.publish(deadline=0)  # stops after c's event
    assert (first.published, first.complete, first.resynced) == (1, False, True)
    second = publisher.publish()  # a and b again are matched, not published
    assert (second.published, second.complete, second.resynced) == (1, True, True)
    got = [(f["episode_id"], f["to"]) for _, f in entries(broker)][20:]
    assert got == [(e, "downloading") for e in (a, b, c, d)]
    assert publisher.publish().published == 0


def test_with_a_daemon_running_commits_leave_publishing_to_it(
    repo: Path, broker: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import signal
    import subprocess
    import sys
    import time

    manager = enable(repo, broker.url)
    eid = ids(manager)[0]
    command = [sys.executable, "-m", "hystate.cli", "events", "publish", "--follow"]
    daemon = subprocess.Popen([*command, "--interval", "0.05"], cwd=repo, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not (repo / ".git/hystate/events.daemon").exists():
            assert time.monotonic() < deadline and daemon.poll() is None
            time.sleep(0.02)
        second = run_hystate(repo, "events", "publish", "--follow")
        assert second.returncode == 6 and "another" in second.stderr

        def no_broker_here(*args: object, **kwargs: object) -> None:
            raise AssertionError("the worker published although the daemon runs")

        monkeypatch.setattr(publishing.Publisher, "__init__", no_broker_here)
        manager.update_state(eid, "downloading")
        while len(entries(broker)) < 21:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        daemon.send_signal(signal.SIGINT)
        daemon.communicate(timeout=30)
    assert [f["commit"] for _, f in entries(broker)][20:] == transition_commits(repo)
    assert not (repo / ".git/hystate/events.daemon").exists()
