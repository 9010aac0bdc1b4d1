"""``hystate warm start|stop|status``: the opt-in warm fork server (issue 29) that serves the
everyday commands with their imports done (hystate/cli/forkserver.py, hystate/launcher.py)."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

import click

from hystate.cli.app import Options, cli, echo, emit_json, json_option, pass_opts
from hystate.core import warmwire as wire
from hystate.core.errors import UsageError
from hystate.core.locks import pid_alive

START_SECONDS = 60.0  # for the server to import everything (seconds on a loaded machine)
STOP_SECONDS = 10.0
MAX_PATH = 107  # bytes of a Unix socket's path (sun_path, with its NUL)


def socket_option(f: Any) -> Any:
    return click.option(
        "--socket",
        "socket_path",
        metavar="PATH",
        help="The server's socket (default: $HYSTATE_WARM for stop and status, else "
        "$XDG_RUNTIME_DIR/hystate/warm.sock, else /tmp/hystate-UID/warm.sock).",
    )(f)


@cli.group()
def warm() -> None:
    """A warm server for the everyday commands (opt-in): a process with hystate imported
    that forks a child per command, so `advance`, `status`, `list`, `show`, `next` start in
    milliseconds. Commands use it when $HYSTATE_WARM names its socket; anything else, or a
    server gone or out of date, runs as usual.

    \b
    Examples:
      eval "$(hystate warm start)"     # sets and exports HYSTATE_WARM
      hystate warm status
      eval "$(hystate warm stop)"      # unsets it
    """


@warm.command()
@socket_option
def start(socket_path: str | None) -> None:
    """Start the server (in its own session) and print the shell line that points commands at
    it: `HYSTATE_WARM=PATH; export HYSTATE_WARM;`. A server already there is kept.

    \b
    Examples:
      eval "$(hystate warm start)"
      eval "$(hystate warm start --socket ~/.cache/hystate/warm.sock)"
    """
    path = _checked(socket_path or wire.default_socket(), private=socket_path is None)
    line = f"HYSTATE_WARM={shlex.quote(path)}; export HYSTATE_WARM;"
    answer = ask(path)
    if answer is None:
        proc = subprocess.Popen(
            [sys.executable, "-P", "-c", "from hystate.cli.forkserver import main; main()", path],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd="/",  # holds no folder (or mount) of anyone's busy
            start_new_session=True,
        )
        ready = _ready(proc)
        if ready.startswith("ready "):
            echo(f"hystate: warm server started at {path} (pid {ready.split()[1]})", err=True)
            click.echo(line)
            return
        answer = ask(path)  # another start (another shell) won the race: its server will do
        if answer is None:
            raise UsageError(f"the warm server did not start: {ready or 'no answer'}")
    echo(f"hystate: a warm server already runs at {path} (pid {answer['pid']})", err=True)
    click.echo(line)


@warm.command()
@socket_option
def stop(socket_path: str | None) -> None:
    """Stop the server (the commands running finish first) and print `unset HYSTATE_WARM;`.
    Exit 1 if it is still running 10 s later (waiting for its commands to end).

    \b
    Examples:
      eval "$(hystate warm stop)"
    """
    path = socket_path or os.environ.get(wire.ENV) or wire.default_socket()
    try:
        sock = wire.connect(path, 5.0)
    except OSError:
        echo(f"hystate: no warm server at {path}", err=True)
    else:
        pid = wire.peer(sock)[0]
        sock.close()
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if pid_alive(pid):  # its socket is gone: new commands run in-process already
            echo(
                f"hystate: the warm server (pid {pid}) takes no more commands but is still "
                f"running after {STOP_SECONDS:g} s: it ends when the commands it runs end",
                err=True,
            )
            click.echo("unset HYSTATE_WARM;")
            click.get_current_context().exit(1)
        echo(f"hystate: warm server stopped (pid {pid})", err=True)
    click.echo("unset HYSTATE_WARM;")


@warm.command()
@socket_option
@json_option
@pass_opts
def status(opts: Options, socket_path: str | None, as_json: bool) -> None:
    """Whether a server runs, and whether it serves commands run from here (exit 1 if none
    runs), in one line.

    \b
    Examples:
      hystate warm status
      hystate warm status --json
    """
    path = socket_path or os.environ.get(wire.ENV) or wire.default_socket()
    answer = ask(path)
    if answer is None:
        if as_json:
            emit_json({"running": False, "socket": path})
        else:
            echo(f"no warm server at {path}")
        click.get_current_context().exit(1)
    started = datetime.fromtimestamp(answer["started"], UTC).isoformat(timespec="seconds")
    if as_json:
        emit_json({"running": True, **answer, "started": started})
        return
    served = "serves commands run here"
    if not answer["serves_you"]:
        served = f"does not serve commands run here: {answer['why_not']}"
    echo(
        f"warm server at {path}, pid {answer['pid']}, since {started}, "
        f"{answer['served']} commands served, {answer['modules']} modules loaded; {served}"
    )


def _checked(path: str, *, private: bool) -> str:
    """The socket's path, its folder made (0700) if it is the default one, and trusted."""
    path = os.path.abspath(path)
    if len(os.fsencode(path)) > MAX_PATH:
        raise UsageError(f"socket path too long for a Unix socket ({MAX_PATH} bytes): {path}")
    folder = os.path.dirname(path)
    if private:
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:
            pass
        except OSError as exc:
            raise UsageError(f"cannot make {folder}: {exc.strerror or exc}") from None
    problem = wire.folder_problem(folder, private=private)
    if problem is not None:
        raise UsageError(f"refusing the socket folder: {problem}")
    return path


def ask(path: str) -> dict[str, Any] | None:
    """The server's answer to "how are you" (as hystate/launcher.py would ask), or None."""
    try:
        sock = wire.connect(path, 5.0)
    except OSError:
        return None
    here = os.path.dirname(os.path.dirname(os.path.abspath(wire.__file__)))
    request = {
        "protocol": wire.PROTOCOL,
        "kind": "ping",
        "path": sys.path,
        "env": dict(os.environb),
        "fingerprint": wire.fingerprint(here),
    }
    try:
        wire.send_fds(sock, [])
        wire.send(sock, request)
        reply = wire.recv(sock)
    except (OSError, EOFError, ValueError):
        return None
    finally:
        sock.close()
    if not (isinstance(reply, tuple) and reply[0] == "status"):
        return None
    answer: dict[str, Any] = reply[1]
    return answer


def _ready(proc: subprocess.Popen[bytes]) -> str:
    """The server's first line (``ready PID``), or what it said on stderr as it ended."""
    import select

    assert proc.stdout is not None and proc.stderr is not None
    ready, _, _ = select.select([proc.stdout], [], [], START_SECONDS)
    line = proc.stdout.readline().decode(errors="replace").strip() if ready else ""
    if not line.startswith("ready "):
        if not ready:
            proc.kill()
        proc.wait()
        errors = proc.stderr.read().decode(errors="replace").strip().splitlines()
        line = errors[-1] if errors else line
    proc.stdout.close()
    proc.stderr.close()
    return line
