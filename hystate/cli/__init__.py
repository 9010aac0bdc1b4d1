"""The ``hystate`` command line (click). Importing this package registers every command.

Ctrl-C while the commands are being imported (the first ~100 ms of a run) exits 130 with one
line instead of a traceback (``app.main`` keeps that until a command starts, then hands SIGINT
back to KeyboardInterrupt so the command unwinds). A host program importing this package keeps
its own handler.
"""

import os as _os
import signal as _signal


def _interrupted_early(signum: int, frame: object) -> None:
    _os.write(2, b"hystate: interrupted\n")
    _os._exit(130)


_fresh = _signal.getsignal(_signal.SIGINT) is _signal.default_int_handler
if _fresh:
    _signal.signal(_signal.SIGINT, _interrupted_early)
    _signal.signal(_signal.SIGTERM, _interrupted_early)

from hystate.cli import checks, cluster, events, migration, reading, reports, serving, writing  # noqa: E402
from hystate.cli.app import cli, main  # noqa: E402

if _fresh:
    _signal.signal(_signal.SIGINT, _signal.default_int_handler)
    _signal.signal(_signal.SIGTERM, _signal.SIG_DFL)

__all__ = [
    "checks",
    "cli",
    "cluster",
    "events",
    "main",
    "migration",
    "reading",
    "reports",
    "serving",
    "writing",
]
