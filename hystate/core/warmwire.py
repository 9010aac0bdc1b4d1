"""The wire between ``hystate`` (hystate/launcher.py) and its warm fork server
(hystate/cli/forkserver.py): where the socket lives, who may use it, and the messages.

The client runs this before anything else of hystate, so it imports the standard library's C
modules only (``_socket``, ``marshal``): ``socket`` alone costs ~10 ms (selectors, enum). Peers
are the same user (SO_PEERCRED on both sides) running the same interpreter, so a message is
``marshal`` data behind a 4-byte length; file descriptors travel alone, on a 1-byte message.
"""

from __future__ import annotations

import _socket
import marshal
import os
import stat
import sys

# Not ``typing`` (~5 ms): see hystate/__init__.py
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

PROTOCOL = 1
ENV = "HYSTATE_WARM"
NAME = "warm.sock"
MAX_MESSAGE = 16 << 20  # bytes: argv and environment are at most a few MB (ARG_MAX)
_FD_SIZE = 4  # a C int in SCM_RIGHTS


def default_socket() -> str:
    """``$XDG_RUNTIME_DIR/hystate/warm.sock``, else ``/tmp/hystate-<uid>/warm.sock``."""
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if runtime and os.path.isabs(runtime):
        return os.path.join(runtime, "hystate", NAME)
    return os.path.join("/tmp", f"hystate-{os.getuid()}", NAME)


def folder_problem(folder: str, *, private: bool = True) -> str | None:
    """Why the socket's folder cannot be trusted, or None: it must be a real folder (not a
    symlink) of this user, 0700 when ``private`` (the default folder), else at least writable
    by nobody else (a folder given with --socket), so no one else can put a socket there."""
    try:
        st = os.lstat(folder)
    except OSError as exc:
        return f"{folder}: {exc.strerror or exc}"
    if stat.S_ISLNK(st.st_mode):
        return f"{folder} is a symlink"
    if not stat.S_ISDIR(st.st_mode):
        return f"{folder} is not a folder"
    if st.st_uid != os.getuid():
        return f"{folder} belongs to uid {st.st_uid}, not to you (uid {os.getuid()})"
    mode = stat.S_IMODE(st.st_mode)
    if private and mode != 0o700:
        return f"{folder} has mode {mode:04o}, not 0700"
    if mode & 0o022:
        return f"{folder} has mode {mode:04o}: others can write in it"
    return None


def connect(path: str, timeout: float) -> _socket.socket:
    """A connection to the server at ``path`` whose process is this user's (OSError if not)."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(path)
        _pid, uid, _gid = peer(sock)
        if uid != os.getuid():
            raise PermissionError(f"{path}: the server is uid {uid}'s")
    except BaseException:
        sock.close()
        raise
    return sock


def peer(sock: _socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end (SO_PEERCRED)."""
    raw = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12)
    pid, uid, gid = (int.from_bytes(raw[i : i + 4], sys.byteorder) for i in (0, 4, 8))
    return pid, uid, gid


def send_fds(sock: _socket.socket, fds: list[int]) -> None:
    data = b"".join(fd.to_bytes(_FD_SIZE, sys.byteorder, signed=True) for fd in fds)
    sock.sendmsg([b"F"], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, data)] if fds else [])


def recv_fds(sock: _socket.socket, most: int) -> list[int]:
    """The descriptors of a ``send_fds`` message (at most ``most``; extra ones are closed)."""
    space = _socket.CMSG_SPACE(most * _FD_SIZE)
    data, ancillary, flags, _ = sock.recvmsg(1, space, getattr(_socket, "MSG_CMSG_CLOEXEC", 0))
    fds: list[int] = []
    for level, kind, payload in ancillary:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            usable = len(payload) - len(payload) % _FD_SIZE
            fds += [
                int.from_bytes(payload[i : i + _FD_SIZE], sys.byteorder, signed=True)
                for i in range(0, usable, _FD_SIZE)
            ]
    if data != b"F" or flags & _socket.MSG_CTRUNC or len(fds) > most:
        for fd in fds:
            os.close(fd)
        raise ConnectionError("not a descriptors message")
    return fds


def encode(value: Any) -> bytes:
    data = marshal.dumps(value)
    return len(data).to_bytes(4, "big") + data


def send(sock: _socket.socket, value: Any) -> None:
    sock.sendall(encode(value))


def recv(sock: _socket.socket) -> Any:
    """The next message; EOFError when the peer closed the connection."""
    size = int.from_bytes(_exactly(sock, 4), "big")
    if size > MAX_MESSAGE:
        raise ConnectionError(f"a message of {size} bytes")
    return marshal.loads(_exactly(sock, size))


def _exactly(sock: _socket.socket, size: int) -> bytes:
    parts, got = [], 0
    while got < size:
        chunk = sock.recv(min(size - got, 1 << 20))
        if not chunk:
            raise EOFError
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def fingerprint(package: str) -> dict[str, Any]:
    """What a process started now would be made of: the same interpreter, installation, flags
    and options (the environment travels whole and is compared on the server)."""
    flags = sys.flags
    names = getattr(flags, "__match_args__", ())
    return {
        "executable": os.path.realpath(sys.executable),
        "prefix": (sys.prefix, sys.base_prefix, sys.exec_prefix),
        "version": sys.version,
        "package": package,
        # -P (safe_path) is how the server starts: it has no script folder on its path
        "flags": tuple(getattr(flags, n) for n in names if n != "safe_path"),
        "warnoptions": list(sys.warnoptions),
        "xoptions": dict(sys._xoptions),
        "fs": (sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()),
        "node": os.uname().nodename,
        "ids": (os.getuid(), os.getgid(), sorted(os.getgroups())),
    }
