"""One exception family; each subclass carries the exit code of SPEC section 7.

The library raises these and never prints or exits; ``hystate.cli`` turns them into a
one-line message and the exit code, in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

QUOTE_LIMIT = 200  # characters of a value an error message quotes


def shown(value: object, limit: int = QUOTE_LIMIT) -> str:
    """``repr(value)`` for a message, cut to ``limit`` characters: a message never quotes a
    whole 20 MB value back."""
    if isinstance(value, (str, bytes, list)) and len(value) > limit * 4:
        text = repr(value[: limit * 2])
    else:
        try:
            text = repr(value)
        except ValueError:  # an int too long to print
            bits = value.bit_length() if isinstance(value, int) else 0
            return f"<integer of {bits:,} bits>"
    if len(text) <= limit:
        return text
    size = len(value) if isinstance(value, (str, bytes, list, dict)) else len(text)
    return f"{text[: limit - 1]}… ({size:,} long)"


@dataclass(frozen=True)
class Problem:
    """One validation finding: the file, the JSON path inside it, and the rule broken."""

    file: str
    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.path}: {self.message}"

    def as_dict(self) -> dict[str, object]:
        return {"file": self.file, "path": self.path, "message": self.message, "line": self.line}


class HystateError(Exception):
    """Base of every error hystate raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class CheckFailed(HystateError):
    """validate / fsck found problems (exit 1)."""

    exit_code = 1

    def __init__(self, message: str, problems: list[Problem] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


class UsageError(HystateError):
    """A bad argument: an invalid episode id, an unknown stage name (exit 2)."""

    exit_code = 2


class IllegalTransition(HystateError):
    """The move is not allowed from the episode's current stage (exit 3)."""

    exit_code = 3


class UnknownEpisode(HystateError):
    """No episode file with that id (exit 4)."""

    exit_code = 4


class InvalidData(HystateError):
    """Bad YAML, a schema violation, a malformed input file (exit 5)."""

    exit_code = 5

    def __init__(
        self, message: str, problems: list[Problem] | None = None, *, hint: str | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.problems = problems or []


class LockBusy(HystateError):
    """A lock stayed busy past the configured timeout (exit 6)."""

    exit_code = 6


class GitError(HystateError):
    """The repository is missing, mid-merge, conflicted, or git failed (exit 7)."""

    exit_code = 7


class BrokerUnavailable(HystateError):
    """The event broker cannot be reached or refused the request (exit 7, like a repository
    problem: the transitions themselves are safe in git)."""

    exit_code = 7


class CannotWrite(GitError):
    """A file hystate must write cannot be: the disk (or its inode table, or the quota) is
    full, or the file system is mounted read-only (exit 7, as every repository problem). The
    message names the file, the cause and the way out; nothing half-written is left."""

    exit_code = 7


FULL_ERRNOS = {
    28: "full",
    122: "quota",
    30: "read-only",
    27: "too large",
}  # ENOSPC EDQUOT EROFS EFBIG
_WAY_OUT = {
    "full": "the file system holding it is full (bytes or inodes: see `df -h` and `df -i`);"
    " free space there, then run the command again",
    "quota": "your disk quota there is used up; free space or raise the quota, then run the"
    " command again",
    "read-only": "the file system holding it is mounted read-only; reading commands work as"
    " they are, writing ones need it mounted read-write",
    "too large": "the file would pass the file system's or the process's size limit",
}


def is_cannot_write(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in FULL_ERRNOS


def cannot_write(exc: OSError, path: object, doing: str = "write") -> CannotWrite:
    """The one-line error for ``exc`` (ENOSPC, EDQUOT, EROFS, EFBIG) raised writing ``path``."""
    kind = FULL_ERRNOS.get(exc.errno or 0, "full")
    return CannotWrite(f"cannot {doing} {path}: {exc.strerror or exc}", hint=_WAY_OUT[kind])


# what git prints when it cannot write (its own words, by errno and by its older messages)
_GIT_SAYS = {
    "no space left on device": "full",
    "out of diskspace": "full",
    "disk quota exceeded": "quota",
    "read-only file system": "read-only",
}


def as_cannot_write(error: HystateError) -> HystateError:
    """``error`` as a CannotWrite (exit 7, with the way out) when its message says a disk was
    full or read-only (git's failures say so in their own words); else ``error`` itself."""
    if isinstance(error, CannotWrite) or not isinstance(error, GitError):
        return error
    text = error.message.lower()
    for said, kind in _GIT_SAYS.items():
        if said in text:
            return CannotWrite(error.message, hint=_WAY_OUT[kind])
    return error


def disk_full(*paths: object) -> str | None:
    """The way out when the file system of one of ``paths`` has (nearly) no room left (under
    1 MiB or no free inode), else None: git then fails in words that blame something else."""
    import os

    for path in paths:
        try:
            st = os.statvfs(str(path))
        except OSError:
            continue
        if st.f_bavail * st.f_frsize < 1 << 20 or (st.f_files and st.f_favail == 0):
            return f"{path} is on a full file system; " + _WAY_OUT["full"]
    return None
