"""The goals of issue 29 ("past the index floor"), each next to its figure from one `make bench`
run: bench/transitions.py (the API and `hystate advance` at 1,000 and 100,000), bench/scale.py
(the commands, rebuild and discover at 10,000 and 100,000), bench/workers.py (throughput with 1
and 4 worker processes). `run_all.py` prints this table and writes it into docs/BENCHMARKS.md."""

from __future__ import annotations

import os
from typing import Any

HEADING = "## Past the index floor: the goals of issue 29"


def _row(goal: str, figure: str, met: bool | None) -> tuple[str, str, str]:
    return goal, figure, "—" if met is None else ("**yes**" if met else "no")


def rows(transitions: dict[str, Any], scale: dict[str, Any], workers: dict[str, Any]) -> list:  # type: ignore[type-arg]
    out = []
    plain = [r for r in transitions["results"] if not r["split_index"]]
    small, large = plain[0], plain[-1]
    n_small, n_large = small["episodes"], large["episodes"]
    out.append(_row(f"API, one transition at {n_small:,} ≤ 3 ms", f"{small['hystate_ms']} ms",
                    small["hystate_ms"] <= 3))  # fmt: skip
    out.append(_row(f"API, one transition at {n_large:,} ≤ 10 ms", f"{large['hystate_ms']} ms",
                    large["hystate_ms"] <= 10))  # fmt: skip
    growth = large["hystate_ms"] / max(small["hystate_ms"], 0.001)
    out.append(_row("API, cost(large) / cost(small) ≤ 3", f"{growth:.1f}x", growth <= 3))
    out.append(_row(f"`hystate advance` at {n_small:,} ≤ 50 ms", f"{small['cli_advance_ms']} ms",
                    small["cli_advance_ms"] <= 50))  # fmt: skip
    out.append(_row(f"`hystate advance` at {n_large:,} ≤ 80 ms", f"{large['cli_advance_ms']} ms",
                    large["cli_advance_ms"] <= 80))  # fmt: skip
    first, last = scale["results"][0], scale["results"][-1]
    for key, label in (("status", "status"), ("list", "list --stage failed"), ("show", "show"),
                       ("next", "next downloading")):  # fmt: skip
        if f"{key}_s" in last:
            ms = last[f"{key}_s"] * 1000
            out.append(_row(f"`{label}` at {last['episodes']:,} ≤ 60 ms", f"{ms:.0f} ms", ms <= 60))
    rebuild = last["rebuild_s"]
    out.append(_row(f"`rebuild` at {last['episodes']:,} ≤ 15 s", f"{rebuild:.1f} s", rebuild <= 15))
    ratio = rebuild / max(first["rebuild_s"], 0.001)
    out.append(_row(f"`rebuild` {last['episodes']:,} / {first['episodes']:,} ≤ 12x",
                    f"{ratio:.1f}x", ratio <= 12))  # fmt: skip
    out.append(_row(f"`discover` of {last['episodes']:,}: peak over its process tree ≤ 250 MB",
                    f"{last['discover_mb']} MB", last["discover_mb"] <= 250))  # fmt: skip
    for size in workers["results"]:
        by = {r["workers"]: r for r in size["runs"]}
        if 1 in by and 4 in by:
            speedup = by[4]["per_s"] / max(by[1]["per_s"], 0.001)
            sound = all(r["one_commit_each"] and r["index_in_step"] for r in size["runs"])
            out.append(_row(
                f"4 workers ≥ 2x one at {size['episodes']:,} (one commit per transition)",
                f"{by[1]['per_s']} → {by[4]['per_s']} /s = {speedup:.2f}x"
                + ("" if sound else " (a check FAILED)"),
                speedup >= 2 and sound,
            ))  # fmt: skip
    return out


def render(transitions: dict[str, Any], scale: dict[str, Any], workers: dict[str, Any]) -> str:
    table = "\n".join(f"| {g} | {f} | {m} |" for g, f, m in rows(transitions, scale, workers))
    load = ", ".join(f"{x:.1f}" for x in workers.get("load", []))
    return f"""{HEADING}

Every figure from one `make bench` run (`{transitions.get("command", "")}`,
`{scale.get("command", "")}`, `{workers.get("command", "")}`); 1-minute load average at the
ends of the workers' run: {load} on {os.cpu_count()} cores shared with other agents, so the
absolute times are inflated by the load; the ratios inside one run are the figures to trust.
Design, trade-offs and the parts not done: docs/INDEX_FLOOR.md.

| goal | figure | met |
|---|---|---|
{table}
"""
