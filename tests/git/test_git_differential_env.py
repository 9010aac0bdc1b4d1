"""The differential suite (``test_git_differential.py``) on issue 25's set-ups, with one more
interleaving: a person's git command in the window between a worker writing an episode file
and the worker taking the repository lock.

Set-ups: the repository named by ``GIT_DIR``/``GIT_WORK_TREE`` with hystate run from outside
the work tree; a git directory elsewhere with ``core.worktree`` (``GIT_DIR`` names it);
``core.sharedRepository=group``; a branch that is a symbolic ref (``main`` -> ``trunk``); a
person's configuration that bends reads (``log.showSignature``, ``trailer.separators``,
``core.commentChar``, ``grep.patternType=fixed``, ``log.follow``, a global excludes file
ignoring ``*.yaml``); an episode file marked skip-worktree; a detached HEAD the user opted
into (``hystate.allowDetachedHead``). On top of the base checks after every step: hystate's own
audit reads (``audit.transitions``) give every episode's last stage; shared permissions hold;
the symbolic branch stays symbolic; the skip-worktree episode never moves.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import precondition, rule, run_state_machine_as_test

from hystate.git import audit
from hystate.manager import StateManager
from tests.conftest import HYSTATE, Cli, git, holder_token
from tests.git.test_git_differential import (
    EXAMPLES,
    SETTINGS,
    USER,
    WALK,
    DifferentialMachine,
    Setup,
    run_git,
)

ENV_VARS = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE")
PERSON_CONFIG = (
    ("log.showSignature", "true"),
    ("trailer.separators", "#"),
    ("core.commentChar", "H"),
    ("grep.patternType", "fixed"),
    ("log.follow", "true"),
)


@dataclass(frozen=True)
class EnvSetup(Setup):
    git_env: str = ""  # "" | "git-dir" | "core-worktree"
    shared: bool = False
    symref: bool = False
    person_config: bool = False
    skip_episode: bool = False
    detached: bool = False


SETUPS = [
    EnvSetup("git-dir-and-work-tree-env", git_env="git-dir"),
    EnvSetup("core-worktree", git_env="core-worktree", libgit2=False, dulwich=False),
    EnvSetup("shared-group", config=(("core.sharedRepository", "group"),), shared=True),
    EnvSetup("symbolic-ref-branch", symref=True),
    EnvSetup("person-config", person_config=True),
    EnvSetup("skip-worktree-episode", skip_episode=True),
    EnvSetup("detached-opted-in", config=(("hystate.allowDetachedHead", "true"),), detached=True),
]


class EnvMachine(DifferentialMachine):
    setup: EnvSetup

    def _finish_setup(self) -> None:
        s, root = self.setup, self.root
        self.by_person: set[str] = set()  # episodes whose last step a person committed
        self.frozen: str | None = None
        self.cwd = root
        if s.git_env == "git-dir":
            self.cwd = self.tmp / "elsewhere"
            self.cwd.mkdir()
            os.environ["GIT_DIR"] = str(root / ".git")
            os.environ["GIT_WORK_TREE"] = str(root)
        elif s.git_env == "core-worktree":
            git_dir = self.tmp / "meta.git"
            (root / ".git").rename(git_dir)
            os.environ["GIT_DIR"] = str(git_dir)
            git(root, "config", "core.worktree", str(root))
        if s.symref:
            git(root, "branch", "-m", "main", "trunk")
            git(root, "symbolic-ref", "refs/heads/main", "refs/heads/trunk")
            git(root, "symbolic-ref", "HEAD", "refs/heads/main")
        if s.person_config:
            for key, value in PERSON_CONFIG:
                git(root, "config", key, value)
            excludes = self.tmp / "global-excludes"
            excludes.write_text("*.yaml\n")
            git(root, "config", "core.excludesFile", str(excludes))
        if s.skip_episode:
            self.frozen = sorted(self.model.paths)[0]
            git(root, "update-index", "--skip-worktree", "--", self.model.paths[self.frozen])
        if s.detached:
            git(root, "checkout", "-q", "--detach")
        self.cli = Cli(self.cwd)
        self.manager = StateManager(cwd=self.cwd, worker="api")
        super()._finish_setup()

    def teardown(self) -> None:
        for name in ENV_VARS:
            os.environ.pop(name, None)
        super().teardown()

    def _movable(self) -> list[str]:
        return [e for e in super()._movable() if e != self.frozen]

    # -- the skip-worktree episode: refused, never moved -----------------------------------

    @precondition(lambda self: self.frozen is not None)
    @rule(via_cli=st.booleans())
    def advance_skip_worktree_episode(self, via_cli: bool) -> None:
        assert self.frozen is not None
        stage = WALK[self.model.stages[self.frozen] + 1][0]
        if via_cli:
            result = self.cli("advance", self.frozen, stage, "--worker", "cli")
            assert result.exit_code == 7, result.output
            assert "skip-worktree" in result.output
        else:
            with pytest.raises(Exception, match="skip-worktree"):
                self.manager.update_state(self.frozen, stage, worker="api")

    # -- a person in the window before the repository lock ------------------------------------

    @precondition(lambda self: self._movable())
    @rule(
        action=st.sampled_from(["stash", "checkout", "restore", "commit-a", "add"]),
        data=st.data(),
    )
    def person_in_the_window(self, action: str, data: st.DataObject) -> None:
        eid = data.draw(st.sampled_from(self._movable()), label="episode")
        stage, fields = WALK[self.model.stages[eid] + 1]
        rel = self.model.paths[eid]
        path = self.root / rel
        old = path.read_bytes()
        sets = [a for k, v in fields.items() for a in ("--set", f"{k}={v}")]
        token = holder_token(path)
        sets += ["--lease", token] if token else []
        stashed = False
        with self.manager.repo_lock():
            worker = subprocess.Popen(
                [*HYSTATE, "advance", eid, stage, "--worker", "window", *sets],
                cwd=self.cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
            deadline = time.monotonic() + 120
            while path.read_bytes() == old:
                assert worker.poll() is None, worker.communicate()
                assert time.monotonic() < deadline, "the worker never wrote the file"
                time.sleep(0.01)
            if action == "stash":
                run_git(self.root, *USER, "stash", "push", "-q")
                stashed = True
            elif action in ("checkout", "restore"):
                run_git(self.root, action, "--", rel)
            elif action == "add":
                run_git(self.root, "add", "--", rel)
            else:
                for f in self.model.files.values():
                    if f.index is not None:
                        f.index = f.wt
                run_git(self.root, *USER, "commit", "-q", "-a", "-m", "person -a")
                for f in self.model.files.values():
                    f.head = f.index
        _, err = worker.communicate(timeout=300)
        landed = worker.returncode == 0
        if not landed:
            assert worker.returncode == 7, err
            assert len(err.strip().splitlines()) == 1, err
        if action == "commit-a":
            assert not landed, "hystate took a person's commit for its own"
            self.model.stages[eid] += 1
            self.by_person.add(eid)
        elif landed:
            self.model.stages[eid] += 1
            self.by_person.discard(eid)
        if stashed:
            run_git(self.root, *USER, "stash", "pop", "-q", "--index")
            if not landed:  # the stash brought the transition back: fsck commits it
                result = self.cli("fsck", "--repair")
                assert result.exit_code in (0, 1), result.output
                self.model.stages[eid] += 1
                self.by_person.discard(eid)

    # -- the extra checks ---------------------------------------------------------------------

    def check_all(self) -> None:
        super().check_all()
        self.check_audit()
        if self.setup.shared:
            self.check_shared()
        if self.setup.symref:
            ref = git(self.root, "symbolic-ref", "refs/heads/main").strip()
            assert ref == "refs/heads/trunk", "the symbolic branch was overwritten"

    def check_audit(self) -> None:
        last: dict[str, str] = {}
        for step in audit.transitions(self.manager.repo):
            last[step.episode_id] = step.to_stage
        for eid, position in self.model.stages.items():
            if eid in self.by_person:
                continue
            want = "discovered" if position < 0 else WALK[position][0]
            assert last.get(eid) == want, f"audit reads {eid} as {last.get(eid)}, not {want}"

    def check_shared(self) -> None:
        git_dir = Path(git(self.root, "rev-parse", "--absolute-git-dir").strip())
        for folder, dirs, files in os.walk(git_dir / "objects"):
            dirs[:] = [d for d in dirs if d not in ("info", "pack")]  # made by `git init`
            for name in dirs:
                mode = os.stat(os.path.join(folder, name)).st_mode
                assert mode & 0o2070 == 0o2070, f"{folder}/{name}: {oct(mode)}"
            for name in files:
                mode = os.stat(os.path.join(folder, name)).st_mode
                assert mode & 0o040, f"{folder}/{name}: {oct(mode)}"
        for log in (git_dir / "logs").rglob("*"):
            if log.is_file():
                assert log.stat().st_mode & 0o060 == 0o060, f"{log}: {oct(log.stat().st_mode)}"


@pytest.mark.parametrize("setup", SETUPS, ids=[s.name for s in SETUPS])
def test_hystate_and_git_agree_in_issue_25_setups(setup: EnvSetup, tmp_path: Path) -> None:
    counts = {"examples": 0, "checks": 0}
    machine = type(
        f"Env_{setup.name.replace('-', '_')}",
        (EnvMachine,),
        {"setup": setup, "base": tmp_path, "counts": counts},
    )
    saved = {name: os.environ.get(name) for name in ENV_VARS}
    try:
        run_state_machine_as_test(machine, settings=SETTINGS)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(tmp_path, ignore_errors=True)
    print(f"\n{setup.name}: {counts['examples']} examples, {counts['checks']} checked steps")
    assert counts["examples"] >= min(EXAMPLES, 2)
