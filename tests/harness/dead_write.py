"""A transition killed (-9) after it wrote its episode file and before HEAD moved: what a worker
dying between its write and its commit leaves (the file changed, its episode lock behind)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from tests.conftest import HYSTATE, git

# git runs this hook before HEAD moves ("prepared"): while HOLD exists it says so and waits,
# so the transition is written and not committed when the test kills it
HOOK = """#!/bin/sh
cat >/dev/null
if [ "$1" = prepared ] && [ -f "$HOLD" ]; then
  : > "$HOLD.reached"
  sleep 120
fi
exit 0
"""


def killed_mid_commit(node: Path, tmp_path: Path, *args: str) -> None:
    """Run ``hystate *args`` on ``node`` and kill -9 it (and its hook) after its write, before
    HEAD moved."""
    hook = node / ".git" / "hooks" / "reference-transaction"
    hook.write_text(HOOK)
    hook.chmod(0o755)
    hold = tmp_path / "hold"
    hold.write_text("")
    head = git(node, "rev-parse", "HEAD").strip()
    proc = subprocess.Popen(
        [*HYSTATE, *args],
        cwd=node,
        env={**os.environ, "HOLD": str(hold)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        for _ in range(6000):
            if (tmp_path / "hold.reached").exists() or proc.poll() is not None:
                break
            time.sleep(0.01)
        assert (tmp_path / "hold.reached").exists(), "the transition never reached its commit"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    hold.unlink()
    hook.unlink()
    assert git(node, "rev-parse", "HEAD").strip() == head  # killed before HEAD moved
