"""Progress of long commands: a counted bar (``label: phase [###---] done/total pct%``) on
stderr when it is a terminal (a real pseudo-terminal here), the ``working`` spinner for a phase
of unknown length (a commit, a bundle, a push), and nothing at all when stderr is not a
terminal. The engine tells the command line through a callback; drawing never fails the work."""

from __future__ import annotations

import fcntl
import io
import json
import os
import pty
import struct
import subprocess
import termios
from pathlib import Path

import pytest

from hystate.cli.terminal import Progress, working
from tests.conftest import HYSTATE, REPO_ROOT, catalog_rows, git, run_hystate, write_search_json

LEGACY = REPO_ROOT / "tests" / "data" / "legacy-archive-org"


def on_terminal(repo: Path, *args: str, columns: int = 0) -> tuple[int, str, str]:
    """(exit code, stdout, what stderr showed) of a command whose stderr is a pseudo-terminal
    (``columns`` wide; 0: a size unknown, as a new pty's)."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    out = repo.parent / "stdout.txt"
    try:
        with out.open("wb") as stdout:
            proc = subprocess.Popen(
                [*HYSTATE, *args], cwd=repo, stdout=stdout, stderr=follower,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
        os.close(follower)
        shown = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the terminal's other side closed, all is read
                break
            if not chunk:
                break
            shown += chunk
        code = proc.wait(timeout=300)
    finally:
        os.close(leader)
    return code, out.read_text(), shown.decode()


def test_discover_draws_a_counted_bar_on_a_terminal(repo: Path, tmp_path: Path) -> None:
    catalog = write_search_json(tmp_path / "more.json", catalog_rows(300, start_year=1980))
    code, out, shown = on_terminal(repo, "discover", "--from", str(catalog))
    assert code == 0 and out.startswith("discovered 300 new episodes")
    assert "discovering 300 episodes: checking [" in shown
    assert "discovering 300 episodes: writing [" in shown
    for phase in ("checking", "writing"):
        final = shown.split(f"discovering 300 episodes: {phase} [")[-1].split("\r")[0]
        assert "] 300/300 100%" in final
    assert "discovering 300 episodes: committing…" in shown  # of unknown length: the spinner
    assert shown.endswith("\r\x1b[K")  # erased at the end


def test_nothing_on_stderr_when_it_is_not_a_terminal(repo: Path, tmp_path: Path) -> None:
    catalog = write_search_json(tmp_path / "more.json", catalog_rows(300, start_year=1980))
    for args in (
        ["discover", "--from", str(catalog)],
        ["import", "--from", str(LEGACY)],
        ["rebuild"],
        ["backup", "-o", str(tmp_path / "b.bundle")],
        ["restore", str(tmp_path / "b.bundle"), str(tmp_path / "restored")],
    ):
        done = run_hystate(repo, *args)
        assert done.returncode == 0, (args, done.stderr)
        assert done.stderr == "", args
    checked = run_hystate(repo, "validate")
    assert checked.stderr == "323 files checked, 0 with problems (0 in all)\n"


def test_import_validate_rebuild_count_on_a_terminal(repo: Path) -> None:
    code, out, shown = on_terminal(repo, "import", "--from", str(LEGACY))
    assert code == 0 and "3 added" in out
    assert "importing: reading [" in shown and "] 3/3 100%" in shown
    assert "importing: checking [" in shown and "importing: committing…" in shown
    code, out, shown = on_terminal(repo, "validate")
    assert code == 0
    assert "validating: checking [" in shown and "] 23/23 100%" in shown
    assert shown.rstrip().endswith("23 files checked, 0 with problems (0 in all)")
    code, out, shown = on_terminal(repo, "rebuild", "--json")
    assert code == 0 and json.loads(out)["files"] == 23  # stdout stays JSON
    assert "rebuilding [" in shown and "] 23/23 100%" in shown


def test_backup_and_sync_show_the_spinner(repo: Path, tmp_path: Path) -> None:
    code, _, shown = on_terminal(repo, "backup", "-o", str(tmp_path / "b.bundle"))
    assert code == 0 and "writing the backup…" in shown and shown.endswith("\r\x1b[K")
    remote = tmp_path / "remote.git"
    git(repo, "clone", "-q", "--bare", str(repo), str(remote))
    git(repo, "remote", "add", "origin", str(remote))
    code, _, shown = on_terminal(repo, "sync", "--remote", "origin")
    assert code == 0 and "syncing…" in shown
    code, _, shown = on_terminal(repo, "fsck")
    assert code == 0 and "checking…" in shown and shown.endswith("fsck: clean\r\n")
    assert run_hystate(repo, "fsck").stderr == "fsck: clean\n"  # not a terminal: the verdict


class Gone(io.StringIO):
    """A terminal that went away: every write fails."""

    def write(self, text: str) -> int:
        raise OSError(5, "Input/output error")

    def isatty(self) -> bool:
        return True


def test_drawing_never_fails_the_work() -> None:
    bar = Progress("discovering", Gone())
    bar(0, 10, "checking")
    bar(10, 10, "checking")
    bar(0, 0, "committing")  # the spinner's thread stops drawing, the work goes on
    bar.close()
    assert bar.broken
    with working("syncing", Gone()):
        pass


def test_the_bar_counts_and_cleans_its_label() -> None:
    stream = io.StringIO()
    bar = Progress("importing \x1b[31mred\u202e", stream)
    bar(0, 3, "reading")
    bar(3, 3, "reading")
    bar(2, 1, "writing")  # never more than all
    bar.close()
    shown = stream.getvalue()
    assert "\x1b[31m" not in shown and "\u202e" not in shown
    assert "] 0/3   0%" in shown and "] 3/3 100%" in shown and "] 1/1 100%" in shown
    assert shown.endswith("\r\x1b[K")


@pytest.mark.parametrize("total", [0, -1])
def test_a_phase_of_unknown_length_is_the_spinner(total: int) -> None:
    stream = io.StringIO()
    bar = Progress("syncing", stream)
    bar(0, total, "pushing")
    bar.close()
    assert "syncing: pushing…" in stream.getvalue() and " [" not in stream.getvalue()


def test_a_notice_is_printed_above_the_progress_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """A notice while a bar is drawn (an event broker down, after the commit) erases the bar's
    line first, so it is never glued to the bar; the bar comes back at its next update."""
    from hystate.cli.terminal import tell

    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    bar = Progress("discovering", stream)
    bar(1, 4, "writing")
    tell("hystate: event broker unreachable")
    bar(4, 4, "writing")
    bar.close()
    tell("hystate: after")
    shown = stream.getvalue()
    assert "1/4  25%\x1b[K\r\x1b[Khystate: event broker unreachable\n\rdiscovering" in shown
    assert shown.endswith("\r\x1b[Khystate: after\n")  # the bar was erased by close()


def test_a_narrow_terminal_gets_lines_that_fit(repo: Path, tmp_path: Path) -> None:
    """A line wider than the terminal wraps, and `\\r` cannot draw over a wrapped line: every
    line drawn fits (the bar goes first, then the label is cut; the count stays)."""
    catalog = write_search_json(tmp_path / "more.json", catalog_rows(300, start_year=1980))
    code, _, shown = on_terminal(repo, "discover", "--from", str(catalog), columns=40)
    assert code == 0
    lines = [part.replace("\x1b[K", "") for part in shown.split("\r")]
    assert max(len(line) for line in lines) <= 39, max(lines, key=len)
    assert any(line.endswith("300/300 100%") for line in lines)
    code, _, shown = on_terminal(repo, "validate", columns=120)
    assert "validating: checking [" + "#" * 40 + "] 320/320 100%" in shown
