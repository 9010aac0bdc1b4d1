"""``hystate``, the command (issue 29): one of the everyday commands (``HOT``) is served by the
warm fork server ``$HYSTATE_WARM`` names (``hystate warm start``, hystate/cli/forkserver.py),
which has hystate and its libraries imported already; anything else, or any doubt (no server,
a socket gone or refused, a server whose code is older than what is on disk), runs in this
process, ``hystate.cli.main`` as always.

Served, this process sends its arguments, environment, umask, signal dispositions and
descriptors 0, 1, 2 and its folder; a child of the server becomes this process (same output,
same exit code, its parent named as this process's), runs the command, and says its exit
code; until then Ctrl-C, SIGTERM and SIGHUP are passed on to it, and if this process dies (kill
-9) the child dies too. Nothing but the standard library's C modules is imported here before
the choice is made: the whole point is to start in a few milliseconds.
"""

from __future__ import annotations

import _signal  # ``signal`` imports enum (~2 ms); the C module has all this needs
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    import _socket
    from typing import Any

# Commands that never prompt nor read the terminal, served warm (a command's stdin is passed
# on all the same). The others (init, discover, serve, sync, fsck, warm itself...) run here.
HOT = frozenset(
    {
        "add", "advance", "config", "fail", "heartbeat", "history", "list", "locks", "log",
        "metrics", "next", "retry", "show", "skip", "status",
    }
)  # fmt: skip
FORWARDED = (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP)
READY_SECONDS = 5.0  # the server has this long to take a command; then it runs here
EXIT_INTERRUPTED = 130
EXIT_WARM_FAILED = 7  # the server failed after "go": the command's outcome is unknown (cli.md)


def main() -> None:
    dispositions = _dispositions()  # as a fresh interpreter has them, before ours below
    if _signal.getsignal(_signal.SIGINT) is _signal.default_int_handler:
        # Ctrl-C before a command runs: one line, exit 130 (as hystate.cli does while importing)
        _signal.signal(_signal.SIGINT, _interrupted)
        _signal.signal(_signal.SIGTERM, _interrupted)
    path = os.environ.get("HYSTATE_WARM")
    if path and command_of(sys.argv[1:]) in HOT:
        _served(path, dispositions)  # returns only when the command was not taken
    from hystate.cli import main as run

    run()


def command_of(args: list[str]) -> str | None:
    """The command's name in hystate's arguments (after -v, --state-dir DIR), or None."""
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--state-dir":
            i += 2
            continue
        if arg in ("-v", "--verbose") or arg.startswith("--state-dir="):
            i += 1
            continue
        return None if arg.startswith("-") else arg
    return None


def _interrupted(signum: int, frame: object) -> None:
    os.write(2, b"hystate: interrupted\n")
    os._exit(EXIT_INTERRUPTED)


def _dispositions() -> dict[int, str]:
    """Each signal's handling as this interpreter started with it: ``int`` (Python's
    KeyboardInterrupt), ``ign`` (ignored: nohup, a background job), ``dfl``."""
    found = {}
    for signum in range(1, _signal.NSIG):
        try:
            handler = _signal.getsignal(signum)
        except (OSError, ValueError):
            continue
        if handler is _signal.default_int_handler:
            found[signum] = "int"
        elif handler == _signal.SIG_IGN:
            found[signum] = "ign"
    return found


def _served(path: str, dispositions: dict[int, str]) -> None:
    """Run the command in the warm server's child and exit as it did; return if not taken."""
    from hystate.core import warmwire as wire

    if wire.folder_problem(os.path.dirname(path) or ".", private=False) is not None:
        return
    opened: list[int] = []
    try:
        sock = wire.connect(path, READY_SECONDS)
    except OSError:
        return
    try:
        opened.append(os.open(".", getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY))
        streams = (sys.stdin, sys.stdout, sys.stderr)
        std = [_stream(s) for s in streams]
        wire.send_fds(sock, [*opened, *(fd for fd in (0, 1, 2) if std[fd] is not None)])
        umask = os.umask(0o022)
        os.umask(umask)
        wire.send(sock, _request(std, umask, dispositions))
        reply = _received(sock)
    except OSError:
        reply = None
    finally:
        for fd in opened:
            os.close(fd)
    if type(reply) is tuple and reply == ("ready",):
        _run(sock)  # returns only if "go" could not be said: nothing ran
    sock.close()


def _stream(stream: Any) -> tuple[str, str, bool, bool] | None:
    """How Python set up one of this process's standard streams (None: its descriptor is
    closed), so the child's is the same: encoding, errors, line buffering, write-through."""
    if stream is None:
        return None
    return (stream.encoding, stream.errors, stream.line_buffering, stream.write_through)


def _request(std: list[Any], umask: int, dispositions: dict[int, str]) -> dict[str, Any]:
    from hystate.core import warmwire as wire

    here = os.path.dirname(os.path.abspath(__file__))
    return {
        "protocol": wire.PROTOCOL,
        "kind": "run",
        "argv": sys.argv,
        "path": sys.path,
        "env": dict(os.environb),
        "umask": umask,
        "ppid": os.getppid(),
        "std": std,
        "signals": dispositions,
        "mask": sorted(_signal.pthread_sigmask(_signal.SIG_BLOCK, ())),
        "fingerprint": wire.fingerprint(here),
    }


def _run(sock: _socket.socket) -> None:
    """The child waits for "go", then runs the command; this process relays the signals it
    gets and ends as the child ended. Returns only if "go" could not be sent (nothing ran)."""
    from hystate.core import warmwire as wire

    # From "go" on, a signal is the command's: held until the relay is in place. As
    # hystate.cli.main does, SIGINT and SIGTERM are always caught, SIGHUP unless ignored (nohup).
    held = {s for s in FORWARDED if s != _signal.SIGHUP or _signal.getsignal(s) != _signal.SIG_IGN}
    _signal.pthread_sigmask(_signal.SIG_BLOCK, held)

    def relay(signum: int, frame: object) -> None:
        try:
            wire.send(sock, ("signal", signum))
        except OSError:
            pass  # the child is gone already: its end is on its way

    before = {signum: _signal.signal(signum, relay) for signum in held}
    sock.settimeout(None)
    try:
        wire.send(sock, ("go",))
    except OSError:  # (a failed send delivers nothing): the command runs here after all
        for signum, handler in before.items():
            _signal.signal(signum, handler)
        _signal.pthread_sigmask(_signal.SIG_UNBLOCK, held)
        return
    _signal.pthread_sigmask(_signal.SIG_UNBLOCK, held)
    message = _received(sock)
    if type(message) is tuple and len(message) == 2 and type(message[1]) is int:
        kind, value = message
        if kind == "exit" and -(1 << 31) <= value < 1 << 31:  # sys.exit's int, as C takes it
            os._exit(value)
        if kind == "wait" and -_signal.NSIG < value <= 255:  # negative: killed by a signal
            _end_like(value)
    _exit_with_line(
        "error: the warm server sent no valid exit status (the command's outcome is unknown; "
        "check with hystate show/status)",
        EXIT_WARM_FAILED,
    )


def _received(sock: _socket.socket) -> object:
    """The server's next message, or None: the connection ended or the bytes are not a
    message (any error: what the server sends is checked, never trusted)."""
    from hystate.core import warmwire as wire

    try:
        return wire.recv(sock)
    except Exception:
        return None


def _end_like(code: int) -> None:
    if code >= 0:
        os._exit(code)
    signum = -code  # killed: this process dies of the same signal, as the shell would see it
    try:
        _signal.signal(signum, _signal.SIG_DFL)
    except (OSError, ValueError):
        pass  # SIGKILL, SIGSTOP: not ours to set, and deadly (or stopping) as they are
    try:
        _signal.pthread_sigmask(_signal.SIG_UNBLOCK, {signum})
        os.kill(os.getpid(), signum)
    except (OSError, ValueError):
        pass
    os._exit(128 + signum)


def _exit_with_line(text: str, code: int) -> None:
    os.write(2, f"hystate: {text}\n".encode())
    os._exit(code)
