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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hystate.core import filestamp
from hystate.core.errors import GitError
from hystate.git import shared

FALLBACK_NAME = "hystate"
FALLBACK_EMAIL = "hystate@localhost"
_DATE_VARS = ("GIT_AUTHOR_DATE", "GIT_COMMITTER_DATE")
# what names git's config files besides HOME and XDG_CONFIG_HOME (the first two: files)
_CONFIG_VARS = ("GIT_CONFIG_GLOBAL", "GIT_CONFIG_SYSTEM", "GIT_CONFIG_NOSYSTEM")
# ``git config --list`` answers a warm fork server's child read (READ: its command's own) or was
# handed by the server (WARM: other commands', read-only), by repository, GIT_* and PATH
# variables and the config files' settled stamps; never one with includes (files unstamped)
WARM: dict[tuple[object, ...], dict[str, str]] = {}
READ: dict[tuple[object, ...], dict[str, str]] = {}
DEFAULT_FSYNC = frozenset({"loose-object", "reference"})
_OBJECTS = {"loose-object", "pack"}
_COMMITTED = _OBJECTS | {"pack-metadata", "commit-graph", "reference"}
_FSYNC_GROUPS = {
    "objects": _OBJECTS,
    "derived-metadata": {"pack-metadata", "commit-graph"},
    "committed": _COMMITTED,
    "added": _COMMITTED | {"index"},
    "all": _COMMITTED | {"index"},
}


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

    def __init__(
        self, root: Path, common_dir: Path, env: Callable[[], dict[str, str]] | None = None
    ) -> None:
        self.root = root
        self.common_dir = common_dir
        self._env = env  # the environment naming the repository (GitRepo.env)
        self._key: tuple[object, ...] | None = None  # the sources' stamps when read, if settled
        self._read = False
        self._values: dict[str, str] = {}

    def _sources(self) -> tuple[tuple[object, ...], bool]:
        """The stamps of git's config files (``hystate.core.filestamp``; None: missing) and
        the variables that name them; whether every stamp is settled."""
        env = os.environ
        home = env.get("HOME", "/")
        xdg = env.get("XDG_CONFIG_HOME") or f"{home}/.config"
        named = [env.get(var) for var in _CONFIG_VARS]
        files = [f"{self.common_dir}/config", f"{home}/.gitconfig", f"{xdg}/git/config"]
        files += ["/etc/gitconfig", *(path for path in named[:2] if path)]
        now = time.time_ns()
        stamps: list[object] = [home, xdg, *named]
        firm = True
        for path in files:
            try:
                st = os.stat(path)
            except OSError:
                stamps.append(None)
                continue
            stamps.append(filestamp.stamp(st))
            firm = firm and filestamp.settled(st, now)
        return tuple(stamps), firm

    def refresh(self) -> None:
        """Read the configuration again if one of git's config files changed (a commit calls
        this once; every ``get`` until the next refresh uses what was read). A file changed
        in the last moments is read again at every refresh until its stamp is settled."""
        key, firm = self._sources()
        if not self._read or key != self._key:
            shared_key = self._shared_key(key) if firm else None
            values = WARM.get(shared_key) if shared_key else None
            if values is None:
                values = self._list()
                # handed on only if no file came (or went) while git read them: a file missing
                # when stamped but read by git would be believed again once it is gone
                if shared_key and not any(map(_unstamped, values)) and self._sources()[0] == key:
                    READ[shared_key] = values
            self._values, self._read = values, True
        self._key = key if firm else None

    def _shared_key(self, key: tuple[object, ...]) -> tuple[object, ...]:
        env = sorted((k, v) for k, v in os.environ.items() if k.startswith("GIT_"))
        return (str(self.root), str(self.common_dir), os.environ.get("PATH"), *env, *key)

    def _list(self) -> dict[str, str]:
        proc = subprocess.run(
            ["git", "config", "-z", "--list"],
            cwd=self.root,
            env=self._env() if self._env else None,
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
        return values

    def get(self, name: str) -> str | None:
        if not self._read:
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

    def shared_repository(self) -> int:
        """``core.sharedRepository`` as git reads it (see ``shared.parse``)."""
        return shared.parse(self.get("core.sharedrepository"))

    def fsync(self) -> frozenset[str]:
        """What hystate fsyncs when it commits: of ``loose-object``, ``index``, ``reference``.

        ``core.fsync`` (git 2.36+; components, ``objects``/``committed``/``added``/``all``/
        ``none`` and ``-component``), else the older ``core.fsyncObjectFiles``, decide as they
        decide for git. With neither set, hystate's own default: its loose objects and the
        branch it moves are fsynced (state is small and precious: a power cut must not leave
        HEAD pointing at an empty object; docs/BENCHMARKS.md has the cost), the index is not
        (it is rebuilt from HEAD by ``fsck --repair``)."""
        value = self.get("core.fsync")
        if value is None:
            if self.get("core.fsyncobjectfiles") is not None:
                return frozenset({"loose-object"} if self.flag("core.fsyncobjectfiles") else ())
            return DEFAULT_FSYNC
        chosen: set[str] = set()
        for word in (w.strip().lower() for w in value.split(",")):
            drop = word.startswith("-")
            names = _FSYNC_GROUPS.get(word.lstrip("-"), {word.lstrip("-")})
            if word == "none":
                chosen.clear()
            elif drop:
                chosen -= names
            else:
                chosen |= names
        return frozenset(chosen & {"loose-object", "index", "reference"})

    def fsync_method(self) -> str:
        """``core.fsyncMethod``: ``fsync`` (the default), ``writeout-only`` (hystate asks for
        ``fdatasync``, the nearest a Python process has), ``batch`` (a commit's objects are
        flushed by one ``os.sync()``, as git flushes a batch once; the rest as ``fsync``)."""
        return (self.get("core.fsyncmethod") or "fsync").strip().lower()

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


def _unstamped(name: str) -> bool:
    """A setting naming config files ``GitSettings`` does not stamp (includes, config.worktree)."""
    return name.startswith(("include.", "includeif.")) or name == "extensions.worktreeconfig"
