"""Reading the first migration tool's state directory for ``hystate import --from DIR``.

The legacy layout is ``<DIR>/<year>/<identifier>.yaml`` (DIR may also be the folder holding
``archive_org/``) plus an optional ``index.yaml``. Each file carries ``identifier``, ``title``,
``date``, ``mp3{filename, size, duration, md5}``, ``status{available, download_url}`` and long
texts (``description``, ``full_text``) that hystate does not keep. The directory arrives from
elsewhere, so it is read as hostile input: symlinks are refused (files are opened with
``O_NOFOLLOW``), sizes, nesting and aliases are bounded before anything is built, ids are checked
before they name a path, and every problem of every file is collected; one bad file rejects the
whole directory before anything is written.
"""

from __future__ import annotations

import math
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from hystate.core import yamlio
from hystate.core.errors import HystateError, InvalidData, Problem
from hystate.core.model import check_id
from hystate.engine.catalog import _date

if TYPE_CHECKING:
    from hystate.engine.discovery import Progress

MAX_FILE_BYTES = 4 * 1024 * 1024  # the longest real full_text is well under 100 KB
MAX_FILES = 200_000
MAX_DEPTH = 16
_MAX_SHOWN = 5
_MD5 = re.compile(r"[0-9a-fA-F]{32}")
_URL = re.compile(r"https?://[^\s\x00-\x1f\x7f]{1,2000}")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_INT64 = 2**63 - 1


@dataclass(frozen=True)
class LegacyEpisode:
    """What hystate keeps of one legacy file (no long texts)."""

    identifier: str
    title: str
    date: str  # YYYY-MM-DD
    audio_size: int | None
    audio_duration: float | None
    md5: str | None
    download_url: str | None
    file: str  # where it came from, for messages


def read_legacy_dir(root: Path) -> list[LegacyEpisode]:
    """Every episode of a legacy state directory, or InvalidData naming every bad file."""
    return read_legacy(root)[0]


def read_legacy(
    root: Path, *, strict: bool = False, progress: Progress | None = None
) -> tuple[list[LegacyEpisode], list[str]]:
    """Every episode of a legacy state directory and how its ``index.yaml`` differs from the
    episode files. The files are the truth: an index gone stale (episodes it does not list,
    entries with no file, a wrong total) is reported, not refused, unless ``strict``. A bad
    file or an unreadable index raises InvalidData naming every problem."""
    base = _episode_root(root)
    problems: list[str] = []
    episodes: list[LegacyEpisode] = []
    seen: dict[str, str] = {}
    files = _episode_files(base, problems)
    for number, path in enumerate(files):
        if progress is not None and number % 64 == 0:
            progress(number, len(files), "reading")
        name = _name(path, root)
        try:
            episode = _episode(path, name)
        except (InvalidData, HystateError) as exc:
            problems.append(exc.message if exc.message.startswith(name) else f"{name}: {exc}")
            continue
        if episode.identifier in seen:
            problems.append(f"{name}: {episode.identifier} is also in {seen[episode.identifier]}")
            continue
        seen[episode.identifier] = name
        episodes.append(episode)
    if progress is not None:
        progress(len(files), len(files), "reading")
    index = base / "index.yaml"
    differences: list[str] = []
    if not problems and _exists_nofollow(index, problems, root):
        broken, differences = _index_problems(index, _name(index, root), set(seen))
        problems.extend(broken)
        if strict:
            problems.extend(differences)
            differences = []
    if problems:
        shown = "; ".join(problems[:_MAX_SHOWN])
        more = f" (+{len(problems) - _MAX_SHOWN} more)" if len(problems) > _MAX_SHOWN else ""
        raise InvalidData(
            f"{shown}{more}; nothing was written",
            [Problem(str(root), "$", p) for p in problems],
        )
    if not episodes:
        raise InvalidData(f"{root}: no legacy episode files (<year>/<identifier>.yaml) found")
    return sorted(episodes, key=lambda e: (e.date, e.identifier)), differences


def _episode_root(root: Path) -> Path:
    try:
        mode = os.lstat(root).st_mode
    except OSError as exc:
        raise InvalidData(f"{root}: cannot read: {exc.strerror}") from exc
    if stat.S_ISLNK(mode):
        raise InvalidData(f"{root}: is a symlink; give the directory's own path")
    if not stat.S_ISDIR(mode):
        raise InvalidData(f"{root}: not a directory")
    nested = root / "archive_org"
    if not _year_dirs(root) and os.path.isdir(nested) and not os.path.islink(nested):
        return nested
    return root


def _year_dirs(base: Path) -> list[os.DirEntry[str]]:
    with os.scandir(base) as entries:
        return sorted(
            (e for e in entries if len(e.name) == 4 and e.name.isdigit()), key=lambda e: e.name
        )


def _episode_files(base: Path, problems: list[str]) -> list[Path]:
    found: list[Path] = []
    for year in _year_dirs(base):
        if year.is_symlink():
            problems.append(f"{year.path}: is a symlink; refused")
            continue
        if not year.is_dir(follow_symlinks=False):
            continue
        with os.scandir(year.path) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                if not entry.name.endswith(".yaml") or entry.name.startswith("."):
                    continue
                if entry.is_symlink():
                    problems.append(f"{entry.path}: is a symlink; refused")
                elif entry.is_file(follow_symlinks=False):
                    found.append(Path(entry.path))
                if len(found) > MAX_FILES:
                    raise InvalidData(f"{base}: more than {MAX_FILES} files; refused")
    return found


def _exists_nofollow(path: Path, problems: list[str], root: Path) -> bool:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(mode):
        problems.append(f"{_name(path, root)}: not a regular file; refused")
        return False
    return True


def _name(path: Path, root: Path) -> str:
    try:
        return (root / path.relative_to(root)).as_posix()
    except ValueError:
        return str(path)


def read_bounded(path: Path, name: str) -> Any:
    """Parse a YAML file that arrived from elsewhere: no symlink, bounded size, nesting and no
    aliases (checked on the event stream before any object is built), no duplicate keys."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise InvalidData(f"{name}: cannot read: {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise InvalidData(f"{name}: not a regular file")
        raw = handle.read(MAX_FILE_BYTES + 1)
    if len(raw) > MAX_FILE_BYTES:
        raise InvalidData(f"{name}: larger than {MAX_FILE_BYTES} bytes; refused")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidData(f"{name}: not UTF-8 text (byte {exc.start})") from exc
    try:
        depth = 0
        for event in yaml.parse(text, Loader=yamlio.Loader):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise InvalidData(f"{name}: YAML anchors and aliases are not accepted")
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    raise InvalidData(f"{name}: nested deeper than {MAX_DEPTH} levels")
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
        return yamlio.load(text)
    except yamlio.YAMLError as exc:
        line = yamlio.error_line(exc)
        where = f"{name}:{line}" if line else name
        raise InvalidData(f"{where}: invalid YAML: {yamlio.error_text(exc)}") from exc


def _episode(path: Path, name: str) -> LegacyEpisode:
    doc = read_bounded(path, name)
    if not isinstance(doc, dict):
        raise InvalidData(f"{name}: expected a mapping, got {type(doc).__name__}")
    identifier = doc.get("identifier")
    if not isinstance(identifier, str):
        raise InvalidData(f"{name}: identifier: missing or not a string")
    check_id(identifier)
    if path.stem != identifier:
        raise InvalidData(f"{name}: identifier {identifier!r} does not match the file name")
    title = doc.get("title")
    if not isinstance(title, str) or not title.strip() or len(title) > 1000:
        raise InvalidData(f"{name}: title: missing, empty or longer than 1000 characters")
    if _CONTROL.search(title):
        raise InvalidData(f"{name}: title: contains control characters")
    date = _date(identifier, doc.get("date"))
    if path.parent.name != date[:4]:
        raise InvalidData(f"{name}: date {date} is not in folder {path.parent.name}")
    mp3 = _mapping(doc, "mp3", name)
    status = _mapping(doc, "status", name)
    size = mp3.get("size")
    if size is not None and (
        isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= _INT64
    ):
        raise InvalidData(f"{name}: mp3.size: {size!r} is not a whole number of bytes")
    duration = mp3.get("duration")
    if duration is not None:
        if isinstance(duration, bool) or not isinstance(duration, (int, float)):
            raise InvalidData(f"{name}: mp3.duration: {duration!r} is not a number of seconds")
        duration = float(duration)
        if not math.isfinite(duration) or not 0 <= duration < 10**7:
            raise InvalidData(f"{name}: mp3.duration: {duration!r} is out of range")
    md5 = mp3.get("md5")
    if md5 is not None and (not isinstance(md5, str) or not _MD5.fullmatch(md5)):
        raise InvalidData(f"{name}: mp3.md5: {str(md5)[:40]!r} is not 32 hex digits")
    url = status.get("download_url")
    if url is not None and (not isinstance(url, str) or not _URL.fullmatch(url)):
        raise InvalidData(f"{name}: status.download_url: {str(url)[:80]!r} is not an http(s) URL")
    return LegacyEpisode(
        identifier,
        " ".join(title.split()),
        date,
        size,
        duration,
        md5.lower() if md5 else None,
        url,
        name,
    )


def _mapping(doc: dict[str, Any], key: str, name: str) -> dict[str, Any]:
    value = doc.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidData(f"{name}: {key}: expected a mapping, got {type(value).__name__}")
    return value


def _index_problems(path: Path, name: str, ids: set[str]) -> tuple[list[str], list[str]]:
    """(why the index cannot be read, how it differs from the episode files)."""
    try:
        doc = read_bounded(path, name)
    except InvalidData as exc:
        return [exc.message], []
    by_year = doc.get("episodes_by_year") if isinstance(doc, dict) else None
    if not isinstance(by_year, dict):
        return [f"{name}: episodes_by_year: missing or not a mapping"], []
    listed: set[str] = set()
    for year, names in by_year.items():
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            return [f"{name}: episodes_by_year.{year}: expected a list of identifiers"], []
        listed.update(names)
    problems = []
    missing = sorted(listed - ids)
    unlisted = sorted(ids - listed)
    if missing:
        problems.append(f"{name}: lists {len(missing)} episode(s) with no file: {missing[0]}")
    if unlisted:
        problems.append(f"{name}: does not list {len(unlisted)} episode file(s): {unlisted[0]}")
    total = doc.get("total_episodes")
    if total is not None and total != len(ids):
        problems.append(f"{name}: total_episodes is {total!r}, the directory holds {len(ids)}")
    return [], problems
