"""kill -9 at random moments, many times, with `fsck --repair` between rounds; then check that
nothing acknowledged was lost and the repository is sound. Used by tests/test_faults.py and
bench/faults.py (the long version).

Two kinds of workers: API workers (a Python process calling ``update_state``) and CLI workers:
``sh -c`` wrappers running ``hystate advance`` once per step, as a pipeline script does; the kill
hits the wrapper's whole process group (the shell, hystate, and any git it runs). After each round
``hystate fsck --repair`` runs as a separate command and must leave nothing for a person: exit 0,
never git's "remove the file manually". In some rounds a live ``git commit`` holds ``index.lock``
(its editor still open) while fsck runs: its lock must survive (git fails otherwise)."""

from __future__ import annotations

import os
import random
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.harness.worker_steps import STEPS, cli_sets, with_steps

WORKER = with_steps(
    r"""
import sys
from hystate import StateManager, IllegalTransition, LockBusy, InvalidData, GitError
STEPS = ...
manager = StateManager(cwd=sys.argv[1])
print("READY", flush=True)
ids = sys.argv[2:]
while ids:
    for eid in list(ids):
        episode = manager.get_episode_state(eid)
        stage = episode.stage.value
        try:
            if stage == "failed":
                result = manager.update_state(eid, episode.failed_stage, force=True)
            elif stage in STEPS:
                to, fields = STEPS[stage]
                # a restarted worker takes over, on purpose, what its killed predecessor held
                mine = eid in manager.tokens
                result = manager.update_state(eid, to, fields=fields, take_over=not mine)
            else:
                ids.remove(eid)
                continue
        except IllegalTransition:  # out of retries: give up on it
            manager.retry([eid], now=True)
            continue
        except (LockBusy, GitError) as exc:
            continue
        print(f"ACK {eid} {result.episode.stage.value} {result.commit}", flush=True)
"""
)


CLI_STEPS = {stage: (to, cli_sets(fields)) for stage, (to, fields) in STEPS.items()}
HYSTATE = " ".join(shlex.quote(a) for a in (sys.executable, "-m", "hystate.cli"))
_ADVANCED = re.compile(r"^(\S+): (\S+) -> (\S+) \(([0-9a-f]{8,})\)(?:; lease \S+)?$")


@dataclass
class FaultRun:
    kills: int = 0
    cli_kills: int = 0
    rounds: int = 0
    acks: list[tuple[str, str, str]] = field(default_factory=list)
    repairs: int = 0
    live_git_rounds: int = 0
    live_git_lock_removed: int = 0  # must stay 0
    manual_steps: list[str] = field(default_factory=list)  # fsck --repair left work: must be empty


def cli_script(repo: Path, episodes: list[tuple[str, str, str | None]]) -> str:
    """The ``sh -c`` wrapper of one CLI worker: for each (episode, stage, failed stage), every
    step to published, one ``hystate advance`` each, stopping at the first refusal; each success
    printed as an ACK line."""
    lines = [f"cd {shlex.quote(str(repo))} || exit 1", f"H={shlex.quote(HYSTATE)}",
             'adv() { out=$(eval "$H advance $*") && echo "ACK $out" && case "$out" in'
             ' *"; lease "*) export HYSTATE_LEASE="${out##*; lease }";; esac; }']  # fmt: skip
    for eid, stage, failed_stage in episodes:
        steps, at = [], stage
        if at == "failed" and failed_stage:
            steps.append(f'eval "$H retry {eid} --now" >/dev/null')
            at = {"downloading": "discovered", "converting": "downloaded",
                  "uploading": "converted"}.get(failed_stage, "")  # fmt: skip
        force = at in ("downloading", "converting", "uploading")  # a killed worker's: taken over
        while at in CLI_STEPS:
            to, extra = CLI_STEPS[at]
            steps.append(f"adv {eid} {to} {extra}{' --force' if force else ''}".rstrip())
            at, force = to, False
        if steps:
            lines.append("{ " + " && ".join(steps) + "; }")
    return "\n".join(lines) + "\n"


def _pending(repo: Path, batch: int) -> list[str]:
    """Episodes with work left; when none, a fresh batch is discovered so workers stay busy."""
    from hystate.engine.catalog import Record
    from hystate.manager import StateManager

    manager = StateManager(cwd=repo, worker="harness")
    left = [
        e.episode_id
        for e in manager.list_episodes()
        if e.stage.value not in ("published", "skipped")
    ]
    if left:
        return left
    start = manager.count_all_episodes()
    records = [
        Record(f"fault-{n:05d}", f"Fault batch episode {n}", "2012-06-06")
        for n in range(start, start + batch)
    ]
    return manager.discover(records).added


def run_faults(
    repo: Path,
    *,
    kills: int,
    workers: int = 2,
    cli_workers: int = 0,
    batch: int = 20,
    seed: int = 7,
    live_git_every: int = 0,
) -> FaultRun:
    """Rounds of workers killed at random moments until ``kills`` kills, fsck --repair between
    rounds. ``live_git_every``: every n-th round a live `git commit` holds index.lock meanwhile."""
    from hystate.manager import StateManager

    rng = random.Random(seed)
    run = FaultRun()
    if live_git_every:
        _track_notes(repo)
    while run.kills < kills:
        ids = _pending(repo, batch)
        total = workers + cli_workers
        groups = [ids[i::total] for i in range(total)]
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", WORKER, str(repo), *group], stdout=subprocess.PIPE, text=True
            )
            for group in groups[:workers]
        ]
        manager = StateManager(cwd=repo)
        states = {e.episode_id: e for e in manager.list_episodes()}
        shells = [
            subprocess.Popen(
                ["sh", "-c", cli_script(repo, [(i, states[i].stage.value, states[i].failed_stage)
                                               for i in group])],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                start_new_session=True,  # its own process group: the kill takes all of it
            )
            for group in groups[workers:]
        ]  # fmt: skip
        everyone = procs + shells
        readers = [_Reader(proc) for proc in everyone]
        # the random moment counts from when each worker is working (ready, or its first
        # transition acknowledged), not from its start, so a loaded machine still kills work
        # in progress rather than Python starting up
        for reader in readers:
            reader.working.wait(timeout=120)
        time.sleep(rng.uniform(0.1, 0.6 + 0.4 * cli_workers))
        victims = [p for p in everyone if rng.random() < 0.8] or everyone[:1]
        for proc in victims:
            _kill(proc, proc in shells)  # SIGKILL: no cleanup at all
        for proc, reader in zip(everyone, readers, strict=True):
            if proc not in victims:
                _kill(proc, proc in shells)
            proc.wait()
            reader.join()
            for line in reader.lines:
                _record_ack(run, line)
            if proc.returncode == -9:
                run.kills += 1
                run.cli_kills += proc in shells
        run.rounds += 1
        live = live_git_every and run.rounds % live_git_every == 0
        run.repairs += _repair(repo, run, live_git=bool(live))
    return run


class _Reader(threading.Thread):
    """A worker's output, read as it comes; ``working`` is set at its first READY or ACK line
    (or when it ends)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        super().__init__(daemon=True)
        self.proc = proc
        self.lines: list[str] = []
        self.working = threading.Event()
        self.start()

    def run(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if line.startswith(("READY", "ACK ")):
                self.working.set()
        self.working.set()


def _kill(proc: subprocess.Popen[str], group: bool) -> None:
    try:
        if group:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
    except ProcessLookupError:
        pass


def _record_ack(run: FaultRun, line: str) -> None:
    if not line.startswith("ACK "):
        return
    found = _ADVANCED.match(line[4:])
    if found:  # a CLI worker: "<id>: <from> -> <to> (<sha>)"
        eid, _, stage, commit = found.groups()
        run.acks.append((eid, stage, commit))
    else:
        _, eid, stage, commit = line.split()
        run.acks.append((eid, stage, commit))


def _repair(repo: Path, run: FaultRun, *, live_git: bool) -> int:
    """`hystate fsck --repair` as a person would run it; with ``live_git``, while a person's
    `git commit` holds index.lock (its editor open)."""
    person = None
    if live_git and (repo / ".git" / "index.lock").exists():
        # a killed worker left git's lock: a first fsck --repair breaks it (its owner is dead),
        # so the person's git gets its turn (else it stops at once: fsck alone that round)
        subprocess.run(
            [sys.executable, "-m", "hystate.cli", "fsck", "--repair"],
            cwd=repo, capture_output=True, text=True, check=False,
        )  # fmt: skip
    if live_git and not (repo / ".git" / "index.lock").exists():
        notes = repo / "notes.txt"
        notes.write_text(f"round {run.rounds}\n")
        env = {**os.environ, "GIT_EDITOR": "sleep 1.5; true"}
        person = subprocess.Popen(
            ["git", "-c", "user.name=Person", "-c", "user.email=p@example.org", "commit",
             "-q", "--no-verify", "-e", "-m", f"notes {run.rounds}", "--", "notes.txt"],
            cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 5
        while not (repo / ".git" / "index.lock").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        run.live_git_rounds += 1
    proc = subprocess.run(
        [sys.executable, "-m", "hystate.cli", "fsck", "--repair", "--json"],
        cwd=repo, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if person is not None:
        _, err = person.communicate()
        if person.returncode != 0:
            run.live_git_lock_removed += 1
            run.manual_steps.append(f"round {run.rounds}: the live git commit failed: {err}")
    if proc.returncode != 0 or "remove the file" in proc.stderr:
        locks = sorted(str(p.relative_to(repo)) for p in (repo / ".git").rglob("*.lock"))
        again = subprocess.run(
            [sys.executable, "-m", "hystate.cli", "fsck", "--repair"],
            cwd=repo, capture_output=True, text=True, check=False,
        )  # fmt: skip
        run.manual_steps.append(
            f"round {run.rounds}: fsck --repair exited {proc.returncode}: "
            f"{proc.stderr.strip()[:300]} (git locks then: {locks}; a second fsck --repair "
            f"exited {again.returncode})"
        )
        return 0
    import json

    findings = json.loads(proc.stdout)["findings"]
    return sum(1 for f in findings if f["repaired"] and f["kind"] != "cache")


def _track_notes(repo: Path) -> None:
    """notes.txt committed once, so a person's `git commit -- notes.txt` has a file to commit."""
    (repo / "notes.txt").write_text("notes\n")
    for args in (
        ["add", "notes.txt"],
        [
            "-c",
            "user.name=Person",
            "-c",
            "user.email=p@x.org",
            "commit",
            "-q",
            "--no-verify",
            "-m",
            "notes",
        ],
    ):
        subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)  # fmt: skip


def check_sound(repo: Path, run: FaultRun) -> list[str]:
    """Every problem found; empty when everything the suite promises holds."""
    from hystate.manager import StateManager

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=False)

    problems = list(run.manual_steps)
    for eid, stage, commit in run.acks:
        if git("merge-base", "--is-ancestor", commit, "HEAD").returncode != 0:
            problems.append(f"acknowledged {eid} -> {stage} ({commit}) is not in HEAD's history")
            continue
        trailers = git(
            "log", "-1", "--format=%(trailers:key=Hystate-To,valueonly)", commit
        ).stdout.strip()
        if trailers != stage:
            problems.append(f"commit {commit} records {trailers!r}, acknowledged {stage}")
    manager = StateManager(cwd=repo)
    problems += [f"invalid: {p}" for p in manager.validate()]
    status = git("status", "--porcelain", "--", "processed").stdout
    if status:
        problems.append(f"work tree or index differs from HEAD: {status[:200]}")
    if git("diff", "--cached", "--name-only").stdout:
        problems.append("index differs from HEAD")
    # dangling objects are expected: a worker killed after writing a commit object but
    # before moving HEAD leaves it unreachable (git gc prunes it); anything else is a problem
    fsck = git("fsck", "--strict", "--no-progress", "--no-dangling")
    if fsck.returncode != 0 or fsck.stdout.strip():
        problems.append(f"git fsck: {fsck.stdout or fsck.stderr}")
    cached = sorted(e.data["episode_id"] + e.data["stage"] for e in manager.list_episodes())
    fresh = sorted(e.data["episode_id"] + e.data["stage"] for e in manager.iter_episodes())
    if cached != fresh:
        problems.append("caches differ from the tree")
    return problems
