"""``hystate validate --base REF``: review of the state changes a branch (or a PR) brings.

For every episode file changed between REF and HEAD: the file is checked (schema, invariants,
stage = last history entry), and the path from its stage at REF to its stage at HEAD is replayed
through the history entries added since REF, each step checked against the transition rules, so
a squash-merged branch validates as well as one with a commit per transition. Also flagged:
deleted or moved episode files, cache files committed to git, symlinks and submodules in the
state folder, and (as warnings) commits that touched state files without hystate's trailers and
changes to what steers hystate: ``hystate.yaml``, any ``.gitattributes``, the state folder's
``.gitignore``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from hystate.core import yamlio
from hystate.core.errors import GitError, shown
from hystate.core.model import ProcessingStage
from hystate.core.rules import legal_move
from hystate.core.schema import episode_problems
from hystate.core.store import is_episode_path, parse_content
from hystate.git import audit

if TYPE_CHECKING:
    from hystate.engine.workspace import Workspace

S = ProcessingStage
CACHE_NAMES = ("index.json", "state.db", ".locks", "reports")


@dataclass(frozen=True)
class ReviewNote:
    file: str
    message: str
    level: str = "error"  # error | warning
    episode: str | None = None
    line: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """The note as JSON shows it (the one vocabulary: ``episode_id``)."""
        out = asdict(self)
        out["episode_id"] = out.pop("episode")
        return out

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.level}: {self.message}"


def review(ws: Workspace, base: str) -> list[ReviewNote]:
    repo = ws.repo
    rel_dir = ws.rel_state_dir
    prefix = "" if rel_dir == "." else rel_dir + "/"
    if not repo.git("rev-parse", "--verify", "--quiet", f"{base}^{{commit}}", check=False):
        raise GitError(
            f"--base {shown(base)} is not a commit in this repository (give a branch, tag or "
            "commit id; a shallow CI checkout may need to fetch it first)"
        )
    out = repo.git("diff", "--raw", "-z", "--no-renames", base, "HEAD", "--", rel_dir)
    fields = out.split("\0")
    # --raw -z: ":<old mode> <new mode> <old sha> <new sha> <status>" NUL path NUL
    raw = [(meta.split(" "), path) for meta, path in zip(fields[0::2], fields[1::2], strict=False)]
    changes = [(meta[-1][:1], path) for meta, path in raw if len(meta) == 5]
    new_modes = {path: meta[1] for meta, path in raw if len(meta) == 5}
    findings = _behaviour_changes(ws, base)
    added = {p for status, p in changes if status == "A"}
    for status, path in changes:
        inner = path[len(prefix) :]
        if new_modes.get(path) in _LINK_MODES:
            kind = _LINK_MODES[new_modes[path]]
            findings.append(
                ReviewNote(path, f"{kind} in the state folder: hystate never follows or uses it")
            )
            continue
        if _is_cache(inner):
            findings.append(
                ReviewNote(
                    path,
                    "cache file committed to git; caches are rebuilt from the tree, never tracked",
                )
            )
            continue
        if not is_episode_path(inner):
            continue
        eid = PurePosixPath(path).stem
        if status == "D":
            moved = [p for p in added if PurePosixPath(p).name == PurePosixPath(path).name]
            what = f"moved to {moved[0]}" if moved else "deleted"
            findings.append(
                ReviewNote(
                    path,
                    f"episode file {what}: an episode's file never moves or goes away",
                    episode=eid,
                )
            )
            continue
        findings += _check_file(ws, base, path, eid)
    findings += _trailerless_commits(ws, base)
    return findings


_LINK_MODES = {"120000": "a symlink", "160000": "a submodule"}


def _behaviour_changes(ws: Workspace, base: str) -> list[ReviewNote]:
    """Files that change how hystate behaves (its config; any .gitattributes: merge driver,
    filters, line endings; the state folder's .gitignore: what counts as a cache), flagged so
    reviewers look at them: warnings, since such changes can be legitimate."""
    rel_dir = ws.rel_state_dir
    specs = ["hystate.yaml", ":(glob)**/.gitattributes", f"{rel_dir}/.gitignore"]
    out = ws.repo.git("diff", "--name-only", "-z", "--no-renames", base, "HEAD", "--", *specs)
    why = {
        "hystate.yaml": "hystate's configuration",
        ".gitattributes": "git attributes (merge driver, filters, line endings)",
        ".gitignore": "what the state folder ignores (caches, locks, temp files)",
    }
    return [
        ReviewNote(
            path,
            f"changes {why[PurePosixPath(path).name]}: hystate behaves differently after"
            " this merge; review it",
            level="warning",
        )
        for path in sorted(filter(None, out.split("\0")))
    ]


def _check_file(ws: Workspace, base: str, path: str, eid: str) -> list[ReviewNote]:
    repo = ws.repo
    new_raw = repo.git_bytes("show", f"HEAD:{path}")
    doc, problems = parse_content(new_raw, path)
    if problems:
        return [ReviewNote(path, p.message, episode=eid, line=p.line) for p in problems]
    found = [
        ReviewNote(path, f"{p.path}: {p.message}", episode=eid, line=_line_of(new_raw, p.path))
        for p in episode_problems(doc, path, expect_id=eid)
    ]
    year = PurePosixPath(path).parent.name
    if isinstance(doc, dict) and str(doc.get("date", ""))[:4] != year:
        found.append(
            ReviewNote(path, f"date {doc.get('date')} is not in folder {year}", episode=eid)
        )
    if found:
        return found
    old_raw = repo.git_bytes("show", f"{base}:{path}", check=False)
    old = yamlio.load(old_raw) if old_raw else None
    return _check_path(path, eid, old, doc, new_raw)


def _check_path(path: str, eid: str, old: Any, new: dict[str, Any], raw: bytes) -> list[ReviewNote]:
    """Replay the history entries added since the base, each against the rules."""
    history = new["history"]
    if isinstance(old, dict) and isinstance(old.get("history"), list):
        before = old["history"]
        if history[: len(before)] != before:
            return [
                ReviewNote(
                    path,
                    "history was rewritten: entries present at the base were changed or removed",
                    episode=eid,
                )
            ]
        stage: S | None = S(old["stage"])
        failed = S(old["failed_stage"]) if old.get("failed_stage") else None
        start = len(before)
    else:
        stage, failed, start = None, None, 0
    for index in range(start, len(history)):
        entry = history[index]
        line = _history_line(raw, index)
        src = S(entry["from"]) if entry["from"] else None
        dst = S(entry["to"])
        if src != stage:
            shown = stage.value if stage else "(new)"
            return [
                ReviewNote(
                    path,
                    f"history entry {index} starts from {entry['from']},"
                    f" but the episode was {shown}",
                    episode=eid,
                    line=line,
                )
            ]
        legal = dst is S.DISCOVERED if stage is None else legal_move(stage, failed, dst)
        if not legal:
            came = stage.value if stage else "(new)"
            return [
                ReviewNote(
                    path,
                    f"illegal move {came} -> {dst.value} ({eid}, history entry {index})",
                    episode=eid,
                    line=line,
                )
            ]
        if dst is S.FAILED:
            failed = failed if stage is S.FAILED else stage  # failing again keeps the stage
        elif dst is not S.SKIPPED:
            failed = None
        stage = dst
    return []


def _trailerless_commits(ws: Workspace, base: str) -> list[ReviewNote]:
    found = []
    for sha, subject in audit.trailerless(ws.repo, f"{base}..HEAD", ws.rel_state_dir):
        found.append(
            ReviewNote(
                sha[:12],
                f"commit '{subject}' changes state files without hystate's trailers"
                " (made by hand?)",
                level="warning",
            )
        )
    return found


def _is_cache(inner: str) -> bool:
    first = inner.split("/")[0]
    return first.startswith(CACHE_NAMES)


def _line_of(raw: bytes, json_path: str) -> int | None:
    """The line of a top-level key named by a JSON path like ``$.stage`` or ``$.files.x``."""
    parts = json_path.removeprefix("$.").split(".")
    key = parts[0].split("[")[0].encode() + b":"
    for number, line in enumerate(raw.splitlines(), 1):
        if line.startswith(key):
            return number
    return None


def _history_line(raw: bytes, index: int) -> int | None:
    seen = -1
    inside = False
    for number, line in enumerate(raw.splitlines(), 1):
        if line.startswith(b"history:"):
            inside = True
        elif inside and line.startswith(b"- "):
            seen += 1
            if seen == index:
                return number
        elif inside and line and not line.startswith((b" ", b"-")):
            inside = False
    return None
