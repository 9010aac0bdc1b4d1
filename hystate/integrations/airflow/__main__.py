"""``python -m hystate.integrations.airflow pools``: create the pools of hystate.yaml's limits."""

from __future__ import annotations

import sys

from hystate.integrations.airflow.dags import ensure_pools
from hystate.manager import StateManager


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] != ["pools"]:
        print("usage: python -m hystate.integrations.airflow pools [STATE_DIR]", file=sys.stderr)
        return 2
    made = ensure_pools(StateManager(args[1] if len(args) > 1 else None))
    for name, slots in made.items():
        print(f"pool {name}: {slots} slots")
    if not made:
        print("no stage has limits.concurrency: no pool needed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
