"""Run the README's walkthrough and everyday commands as written, and compare what they print
with what the README shows (`make docs` runs this before building the site).

    .venv/bin/python examples/check_readme.py        # from the repository's root

The set-up block runs as written in a scratch folder holding a stand-in for the clone (its
`.venv` and `examples/` are links to this checkout's; `make install` is left out), so
`mkdir ../hystate-try` lands in the scratch folder. Every `$ command` of a transcript block then
runs in one shell, in order; a ```sh block is run and compared with the block after it. git runs
with no global or system config, so the author is hystate's fallback identity as in the README.
Commit ids, times, durations, sizes and the scratch paths are compared as placeholders; a line
`...` (or starting with `  ...`) in the README stands for any number of lines. Exit 1 with the
first difference, showing what the command printed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MARK = "@@hystate-check@@"

_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
_NORMAL = [
    (re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00"), "<time>"),
    (re.compile(r"report_\d{4}-\d\d-\d\d"), "report_<day>"),
    (re.compile(r"report_\d{4}-W\d\d"), "report_<week>"),
    (re.compile(r"\b[0-9a-f]{7,40}\b"), "<sha>"),
    (re.compile(r"\S*/hystate-try\b"), "<try>"),
    (re.compile(r"\b\d+ bytes\b"), "<n> bytes"),
    (re.compile(r"\bp(50|90) \d+(\.\d+)?s\b"), r"p\1 <s>"),
    (re.compile(r"[ \t]+$", re.M), ""),
]


def normal(text: str) -> str:
    for pattern, placeholder in _NORMAL:
        text = pattern.sub(placeholder, text)
    return text


def steps(readme: str) -> tuple[str, list[tuple[str, str]]]:
    """The set-up block, and (command, what the README shows it prints) in order."""
    walk = readme[readme.index("[start:walkthrough]") : readme.index("[end:walkthrough]")]
    start = readme.index("In the walkthrough's repository")
    every = readme[start : readme.index("```\n", readme.index("```", start) + 3) + 4]
    blocks = _FENCE.findall(walk) + _FENCE.findall(every)
    setup = blocks[0][1]
    found: list[tuple[str, str]] = []
    i = 1
    while i < len(blocks):
        lang, body = blocks[i]
        if lang == "sh":
            found.append((body, blocks[i + 1][1]))
            i += 2
            continue
        lines = body.split("\n")
        j = 0
        while j < len(lines):
            if lines[j].startswith("$ "):
                command = lines[j][2:]
                while command.endswith("\\"):
                    j += 1
                    command += "\n" + lines[j]
                j += 1
                shown = []
                while j < len(lines) and not lines[j].startswith("$ "):
                    shown.append(lines[j])
                    j += 1
                found.append((command, "\n".join(shown)))
            else:
                j += 1
        i += 1
    return setup, found


def matches(expected: list[str], got: list[str]) -> bool:
    """Line by line; an expected `...` line matches any number of lines."""
    if not expected:
        return not got
    head = expected[0]
    if head.strip().startswith("..."):
        return any(matches(expected[1:], got[k:]) for k in range(len(got) + 1))
    return bool(got) and head == got[0] and matches(expected[1:], got[1:])


def script(setup: str, found: list[tuple[str, str]]) -> str:
    lines = ["set -u"]
    lines += [line for line in setup.split("\n") if not line.startswith("make install")]
    for n, (command, _) in enumerate(found):
        lines.append(f"echo '{MARK} {n}'")
        lines.append(f'{{\n{command}\n}} 2>&1; rc=$?; [ $rc -eq 0 ] || echo "(exit $rc)"')
    return "\n".join(lines) + "\n"


def main() -> int:
    setup, found = steps(README.read_text(encoding="utf-8"))
    with tempfile.TemporaryDirectory(prefix="hystate-readme-") as scratch:
        clone = Path(scratch) / "hystate"
        clone.mkdir()
        for name in (".venv", "examples"):
            (clone / name).symlink_to(ROOT / name)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "HYSTATE_"))}
        env.pop("EMAIL", None)
        env.update(GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1")
        run = subprocess.run(
            ["bash", "-c", script(setup, found)],
            cwd=clone,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
    outputs = re.split(rf"^{MARK} \d+\n", run.stdout, flags=re.M)
    if run.returncode != 0 or len(outputs) != len(found) + 1:
        print(f"README check: the set-up did not run:\n{run.stdout}{run.stderr}", file=sys.stderr)
        return 1
    for (command, shown), got in zip(found, outputs[1:], strict=True):
        expected = normal(shown).strip("\n").split("\n")
        printed = normal(got).strip("\n").split("\n")
        if not matches(expected, printed):
            print(
                f"README.md: `{command}` printed something else than the README shows.\n"
                f"--- the README shows:\n{shown.strip()}\n--- it printed:\n{got.strip()}",
                file=sys.stderr,
            )
            return 1
    print(f"README check: {len(found)} commands print what README.md shows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
