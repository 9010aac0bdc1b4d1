"""The ``hystate`` command line (click). A command's module is imported when the command runs
(``app.COMMANDS``); ``hystate.cli.load_all()`` registers every command at once.

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

from hystate.cli.app import COMMANDS, cli, main  # noqa: E402

if _fresh:
    _signal.signal(_signal.SIGINT, _signal.default_int_handler)
    _signal.signal(_signal.SIGTERM, _signal.SIG_DFL)


def load_all() -> None:
    """Import every command module (each registers its commands on ``cli``)."""
    from importlib import import_module

    for module in sorted(set(COMMANDS.values())):
        import_module(f"hystate.cli.{module}")


__all__ = ["cli", "load_all", "main"]
