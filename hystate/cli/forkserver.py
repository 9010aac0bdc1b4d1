"""The warm fork server (issue 29, ``hystate warm start``): a process that has imported what the
everyday commands need, listens on a Unix socket and forks a child per command (Android's
zygote, nailgun). The child becomes the ``hystate`` process that asked (hystate/launcher.py;
what it takes over is in hystate/cli/forkchild.py) and runs ``hystate.cli.main``: the command
starts with its imports done, the schema compiled.

The server does little but wait, fork and reap: it reads no config, no environment of
anyone's, so a child starts as clean as a new process, less the import time. Between
requests it parses ahead the trees of HEAD of the repositories its children used
(hystate/cli/warmahead.py): a tree is its sha's content, never stale; a child reads all else
(HEAD, index, files) itself.
It stops on SIGTERM (``hystate warm stop``), when its socket is gone or replaced, and when
the code it loaded changed on disk (a child finds it so, or it looks every minute): a
server never runs code older than what a new process would load.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import sys
import time
from importlib import import_module
from typing import Any

from hystate.cli import warmahead
from hystate.cli.forkchild import STARTED, Server, Stamp, changed, serve_one, stamp, startup_env
from hystate.core import warmwire as wire

# What the hot commands (hystate.launcher.HOT) import on their way: loaded once, here. Not
# GitPython (it runs `git version` and reads the environment when imported).
PRELOAD = (
    "hystate.cli.writing", "hystate.cli.reading", "hystate.cli.reports", "hystate.cli.leases",
    "hystate.cli.terminal", "hystate.manager", "hystate.engine.transition",
    "hystate.engine.steps", "hystate.engine.leases", "hystate.engine.claims",
    "hystate.engine.retries", "hystate.cache.state_cache", "hystate.cache.queries",
    "hystate.cache.tree", "hystate.cache.memo", "hystate.git.commit", "hystate.git.index",
    "hystate.git.remote", "hystate.cluster.standing", "hystate.reports.summary",
    "hystate.reports.alerts", "yaml", "jsonschema_rs", "sqlite3", "threading", "io",
    "resource", "traceback", "atexit",
    "statistics",  # the forecast's model, learnt again after most transitions (~2-6 ms)
)  # fmt: skip
SCHEMAS = ("episode", "config")
LOOK_EVERY = 60.0  # seconds between the server's own looks at the code on disk
MAX_CHILDREN = 64  # commands served at once; more run in their own process


def preload() -> None:
    """Import what the hot commands use and compile the schemas (their files are watched)."""
    from hystate.core import schema

    for name in ("hystate.cli", *PRELOAD):
        import_module(name)
    for name in SCHEMAS:
        schema.load_schema(name)
        schema._fast_validator(name)


def snapshot() -> dict[str, Stamp | None]:
    """(mtime, size, inode) of every file the server's code came from: the modules with a file,
    the schemas, the interpreter itself."""
    from hystate.core.schema import schema_dir

    paths = {os.path.realpath(sys.executable)}
    for module in list(sys.modules.values()):
        where = getattr(module, "__file__", None)
        if isinstance(where, str):
            paths.add(where)
    folder = schema_dir()
    paths.update(str(folder / f"{name}.schema.json") for name in SCHEMAS)
    return {path: stamp(path) for path in sorted(paths)}


def run(path: str) -> None:
    """The server's process: listen at ``path``, say ``ready PID`` on stdout, serve until told
    to stop. Started by ``hystate warm start`` (python -P, a session of its own)."""
    preload()
    server = _listen(path)
    server.ahead = warmahead.prepare(f"{path}.ahead")
    server.files = snapshot()
    here = os.path.dirname(os.path.dirname(os.path.abspath(wire.__file__)))
    server.fingerprint = wire.fingerprint(here)
    server.startup_env = startup_env(dict(os.environb))
    server.sys_path = list(sys.path)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
        signal.signal(signum, lambda signum, _frame: _told(server, signum))
    signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes the loop (set_wakeup_fd)
    signal.set_wakeup_fd(server.wakeup[1])
    print(f"ready {server.pid}", flush=True)
    _detach_stdio()
    try:
        _loop(server)
    finally:
        _shut(server)


def _listen(path: str) -> Server:
    import fcntl

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with open(f"{path}.lock", "a") as lock:  # two starts at once: one binds, one finds it
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _answers(path):
            raise SystemExit(f"hystate: a warm server already runs at {path}")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a server's socket left behind: nobody listens on it
        old = os.umask(0o177)  # the socket is 0600 from birth
        try:
            listener.bind(path)
        finally:
            os.umask(old)
        listener.listen(64)
    read, write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    return Server(path, listener, (read, write), identity=_identity(path))


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _answers(path: str) -> bool:
    try:
        wire.connect(path, 2.0).close()
    except OSError:
        return False
    return True


def _detach_stdio() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)


def _told(server: Server, signum: int) -> None:
    server.stop = "stale code" if signum == signal.SIGUSR1 else signal.Signals(signum).name


def _loop(server: Server) -> None:
    looked = time.monotonic()
    warmer = warmahead.Warmer()
    while server.stop is None:
        watched: list[Any] = [server.listener, server.wakeup[0]]
        # with trees to parse, only a look: a command waits for one tree's parse at most
        ready, _, _ = select.select(watched, [], [], 0 if warmer.busy() else LOOK_EVERY)
        if server.wakeup[0] in ready:
            _drain(server)
        _reap(server, warmer)
        if server.listener in ready and server.stop is None:
            _accept(server)
        elif not ready:
            warmer.step()
        if time.monotonic() - looked >= LOOK_EVERY:
            looked = time.monotonic()
            if _identity(server.path) != server.identity:
                server.stop = "socket gone"
            elif changed(server.files):
                server.stop = "stale code"


def _accept(server: Server) -> None:
    try:
        conn, _ = server.listener.accept()
    except OSError:
        return
    if len(server.children) >= MAX_CHILDREN:
        conn.close()  # the client runs the command itself
        return
    try:
        pid = os.fork()
    except OSError:
        conn.close()  # (no process left to fork): the client runs the command itself
        return
    if pid == 0:
        status = 70
        try:
            status = serve_one(conn, server)
        finally:
            os._exit(status)
    server.children[pid] = conn


def _drain(server: Server) -> None:
    """Read the wakeup pipe: signal numbers (one byte each; the handlers did their part) and
    the children's "started" tokens."""
    data = server.pending
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(server.wakeup[0], 4096):
            data += chunk
    i = 0
    while i < len(data):
        if data[i : i + 1] != STARTED:
            i += 1
            continue
        if len(data) - i < 5:
            break
        server.running.add(int.from_bytes(data[i + 1 : i + 5], "little"))
        server.served += 1
        i += 5
    server.pending = data[i:]


def _reap(server: Server, warmer: warmahead.Warmer) -> None:
    """Collect the children that ended; tell each one's client how (the child said its exit
    code itself, unless it ended before it could: os._exit, a signal); take their reports."""
    while server.children:
        try:
            pid, status, usage = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _ended(server, pid, status, usage.ru_utime + usage.ru_stime)
        if server.ahead is not None:
            warmer.take(server.ahead, pid)


def _ended(server: Server, pid: int, status: int, cpu: float) -> None:
    if pid in server.running:
        server.running.discard(pid)
        server.done += 1
        server.cpu += cpu
    conn = server.children.pop(pid, None)
    if conn is None:
        return
    try:
        conn.send(wire.encode(("wait", os.waitstatus_to_exitcode(status))), socket.MSG_DONTWAIT)
    except OSError:
        pass  # that client is gone, or did not wait
    conn.close()


def _shut(server: Server) -> None:
    """Stop taking commands (the socket goes first, if it is still ours), let the running ones
    finish, exit."""
    with contextlib.suppress(OSError):
        if _identity(server.path) == server.identity:
            os.unlink(server.path)
    server.listener.close()
    signal.set_wakeup_fd(-1)
    while server.children:
        try:
            pid, status, usage = os.wait4(-1, 0)
        except ChildProcessError:
            break
        _ended(server, pid, status, usage.ru_utime + usage.ru_stime)
    if server.ahead is not None:  # the reports not taken, and their folder
        with contextlib.suppress(OSError):
            for name in os.listdir(server.ahead):
                os.unlink(os.path.join(server.ahead, name))
            os.rmdir(server.ahead)


def main() -> None:
    run(sys.argv[1])


if __name__ == "__main__":
    main()
