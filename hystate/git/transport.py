"""Talking to a remote: git in a process group of its own, ended on a timeout or Ctrl-C; git's
reason in one line; credentials kept out of every message; what "unreachable" looks like."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from typing import TYPE_CHECKING

from hystate.core.errors import GitError
from hystate.git import gitcmd

if TYPE_CHECKING:
    from hystate.git.repo import GitRepo

_UNREACHABLE = (
    "could not read from remote",
    "connection refused",
    "unable to connect",
    "unable to access",
    "could not resolve host",
    "timed out",
    "connection reset",
    "broken pipe",
    "the remote end hung up",
    "does not appear to be a git repository",
    "early eof",
    "unexpected disconnect",
    "protocol error",
)


class Unreachable(GitError):
    """The remote could not be reached (or answered garbage): work offline, sync later."""


def run(repo: GitRepo, args: list[str], timeout: float) -> subprocess.CompletedProcess[bytes]:
    """git talking to the remote, in a process group of its own: on a timeout (or when this
    process is interrupted) the whole group ends, transport helpers (``git remote-https``,
    ``ssh``) included, instead of hanging on a dead server after hystate has moved on."""
    env = {**repo.env(), "GIT_TERMINAL_PROMPT": "0", "GIT_SSH_COMMAND": _ssh_command()}
    with subprocess.Popen(
        gitcmd.argv(*args),
        cwd=repo.root,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    ) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _end_group(proc)
            raise Unreachable(
                f"git {_verb(args)}: no answer from the remote in {timeout:g} s"
            ) from None
        except BaseException:
            _end_group(proc)
            raise
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _verb(args: list[str]) -> str:
    """The git command among ``args`` (after any ``-c key=value``)."""
    return next((a for a in args if not a.startswith("-") and "=" not in a), "?")


def _end_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM first, so git removes its lock files (a ref's ``.lock`` left by a SIGKILL would
    stop every later fetch); SIGKILL what is left after a grace period."""
    for sig, grace in ((signal.SIGTERM, 2.0), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except OSError:
            pass  # already gone
        try:
            proc.wait(timeout=grace)
            if sig == signal.SIGTERM:
                os.killpg(proc.pid, signal.SIGKILL)  # helpers that outlived git itself
            return
        except subprocess.TimeoutExpired:
            continue
        except OSError:
            return


def _ssh_command() -> str:
    # never ask for a password on a terminal: a worker has nobody to answer
    return os.environ.get("GIT_SSH_COMMAND") or "ssh -o BatchMode=yes"


def last_line(proc: subprocess.CompletedProcess[bytes]) -> str:
    """git's reason in one line: its first ``fatal:``/``error:`` line (with the next one when
    it ends in a colon), else its last line; credentials in URLs redacted."""
    lines = [ln.strip() for ln in proc.stderr.decode(errors="replace").splitlines() if ln.strip()]
    if not lines:
        return f"exit status {proc.returncode}"
    first = next((i for i, ln in enumerate(lines) if ln.startswith(("fatal:", "error:"))), None)
    if first is None:
        text = lines[-1]
    else:
        text = lines[first]
        if text.endswith(":") and first + 1 < len(lines):
            text += " " + lines[first + 1]
    return redact(text)[:300]


_URL_USERINFO = re.compile(r"(://)[^\s/@'\"]+@")
_USER_PASSWORD = re.compile(r"(?<![\w.:-])[^\s/@'\":]+:[^\s/@'\"]+@")


def redact(text: str) -> str:
    """``scheme://user:token@host`` and ``user:password@host`` without the secret."""
    return _USER_PASSWORD.sub("***@", _URL_USERINFO.sub(r"\1***@", text))


def unreachable(proc: subprocess.CompletedProcess[bytes]) -> bool:
    text = proc.stderr.decode(errors="replace").lower()
    return any(marker in text for marker in _UNREACHABLE)
