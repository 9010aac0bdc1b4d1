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
