"""How a child of the warm fork server takes the place of the ``hystate`` process that asked
(hystate/cli/forkchild.py): everything a new process would have inherited from it, so the
command cannot tell it was forked from a server."""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any


class Refused(Exception):
    """This command is not the server's to run (the client runs it); ``fatal``: nor any
    other (another installation, code changed on disk): the server stops."""

    def __init__(self, reason: str, *, fatal: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.fatal = fatal


def become(request: dict[str, Any], fds: list[int], client: int) -> None:
    """Take the client's place: everything a new process would have inherited from it."""
    std = request["std"]
    if len(fds) != 1 + sum(info is not None for info in std):
        raise Refused("descriptors missing")
    os.fchdir(fds[0])
    os.close(fds[0])
    passed = iter(fds[1:])
    for fd, info in enumerate(std):
        if info is None:
            try:
                os.close(fd)
            except OSError:
                pass
            continue
        given = next(passed)
        os.dup2(given, fd)
        os.close(given)
    _path_shadows(request["path"])
    os.umask(request["umask"])
    os.environ.clear()
    os.environb.update(request["env"])
    time.tzset()
    _streams(std)
    sys.argv = list(request["argv"])
    sys.path[:] = request["path"]
    _signals(request["signals"], request["mask"])
    _limits(client)
    ppid = request["ppid"]
    setattr(os, "getppid", lambda: ppid)  # noqa: B010 - the CLI's default worker: host:ppid


def _path_shadows(path: list[str]) -> None:
    """The client's import path has entries the server's has not (its script's folder, or the
    current one for ``python -c``): refuse if one holds a module the server has loaded from
    elsewhere, as a new process would import that one."""
    from importlib.machinery import all_suffixes

    suffixes = tuple(all_suffixes())
    loaded = {name.partition(".")[0] for name in sys.modules}
    for entry in path:
        if entry in sys.path:
            continue
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for name in names:
            if name.split(".", 1)[0] not in loaded:
                continue
            where = os.path.join(entry or ".", name)
            package = os.path.isdir(where) and any(
                os.path.exists(os.path.join(where, f"__init__{suffix}")) for suffix in suffixes
            )
            if package or name.endswith(suffixes):
                raise Refused(f"{where} would be imported instead")


def _streams(std: list[tuple[str, str, bool, bool] | None]) -> None:
    """sys.stdin, sys.stdout, sys.stderr as Python makes them at start (pylifecycle.c
    create_stdio), with the client's encoding, errors and buffering."""
    import io

    made: list[Any] = []
    for fd, info in enumerate(std):
        if info is None:
            made.append(None)
            continue
        encoding, errors, line_buffering, write_through = info
        write = fd != 0
        buffering = 0 if write and write_through else -1
        buf: Any = open(fd, "wb" if write else "rb", buffering, closefd=False)  # noqa: SIM115
        raw = buf if buffering == 0 else buf.raw
        raw.name = ("<stdin>", "<stdout>", "<stderr>")[fd]
        stream: Any = io.TextIOWrapper(buf, encoding, errors, "\n", line_buffering, write_through)
        stream.mode = "w" if write else "r"
        made.append(stream)
    sys.stdin, sys.stdout, sys.stderr = made
    sys.__stdin__, sys.__stdout__, sys.__stderr__ = made  # type: ignore[misc]


def _signals(dispositions: dict[int, str], mask: list[int]) -> None:
    handlers: dict[str, Any] = {"int": signal.default_int_handler, "ign": signal.SIG_IGN}
    for signum in range(1, signal.NSIG):
        if signum in (signal.SIGKILL, signal.SIGSTOP):
            continue
        try:
            signal.signal(signum, handlers.get(dispositions.get(signum, ""), signal.SIG_DFL))
        except (OSError, ValueError):
            continue  # numbers the C library keeps for itself
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def _limits(client: int) -> None:
    """The client's resource limits, priority and CPUs (read from its process: it waits)."""
    import resource

    try:
        for name in dir(resource):
            if name.startswith("RLIMIT_"):
                kind = getattr(resource, name)
                theirs = resource.prlimit(client, kind)
                if resource.getrlimit(kind) != theirs:
                    resource.setrlimit(kind, theirs)
        nice = os.getpriority(os.PRIO_PROCESS, client)
        if os.getpriority(os.PRIO_PROCESS, 0) != nice:
            os.setpriority(os.PRIO_PROCESS, 0, nice)
        cpus = os.sched_getaffinity(client)
        if os.sched_getaffinity(0) != cpus:
            os.sched_setaffinity(0, cpus)
    except (OSError, ValueError) as exc:
        raise Refused(f"cannot take the caller's limits: {exc}") from None
