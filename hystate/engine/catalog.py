"""Reading catalog files for ``hystate discover``: archive.org advancedsearch JSON
(``response.docs``), archive.org scrape JSON (``items``), a JSON array, JSON lines, or CSV with a
header. Every record is checked; one bad record rejects the whole file before anything is
written."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hystate.core.errors import InvalidData, UsageError, shown
from hystate.core.model import check_id

_MAX_SHOWN = 5
# NUL, escape sequences and the like (tabs and newlines are folded into spaces)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
MAX_INPUT_BYTES = 256 * 1024 * 1024  # a catalog of 100,000 episodes is ~20 MB


@dataclass(frozen=True, slots=True)  # slots: 100,000 of them are held by a discovery
class Record:
    identifier: str
    title: str
    date: str  # YYYY-MM-DD

    def as_dict(self) -> dict[str, str]:
        return {"identifier": self.identifier, "title": self.title, "date": self.date}


def read_records(path: Path) -> list[Record]:
    try:
        size = path.stat().st_size
        if size > MAX_INPUT_BYTES:
            raise InvalidData(f"{path}: {size:,} bytes; at most {MAX_INPUT_BYTES:,} are read")
        with open(path, "rb") as fh:  # a pipe or a device has no size: read at most the limit
            raw = fh.read(MAX_INPUT_BYTES + 1)
        if len(raw) > MAX_INPUT_BYTES:
            raise InvalidData(
                f"{path}: more than {MAX_INPUT_BYTES:,} bytes, the most a catalog may have"
            )
    except OSError as exc:
        raise InvalidData(f"{path}: cannot read: {exc.strerror}") from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidData(f"{path}: not UTF-8 text (byte {exc.start})") from exc
    del raw
    return parse_rows(_rows(text, path), str(path))


def read_state_folder(path: Path) -> list[Record] | None:
    """The episodes of hystate's own state folder (``processed/``: ``<year>/<id>.yaml`` files
    carrying ``episode_id`` and ``stage``), or None when ``path`` is not one (the first migration
    tool's directory then). Every file is validated; one bad file rejects the folder."""
    from hystate.core.store import EpisodeStore, invalid_file

    store = EpisodeStore(path, root=path.parent)
    paths = list(store.iter_paths())
    if not paths:
        return None
    _, first, _ = store.load(paths[0])
    if not (isinstance(first, dict) and "episode_id" in first and "stage" in first):
        return None
    records, problems = [], []
    for file in paths:
        _, doc, found = store.load(file)
        if found:
            problems.extend(found)
            continue
        records.append(Record(doc["episode_id"], doc["title"], doc["date"]))
    if problems:
        raise invalid_file(problems)
    return records


def _rows(text: str, path: Path) -> Iterable[tuple[str, Any]]:
    """(where, row) pairs; ``where`` names the record in error messages. JSON lines come one
    at a time (each row is a Record before the next line is parsed: at 100,000 lines their
    dicts were ~40 MB at once); a JSON error still stops the reading before anything else."""
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        try:
            if not reader.fieldnames:
                raise InvalidData(f"{path}: CSV file has no header row")
            return [(f"line {i + 2}", row) for i, row in enumerate(reader)]
        except csv.Error as exc:
            raise InvalidData(f"{path}: not CSV: {exc}") from None
    stripped = text.strip()
    if not stripped:
        raise InvalidData(f"{path}: file is empty")
    try:
        doc = _json(stripped)
    except json.JSONDecodeError as first:
        if stripped.startswith("{") and "\n" in stripped:
            return _json_lines(stripped, path)
        raise InvalidData(f"{path}: not JSON: {first.msg} at line {first.lineno}") from first
    except _Hostile as exc:
        raise InvalidData(f"{path}: {exc}") from None
    if isinstance(doc, dict) and isinstance(doc.get("response"), dict):
        docs = doc["response"].get("docs")
        return _listed(docs, path, "response.docs")
    if isinstance(doc, dict) and "items" in doc:
        return _listed(doc["items"], path, "items")
    if isinstance(doc, list):
        return _listed(doc, path, "")
    if isinstance(doc, dict) and ("identifier" in doc or "episode_id" in doc):
        return [("line 1", doc)]  # JSON lines with one line
    raise InvalidData(
        f"{path}: unknown JSON shape: expected archive.org advancedsearch (response.docs), "
        "scrape (items), an array, or JSON lines"
    )


class _Hostile(Exception):
    """JSON a catalog never holds: nesting or numbers past Python's limits, NaN/Infinity."""


def _constant(name: str) -> Any:
    raise _Hostile(f"{name} is not a JSON number")


def _json(text: str) -> Any:
    try:
        return json.loads(text, parse_constant=_constant)
    except RecursionError:
        raise _Hostile("nested too deep") from None
    except ValueError as exc:
        if isinstance(exc, json.JSONDecodeError):
            raise
        if "digits" in str(exc):
            raise _Hostile("a number has more digits than Python reads (4,300)") from None
        raise _Hostile(" ".join(str(exc).split())[:200]) from None


def _listed(items: Any, path: Path, where: str) -> list[tuple[str, Any]]:
    if not isinstance(items, list):
        raise InvalidData(f"{path}: {where or 'document'} is not a list")
    prefix = f"{where}[" if where else "["
    return [(f"{prefix}{i}]", item) for i, item in enumerate(items)]


def _json_lines(text: str, path: Path) -> Iterator[tuple[str, Any]]:
    for number, line in enumerate(io.StringIO(text, newline=None), 1):
        if not line.strip():
            continue
        try:
            yield (f"line {number}", _json(line))
        except json.JSONDecodeError as exc:
            raise InvalidData(f"{path}: line {number}: not JSON: {exc.msg}") from exc
        except _Hostile as exc:
            raise InvalidData(f"{path}: line {number}: {exc}") from None


def parse_rows(rows: Iterable[tuple[str, Any]], source: str) -> list[Record]:
    records: list[Record] = []
    problems: list[str] = []
    seen: dict[str, str] = {}
    for where, row in rows:
        try:
            record = _record(row)
        except (InvalidData, UsageError) as exc:
            problems.append(f"{where}: {exc.message}")
            continue
        if record.identifier in seen:
            problems.append(
                f"{where}: {record.identifier} is listed twice (also {seen[record.identifier]})"
            )
            continue
        seen[record.identifier] = where
        records.append(record)
    if problems:
        listing = "; ".join(problems[:_MAX_SHOWN])
        more = f" (+{len(problems) - _MAX_SHOWN} more)" if len(problems) > _MAX_SHOWN else ""
        raise InvalidData(f"{source}: {listing}{more}; nothing was written")
    if not records:
        raise InvalidData(f"{source}: no records found; nothing was written")
    return records


def _record(row: Any) -> Record:
    if not isinstance(row, dict):
        raise InvalidData(f"expected an object, got {type(row).__name__}")
    identifier = row.get("identifier", row.get("episode_id"))
    if not isinstance(identifier, str):
        raise InvalidData("missing identifier")
    check_id(identifier)
    title = row.get("title")
    if isinstance(title, list) and title:
        title = title[0]  # archive.org sometimes returns repeated fields as lists
    if not isinstance(title, str) or not title.strip():
        raise InvalidData(f"{identifier}: missing title")
    if _CONTROL.search(title):
        raise InvalidData(f"{identifier}: title contains control characters")
    if _SURROGATE.search(title):  # JSON can escape one (\ud800); UTF-8 cannot hold it
        raise InvalidData(f"{identifier}: title contains a lone surrogate, not a character")
    date = row.get("date")
    if isinstance(date, list) and date:
        date = date[0]
    return Record(identifier, " ".join(title.split()), _date(identifier, date))


def _date(identifier: str, value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidData(f"{identifier}: missing date")
    text = value.strip()
    day = text[:10]
    rest = text[10:]
    if rest and rest not in ("T00:00:00Z", "T00:00:00+00:00", "T00:00:00"):
        raise InvalidData(
            f"{identifier}: date {shown(value)} is not YYYY-MM-DD or YYYY-MM-DDT00:00:00Z"
        )
    try:
        dt.date.fromisoformat(day)
    except ValueError:
        raise InvalidData(f"{identifier}: date {shown(value)} is not a real date") from None
    if len(day) != 10:
        raise InvalidData(f"{identifier}: date {shown(value)} is not YYYY-MM-DD")
    return day
