"""The progress-over-time chart's geometry: lines, axis labels and sizes for the inline SVG of
the HTML report (the template draws it)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from hystate.core.model import parse_time

COLOURS = {
    "downloaded": "#8da0cb",
    "converted": "#66c2a5",
    "uploaded": "#fc8d62",
    "published": "#1b7837",
}


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    lines: list[dict[str, Any]]
    x_labels: list[tuple[float, str]]
    y_labels: list[tuple[float, str]]


def chart(series: dict[str, list[tuple[str, int]]], total: int) -> Chart | None:
    """One line per milestone, time across (first to last entry), count up to ``total``."""
    width, height, left, bottom = 760, 260, 48, 28
    stamps = [parse_time(t) for points in series.values() for t, _ in points]
    if not stamps:
        return None
    start, end = min(stamps), max(stamps)
    span = max((end - start).total_seconds(), 1.0)
    top = max(total, 1)

    def x(when: datetime) -> float:
        return round(left + (width - left - 10) * (when - start).total_seconds() / span, 1)

    def y(count: int) -> float:
        return round(height - bottom - (height - bottom - 10) * count / top, 1)

    lines = []
    for name, points in series.items():
        if not points:
            continue
        coords = [(x(parse_time(t)), y(n)) for t, n in points]
        coords.append((x(end), coords[-1][1]))
        path = " ".join(f"{px},{py}" for px, py in coords)
        lines.append({"name": name, "points": path, "colour": COLOURS[name], "last": points[-1][1]})
    x_labels = [
        (
            x(start + timedelta(seconds=span * f)),
            _label(start + timedelta(seconds=span * f), span),
        )
        for f in (0, 0.5, 1)
    ]
    y_labels = [(y(n), str(n)) for n in sorted({0, top // 2, top})]
    return Chart(width, height, lines, x_labels, y_labels)


def _label(when: datetime, span: float) -> str:
    if span <= 3600:
        return when.strftime("%H:%M:%S")
    if span <= 2 * 86400:
        return when.strftime("%Y-%m-%d %H:%M")
    return when.date().isoformat()
