"""The command line: help everywhere, exit codes of SPEC section 7, one-line errors, no
traceback without -v, and a few runs of the real installed command."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from hystate.cli import cli, load_all
from tests.conftest import Cli, commits, git, run_hystate


def all_commands() -> list[str]:
    load_all()  # commands are registered when their module is imported
    return sorted(cli.commands)


@pytest.mark.parametrize("name", all_commands())
def test_every_command_has_help_with_an_example(name: str, tmp_path: Path) -> None:
    command = cli.commands[name]
    assert command.help and "Example" in command.help
    result = Cli(tmp_path)(name, "-h")
    assert result.exit_code == 0 and "-h, --help" in result.output and "Example" in result.output


def test_advance_show_and_json(run: Cli, episode_id: str) -> None:
    result = run("advance", episode_id, "downloading", "--worker", "dl-1")
    assert result.exit_code == 0 and "discovered -> downloading" in result.output
    token = lease_in(result.output)
    shown = json.loads(run("show", episode_id, "--json").output)
    assert shown["stage"] == "downloading" and shown["worker"] == "dl-1"
    assert list(shown)[:3] == ["episode_id", "archive_identifier", "date"]
    result = run(
        "advance", episode_id, "downloaded", "--json", "--lease", token,
        "--set", "files.audio_file=audio/x.mp3", "--set", "metrics.audio_size=28363609",
    )  # fmt: skip
    data = json.loads(result.output)
    assert data["changed"] and data["state"]["metrics"]["audio_size"] == 28363609


@pytest.mark.parametrize(
    ("args", "code", "text"),
    [
        (["advance", "{id}", "published"], 3, "allowed next: downloading, skipped"),
        (["advance", "nope", "downloading"], 4, "no episode 'nope'"),
        (["show", "nope"], 4, "no episode"),
        (["advance", "../x", "downloading"], 2, "invalid episode id"),
        (["advance", "a/b", "downloading"], 2, "invalid episode id"),
        (["advance", "a b", "downloading"], 2, "invalid episode id"),
        (["advance", "a\nb", "downloading"], 2, "invalid episode id"),
        (["advance", "..", "downloading"], 2, "invalid episode id"),
        (["advance", "{id}", "flying"], 2, "unknown stage 'flying'"),
        (
            ["advance", "{id}", "downloading", "--set", "metrics.audio_size=big"],
            5,
            "$.metrics.audio_size",
        ),
        (["advance", "{id}", "downloading", "--set", "nope.x=1"], 5, "unknown or read-only field"),
        (
            ["advance", "{id}", "downloading", "--set", "stage=published"],
            5,
            "unknown or read-only field",
        ),
        (["advance", "{id}", "downloading", "--set", "missing-equals"], 5, "expected FIELD=VALUE"),
        (["advance", "{id}", "downloading", "-m", "x\nHystate-To: published"], 5, "trailer"),
        (["advance", "{id}", "downloading", "--worker", "a\nb"], 2, "invalid worker name"),
        (["fail", "{id}", "--error", "boom"], 3, "cannot move from discovered to failed"),
        (["skip", "{id}", "--reason", ""], 5, "--reason must not be empty"),
        (["retry"], 2, "give episode ids or --all"),
        (["retry", "{id}"], 3, "not failed"),
        (["add", "x", "--title", "t", "--date", "2004-02-30"], 5, "not a real date"),
        (["discover", "--from", "/nonexistent.json"], 5, "cannot read"),
        (["config", "nope.key"], 2, "unknown config key"),
        (["frobnicate"], 2, "No such command"),
    ],
)
def test_exit_codes_and_one_line_errors(
    run: Cli, repo: Path, episode_id: str, args: list[str], code: int, text: str
) -> None:
    before = commits(repo)
    status = git(repo, "status", "--porcelain")
    result = run(*[a.replace("{id}", episode_id) for a in args])
    assert result.exit_code == code, result.output
    assert text in result.output
    assert "Traceback" not in result.output
    assert commits(repo) == before and git(repo, "status", "--porcelain") == status


def test_no_op_advance_exits_zero_without_commit(run: Cli, repo: Path, episode_id: str) -> None:
    assert run("advance", episode_id, "downloading", "--worker", "w").exit_code == 0
    before = commits(repo)
    result = run("advance", episode_id, "downloading", "--worker", "w")
    assert result.exit_code == 0 and "nothing to do" in result.output
    assert commits(repo) == before


def lease_in(output: str) -> str:
    """The lease token a command printed (`...; lease 1.0f9a2c1e`)."""
    return output.rsplit("lease ", 1)[1].split()[0].rstrip(")")


def test_retries_end_in_skipped(run: Cli, repo: Path, episode_id: str) -> None:
    result = run("advance", episode_id, "downloading")
    for attempt in range(3):
        token = lease_in(result.output)
        assert (
            run("fail", episode_id, "--error", f"HTTP 503 #{attempt}", "--lease", token).exit_code
            == 0
        )
        result = run("retry", episode_id, "--now")
        assert result.exit_code == 0
    assert "skipped (giving up after 3 of 3 download attempts" in result.output
    shown = json.loads(run("show", episode_id, "--json").output)
    assert shown["stage"] == "skipped" and shown["failed_stage"] == "downloading"
    assert len(shown["error_history"]) == 3


def test_retry_waits_for_the_delay(run: Cli, episode_id: str) -> None:
    token = lease_in(run("advance", episode_id, "downloading").output)
    run("fail", episode_id, "--error", "timeout", "--lease", token)
    result = run("retry", "--all", "--json")
    [outcome] = json.loads(result.output)
    assert outcome["action"] == "waiting" and "due at" in outcome["detail"]
    assert run("advance", episode_id, "downloading").exit_code == 3
    assert run("advance", episode_id, "downloading", "--force").exit_code == 0


def test_fail_records_a_traceback_from_stdin(run: Cli, episode_id: str) -> None:
    token = lease_in(run("advance", episode_id, "downloading").output)
    result = run(
        "fail", episode_id, "--error", "boom", "--lease", token, "--traceback", "-",
        input="Traceback...\n  x\n",
    )  # fmt: skip
    assert result.exit_code == 0
    shown = json.loads(run("show", episode_id, "--json").output)
    assert shown["error_history"][0]["traceback"] == "Traceback...\n  x\n"


def test_validate_exit_codes_and_json(run: Cli, repo: Path, episode_id: str) -> None:
    assert run("validate").exit_code == 0
    path = next((repo / "processed").glob(f"*/{episode_id}.yaml"))
    path.write_text(path.read_text().replace("title:", "titel:"))
    result = run("validate", "--json")
    assert result.exit_code == 1
    problems = json.loads(result.stdout)["problems"]
    assert {p["path"] for p in problems} >= {"$.titel", "$.title"}
    assert all(p["file"] == f"processed/{path.parent.name}/{path.name}" for p in problems)


def test_config_unknown_key_in_file_is_exit_5(run: Cli, repo: Path) -> None:
    (repo / "hystate.yaml").write_text("state_management:\n  recovery:\n    max_retriez: 3\n")
    result = run("config")
    assert result.exit_code == 5
    assert "state_management.recovery.max_retriez: unknown key" in result.output


def test_config_shows_values(run: Cli, repo: Path) -> None:
    (repo / "hystate.yaml").write_text("state_management:\n  recovery:\n    retry_delay: 60\n")
    assert run("config", "recovery.retry_delay").output.strip() == "60"
    values = json.loads(run("config", "--json").output)
    assert values["recovery"]["max_retries"] == {"download": 3, "conversion": 2, "upload": 3}


def test_state_dir_option_and_env(run: Cli, repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert run("--state-dir", "elsewhere", "init").exit_code == 0
    assert (repo / "elsewhere" / ".gitignore").exists()
    monkeypatch.setenv("HYSTATE_STATE_DIR", "elsewhere")
    assert run("add", "x1", "--title", "t", "--date", "2010-01-01").exit_code == 0
    assert (repo / "elsewhere" / "2010" / "x1.yaml").exists()


def test_init_makes_a_repository_and_is_safe_twice(tmp_path: Path) -> None:
    runner = Cli(tmp_path)
    assert runner("init").exit_code == 0
    assert (tmp_path / ".git").is_dir() and (tmp_path / "processed" / ".gitignore").exists()
    before = commits(tmp_path)
    result = runner("init")
    assert result.exit_code == 0 and "already set up" in result.output
    assert commits(tmp_path) == before


def test_outside_a_repository_is_exit_7(tmp_path: Path) -> None:
    result = Cli(tmp_path)("show", "x")
    assert result.exit_code == 7 and "not in a git repository" in result.output


def test_real_process_exit_codes_and_no_traceback(repo: Path, episode_id: str) -> None:
    proc = run_hystate(repo, "advance", episode_id, "published")
    assert proc.returncode == 3 and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("hystate: error: ") and "Traceback" not in proc.stderr
    proc = run_hystate(repo, "-v", "advance", episode_id, "published")
    assert proc.returncode == 3 and "Traceback" in proc.stderr


def test_installed_command_runs(repo: Path, episode_id: str) -> None:
    exe = shutil.which("hystate", path=str(Path(sys.executable).parent))
    assert exe, "the hystate console script is installed beside the interpreter"
    proc = run_hystate(repo, "--version")
    assert proc.returncode == 0
    import subprocess

    done = subprocess.run(
        [exe, "advance", episode_id, "downloading"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0 and "discovered -> downloading" in done.stdout
    # The CLI acts for its caller: the worker is this (the parent) process.
    import os

    shown = json.loads(
        subprocess.run(
            [exe, "show", episode_id, "--json"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert shown["worker"].endswith(f":{os.getpid()}")


def test_list_json_is_streamed_as_one_json_document(run: Cli, repo: Path, episode_id: str) -> None:
    from hystate.manager import StateManager

    run("advance", episode_id, "downloading", "--worker", "dl-é")  # not only ASCII
    every = [e.data for e in StateManager(cwd=repo).list_episodes()]
    assert len(every) > 1
    expected = json.dumps(every, indent=2, ensure_ascii=False) + "\n"
    assert run("list", "--json").output == expected  # written item by item, byte for byte
    one = run("list", "--stage", "downloading", "--json").output
    assert one == json.dumps([every[[e["episode_id"] for e in every].index(episode_id)]],
                             indent=2, ensure_ascii=False) + "\n"  # fmt: skip
    assert run("list", "--stage", "failed", "--json").output == "[]\n"
    text = run("list")
    assert text.exit_code == 0 and len(text.output.splitlines()) == len(every) + 1  # + count


def test_status_when_everything_is_done(run: Cli, repo: Path) -> None:
    from hystate.manager import StateManager

    manager = StateManager(cwd=repo)
    for episode in manager.list_episodes():
        manager.skip(episode.episode_id, "not for this channel")
    shown = run("status")
    assert shown.exit_code == 0
    assert "finished: nothing left to do (last episode done " in shown.output
    assert "estimated completion" not in shown.output
    assert "predicted completion: nothing to predict (no work left before upload)" in shown.output
    assert "unknown" not in shown.output


def test_a_reader_that_goes_away_early_ends_every_listing_quietly_with_0(
    repo: Path, tmp_path: Path
) -> None:
    """`hystate list --json | head -1`: the reader closes the pipe after one line; every
    listing ends the same way (exit 0, nothing on stderr), the cache left readable. Each
    listing is several times a pipe's 64 KiB, so it cannot finish into the pipe before the
    reader closes it (620 plain lines were 72 KB, and one CI run did just that)."""
    import subprocess

    from tests.conftest import HYSTATE, catalog_rows, write_search_json

    catalog = write_search_json(tmp_path / "more.json", catalog_rows(2400, start_year=1980))
    assert run_hystate(repo, "discover", "--from", str(catalog)).returncode == 0
    for args in (["list", "--json"], ["list", "--csv"], ["list"], ["log"]):
        proc = subprocess.Popen(
            [*HYSTATE, *args], cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.readline()
        proc.stdout.close()
        err = proc.stderr.read().decode()
        assert (proc.wait(timeout=60), err) == (0, ""), args
    listed = run_hystate(repo, "list", "--json")
    assert len(json.loads(listed.stdout)) == 2420
