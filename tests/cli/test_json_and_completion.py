"""The command line for programs and for people at a terminal: ``--json`` on every command
with one vocabulary (``episode_id``, ``worker``, ``at``) and errors as JSON under it; shell
completion of episode ids and stages (the progress bars: test_progress.py)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import click
import pytest

from hystate.cli import cli
from tests.conftest import HYSTATE, Cli, run_hystate

# git's merge driver protocol; a server, not a report; shell lines for `eval` (warm start/stop)
NO_JSON = {"merge-driver", "serve", "warm start", "warm stop"}


def commands(group: click.Group, prefix: str = "") -> dict[str, click.Command]:
    found: dict[str, click.Command] = {}
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found.update(commands(command, f"{prefix}{name} "))
        else:
            found[f"{prefix}{name}"] = command
    return found


def test_every_command_takes_json() -> None:
    missing = [
        name
        for name, command in commands(cli).items()
        if name not in NO_JSON and not any(p.name == "as_json" for p in command.params)
    ]
    assert missing == []


def test_errors_are_json_under_json(repo: Path) -> None:
    proc = run_hystate(repo, "show", "hy0_nope", "--json")
    assert proc.returncode == 4
    assert json.loads(proc.stdout) == {
        "error": "no episode 'hy0_nope' in processed/ (`hystate list` shows the known ids)",
        "exit_code": 4,
        "kind": "unknown_episode",
    }
    assert len(proc.stderr.splitlines()) == 1  # people still get their one line
    plain = run_hystate(repo, "show", "hy0_nope")
    assert plain.returncode == 4 and plain.stdout == ""
    bad = run_hystate(repo, "advance", "hy0_nope", "nowhere", "--json")
    assert json.loads(bad.stdout)["exit_code"] == bad.returncode != 0


@pytest.mark.parametrize(
    "args",
    [
        ["list", "--year", "abc", "--json"],  # --json after the bad option
        ["list", "--json", "--year", "abc"],
        ["next", "downloading", "--limit", "0", "--json"],  # click's own range check
        ["status", "--json", "--bogus"],  # an unknown option
        ["skip", "hy0_x", "--json"],  # a missing required option
        ["--json", "show", "hy0_x"],  # before the command: hystate's own options (was text)
        ["--bogus", "status", "--json"],
    ],
)
def test_usage_errors_are_json_under_json_wherever_it_stands(repo: Path, args: list[str]) -> None:
    done = run_hystate(repo, *args)
    assert done.returncode == 2
    error = json.loads(done.stdout)
    assert error["exit_code"] == 2 and error["kind"] == "usage_error" and error["error"]


def test_one_vocabulary_in_log_add_and_unlock(repo: Path, run: Cli, episode_id: str) -> None:
    assert run("advance", episode_id, "downloading", "--worker", "w-7").exit_code == 0
    lines = [json.loads(line) for line in run("log", "--json").output.splitlines()]
    moved = [e for e in lines if e["to"] == "downloading"]
    assert moved and moved[0]["episode_id"] == episode_id and moved[0]["worker"] == "w-7"
    assert all("by" not in e and "at" in e for e in lines)
    added = json.loads(
        run("add", "hy0_added", "--title", "T", "--date", "2010-01-01", "--json").output
    )
    assert added["episode_id"] == "hy0_added" and added["created"] and len(added["commit"]) == 40
    unlocked = json.loads(run("unlock", episode_id, "--json").output)
    assert unlocked == {"removed": [], "kept": [], "not_locked": [episode_id]}
    rebuilt = json.loads(run("rebuild", "--json").output)
    assert rebuilt["files"] == 21
    metrics = json.loads(run("metrics", "--json").output)
    assert {"labels": {"to": "discovered"}, "value": 21.0} in metrics["hystate_transitions"]
    report = json.loads(run("report", "--format", "csv", "--json").output)
    assert Path(report["written"][0]).is_file()


def test_init_json(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    out = json.loads(run_hystate(fresh, "init", "--json").stdout)
    assert out["git_repository_created"] and out["state_dir"] == "processed"
    assert out["hook"]["status"] == "installed"


def complete(repo: Path, *words: str) -> list[str]:
    env = {
        **os.environ,
        "_HYSTATE_COMPLETE": "bash_complete",
        "COMP_WORDS": " ".join(["hystate", *words]),
        "COMP_CWORD": str(len(words)),
    }
    proc = subprocess.run(
        HYSTATE, cwd=repo, env=env, capture_output=True, text=True, timeout=60, check=True
    )
    return [line.split(",", 1)[1] for line in proc.stdout.splitlines() if line]


def test_completion_of_episode_ids_and_stages(repo: Path, episode_id: str) -> None:
    ids = sorted(p.stem for p in (repo / "processed").glob("*/*.yaml"))
    assert complete(repo, "show", "") == ids
    assert complete(repo, "show", episode_id[:-1]) == [
        i for i in ids if i.startswith(episode_id[:-1])
    ]
    assert complete(repo, "advance", episode_id, "down") == ["downloading", "downloaded"]
    assert complete(repo, "list", "--stage", "sk") == ["skipped"]
    assert complete(repo, "retry", "nothing-like-this") == []


ID_PARAMS, STAGE_PARAMS = {"episode_id", "episode_ids"}, {"stage", "stages", "from_stage"}


def test_every_id_and_stage_completes() -> None:
    """Every command taking an episode id or a stage (argument or option) completes it; `add`
    takes a new id (none of the known ones to offer)."""
    from hystate.cli import load_all
    from hystate.cli.terminal import complete_episode_ids, complete_stages

    load_all()
    checked, missing = [], []
    for name, command in commands(cli).items():
        for param in command.params:
            if param.name in ID_PARAMS and name != "add":
                wanted = complete_episode_ids
            elif param.name in STAGE_PARAMS:
                wanted = complete_stages
            else:
                continue
            checked.append(f"{name} {param.name}")
            how = getattr(param, "_custom_shell_complete", None)
            if how is not wanted and not isinstance(param.type, click.Choice):
                missing.append(f"{name} {param.name}")
    assert missing == [] and len(checked) >= 12, (missing, checked)


def test_completion_of_log_episode_and_years(repo: Path, episode_id: str) -> None:
    assert complete(repo, "log", "--episode", episode_id) == [episode_id]
    years = sorted(p.name for p in (repo / "processed").iterdir() if p.name.isdigit())
    assert complete(repo, "list", "--year", "") == years
    assert complete(repo, "list", "--year", "2005") == ["2005"]
    assert complete(repo, "retry", "--from", "up") == ["uploading"]
    state = repo.parent / "elsewhere"
    assert complete(repo, "--state-dir", str(state), "show", "") == []  # no state there


def test_completion_never_offers_hostile_names(repo: Path, episode_id: str) -> None:
    """A branch can name files anything: a newline or a comma would forge a completion of
    the shell's protocol, an escape sequence would reach the terminal. Only ids are offered."""
    year = next(p for p in (repo / "processed").iterdir() if p.is_dir())
    for name in ("evil\nplain,hy0_forged", "a,b", "\x1b]0;owned\x07", "-rf", "x" * 200, "é"):
        (year / f"{name}.yaml").write_text("episode_id: x\n")
    offered = complete(repo, "show", "")
    assert offered == sorted(p.stem for p in (repo / "processed").glob("*/hy0_*.yaml"))
    assert episode_id in offered and not any("forged" in o or "," in o for o in offered)
