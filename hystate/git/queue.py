"""The group-commit queue: one file per commit request under ``.git/hystate/queue/<key>/``.

A request (``Request``) is written to a temp file made with O_EXCL, synced, and renamed to
``<id>.req`` (ids sort in the order they were made). The leader (whoever holds the repository
lock) claims a request by renaming it to ``<id>.claimed``: exactly one of the claim and the
requester's cancel (unlinking ``<id>.req``) succeeds. Once the leader knows the outcome it
writes ``<id>.done`` (the commit sha, or null for no change) or ``<id>.failed`` (the error) the
same atomic way and removes ``<id>.claimed``; the requester reads and removes its outcome.
``group.py`` makes the commits; the crash protocol is described there.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hystate.core import errors
from hystate.core.errors import GitError, HystateError
from hystate.core.locks import LockOwner
from hystate.core.paths import write_atomic
from hystate.git.settings import Identity

SUFFIXES = (".req", ".claimed", ".done", ".failed")
OWN = "own"  # the leader's own request: kept in memory, never written (not an id of a file)


@dataclass(frozen=True)
class Request:
    """One transition's commit: set ``rel`` to ``data`` (already written to the work tree),
    if HEAD still has ``expect`` there (binary blob sha, None for none)."""

    rel: str
    data: bytes
    message: str
    expect: bytes | None
    author: Identity
    committer: Identity
    owner: LockOwner
    id: str = ""

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "rel": self.rel,
                "data": base64.b64encode(self.data).decode(),
                "message": self.message,
                "expect": self.expect.hex() if self.expect is not None else None,
                "author": [self.author.name, self.author.email],
                "committer": [self.committer.name, self.committer.email],
                "owner": self.owner.__dict__,
            }
        ).encode()

    @classmethod
    def from_json(cls, rid: str, raw: bytes) -> Request:
        d = json.loads(raw)
        return cls(
            str(d["rel"]),
            base64.b64decode(d["data"]),
            str(d["message"]),
            bytes.fromhex(d["expect"]) if d["expect"] is not None else None,
            Identity(*d["author"]),
            Identity(*d["committer"]),
            LockOwner(**d["owner"]),
            rid,
        )


@dataclass(frozen=True)
class Outcome:
    commit: str | None  # None: HEAD had the content already (no commit)
    error: HystateError | None = None

    def result(self) -> str | None:
        if self.error is not None:
            raise self.error
        return self.commit


class Queue:
    """The requests of one serialization domain (one repository lock: one state folder of
    one work tree)."""

    def __init__(self, git_dir: Path, key: str) -> None:
        name = hashlib.sha1(key.encode()).hexdigest()[:12]
        self.dir = git_dir / "hystate" / "queue" / name
        self.base = os.path.join(self.dir, "")  # the folder's path, with a separator
        self.kept: dict[str, Outcome] = {}  # the outcome of OWN

    def _path(self, rid: str, suffix: str) -> Path:
        return self.dir / f"{rid}{suffix}"

    def submit(self, request: Request) -> str:
        """Queue ``request``; its id. Written whole before it is seen (a temp file made with
        O_EXCL, renamed), not synced: after a power cut its requester is gone, and a request
        whose requester is gone is never committed (the file it wrote is fsck's to judge)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        rid = f"{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(4)}"
        write_atomic(self._path(rid, ".req"), request.to_json(), sync=False)
        return rid

    def listing(self) -> dict[str, list[str]]:
        """Suffix -> the ids with a file of that suffix, in the order they were made."""
        found: dict[str, list[str]] = {suffix: [] for suffix in SUFFIXES}
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return found
        for name in sorted(names):
            rid, dot, suffix = name.partition(".")
            if dot and not name.startswith(".") and "." + suffix in found:
                found["." + suffix].append(rid)
        return found

    def claim(self, rid: str) -> Request | None:
        """The request, claimed (None: cancelled meanwhile, or not a request hystate wrote,
        which is then set aside as failed)."""
        claimed = self._path(rid, ".claimed")
        try:
            os.rename(self._path(rid, ".req"), claimed)
        except FileNotFoundError:
            return None
        return self.read_claimed(rid)

    def read_claimed(self, rid: str) -> Request | None:
        try:
            return Request.from_json(rid, self._path(rid, ".claimed").read_bytes())
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError):
            self.settle(rid, error=GitError("the group-commit request is unreadable"))
            return None

    def requeue(self, rid: str) -> None:
        """A claimed request back in the queue (its leader did not commit it)."""
        if rid == OWN:
            return
        try:
            os.rename(self._path(rid, ".claimed"), self._path(rid, ".req"))
        except FileNotFoundError:
            pass

    def drop(self, rid: str) -> None:
        """Forget a request nobody waits for (its requester is gone)."""
        if rid == OWN:
            return
        for suffix in (".req", ".claimed"):
            self._path(rid, suffix).unlink(missing_ok=True)

    def cancel(self, rid: str) -> bool:
        """Withdraw a request no leader has claimed: True if it was withdrawn."""
        try:
            os.unlink(self._path(rid, ".req"))
        except FileNotFoundError:
            return False
        return True

    def settle(
        self,
        rid: str,
        sha: str | None = None,
        error: HystateError | None = None,
        sync: bool = False,
    ) -> None:
        """Record the outcome (``sha``: committed, None with no ``error``: nothing to change).
        Not synced: after a power cut nobody waits for it (HEAD says what landed)."""
        if rid == OWN:
            self.kept[OWN] = Outcome(sha, error)
            return
        if error is None:
            record: dict[str, Any] = {"commit": sha}
            write_atomic(self._path(rid, ".done"), json.dumps(record).encode(), sync=sync)
        else:
            record = {"error": error.message, "hint": error.hint, "kind": type(error).__name__}
            write_atomic(self._path(rid, ".failed"), json.dumps(record).encode(), sync=sync)
        self._path(rid, ".claimed").unlink(missing_ok=True)

    def outcome(self, rid: str) -> Outcome | None:
        """The recorded outcome (removed once read); None while undecided."""
        for suffix in (".done", ".failed"):
            path = f"{self.base}{rid}{suffix}"  # a plain string: looked at often, while waiting
            try:
                with open(path, "rb") as fh:
                    record = json.loads(fh.read())
            except FileNotFoundError:
                continue
            except ValueError:
                return None  # written by rename, so never torn but by a power cut: read again
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            if suffix == ".failed":
                kind = getattr(errors, str(record.get("kind")), GitError)
                if not (isinstance(kind, type) and issubclass(kind, HystateError)):
                    kind = GitError
                try:
                    error = kind(str(record["error"]), hint=record.get("hint"))
                except TypeError:  # a class with another constructor
                    error = GitError(str(record["error"]), hint=record.get("hint"))
                return Outcome(None, error)
            return Outcome(record["commit"])
        return None

    def exists(self, rid: str) -> bool:
        return any(self._path(rid, suffix).exists() for suffix in SUFFIXES)

    def owner_gone(self, rid: str) -> bool:
        """Whether the process that made request ``rid`` provably runs no more (the pid is
        in the id; its start time is checked by ``LockOwner``)."""
        try:
            pid = int(rid.split("-")[1])
        except (IndexError, ValueError):
            return True
        return LockOwner(LockOwner.me().host, pid, None, "").gone()

    def sweep(self) -> int:
        """Remove outcomes and stray temp files left by requesters that are gone; how many."""
        removed = 0
        listing = self.listing()
        for suffix in (".done", ".failed"):
            for rid in listing[suffix]:
                if self.owner_gone(rid):
                    self._path(rid, suffix).unlink(missing_ok=True)
                    removed += 1
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return removed
        for name in names:
            if name.startswith(".") and name.endswith(".tmp"):
                try:
                    pid = int(name.rsplit(".", 2)[-2])
                except ValueError:
                    continue
                if LockOwner(LockOwner.me().host, pid, None, "").gone():
                    (self.dir / name).unlink(missing_ok=True)
                    removed += 1
        return removed
