"""Clock steps with libfaketime (Debian package ``faketime``; ``make test`` and ``.ci/run``
install it when missing): the environment that makes a process, and every git process it
starts, see the wall clock (and the monotonic clock with it) stepped or frozen."""

from __future__ import annotations

import glob
import os

PATTERNS = ("/usr/lib/*/faketime/libfaketime.so.1", "/usr/lib/faketime/libfaketime.so.1")


def library() -> str:
    for pattern in PATTERNS:
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    raise AssertionError(
        "libfaketime is missing: install the Debian package `faketime` (make test does)"
    )


def faketime_env(spec: str) -> dict[str, str]:
    """``spec`` as libfaketime reads it: ``-3600`` (an hour back), ``+1d``, or an absolute
    ``2026-12-06 10:00:00`` (frozen: every process sees that very second)."""
    preload = " ".join(filter(None, [library(), os.environ.get("LD_PRELOAD")]))
    return {**os.environ, "LD_PRELOAD": preload, "FAKETIME": spec, "FAKETIME_NO_CACHE": "1"}
