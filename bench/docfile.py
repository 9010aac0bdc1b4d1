"""docs/BENCHMARKS.md is written by several scripts, each owning its own `## ` sections: one
rewrites its sections in place and keeps every other one as it is."""

from __future__ import annotations

from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "BENCHMARKS.md"


def replace_section(text: str, heading: str, section: str, before: str | None = None) -> str:
    """``text`` with the section under ``heading`` (up to the next ``## ``) replaced by
    ``section``; a new section goes before the heading ``before`` if given and present, else at
    the end."""
    section = section.rstrip("\n") + "\n\n"
    start = _find_heading(text, heading)
    if start >= 0:
        end = text.find("\n## ", start + len(heading))
        rest = text[end + 1 :] if end >= 0 else ""
        return text[:start] + section + rest
    anchor = _find_heading(text, before) if before else -1
    if anchor >= 0:
        return text[:anchor] + section + text[anchor:]
    return text.rstrip("\n") + "\n\n" + section


def write_section(heading: str, section: str, before: str | None = None) -> None:
    text = DOC.read_text() if DOC.exists() else ""
    DOC.write_text(replace_section(text, heading, section, before).rstrip("\n") + "\n")


def _find_heading(text: str, heading: str) -> int:
    """Where the line ``heading`` starts (a heading, not a mention in prose), or -1."""
    if text.startswith(heading + "\n"):
        return 0
    at = text.find("\n" + heading + "\n")
    return at + 1 if at >= 0 else -1


def command_line(script: str, argv: list[str]) -> str:
    """How to run ``script`` again as it was run, without the output options (--json, --doc)."""
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--json":
            skip = True
        elif arg != "--doc" and not arg.startswith("--json="):
            kept.append(arg)
    return " ".join(["python", f"bench/{script}", *kept])
