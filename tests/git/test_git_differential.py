"""Differential test of the commit path against git, libgit2 (pygit2) and dulwich.

A hypothesis state machine interleaves hystate transitions (the API's long-lived
``StateManager`` and the CLI), discovery of new episodes, and a person's ordinary git use in the
same checkout: edits of tracked and untracked files (also in the same second as a ``git add``),
``git add``, ``git commit``, ``git commit -a``, ``git stash`` / ``git stash pop``,
``git checkout -- <file>``, ``git gc --prune=now`` and ``git update-index --refresh``. A model
holds what every file should be in HEAD, the index and the work tree. After every step:

- git: ``status --porcelain`` is exactly the model's; ``fsck --strict`` is clean; every state
  file's index entry (mode and sha) equals HEAD's and HEAD holds the model's stage; ``write-tree``
  succeeds;
- libgit2 (pygit2) reads the index and HEAD and sees every state file unmodified, with the same
  HEAD and the same index entries as git;
- dulwich: the same.
Neither libgit2 ("unsupported mandatory extension: 'link'") nor dulwich (a checksum error) can
read a split index, so both are skipped for that set-up; git's own checks still run.

The run covers several repository set-ups (index v2/v3/v4, split index, untracked cache, sparse
cone, ``feature.manyFiles``, ``core.trustctime=false``, ``core.autocrlf=true``, a clean/smudge
filter on the person's files, exec bits). By default the run is derandomized (a fixed seed) and
small (``DEFAULT_EXAMPLES`` examples of up to ``STEPS`` steps per set-up, ~2-3 minutes in all);
``HYSTATE_DIFF_EXAMPLES=N`` runs N random examples per set-up instead (reproduce a failure with
the ``--hypothesis-seed`` pytest prints).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from hystate.engine.catalog import read_records
from hystate.manager import StateManager
from tests.conftest import Cli, git, holder_token

pygit2 = pytest.importorskip("pygit2")
dulwich_repo = pytest.importorskip("dulwich.repo")
dulwich_porcelain = pytest.importorskip("dulwich.porcelain")


DEFAULT_EXAMPLES = 5
STEPS = 20
EXAMPLES = int(os.environ.get("HYSTATE_DIFF_EXAMPLES") or DEFAULT_EXAMPLES)
# repeatable unless HYSTATE_DIFF_EXAMPLES asks for a longer, random run
SETTINGS = settings(
    max_examples=EXAMPLES,
    stateful_step_count=STEPS,
    derandomize="HYSTATE_DIFF_EXAMPLES" not in os.environ,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)
USER = ("-c", "user.name=Person", "-c", "user.email=person@example.org")

# (stage to go to, fields it needs), in pipeline order; an episode walks this list.
WALK: list[tuple[str, dict[str, str]]] = [
    ("downloading", {}),
    ("downloaded", {"files.audio_file": "audio/a.mp3"}),
    ("converting", {}),
    ("converted", {"files.video_file": "video/v.mp4"}),
    ("uploading", {}),
    ("uploaded", {"youtube.video_id": "dQw4w9WgXcQ"}),
    ("scheduled", {"youtube.scheduled_date": "2027-01-01T18:00:00+00:00"}),
    ("published", {"youtube.published_date": "2027-01-01T18:00:05+00:00"}),
]


@dataclass(frozen=True)
class Setup:
    name: str
    config: tuple[tuple[str, str], ...] = ()
    libgit2: bool = True  # False: libgit2 cannot read this index
    dulwich: bool = True  # False: dulwich cannot read this index
    sparse: bool = False
    skip_worktree: bool = False
    split: bool = False
    index_version: int | None = None
    untracked_cache: bool = False
    filter: bool = False
    exec_bits: bool = False


SETUPS = [
    Setup("index-v2", index_version=2),
    Setup("index-v3-skip-worktree", skip_worktree=True),
    Setup("index-v4", config=(("index.version", "4"),), index_version=4),
    Setup(
        "split-index",
        config=(("core.splitIndex", "true"),),
        split=True,
        libgit2=False,
        dulwich=False,
    ),
    Setup("untracked-cache", config=(("core.untrackedCache", "true"),), untracked_cache=True),
    Setup("sparse-cone", sparse=True),
    Setup("many-files", config=(("feature.manyFiles", "true"),), index_version=4),
    Setup("trustctime-false", config=(("core.trustctime", "false"),)),
    Setup("autocrlf-true", config=(("core.autocrlf", "true"),)),
    Setup("filter-on-user-files", filter=True),
    Setup("exec-bits", exec_bits=True),
]

USER_FILES = ["notes/a.txt", "notes/b.txt", "top.txt"]  # tracked from the start, editable
OUTSIDE = "docs/outside.txt"  # tracked; outside the sparse cone / skip-worktree in those set-ups


def content(n: int) -> bytes:
    """A person's file content; every value has the same size (racy-git needs that)."""
    return b"%08d\nlocal: %08d\n" % (n, n)


@dataclass
class FileModel:
    head: int | None
    index: int | None
    wt: int | None

    def status(self) -> str | None:
        if self.head is None and self.index is None:
            return None if self.wt is None else "??"
        x = "A" if self.head is None else ("M" if self.index != self.head else " ")
        y = " " if self.wt == self.index else "M"
        return None if x + y == "  " else x + y


@dataclass
class Model:
    files: dict[str, FileModel] = field(default_factory=dict)
    stages: dict[str, int] = field(default_factory=dict)  # episode -> position in WALK (-1: new)
    paths: dict[str, str] = field(default_factory=dict)  # episode -> repo-relative path

    def staged(self) -> bool:
        return any(f.index != f.head for f in self.files.values())

    def status(self) -> dict[str, str]:
        out = {}
        for path, f in self.files.items():
            code = f.status()
            if code is not None:
                out[path] = code
        return out


def run_git(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run(["git", *args], cwd=root, capture_output=True, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)}: {proc.stderr.decode(errors='replace')}")
    return proc


def catalog(path: Path, ids: list[tuple[str, str]]) -> Path:
    docs = [{"identifier": i, "title": f"Episode {i}", "date": f"{d}T00:00:00Z"} for i, d in ids]
    path.write_text(json.dumps({"response": {"numFound": len(docs), "docs": docs}}))
    return path


def build_repo(root: Path, setup: Setup) -> None:
    """A repository as a person would have it, then ``hystate init`` and a first discovery."""
    root.mkdir(parents=True)
    git(root, "init", "-q", "-b", "main")
    for key, value in setup.config:
        git(root, "config", key, value)
    if setup.filter:
        git(root, "config", "filter.redact.clean", "sed -e 's/^local: .*$/local: REDACTED/'")
        git(root, "config", "filter.redact.smudge", "cat")
        git(root, "config", "filter.redact.required", "true")
        (root / ".gitattributes").write_text("*.txt filter=redact\n")
    for rel in [*USER_FILES, OUTSIDE]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(content(0))
    if setup.exec_bits:
        (root / "notes" / "run.sh").write_text("#!/bin/sh\necho hi\n")
        (root / "notes" / "run.sh").chmod(0o755)
    git(root, "add", "-A")
    git(root, *USER, "commit", "-qm", "the person's files")


class DifferentialMachine(RuleBasedStateMachine):
    setup: Setup
    base: Path
    counts: dict[str, int]  # examples run, checks passed, rules run (per set-up)

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(dir=self.base))
        self.root = self.tmp / "repo"
        build_repo(self.root, self.setup)
        self.model = Model()
        for rel in USER_FILES:
            self.model.files[rel] = FileModel(0, 0, 0)
        self.counts["examples"] += 1
        self.counter = 0
        self.new_files = 0
        self.episodes = 0
        self.cli = Cli(self.root)
        self.manager = StateManager(cwd=self.root, worker="api")
        self.manager.ensure_layout()
        self._discover(4, via_cli=False)
        self._finish_setup()

    def _finish_setup(self) -> None:
        s, root = self.setup, self.root
        if s.exec_bits:
            rel = self.model.paths[sorted(self.model.paths)[0]]
            (root / rel).chmod(0o755)
            git(root, "add", rel)
            git(root, *USER, "commit", "-qm", "an executable episode file")
        if s.skip_worktree:
            git(root, "update-index", "--skip-worktree", OUTSIDE)
        if s.sparse:
            git(root, "sparse-checkout", "set", "--cone", "processed", "notes")
            assert not (root / OUTSIDE).exists()
        if s.index_version:
            git(root, "update-index", "--index-version", str(s.index_version))
        if s.split:
            git(root, "update-index", "--split-index")
        if s.untracked_cache:
            git(root, "update-index", "--untracked-cache")
        git(root, "status", "--porcelain")  # let git write the index its way once
        self.check_all()

    def teardown(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- hystate ---------------------------------------------------------------------------

    def _discover(self, count: int, via_cli: bool) -> None:
        ids = []
        for _ in range(count):
            eid = f"ep{self.episodes:04d}"
            ids.append((eid, f"{2004 + self.episodes % 3}-01-{1 + self.episodes % 28:02d}"))
            self.episodes += 1
        path = catalog(self.tmp / f"catalog-{self.episodes}.json", ids)
        if via_cli:
            result = self.cli("discover", "--from", str(path))
            assert result.exit_code == 0, result.output
        else:
            self.manager.discover(read_records(path), source="differential")
        for eid, date in ids:
            self.model.stages[eid] = -1
            self.model.paths[eid] = f"processed/{date[:4]}/{eid}.yaml"

    def _movable(self) -> list[str]:
        return sorted(e for e, s in self.model.stages.items() if s < len(WALK) - 1)

    @precondition(lambda self: self._movable())
    @rule(data=st.data(), via_cli=st.booleans())
    def transition(self, data: st.DataObject, via_cli: bool) -> None:
        eid = data.draw(st.sampled_from(self._movable()), label="episode")
        self._advance(eid, via_cli)

    def _advance(self, eid: str, via_cli: bool) -> None:
        stage, fields = WALK[self.model.stages[eid] + 1]
        token = holder_token(self.root / self.model.paths[eid])  # as the stage's holder would
        if via_cli:
            sets = [a for k, v in fields.items() for a in ("--set", f"{k}={v}")]
            lease = ["--lease", token] if token else []
            result = self.cli("advance", eid, stage, "--worker", "cli", *sets, *lease)
            assert result.exit_code == 0, f"hystate advance {eid} {stage}: {result.output}"
        else:
            self.manager.update_state(eid, stage, fields=dict(fields), worker="api", lease=token)
        self.model.stages[eid] += 1

    @rule(count=st.integers(1, 3), via_cli=st.booleans())
    def discover(self, count: int, via_cli: bool) -> None:
        self._discover(count, via_cli)

    # -- the person ------------------------------------------------------------------------

    def _next(self) -> int:
        self.counter += 1
        return self.counter

    @rule(path=st.sampled_from(USER_FILES))
    def edit_tracked(self, path: str) -> None:
        n = self._next()
        (self.root / path).write_bytes(content(n))
        self.model.files[path].wt = n

    @rule()
    def edit_untracked(self) -> None:
        self.new_files += 1
        path = f"notes/new-{self.new_files}.txt"
        n = self._next()
        (self.root / path).write_bytes(content(n))
        self.model.files[path] = FileModel(None, None, n)

    @rule(data=st.data())
    def git_add(self, data: st.DataObject) -> None:
        path = data.draw(st.sampled_from(sorted(self.model.files)), label="path")
        run_git(self.root, "add", "--", path)
        f = self.model.files[path]
        f.index = f.wt

    @rule(data=st.data(), via_cli=st.booleans())
    def racy_edit_then_transition(self, data: st.DataObject, via_cli: bool) -> None:
        """`git add` of a file and a same-size edit in the same second, then a transition in a
        later second: git's racy-entry rule must keep the edit visible."""
        path = data.draw(st.sampled_from(USER_FILES), label="path")
        if time.time() % 1 > 0.7:
            time.sleep(1.01 - time.time() % 1)
        self.edit_tracked(path)
        run_git(self.root, "add", "--", path)
        self.model.files[path].index = self.model.files[path].wt
        self.edit_tracked(path)
        time.sleep(1.01 - time.time() % 1)
        if self._movable():
            self._advance(data.draw(st.sampled_from(self._movable()), label="episode"), via_cli)
        else:
            self._discover(1, via_cli)

    @rule()
    def git_commit(self) -> None:
        expect = 0 if self.model.staged() else 1
        proc = run_git(self.root, *USER, "commit", "-q", "-m", "person", check=False)
        assert proc.returncode == expect, (expect, proc.stdout, proc.stderr)
        for f in self.model.files.values():
            f.head = f.index

    @rule()
    def git_commit_all(self) -> None:
        for f in self.model.files.values():
            if f.index is not None:
                f.index = f.wt
        expect = 0 if self.model.staged() else 1
        proc = run_git(self.root, *USER, "commit", "-q", "-a", "-m", "person -a", check=False)
        assert proc.returncode == expect, (expect, proc.stdout, proc.stderr)
        for f in self.model.files.values():
            f.head = f.index

    @rule(transition_between=st.booleans(), via_cli=st.booleans(), data=st.data())
    def stash_and_pop(self, transition_between: bool, via_cli: bool, data: st.DataObject) -> None:
        tracked_changes = any(
            f.index != f.head or (f.index is not None and f.wt != f.index)
            for f in self.model.files.values()
        )
        run_git(self.root, *USER, "stash", "push", "-q")
        stashed = bool(run_git(self.root, "stash", "list").stdout.strip())
        assert stashed == tracked_changes, "git stash disagrees about local changes"
        if transition_between and self._movable():
            self._advance(data.draw(st.sampled_from(self._movable()), label="episode"), via_cli)
        if stashed:
            listing = run_git(self.root, "status", "--porcelain", "--", "notes", "top.txt")
            assert all(line.startswith(b"??") for line in listing.stdout.splitlines()), listing
            run_git(self.root, *USER, "stash", "pop", "-q", "--index")

    @rule(data=st.data(), state_file=st.booleans())
    def checkout_file(self, data: st.DataObject, state_file: bool) -> None:
        if state_file:
            eid = data.draw(st.sampled_from(sorted(self.model.paths)), label="episode")
            run_git(self.root, "checkout", "--", self.model.paths[eid])
            return
        tracked = sorted(p for p, f in self.model.files.items() if f.index is not None)
        path = data.draw(st.sampled_from(tracked), label="path")
        run_git(self.root, "checkout", "--", path)
        self.model.files[path].wt = self.model.files[path].index

    @rule()
    def gc_prune_now(self) -> None:
        run_git(self.root, "gc", "-q", "--prune=now")

    @rule()
    def update_index_refresh(self) -> None:
        run_git(self.root, "update-index", "-q", "--refresh", check=False)

    # -- the checks ------------------------------------------------------------------------

    @invariant()
    def everyone_agrees(self) -> None:
        self.check_all()
        self.counts["checks"] += 1

    def check_all(self) -> None:
        head, state_entries = self.check_git()
        if self.setup.libgit2:
            self.check_pygit2(head, state_entries)
        if self.setup.dulwich:
            self.check_dulwich(head, state_entries)

    def check_git(self) -> tuple[str, dict[str, tuple[str, str]]]:
        root = self.root
        raw = run_git(root, "status", "--porcelain=v1", "-z", "--untracked-files=all").stdout
        seen = {e[3:].decode(): e[:2].decode() for e in raw.split(b"\0") if e}
        assert seen == self.model.status(), f"git status {seen} != model {self.model.status()}"
        fsck = run_git(root, "fsck", "--strict", "--no-dangling", "--no-progress", check=False)
        assert fsck.returncode == 0 and not fsck.stdout.strip(), fsck.stdout + fsck.stderr
        run_git(root, "write-tree")
        head = run_git(root, "rev-parse", "HEAD").stdout.decode().strip()
        tree = {}
        for line in run_git(root, "ls-tree", "-r", "HEAD", "--", "processed").stdout.splitlines():
            meta, path = line.decode().split("\t")
            mode, _, sha = meta.split()
            tree[path] = (mode, sha)
        index = {}
        for line in run_git(root, "ls-files", "-s", "--", "processed").stdout.splitlines():
            meta, path = line.decode().split("\t")
            mode, sha, stage_no = meta.split()
            assert stage_no == "0", f"conflicted entry {path}"
            index[path] = (mode, sha)
        state = {self.model.paths[e]: e for e in self.model.stages}
        for path in state:
            assert path in tree, f"{path} is not in HEAD"
            assert index.get(path) == tree[path], f"{path}: index {index.get(path)} != HEAD"
        stages = self._stages_in_head([tree[p][1] for p in state])
        for (path, eid), stage in zip(state.items(), stages, strict=True):
            want = "discovered" if self.model.stages[eid] < 0 else WALK[self.model.stages[eid]][0]
            assert stage == want, f"{path}: HEAD has stage {stage}, expected {want}"
        return head, {p: tree[p] for p in state}

    def _stages_in_head(self, shas: list[str]) -> list[str]:
        proc = subprocess.run(
            ["git", "cat-file", "--batch"],
            cwd=self.root,
            input="".join(f"{s}\n" for s in shas).encode(),
            capture_output=True,
            check=True,
        )
        out, pos, stages = proc.stdout, 0, []
        for _ in shas:
            nl = out.index(b"\n", pos)
            size = int(out[pos:nl].split()[2])
            body = out[nl + 1 : nl + 1 + size]
            pos = nl + 1 + size + 1
            line = next(x for x in body.splitlines() if x.startswith(b"stage: "))
            stages.append(line[7:].decode())
        return stages

    def check_pygit2(self, head: str, entries: dict[str, tuple[str, str]]) -> None:
        repo = pygit2.Repository(str(self.root))
        try:
            assert str(repo.head.target) == head, "libgit2 reads another HEAD"
            repo.index.read(True)
            tree = repo.head.peel(pygit2.Commit).tree
            for path, (mode, sha) in entries.items():
                entry = repo.index[path]
                assert (f"{entry.mode:o}", str(entry.id)) == (mode, sha), f"libgit2 index {path}"
                assert str(tree[path].id) == sha
                flags = repo.status_file(path)
                assert flags == pygit2.enums.FileStatus.CURRENT, f"libgit2: {path} is {flags!r}"
        finally:
            repo.free()

    def check_dulwich(self, head: str, entries: dict[str, tuple[str, str]]) -> None:
        repo = dulwich_repo.Repo(str(self.root))
        try:
            assert repo.head().decode() == head, "dulwich reads another HEAD"
            index = repo.open_index()
            for path, (mode, sha) in entries.items():
                entry = index[path.encode()]
                assert (f"{entry.mode:o}", entry.sha.decode()) == (mode, sha), f"dulwich {path}"
            status = dulwich_porcelain.status(repo, untracked_files="no", optional_locks=False)
            dirty = {p.decode() for p in status.unstaged} | {
                p.decode() for paths in status.staged.values() for p in paths
            }
            bad = sorted(dirty & set(entries))
            assert not bad, f"dulwich sees state files changed: {bad}"
        finally:
            repo.close()


@pytest.mark.parametrize("setup", SETUPS, ids=[s.name for s in SETUPS])
def test_hystate_git_libgit2_and_dulwich_agree(setup: Setup, tmp_path: Path) -> None:
    counts = {"examples": 0, "checks": 0}
    machine = type(
        f"Differential_{setup.name.replace('-', '_')}",
        (DifferentialMachine,),
        {"setup": setup, "base": tmp_path, "counts": counts},
    )
    run_state_machine_as_test(machine, settings=SETTINGS)
    # shown with `pytest -s`: how much this run covered
    print(f"\n{setup.name}: {counts['examples']} examples, {counts['checks']} checked steps")
    assert counts["examples"] >= min(EXAMPLES, 2)
