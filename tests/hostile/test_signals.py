"""Ctrl-C (and SIGTERM) at any moment: exit 130, one line, no traceback, nothing left behind.

The moment is chosen exactly, not by sleeping: an audit hook in the hystate process sends the
signal to itself when a given module starts importing, a given file is opened or a given git
command is started. The earliest moment covered is hystate.cli's first import: before that the
interpreter itself is starting (site, .pth files), which no Python program can catch.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.hostile.checks import assert_one_line, episode_files, run
from tests.hostile.harness import compare, snapshot

WRAPPER = r"""
import os, signal, sys
when, trigger, signame = sys.argv[1:4]
trigger, _, nth = trigger.partition("#")
seen = []

def hook(event, args):
    if len(seen) >= int(nth or 1):
        return
    if when == "import" and event == "import" and args[0] == trigger:
        pass
    elif when == "open" and event == "open" and isinstance(args[0], str) and trigger in args[0]:
        pass
    else:
        return
    seen.append(event)
    if len(seen) == int(nth or 1):
        os.kill(os.getpid(), getattr(signal, signame))

sys.addaudithook(hook)
sys.argv = ["hystate", *sys.argv[4:]]
from hystate.cli import main
main()
"""


def interrupt(
    repo: Path, when: str, trigger: str, *args: str, sig: str = "SIGINT"
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WRAPPER, when, trigger, sig, *args],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def check(proc: subprocess.CompletedProcess[str]) -> None:
    from tests.hostile.harness import Result

    result = Result(tuple(proc.args), proc.returncode, proc.stdout, proc.stderr)
    assert_one_line(result, 130, contains="interrupted")


START_UP = [
    "click",
    "click.core",
    "json",
    "hystate.core.errors",
    "hystate.cli.app",
    "hystate.cli.writing",
]
IN_COMMAND = [
    "hystate.core.model",
    "yaml",
    "hystate.core.yamlio",
    "hystate.core.rules",
    "hystate.git",
    "subprocess",
    "hystate.core.schema",
    "hystate.core.config",
    "hystate.core.locks",
    "hystate.manager",
    "jsonschema_rs",
]


@pytest.mark.parametrize("module", START_UP + IN_COMMAND)
def test_ctrl_c_while_importing_is_exit_130_and_one_line(repo: Path, module: str) -> None:
    eid = episode_files(repo)[0].stem
    before = snapshot(repo)
    check(interrupt(repo, "import", module, "advance", eid, "downloading"))
    assert compare(before, snapshot(repo)) == []


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("command", [["list"], ["status"], ["validate"]])
def test_a_signal_in_a_reading_command_is_exit_130(
    repo: Path, sig: str, command: list[str]
) -> None:
    before = snapshot(repo)
    check(interrupt(repo, "import", "hystate.core.model", *command, sig=sig))
    assert compare(before, snapshot(repo)) == []


def temp_files(repo: Path) -> list[Path]:
    return [p for p in repo.rglob("*.tmp") if ".git" not in p.parts]


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM", "SIGHUP"])
def test_interrupted_while_writing_the_episode_file_leaves_nothing(repo: Path, sig: str) -> None:
    """Before: a .ID.PID.tmp stayed behind and fsck exited 1. SIGHUP (the terminal closed)
    killed the process where it stood."""
    path = episode_files(repo)[0]
    before = snapshot(repo)
    check(interrupt(repo, "open", f".{path.stem}.", "advance", path.stem, "downloading", sig=sig))
    assert temp_files(repo) == []
    assert compare(before, snapshot(repo)) == []
    fsck = run(repo, "fsck")
    assert fsck.code == 0, fsck.stdout + fsck.stderr


@pytest.mark.parametrize(
    "trigger",
    [
        "hystate/owners",  # taking git's first lock (an owner file is made first)
        "heads/main.lock",  # between linking the ref's lock and opening it (fixed in 8985a22)
    ],
)
def test_interrupted_before_head_moves_puts_the_file_back(repo: Path, trigger: str) -> None:
    path = episode_files(repo)[0]
    head = run(repo, "log", "--json").stdout
    original = path.read_bytes()
    check(interrupt(repo, "open", trigger, "advance", path.stem, "downloading"))
    assert path.read_bytes() == original
    assert temp_files(repo) == []
    assert run(repo, "log", "--json").stdout == head
    assert run(repo, "advance", path.stem, "downloading").code == 0  # and no lock is left


@pytest.mark.parametrize("sig", ["SIGINT", "SIGHUP"])
def test_interrupted_discover_leaves_no_new_file(repo: Path, sig: str) -> None:
    """SIGHUP: a terminal closed mid-discover (its progress bar drawn) killed hystate at once,
    leaving the repository lock and every file written so far for fsck --repair."""
    catalog = repo.parent / "more.json"
    catalog.write_text('[{"identifier": "new-one", "title": "New", "date": "2010-05-05"}]')
    before = snapshot(repo)
    check(interrupt(repo, "open", ".new-one.", "discover", "--from", str(catalog), sig=sig))
    assert temp_files(repo) == []
    assert compare(before, snapshot(repo)) == []
    assert not (repo / "processed" / ".locks" / "_repo.lock").exists()


def test_nohup_keeps_hangups_ignored(repo: Path) -> None:
    """Under nohup (SIGHUP ignored) a hangup changes nothing: the command goes on."""
    code = "import signal; signal.signal(signal.SIGHUP, signal.SIG_IGN)\n" + WRAPPER
    proc = subprocess.run(
        [sys.executable, "-c", code, "import", "hystate.core.model", "SIGHUP", "list"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0 and len(proc.stdout.splitlines()) == 20, proc.stderr


def test_interrupted_report_leaves_no_temp_file(repo: Path) -> None:
    target = repo / "processed" / "reports" / "r.csv"
    check(interrupt(repo, "open", ".r.csv.", "report", "--format", "csv", "-o", str(target)))
    assert not target.exists()
    assert list(target.parent.glob("*.tmp")) == []


def test_interrupted_while_waiting_for_a_lock(repo: Path) -> None:
    """Ctrl-C while waiting on a busy lock: 130, and the other holder's lock is left alone."""
    import json
    import os

    eid = episode_files(repo)[0].stem
    lock = repo / "processed" / ".locks" / f"{eid}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    record = {"host": os.uname().nodename, "pid": os.getpid(), "acquired_at": "now"}
    lock.write_text(json.dumps(record))
    # the fifth look at the lock file: well inside the wait loop
    proc = interrupt(repo, "open", f"{eid}.lock#5", "advance", eid, "downloading")
    check(proc)
    assert json.loads(lock.read_text()) == record


def test_sigint_default_is_restored_for_a_host_program() -> None:
    """Importing hystate.cli in a program keeps that program's own Ctrl-C handling."""
    code = (
        "import signal, hystate.cli; "
        "print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
