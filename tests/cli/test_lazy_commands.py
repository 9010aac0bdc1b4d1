"""Commands are imported when they run (issue 29): the table of which module defines which
command is what the modules define, and a command imports only what it uses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import run_hystate

# Run a command in a fresh interpreter and print, after it, the hystate modules it imported.
WRAPPER = """
import atexit, json, sys
atexit.register(lambda: print("MODULES " + json.dumps(sorted(
    m for m in sys.modules
    if m.startswith(("hystate", "click", "jinja2", "git", "sqlite3", "jsonschema", "tempfile",
                     "traceback", "importlib.resources"))
))))
sys.argv = ["hystate", *sys.argv[1:]]
from hystate.cli import main
main()
"""


def modules_of(repo: Path, *args: str) -> set[str]:
    proc = subprocess.run(
        [sys.executable, "-c", WRAPPER, *args],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stdout.splitlines() if x.startswith("MODULES "))
    return set(json.loads(line.removeprefix("MODULES ")))


def test_the_table_names_every_command_and_its_module() -> None:
    code = (
        "import json; from hystate.cli import cli, load_all, COMMANDS; load_all();"
        "print(json.dumps([COMMANDS, {n: c.callback.__module__ for n, c in cli.commands.items()}]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    table, defined = json.loads(out)
    assert {name: f"hystate.cli.{module}" for name, module in table.items()} == defined


def test_advance_imports_neither_other_commands_nor_the_layers_it_does_not_use(
    repo: Path, episode_id: str
) -> None:
    loaded = modules_of(repo, "advance", episode_id, "downloading")
    assert "hystate.cli.writing" in loaded
    assert "hystate.engine.transition" in loaded
    unused = {
        "hystate.cli.reading",
        "hystate.cli.reports",
        "hystate.cli.checks",
        "hystate.cli.serving",
        "hystate.cluster.sync",
        "hystate.events.stream",
        "hystate.review.validate",
        "hystate.cache.state_cache",
        "hystate.engine.leases",
        "git",  # GitPython
        "sqlite3",
        # a transition needs no cache code, nor jsonschema (jsonschema_rs validates; jsonschema
        # names the problems of an invalid document), and the rest is imported where an error
        # or a rare path needs it
        "jsonschema",
        "hystate.cache.tree",
        "hystate.cache.queries",
        "tempfile",  # (socket: jsonschema_rs imports it)
        "traceback",
        "importlib.resources",
    }
    assert loaded & unused == set()


def test_show_imports_no_commit_machinery_of_other_commands(repo: Path, episode_id: str) -> None:
    loaded = modules_of(repo, "show", episode_id)
    assert "hystate.cli.reading" in loaded
    assert loaded & {"hystate.cli.writing", "hystate.cli.reports", "hystate.cluster.sync"} == set()
    # a read makes no commit: the index, the commit, the hooks and the transition are not loaded
    machinery = {
        "hystate.git.commit",
        "hystate.git.index",
        "hystate.git.entry_table",
        "hystate.git.hooks",
        "hystate.engine.transition",
        "hystate.engine.steps",
    }
    assert loaded & machinery == set()


def test_help_still_lists_every_command(repo: Path) -> None:
    proc = run_hystate(repo, "--help")
    assert proc.returncode == 0
    from hystate.cli import COMMANDS

    listed = {line.split()[0] for line in proc.stdout.split("Commands:")[1].splitlines() if line}
    assert listed == set(COMMANDS)
