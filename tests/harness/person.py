"""A person working in the same checkout as running workers: worker processes advance episodes
through the API while another process, like a person at a terminal, commits its own edits with
plain `git commit` (retrying when git says no, following the hook's advice when it refuses),
runs `git stash` / `git stash pop`, `git status` and `git gc --auto`. Some of the person's
commits bypass the hook (`--no-verify`), as people do. At the end `fsck --repair` runs and every
acknowledged transition must be in HEAD: not lost, not reverted.

Used by tests/test_person.py (short) and bench/person.py (longer, prints the figures).
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.harness.worker_steps import with_steps

PERSON = ["-c", "user.name=Person", "-c", "user.email=person@example.org"]
HYSTATE = [sys.executable, "-m", "hystate.cli"]

WORKER = with_steps(
    r"""
import sys, time
from hystate import StateManager, IllegalTransition, LockBusy, GitError
STEPS = ...
repo, name, deadline = sys.argv[1], sys.argv[2], time.time() + float(sys.argv[3])
ids = sys.argv[4:]
manager = StateManager(cwd=repo, worker=name)
while ids and time.time() < deadline:
    for eid in list(ids):
        if time.time() >= deadline:
            break
        try:
            stage = manager.get_episode_state(eid).stage.value
            if stage not in STEPS:
                ids.remove(eid)
                continue
            to, fields = STEPS[stage]
            result = manager.update_state(eid, to, fields=fields, lock_timeout=1)
        except (LockBusy, GitError, IllegalTransition) as exc:
            print(f"REFUSED {eid} {type(exc).__name__}: {str(exc)[:120]}", flush=True)
            continue
        last = result.episode.history[-1]
        print(f"ACK {eid} {to} {result.commit} {len(result.episode.history)} {last['at']}",
              flush=True)
"""
)


@dataclass
class PersonRun:
    acks: list[tuple[str, str, str, int, str]] = field(default_factory=list)
    worker_refusals: int = 0
    commits: int = 0
    commits_no_verify: list[str] = field(default_factory=list)  # their messages
    hook_refusals: int = 0
    failed_attempts: int = 0  # git said no (HEAD moved, index.lock busy): retried
    lock_busy: int = 0  # of which: index.lock held (by a transition)
    stashes: int = 0
    gcs: int = 0
    fsck_mid_run: int = 0
    reverted_found: list[str] = field(default_factory=list)  # the reverting commits' subjects
    index_resets: int = 0
    reapplied: int = 0
    seconds: float = 0.0

    def figures(self) -> dict[str, Any]:
        return {
            "acknowledged_transitions": len(self.acks),
            "worker_refusals": self.worker_refusals,
            "person_commits": self.commits,
            "person_commits_no_verify": len(self.commits_no_verify),
            "hook_refusals": self.hook_refusals,
            "person_retries": self.failed_attempts,
            "person_retries_index_lock_busy": self.lock_busy,
            "stash_push_pop": self.stashes,
            "gc_auto": self.gcs,
            "fsck_repair_mid_run": self.fsck_mid_run,
            "reverts_found_by_fsck": len(self.reverted_found),
            "reverts_reapplied": self.reapplied,
            "index_entries_reset": self.index_resets,
            "seconds": round(self.seconds, 1),
        }


def git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)}: {proc.stderr}")
    return proc


def build(repo: Path, count: int) -> list[str]:
    """A state repository of ``count`` discovered episodes in one commit, set up as
    `hystate init` does (hook included). Returns the episode ids."""
    from hystate.core.model import new_episode, now_utc
    from hystate.core.store import dump
    from hystate.git.hooks import install_pre_commit
    from hystate.manager import StateManager

    repo.mkdir(parents=True, exist_ok=True)
    git(repo, "init", "-q", "-b", "main")
    manager = StateManager(cwd=repo, worker="catalog")
    manager.ensure_layout()
    at, ids = now_utc(), []
    for i in range(count):
        year = 2004 + i % 16
        eid = f"hy0_hooting_yard_{year}-{1 + i % 12:02d}-{i:06d}"
        folder = manager.state_dir / str(year)
        folder.mkdir(exist_ok=True)
        doc = new_episode(eid, title=f"Episode {i}", date=f"{year}-01-01", at=at, by="catalog")
        (folder / f"{eid}.yaml").write_bytes(dump(doc))
        ids.append(eid)
    git(repo, "add", "--", manager.rel_state_dir)
    git(repo, *PERSON, "commit", "-q", "--no-verify", "-m", f"catalog: {count} episodes")
    assert install_pre_commit(manager.repo).status == "installed"
    (repo / "person").mkdir()
    (repo / "person" / "notes.txt").write_text("notes\n")
    git(repo, "add", "person")
    git(repo, *PERSON, "commit", "-q", "-m", "my notes")
    return ids


class Person:
    """Plain git in the same checkout, the way a person uses it."""

    def __init__(self, repo: Path, rng: random.Random, run: PersonRun, bypass: float) -> None:
        self.repo, self.rng, self.run, self.bypass = repo, rng, run, bypass
        self.n = 0

    def edit(self) -> None:
        self.n += 1
        path = self.repo / "person" / f"notes-{self.n % 5}.txt"
        path.write_text(f"edit {self.n} at {time.time()}\n")

    def commit(self) -> None:
        self.edit()
        self.patiently("add", "person")
        no_verify = self.rng.random() < self.bypass
        for _ in range(300):
            args = [*PERSON, "commit", "-q", "-m", f"notes {self.n}"]
            proc = git(self.repo, *args, *(["--no-verify"] if no_verify else []), check=False)
            if proc.returncode == 0:
                self.run.commits += 1
                if no_verify:
                    self.run.commits_no_verify.append(f"notes {self.n}")
                return
            said = proc.stdout + proc.stderr
            staged = re.findall(r"git restore --staged (\S+)`", said)
            if staged:  # the hook refused: do what it says (the fsck way too), or bypass it
                self.run.hook_refusals += 1
                way = self.run.hook_refusals % 3
                if way == 0:
                    fsck = subprocess.run(
                        [*HYSTATE, "fsck", "--repair"], cwd=self.repo,
                        capture_output=True, text=True, check=False,
                    )  # fmt: skip
                    assert "remove the file manually" not in fsck.stderr, fsck.stderr
                    self.run.fsck_mid_run += 1
                elif way == 1 or self.bypass == 0:
                    self.patiently("restore", "--staged", "--", *staged)
                else:
                    no_verify = True  # "I know better": the revert goes through, fsck mends it
            elif "nothing to commit" in said or "no changes added" in said:
                return  # a stash pop or the like already committed/undid it
            else:
                self.run.failed_attempts += 1  # HEAD moved, index.lock busy: try again
                self.run.lock_busy += "index.lock" in said
                time.sleep(self.rng.uniform(0.02, 0.2))
        raise AssertionError(f"the person could not commit in 300 tries: {said}")

    def patiently(self, *args: str) -> None:
        """A git command retried while another process holds index.lock, as a person would."""
        for _ in range(300):
            proc = git(self.repo, *args, check=False)
            if proc.returncode == 0:
                return
            if "index.lock" not in proc.stderr:
                break
            self.run.failed_attempts += 1
            self.run.lock_busy += 1
            time.sleep(self.rng.uniform(0.02, 0.2))
        raise AssertionError(f"git {' '.join(args)}: {proc.stderr}")

    def stash(self) -> None:
        self.edit()
        pushed = git(self.repo, "stash", "push", "-q", check=False)
        if pushed.returncode != 0:
            self.run.failed_attempts += 1
            return
        time.sleep(self.rng.uniform(0.0, 0.2))
        for _ in range(300):
            if git(self.repo, "stash", "pop", "-q", check=False).returncode == 0:
                self.run.stashes += 1
                return
            if not git(self.repo, "stash", "list").stdout:
                return
            self.run.failed_attempts += 1
            time.sleep(0.1)
        raise AssertionError("git stash pop kept failing")

    def act(self) -> None:
        roll = self.rng.random()
        if roll < 0.6:
            self.commit()
        elif roll < 0.8:
            self.stash()
        elif roll < 0.9:
            git(self.repo, "status", "--porcelain", check=False)
        else:
            git(self.repo, "gc", "--auto", "--quiet", check=False)
            self.run.gcs += 1


def run_person(
    repo: Path,
    ids: list[str],
    *,
    workers: int = 4,
    per_worker: int = 40,
    seconds: float = 60.0,
    bypass: float = 0.2,
    seed: int = 10,
    min_commits: int = 0,
) -> PersonRun:
    """Workers and a person side by side for ``seconds``, then `fsck --repair`.

    On a loaded machine the person may lose most races for ``index.lock``; it then goes on
    (up to ``seconds`` more, the workers finishing) until it has made ``min_commits``.
    """
    rng = random.Random(seed)
    run = PersonRun()
    chosen = rng.sample(ids, workers * per_worker)
    started = time.perf_counter()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(repo), f"worker-{w}", str(seconds),
             *chosen[w::workers]],
            stdout=subprocess.PIPE, text=True,
        )
        for w in range(workers)
    ]  # fmt: skip
    person = Person(repo, rng, run, bypass)
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline or (
            run.commits < min_commits and time.monotonic() < deadline + seconds
        ):
            person.act()
            time.sleep(rng.uniform(0.0, 0.1))
    except BaseException:
        for proc in procs:
            proc.kill()
            proc.wait()
        raise
    for proc in procs:
        out, _ = proc.communicate(timeout=seconds + 120)
        assert proc.returncode == 0, f"worker exited {proc.returncode}"
        for line in out.splitlines():
            if line.startswith("ACK "):
                _, eid, stage, commit, count, at = line.split()
                run.acks.append((eid, stage, commit, int(count), at))
            elif line.startswith("REFUSED "):
                run.worker_refusals += 1
    run.seconds = time.perf_counter() - started
    _final_repair(repo, run)
    return run


def _final_repair(repo: Path, run: PersonRun) -> None:
    found = _fsck(repo, repair=False)
    run.reverted_found = [
        git(repo, "log", "-1", "--format=%s", f["message"].split()[1]).stdout.strip()
        for f in found
        if f["kind"] == "reverted"
    ]
    fixed = _fsck(repo, repair=True)
    run.reapplied = sum(1 for f in fixed if f["kind"] == "reverted" and f["repaired"])
    run.index_resets = sum(1 for f in fixed if f["kind"] == "index-drift" and f["repaired"])


def _fsck(repo: Path, *, repair: bool) -> list[dict[str, Any]]:
    proc = subprocess.run(
        [*HYSTATE, "fsck", "--json", *(["--repair"] if repair else [])],
        cwd=repo, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode in (0, 1), proc.stderr
    assert "remove the file manually" not in proc.stderr, proc.stderr
    findings: list[dict[str, Any]] = json.loads(proc.stdout)["findings"]
    if repair:
        left = [f for f in findings if not f["repaired"]]
        assert proc.returncode == 0 and not left, left
    return findings


def check_person(repo: Path, run: PersonRun) -> list[str]:
    """Every problem found; empty when the promise holds."""
    from hystate.core import yamlio

    problems = []
    head_docs: dict[str, Any] = {}
    for eid, stage, commit, count, at in run.acks:
        if git(repo, "merge-base", "--is-ancestor", commit, "HEAD", check=False).returncode:
            problems.append(f"lost: {eid} -> {stage} ({commit}) is not in HEAD's history")
            continue
        if eid not in head_docs:
            rel = git(repo, "diff-tree", "--no-commit-id", "--name-only", "-r", commit).stdout
            head_docs[eid] = yamlio.load(git(repo, "show", f"HEAD:{rel.strip()}").stdout)
        history = head_docs[eid]["history"]
        if len(history) < count or (history[count - 1]["to"], history[count - 1]["at"]) != (
            stage,
            at,
        ):
            problems.append(f"reverted: {eid} -> {stage} ({commit[:8]}) is not in HEAD's file")
    bypassing = set(run.commits_no_verify)
    for subject in run.reverted_found:
        if subject not in bypassing:
            problems.append(f"a commit that went through the hook reverted: {subject!r}")
    if git(repo, "status", "--porcelain", "--", "processed").stdout:
        problems.append("processed/ differs from HEAD after fsck --repair")
    again = subprocess.run(
        [*HYSTATE, "fsck"], cwd=repo, capture_output=True, text=True, check=False
    )
    if again.returncode != 0:
        problems.append(f"fsck after --repair: {again.stdout[:300]}")
    fsck = git(repo, "fsck", "--no-progress", "--no-dangling", check=False)
    if fsck.returncode != 0:
        problems.append(f"git fsck: {fsck.stdout[:300]}{fsck.stderr[:300]}")
    return problems
