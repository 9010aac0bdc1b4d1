"""Output: CSV never carries a formula a spreadsheet would run, the terminal never receives an
escape sequence from a file, and an error line quotes at most a few hundred characters."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pytest

from tests.hostile.checks import accepted, commit_all, episode_files, refused, run

FORMULAS = [
    '=HYPERLINK("http://evil.invalid","click")',
    "+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(A1:A9)",
    "\tleading tab",
    "\rleading CR",
]


def set_title(repo: Path, title: str, index: int = 0) -> Path:
    """A branch committed this title by hand (YAML double-quoted, so any character fits)."""
    path = episode_files(repo)[index]
    quoted = '"' + title.encode("unicode_escape").decode().replace('"', '\\"') + '"'
    text = re.sub(r"(?m)^title: .*$", lambda _: f"title: {quoted}", path.read_text(), count=1)
    path.write_text(text)
    commit_all(repo)
    return path


@pytest.mark.parametrize("title", FORMULAS)
def test_list_csv_neutralises_formulas(repo: Path, title: str) -> None:
    path = set_title(repo, title)
    out = accepted(repo, ["list", "--csv"], stderr_lines=0).stdout
    rows = {row["episode_id"]: row for row in csv.DictReader(io.StringIO(out))}
    # on stdout a lone CR is also shown escaped (terminal safety)
    assert rows[path.stem]["title"] == "'" + title.replace("\r", "\\u000d")


@pytest.mark.parametrize("title", FORMULAS)
def test_report_csv_neutralises_formulas(repo: Path, title: str) -> None:
    path = set_title(repo, title)
    target = repo / "processed" / "reports" / "out.csv"
    accepted(repo, ["report", "--format", "csv", "-o", str(target)], stderr_lines=0)
    rows = list(csv.reader(io.StringIO(target.read_bytes().decode(), newline="")))
    header = rows[0]
    titles = {row[header.index("episode_id")]: row[header.index("title")] for row in rows[1:]}
    assert titles[path.stem] == "'" + title


def test_plain_titles_and_numbers_are_left_alone(repo: Path) -> None:
    out = accepted(repo, ["list", "--csv"], stderr_lines=0).stdout
    assert "'" not in out.replace("'s", "")


ESCAPES = {
    "csi-red": "\x1b[31mred\x1b[0m",
    "osc-title": "\x1b]0;owned\x07",
    "c1-csi": "\x9b31mred",
    "bell-backspace": "a\x07\x08b",
    "bidi-override": "abc\u202edcba",
    "carriage-return": "fake\rline",
}
RAW = re.compile("[\x00-\x08\x0b-\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]|\r(?!\n)")


@pytest.mark.parametrize("name", sorted(ESCAPES))
@pytest.mark.parametrize("command", [["list"], ["next", "downloading", "--limit", "50"]])
def test_terminal_output_carries_no_escape_sequences(
    repo: Path, name: str, command: list[str]
) -> None:
    path = set_title(repo, ESCAPES[name])
    out = accepted(repo, command, stderr_lines=int(command == ["list"])).stdout
    assert path.stem in out
    assert not RAW.search(out), repr(out)


@pytest.mark.parametrize("name", ["csi-red", "c1-csi"])
def test_json_output_stays_json_and_escapes_them(repo: Path, name: str) -> None:
    import json

    path = set_title(repo, ESCAPES[name])
    out = accepted(repo, ["show", path.stem, "--json"]).stdout
    assert json.loads(out)["title"] == ESCAPES[name]
    assert not RAW.search(out)


def test_an_error_line_quotes_at_most_a_few_hundred_characters(repo: Path) -> None:
    path = episode_files(repo)[0]
    huge = "x" * 1_000_000
    path.write_text(path.read_text().replace("title: ", f"title: {huge}\nzz: ", 1))
    outcome = refused(repo, ["show", path.stem], 5, contains=path.name)
    assert len(outcome.stderr) < 1_000


def test_a_long_set_value_is_not_quoted_back_whole(repo: Path) -> None:
    eid = episode_files(repo)[0].stem
    value = "y" * 120_000
    outcome = refused(repo, ["advance", eid, "downloading", "--set", f"title={value}"], 5)
    assert len(outcome.stderr) < 1_000


def test_an_error_naming_a_file_with_an_escape_in_its_name_is_one_clean_line(
    repo: Path,
) -> None:
    bad = repo / "processed" / "2004" / "x\x1b[2Jy.yaml"
    bad.write_text("not: [valid")
    commit_all(repo, "a bad name")  # reads follow HEAD's tree
    outcome = refused(repo, ["list"], 5)
    assert "\x1b" not in outcome.stderr
    bad.unlink()


def test_report_to_a_directory_is_refused_and_leaves_no_temp_file(repo: Path) -> None:
    target = repo / "processed" / "reports" / "somewhere"
    target.mkdir(parents=True)
    for fmt in ("csv", "json", "html"):
        refused(repo, ["report", "--format", fmt, "-o", str(target)], 2, contains="directory")
    leftovers = [
        p.name for p in (repo / "processed" / "reports").iterdir() if p.name != "somewhere"
    ]
    assert leftovers == []


def test_report_to_a_directory_outside_the_repository_writes_nothing_there(repo: Path) -> None:
    target = repo.parent / "elsewhere"
    target.mkdir()
    refused(repo, ["report", "--format", "csv", "-o", str(target)], 2, contains="directory")
    assert list(target.iterdir()) == []
    assert not any(p.name.endswith(".tmp") for p in repo.parent.iterdir())


def test_stdout_reports_are_sanitised_too(repo: Path) -> None:
    set_title(repo, ESCAPES["csi-red"])
    out = run(repo, "report", "--format", "csv", "-o", "-")
    assert out.code == 0
    assert "\x1b" not in out.stdout


# Where a report, the metrics or a backup the user names would replace hystate's own files
# (or git's): refused (exit 2), nothing written.
OWN_FILES = {
    "git-config": ".git/config",
    "git-index": ".git/index",
    "git-hook": ".git/hooks/pre-commit",
    "git-new-file": ".git/report.html",
    "episode": "processed/{year}/{id}.yaml",
    "state-gitignore": "processed/.gitignore",
    "state-new-file": "processed/2004/notes.html",
    "config": "hystate.yaml",
    "git-through-a-link": "to-git/config",
}
WRITERS = {
    "report": ["report", "--format", "html", "-o"],
    "metrics": ["metrics", "--textfile"],
    "backup": ["backup", "-o"],
}


@pytest.mark.parametrize("writer", sorted(WRITERS))
@pytest.mark.parametrize("name", sorted(OWN_FILES))
def test_an_output_file_never_replaces_state_config_or_git(
    repo: Path, name: str, writer: str
) -> None:
    episode = episode_files(repo)[0]
    (repo / "hystate.yaml").write_text("state_management: {}\n")
    (repo / "to-git").symlink_to(repo / ".git")
    target = OWN_FILES[name].format(year=episode.parent.name, id=episode.stem)
    refused(repo, [*WRITERS[writer], target], 2, contains="hystate's own")


def test_reports_may_go_to_the_reports_folder_and_beside_the_state(repo: Path) -> None:
    for target in ("processed/reports/x.html", "docs/status.html"):
        accepted(repo, ["report", "--format", "html", "-o", target])
        assert (repo / target).is_file()


def test_a_file_name_with_a_newline_cannot_forge_a_line_or_a_github_command(repo: Path) -> None:
    """validate --github printed the file name raw in ``::error file=NAME::``: a branch could
    name a file ``x\\n::add-mask::...`` and have the CI run a workflow command of its own;
    validate's and fsck's listings likewise gave such a name a line of its own."""
    forged = "x\n::error file=forged.yaml::FORGED\n::add-mask::y, z"
    (repo / "processed" / "2004" / f"{forged}.yaml").write_bytes(
        episode_files(repo)[0].read_bytes()
    )
    github = run(repo, "validate", "--github")
    assert github.code == 1
    lines = github.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("::error file=processed/2004/x%0A%3A%3Aerror")
    assert "%2C" in lines[0] and "FORGED" in lines[0]
    for command in (["validate"], ["fsck"]):
        shown = run(repo, *command)
        assert shown.code == 1
        assert all(
            line.startswith("processed/")
            or line.startswith("uncommitted")
            or line.startswith("invalid")
            for line in shown.stdout.splitlines()
        ), shown.stdout
        assert "::add-mask::" in shown.stdout and "\n::" not in shown.stdout
