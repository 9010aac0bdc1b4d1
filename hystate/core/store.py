"""Episode files on disk: where they live, reading them (always validated), writing them
atomically (temp file, fsync, rename). An episode's path is ``<state_dir>/<year>/<id>.yaml``
and never changes with its stage."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hystate.core import yamlio
from hystate.core.errors import InvalidData, Problem
from hystate.core.filestamp import Stamp, lstat_now, settled, stamp
from hystate.core.model import EpisodeState, check_id
from hystate.core.paths import NotRegularFile, ensure_dir, read_bytes, write_atomic
from hystate.core.schema import episode_problems

_CONFLICT = re.compile(rb"^(<{7}|={7}|>{7}|\|{7})(\s|$)", re.MULTILINE)
GITIGNORE = """\
# hystate: only the year folders hold state. Everything else here is derived or local (the
# caches, whatever database_file is called; locks and leases; events.jsonl; reports; temp
# files): never commit it.
/*
!/.gitignore
!/.gitattributes
!/[0-9][0-9][0-9][0-9]/
.*.tmp
"""
GITATTRIBUTES = """\
# hystate: episode files are stored byte for byte as written (no line-ending conversion,
# filters, ident or re-encoding, whatever other attributes or core.autocrlf say), and merged
# field by field by hystate's merge driver (`hystate init` configures it).
*.yaml -text -eol -filter -ident -working-tree-encoding merge=hystate
"""
# When the state directory is the repository's root, only hystate's own names are ignored.
_ROOT_NAMES = ("index.json", ".locks/", "reports/", "events.jsonl", ".*.tmp")


def gitignore_text(database_file: str, at_root: bool) -> str:
    if not at_root:
        return GITIGNORE
    names = [*_ROOT_NAMES, f"/{database_file}", f"/{database_file}-*"]
    return "# hystate: caches, locks, events, temp files, reports\n" + "\n".join(names) + "\n"


class EpisodeStore:
    def __init__(self, state_dir: Path, root: Path | None = None) -> None:
        self.state_dir = state_dir
        self.root = root  # file names in messages are shown relative to it
        # the year folders as last listed, with the state folder's stamp then (filestamp)
        self._years: tuple[Stamp, list[str]] | None = None

    def name(self, path: Path) -> str:
        if self.root is not None:
            text, top = str(path), _below(self.root)
            if text.startswith(top) and os.sep == "/":
                return text[len(top) :]  # path.relative_to(root), without the Paths
            try:
                return path.relative_to(self.root).as_posix()
            except ValueError:
                pass
        return str(path)

    def path_for(self, episode_id: str, date: str) -> Path:
        check_id(episode_id)
        year = date[:4]
        if not _looks_like_year(year):
            raise InvalidData(f"{episode_id}: date {date!r} has no year")
        return self.state_dir / year / f"{episode_id}.yaml"

    def find(self, episode_id: str) -> Path | None:
        """The file of ``episode_id`` (its year is not known from the id), or None. A symlink or
        other non-file of that name counts (reading it then fails); symlinked year folders are
        never looked into."""
        name = f"/{check_id(episode_id)}.yaml"
        hits = [d + name for d in self._year_paths() if os.path.lexists(d + name)]
        if len(hits) > 1:
            shown = ", ".join(self.name(Path(h)) for h in hits)
            raise InvalidData(
                f"{episode_id} has more than one file: {shown}",
                hint="an id lives in one year folder only; remove the wrong copy",
            )
        return Path(hits[0]) if hits else None

    def year_dirs(self) -> list[Path]:
        """The year folders: real folders (never symlinks) named with four ASCII digits."""
        return [Path(p) for p in self._year_paths()]

    def _year_paths(self) -> list[str]:
        """``year_dirs`` as strings, listed again whenever the state folder changed (an entry
        added, removed, renamed or replaced changes its mtime and ctime; see filestamp)."""
        st, now = lstat_now(str(self.state_dir))
        key = None if st is None else stamp(st)
        if self._years is not None and self._years[0] == key:
            return self._years[1]
        years = sorted(e.path for e in self._entries() if _is_year(e))
        self._years = None
        if st is not None and settled(st, now):
            self._years = (stamp(st), years)
        return years

    def _entries(self) -> list[os.DirEntry[str]]:
        try:
            with os.scandir(self.state_dir) as entries:
                return list(entries)
        except (FileNotFoundError, NotADirectoryError):
            return []

    def iter_paths(self) -> Iterator[Path]:
        """Every ``*.yaml`` entry of every year folder, whatever it is (a symlink or a folder
        of that name is reported when read, never followed)."""
        for year in self.year_dirs():
            with os.scandir(year) as entries:  # names sorted as text: 100,000 Paths sort slowly
                names = sorted(
                    e.name for e in entries if e.name.endswith(".yaml") and e.name[0] != "."
                )
            yield from (year / name for name in names)

    def year_anomalies(self) -> list[Problem]:
        """The year folders that are symlinks or files: their episodes are never read (reading
        commands stop and name them rather than leave them out silently)."""
        return [p for p in self.anomalies() if _looks_like_year(Path(p.file).name)]

    def anomalies(self) -> list[Problem]:
        """What a hostile branch can put in the state folder that hystate refuses to follow:
        year folders that are symlinks or files, and the state folder's own files that are
        symlinks (caches, .gitignore, locks, reports)."""
        found = []
        for entry in self._entries():
            name = self.name(Path(entry.path))
            if entry.is_symlink():
                found.append(Problem(name, "$", LINK_REFUSED))
            elif _looks_like_year(entry.name) and not entry.is_dir(follow_symlinks=False):
                found.append(Problem(name, "$", "year folder is not a folder"))
        return found

    def load(self, path: Path) -> tuple[bytes, Any, list[Problem]]:
        """(raw bytes, document or None, problems): never raises for bad content."""
        name = self.name(path)
        try:
            raw = read_bytes(path)
        except NotRegularFile as exc:
            refused = LINK_REFUSED if exc.kind == "a symlink" else f"is {exc.kind}, not a file"
            return b"", None, [Problem(name, "$", refused)]
        doc, problems = check_content(raw, name, path.stem, path.parent.name)
        return raw, doc, problems

    def read(self, path: Path) -> tuple[bytes, EpisodeState]:
        raw, doc, problems = self.load(path)
        if problems:
            raise invalid_file(problems)
        return raw, EpisodeState(doc, self.name(path))

    def write(self, path: Path, data: bytes, *, sync: bool = True) -> None:
        """Atomically replace ``path`` with ``data``: temp file, fsync, rename. The file keeps
        its permission bits (git records the executable bit). ``sync=False`` leaves the fsync
        to the caller (a batch syncs once). Never through a symlinked folder, never through a
        planted temp file (see hystate.core.paths); an interrupted write leaves no temp file."""
        text = str(path)
        trusted = [b for b in (self.root, self.state_dir.parent) if b is not None]
        base = next((b for b in trusted if text.startswith(_below(b))), path.parent)
        ensure_dir(base, path.parent)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp")
        write_atomic(path, data, sync=sync, keep_mode=True, tmp=tmp)

    def temp_files(self) -> list[Path]:
        return [p for d in self.year_dirs() for p in d.glob(".*.tmp")]


def _below(folder: Path) -> str:
    """The prefix of every path strictly inside ``folder`` (both absolute and normalised, as
    a ``Path`` is: ``folder in path.parents`` without making each parent a ``Path``)."""
    text = str(folder)
    return text if text.endswith("/") else text + "/"


LINK_REFUSED = "is a symlink: hystate never follows symlinks (replace it with the real file)"


def _looks_like_year(name: str) -> bool:
    return len(name) == 4 and name.isascii() and name.isdigit()


def is_episode_path(inner: str) -> bool:
    """Whether ``inner`` (a path inside the state folder, with ``/``) names an episode file:
    ``<four ASCII digits>/<name>.yaml``."""
    parts = inner.split("/")
    return len(parts) == 2 and _looks_like_year(parts[0]) and parts[1].endswith(".yaml")


def _is_year(entry: os.DirEntry[str]) -> bool:
    """Four ASCII digits (full-width digits are not a year) and a real folder."""
    return _looks_like_year(entry.name) and entry.is_dir(follow_symlinks=False)


def parse_content(raw: bytes, name: str) -> tuple[Any, list[Problem]]:
    """(document, []) or (None, problems) for what stops a file from being parsed at all:
    emptiness, conflict markers, bytes that are not UTF-8, bad YAML."""
    if not raw.strip():
        return None, [Problem(name, "$", "file is empty")]
    marker = _CONFLICT.search(raw)
    if marker:
        line = raw.count(b"\n", 0, marker.start()) + 1
        problem = Problem(name, "$", "git conflict marker: resolve the merge conflict first", line)
        return None, [problem]
    try:
        raw.decode("utf-8")
        return yamlio.load(raw), []
    except UnicodeDecodeError as exc:
        return None, [Problem(name, "$", f"not UTF-8 text (byte {exc.start})")]
    except yamlio.YAMLError as exc:
        problem = Problem(
            name, "$", f"invalid YAML: {yamlio.error_text(exc)}", yamlio.error_line(exc)
        )
        return None, [problem]


def check_content(raw: bytes, name: str, stem: str, folder: str) -> tuple[Any, list[Problem]]:
    """(document, []) or (None, problems) for the content of the file ``<folder>/<stem>.yaml``
    (shown as ``name``): parsed, validated, its id the file's name, its year the folder's."""
    doc, problems = parse_content(raw, name)
    if problems:
        return None, problems
    problems = episode_problems(doc, name, expect_id=stem)
    if not problems and doc["date"][:4] != folder:
        problems.append(Problem(name, "$.date", f"date {doc['date']} is not in folder {folder}"))
    return doc, problems


def invalid_file(problems: list[Problem], *, hint: str | None = None) -> InvalidData:
    first = problems[0]
    more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
    return InvalidData(
        f"{first}{more}",
        problems,
        hint=hint or "fix the file by hand, or restore it with `git checkout -- <file>`",
    )


def dump(doc: dict[str, Any]) -> bytes:
    return yamlio.dump(doc).encode("utf-8")
