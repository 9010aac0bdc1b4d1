"""What git's configuration and environment say about how a commit is made.

hystate makes its commits itself, so it must decide what git would: who the author and committer
are (environment, then ``author.*``/``committer.*``, then ``user.*``; ``user.useConfigOnly``),
their dates and timezone, whether the commit must be signed, whether the reflog is written, the
object format and whether file modes are trusted. The configuration is read once with
``git config --list`` and read again only when one of git's config files changed.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from hystate.core.errors import GitError

FALLBACK_NAME = "hystate"
FALLBACK_EMAIL = "hystate@localhost"
_DATE_VARS = ("GIT_AUTHOR_DATE", "GIT_COMMITTER_DATE")


@dataclass(frozen=True)
class Identity:
    name: str
    email: str

    def line(self, when: float | None = None) -> bytes:
        """``Name <email> <epoch> <+hhmm>`` in the local timezone, as git writes it."""
        stamp = int(time.time() if when is None else when)
        offset = time.localtime(stamp).tm_gmtoff // 60
        sign = "-" if offset < 0 else "+"
        tz = f"{sign}{abs(offset) // 60:02d}{abs(offset) % 60:02d}"
        return f"{self.name} <{self.email}> {stamp} {tz}".encode()


class GitSettings:
    """The configuration of one repository as git sees it (local, global and system)."""

    def __init__(self, root: Path, common_dir: Path) -> None:
        self.root = root
        self.common_dir = common_dir
        self._key: tuple[int, ...] | None = None
        self._values: dict[str, str] = {}

    def _sources(self) -> tuple[int, ...]:
        home = Path(os.environ.get("HOME", "/"))
        xdg = Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config")
        files = [
            self.common_dir / "config",
            home / ".gitconfig",
            xdg / "git" / "config",
            Path("/etc/gitconfig"),
        ]
        for var in ("GIT_CONFIG_GLOBAL", "GIT_CONFIG_SYSTEM"):
            if os.environ.get(var):
                files.append(Path(os.environ[var]))
        stamps = []
        for path in files:
            try:
                stamps.append(path.stat().st_mtime_ns)
            except OSError:
                stamps.append(0)
        return tuple(stamps)

    def refresh(self) -> None:
        """Read the configuration again if one of git's config files changed (a commit calls
        this once; every ``get`` until the next refresh uses what was read)."""
        key = self._sources()
        if key != self._key:
            proc = subprocess.run(
                ["git", "config", "-z", "--list"],
                cwd=self.root,
                capture_output=True,
                check=False,
            )
            if proc.returncode not in (0, 1):
                message = proc.stderr.decode(errors="replace").strip().splitlines()
                raise GitError(f"git config failed: {message[-1] if message else proc.returncode}")
            values: dict[str, str] = {}
            for item in proc.stdout.decode(errors="replace").split("\0"):
                name, _, value = item.partition("\n")
                if name:
                    values[name.lower()] = value  # the last one wins, as for git
            self._values, self._key = values, key

    def get(self, name: str) -> str | None:
        if self._key is None:
            self.refresh()
        return self._values.get(name.lower())

    def flag(self, name: str, default: bool = False) -> bool:
        value = self.get(name)
        if value is None:
            return default
        return value.strip().lower() in ("", "true", "yes", "on", "1")

    # -- what a commit needs -------------------------------------------------------------------

    def object_format(self) -> str:
        return (self.get("extensions.objectformat") or "sha1").lower()

    def author(self) -> Identity:
        return self._identity("AUTHOR", "author")

    def committer(self) -> Identity:
        return self._identity("COMMITTER", "committer")

    def _identity(self, env: str, section: str) -> Identity:
        name = os.environ.get(f"GIT_{env}_NAME") or self.get(f"{section}.name")
        name = name or self.get("user.name")
        email = os.environ.get(f"GIT_{env}_EMAIL") or self.get(f"{section}.email")
        email = email or self.get("user.email") or os.environ.get("EMAIL")
        name, email = _clean(name), _clean(email)
        if (not name or not email) and self.flag("user.useconfigonly"):
            raise GitError(
                "user.useConfigOnly is set and no user.name/user.email is configured",
                hint="configure an identity (git config user.name/user.email) and try again",
            )
        return Identity(name or FALLBACK_NAME, email or FALLBACK_EMAIL)

    def sign(self) -> bool:
        """``commit.gpgSign``: git signs every commit; hystate then asks git to make it."""
        return self.flag("commit.gpgsign")

    def dates_from_env(self) -> bool:
        """GIT_AUTHOR_DATE / GIT_COMMITTER_DATE are set: git parses their many formats."""
        return any(os.environ.get(var) for var in _DATE_VARS)

    def hooks_dir(self, git_dir: Path) -> Path:
        """Where git looks for hooks: core.hooksPath (relative to the work tree), else
        ``<git dir>/hooks``."""
        configured = self.get("core.hookspath")
        if configured:
            path = Path(os.path.expanduser(configured))
            return path if path.is_absolute() else self.root / path
        return git_dir / "hooks"

    def trust_file_mode(self) -> bool:
        return self.flag("core.filemode", default=True)

    def reflog(self, ref: str) -> str:
        """``always`` (create any log), ``create`` (create for HEAD and branches), or
        ``existing`` (append only to logs that already exist), per core.logAllRefUpdates."""
        value = (self.get("core.logallrefupdates") or "").strip().lower()
        if value == "always":
            return "always"
        if value in ("", "true", "yes", "on", "1"):
            return "create" if ref == "HEAD" or ref.startswith("refs/heads/") else "existing"
        return "existing"


def _clean(value: str | None) -> str | None:
    # git strips these from identities; a stray "<" or newline would corrupt the commit header
    if value is None:
        return None
    cleaned = "".join(c for c in value if c not in "<>\n\r\0").strip()
    return cleaned or None
