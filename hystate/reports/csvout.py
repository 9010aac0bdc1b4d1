"""CSV output: one row per episode (``hystate report --format csv``, ``list --csv``), every
cell made safe for a spreadsheet."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from hystate.cache import queries

if TYPE_CHECKING:
    from hystate.engine.workspace import Workspace

CSV_FIELDS = (
    "episode_id", "date", "title", "stage", "status_message", "last_updated", "failed_stage",
    "worker", "audio_file", "video_file", "youtube_video_id", "scheduled_date", "published_date",
    "audio_duration", "audio_size", "video_size", "processing_time", "download_attempts",
    "conversion_attempts", "upload_attempts", "error_count", "last_error",
)  # fmt: skip
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A cell a spreadsheet will not run: text starting like a formula (``=HYPERLINK(…)``,
    ``+cmd``, ``-2+3``, ``@SUM``, a tab or CR) gets a leading apostrophe (OWASP's advice)."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def csv_text(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """The rows as CSV (CRLF line ends), every cell through ``csv_cell``."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(tuple(map(csv_cell, row)) for row in rows)
    return out.getvalue()


def render_csv(ws: Workspace) -> str:
    """Every episode, one row each in air-date order, the columns of ``CSV_FIELDS``."""
    return csv_text(CSV_FIELDS, queries.columns(ws.cache, CSV_FIELDS))
