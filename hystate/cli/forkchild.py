"""One command in a child of the warm fork server (hystate/cli/forkserver.py): the child checks
that it may serve the ``hystate`` process that asked (hystate/launcher.py), becomes that
process (folder, environment, umask, descriptors 0-2 and the streams on them, signal
handling, resource limits, priority, CPUs, parent pid), runs ``hystate.cli.main`` and says
its exit code, as the interpreter would have ended.

It refuses (the client then runs the command itself) when anything would make it differ from
a new process: another user or group, interpreter, installation, flags, ``PYTHON*`` or locale
variables, import path, code changed on disk since the server loaded it (the server stops
too), a module the client's path would find elsewhere, a limit it cannot take. Nothing has
run when it refuses: the command starts only on the client's "go".
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from hystate.cache.db import close_all
from hystate.cli import warmahead
from hystate.cli.takeover import Refused, become
from hystate.core import warmwire as wire
from hystate.git import index as index_mod
from hystate.git import settings
from hystate.git.trees import WARM

HANDSHAKE_SECONDS = 10.0
EXIT_FLUSH_FAILED = 120  # what Python exits with when it cannot flush stdout at the end
# fingerprint entries that name another installation (or a renamed host: hystate.core.locks.HOST
# is read once): the server stops as well as refusing
FATAL = ("executable", "prefix", "version", "package", "node")
# what Python reads from the environment as it starts: a client whose differ runs in-process
STARTUP_ENV = (b"LANG", b"LC_ALL", b"LC_CTYPE")
STARTED = b"R"  # on the server's wakeup pipe (whose signal bytes are 1-64), then a pid

Stamp = tuple[int, int, int]


@dataclass
class Server:
    """The fork server's state, as its children see it (hystate/cli/forkserver.py)."""

    path: str
    listener: socket.socket
    wakeup: tuple[int, int]
    identity: tuple[int, int] | None = None  # (device, inode) of the socket file bound
    ahead: str | None = None  # the folder of the children's reports (cli/warmahead.py)
    pid: int = field(default_factory=os.getpid)
    started: float = field(default_factory=time.time)
    files: dict[str, Stamp | None] = field(default_factory=dict)  # what the code came from
    fingerprint: dict[str, Any] = field(default_factory=dict)
    startup_env: dict[bytes, bytes] = field(default_factory=dict)
    sys_path: list[str] = field(default_factory=list)
    children: dict[int, socket.socket] = field(default_factory=dict)  # pid: its connection
    running: set[int] = field(default_factory=set)  # children that started a command
    served: int = 0  # commands started
    done: int = 0  # commands ended
    cpu: float = 0.0  # seconds of CPU of the commands ended (with the processes they waited for)
    pending: bytes = b""  # of the wakeup pipe: a token cut in two by a read
    stop: str | None = None


def stamp(path: str) -> Stamp | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def changed(files: dict[str, Stamp | None]) -> str | None:
    """The first file that is no longer what the server loaded, or None."""
    for path, was in files.items():
        if stamp(path) != was:
            return path
    return None


def startup_env(env: dict[bytes, bytes]) -> dict[bytes, bytes]:
    return {k: v for k, v in env.items() if k.startswith(b"PYTHON") or k in STARTUP_ENV}


def serve_one(conn: socket.socket, server: Server) -> int:
    """Serve the connection ``conn``; the status to leave the child with."""
    _leave_server(conn, server)
    conn.settimeout(HANDSHAKE_SECONDS)
    try:
        client = _peer(conn)
        fds = wire.recv_fds(conn, 4)
        request = wire.recv(conn)
        if not isinstance(request, dict) or request.get("protocol") != wire.PROTOCOL:
            raise Refused("another version of hystate", fatal=True)
        if request.get("kind") == "ping":
            wire.send(conn, ("status", status(server, request)))
            return 0
        refused = refusal(server, request)
        if refused is not None:
            raise refused
        become(request, fds, client)
        wire.send(conn, ("ready",))
        if wire.recv(conn) != ("go",):
            return 0
        # the server counts it (and its CPU, when it ends): "R" and the pid, one write
        os.write(server.wakeup[1], STARTED + os.getpid().to_bytes(4, "little"))
        os.close(server.wakeup[1])
    except Refused as no:
        try:
            wire.send(conn, ("no", no.reason))
        except OSError:
            pass
        if no.fatal:
            os.kill(server.pid, signal.SIGUSR1)
        return 0
    except (OSError, EOFError, ValueError, TypeError, KeyError):
        return 0  # a client gone or garbled: nothing ran
    conn.settimeout(None)
    code = _run(conn)
    if server.ahead is not None:  # for the next commands (the client has its exit code)
        warmahead.report(server.ahead)
    return code


def status(server: Server, request: dict[str, Any]) -> dict[str, Any]:
    """What ``hystate warm status`` shows."""
    refused = refusal(server, request)
    return {
        "pid": server.pid,
        "socket": server.path,
        "started": server.started,
        "served": server.served,
        "done": server.done,
        "cpu_seconds": round(server.cpu, 6),
        "modules": len(sys.modules),
        "trees": len(WARM),
        "configs": len(settings.WARM),
        "indexes": len(index_mod.WARM),
        "stale": changed(server.files),
        "serves_you": refused is None,
        "why_not": None if refused is None else refused.reason,
    }


def refusal(server: Server, request: dict[str, Any]) -> Refused | None:
    """Why this server must not run the request's command, or None."""
    mine, theirs = server.fingerprint, request["fingerprint"]
    for key in mine.keys() | theirs.keys():
        if mine.get(key) != theirs.get(key):
            fatal = key in FATAL
            return Refused(f"another {key} than the server's", fatal=fatal)
    if startup_env(request["env"]) != server.startup_env:
        return Refused("other PYTHON* or locale variables than the server's")
    theirs_path = request["path"]
    if [p for p in theirs_path if p in server.sys_path] != server.sys_path:
        return Refused("another import path than the server's")
    stale = changed(server.files)
    if stale is not None:
        return Refused(f"{stale} changed since the server started", fatal=True)
    return None


def _leave_server(conn: socket.socket, server: Server) -> None:
    """Close what is the server's in this child: its socket, the other clients, the pipe's
    end it reads (the other end tells it a command started)."""
    signal.set_wakeup_fd(-1)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGCHLD):
        signal.signal(signum, signal.SIG_DFL)
    server.listener.close()
    for other in server.children.values():
        other.close()
    server.children.clear()
    os.close(server.wakeup[0])


def _peer(conn: socket.socket) -> int:
    pid, uid, gid = wire.peer(conn)
    if uid != os.getuid() or gid != os.getgid():
        raise Refused("another user or group than the server's")
    if pid <= 0:
        raise Refused("a client the server cannot see (another pid namespace)")
    return pid


def _run(conn: socket.socket) -> int:
    """Run the command as the interpreter would run it as ``__main__``, then end as it ends."""
    state = ["running"]  # then "ending" (signals no longer relayed), then "done"
    watcher = threading.Thread(
        target=_watch, args=(conn, threading.get_ident(), state), daemon=True
    )
    watcher.start()
    interrupted = False
    try:
        from hystate.cli import main

        main()
        code = 0
    except SystemExit as exc:
        code = _exit_code(exc.code)
    except BaseException as exc:
        sys.excepthook(type(exc), exc, exc.__traceback__)
        interrupted = isinstance(exc, KeyboardInterrupt)
        code = 1
    state[0] = "ending"
    code = _shut_down(code)
    state[0] = "done"
    if interrupted:  # Python ends an uncaught Ctrl-C by dying of SIGINT
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    try:
        wire.send(conn, ("exit", code))
    except OSError:
        pass
    return code


def _exit_code(value: object) -> int:
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    try:
        print(value, file=sys.stderr)
    except Exception:
        pass
    return 1


def _shut_down(code: int) -> int:
    """Python's end: wait for the other threads, atexit, flush the streams (stdout failing to
    flush makes it 120), close the SQLite connections, then the descriptors close, so a
    reader sees the end now."""
    import atexit

    shutdown = getattr(threading, "_shutdown", None)
    if shutdown is not None:
        shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        if stream is None or stream.closed:
            continue
        try:
            stream.flush()
        except Exception as exc:
            if stream is sys.stdout:
                _unraisable(exc, stream)
                code = EXIT_FLUSH_FAILED
    close_all()  # what the interpreter's end closes (its state.db-wal and -shm go with it)
    for fd in (0, 1, 2):
        try:
            os.close(fd)
        except OSError:
            pass
    return code


def _unraisable(exc: BaseException, stream: object) -> None:
    try:
        hook_args = type("UnraisableHookArgs", (), {})()
        for name, value in (
            ("exc_type", type(exc)),
            ("exc_value", exc),
            ("exc_traceback", exc.__traceback__),
            ("err_msg", None),
            ("object", stream),
        ):
            setattr(hook_args, name, value)
        sys.unraisablehook(hook_args)
    except Exception:
        pass


def _watch(conn: socket.socket, main: int, state: list[str]) -> None:
    """The client's end of the connection: a signal it relays goes to the main thread (as the
    terminal's would); the client gone (killed) takes this process with it, as a killed
    ``hystate`` process is gone, unless the command has finished already."""
    signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    while True:
        try:
            message = wire.recv(conn)
        except (OSError, EOFError, ValueError):
            if state[0] != "done":
                os.kill(os.getpid(), signal.SIGKILL)
            return
        if isinstance(message, tuple) and message[:1] == ("signal",) and state[0] == "running":
            signal.pthread_kill(main, int(message[1]))
