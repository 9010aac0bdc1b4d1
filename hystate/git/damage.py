"""What a power cut leaves in git's object database, found and set aside (never trusted).

On ext4 with default options a crash keeps files renamed over existing ones (the branch's ref,
the index) but brings back new files that were never fsynced empty: the newest loose objects.
The branch may then name a commit whose object, or one of whose trees or blobs, is empty or
torn. ``damage`` finds the loose object files that are empty or do not inflate to their name,
and the newest commit on the branch's first-parent line below which every commit is whole
(each commit's object and everything it introduced over its parent read back intact);
``set_aside`` moves the broken files out of git's way (kept, never deleted); ``reset_branch``
puts the branch back on a commit, compare-and-swap, and drops reflog entries naming broken
commits (git itself would call them errors).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from hystate.core.errors import GitError
from hystate.git.objects import intact
from hystate.git.trees import TREE_MODE

if TYPE_CHECKING:
    from hystate.git.base import RepoBase

WHOLE_RUN = 32  # consecutive whole commits below the last broken one that end the search


@dataclass
class Damage:
    broken_files: list[Path] = field(default_factory=list)  # loose object files, broken
    broken_commits: list[str] = field(default_factory=list)  # newest first
    intact: str | None = None  # the newest commit from which the branch is whole
    ref: str | None = None  # the branch HEAD is on (None: detached)
    head: str | None = None  # what it names (None: unborn, or a torn ref file)
    torn_ref: bool = False  # the branch's ref file does not hold a sha (a power cut emptied it)

    @property
    def found(self) -> bool:
        return bool(self.broken_files or self.broken_commits or self.torn_ref)


class _Checker:
    def __init__(self, repo: RepoBase) -> None:
        self.repo = repo
        self.dir = repo.objects.dir
        self.seen: dict[bytes, bool] = {}
        self.broken: list[Path] = []

    def path(self, sha: bytes) -> Path:
        hexsha = sha.hex()
        return self.dir / hexsha[:2] / hexsha[2:]

    def whole(self, sha: bytes) -> bool:
        """Whether object ``sha`` reads back intact (loose: inflated and hashed; packed: git
        has it)."""
        known = self.seen.get(sha)
        if known is not None:
            return known
        path = self.path(sha)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            ok = _packed(self.repo, sha)
        except OSError:
            ok = False
        else:
            ok = intact(raw, sha)
            if not ok:
                self.broken.append(path)
        self.seen[sha] = ok
        return ok

    def read(self, sha: bytes) -> tuple[bytes, bytes] | None:
        if not self.whole(sha):
            return None
        try:
            return self.repo.objects.read(sha)
        except GitError:
            self.seen[sha] = False
            return None

    def delta_whole(self, new: bytes | None, old: bytes | None) -> bool:
        """Whether everything tree ``new`` has that tree ``old`` has not reads back intact
        (only subtrees that differ are read)."""
        if new == old or new is None:
            return True
        got = self.read(new)
        if got is None or got[0] != b"tree":
            return False
        mine = _entries(got[1])
        theirs: dict[bytes, bytes] = {}
        if old is not None:
            before = self.read(old)
            theirs = _entries(before[1]) if before is not None and before[0] == b"tree" else {}
        for name, entry in mine.items():
            if theirs.get(name) == entry:
                continue
            mode, sha = entry[:-20], entry[-20:]
            if mode == TREE_MODE:
                other = theirs.get(name)
                base = other[-20:] if other is not None and other[:-20] == TREE_MODE else None
                if not self.delta_whole(sha, base):
                    return False
            elif mode != b"160000" and not self.whole(sha):
                return False
        return True

    def commit(self, sha: bytes) -> tuple[bytes, bytes | None] | None:
        """(tree, first parent) of a whole commit, or None."""
        got = self.read(sha)
        if got is None or got[0] != b"commit":
            return None
        tree, parent = None, None
        for line in got[1].split(b"\n"):
            if not line:
                break
            if line.startswith(b"tree ") and tree is None:
                tree = bytes.fromhex(line[5:45].decode())
            elif line.startswith(b"parent ") and parent is None:
                parent = bytes.fromhex(line[7:47].decode())
        return None if tree is None else (tree, parent)


def _entries(data: bytes) -> dict[bytes, bytes]:
    out, pos = {}, 0
    while pos < len(data):
        nul = data.find(b"\x00", pos)
        if nul < 0 or nul + 21 > len(data):
            break
        mode, _, name = data[pos:nul].partition(b" ")
        out[name] = mode + data[nul + 1 : nul + 21]
        pos = nul + 21
    return out


def _packed(repo: RepoBase, sha: bytes) -> bool:
    proc = subprocess.run(
        ["git", "cat-file", "-e", sha.hex()], cwd=repo.root, capture_output=True, check=False
    )
    return proc.returncode == 0


def empty_loose(objects_dir: Path) -> list[Path]:
    """Loose object files that are empty (what a power cut makes of a never-synced one): one
    listing of each fan-out folder, a stat of each file."""
    found = []
    for fan in range(256):
        folder = objects_dir / f"{fan:02x}"
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    if len(entry.name) == 38 and entry.stat(follow_symlinks=False).st_size == 0:
                        found.append(Path(entry.path))
        except (FileNotFoundError, NotADirectoryError):
            continue
    return found


def damage(repo: RepoBase) -> Damage:
    """The power-cut damage of the branch HEAD is on (see the module docstring). The commit to
    go back to is the newest of HEAD and the values its reflog recorded (newest first: the
    reflog is appended to, so it outlives an empty commit object) from which ``WHOLE_RUN``
    first-parent commits down (or all, to the root) are whole."""
    found = Damage(broken_files=empty_loose(repo.objects.dir))
    try:
        head = repo.refs.head()
        found.ref, found.head = head.ref, head.sha
    except GitError:  # the branch's file is empty or torn
        found.ref, found.torn_ref = _symbolic(repo), True
        if found.ref is None:
            return found
    if found.head is None and not found.torn_ref:
        return found  # an unborn branch
    check = _Checker(repo)
    for path in found.broken_files:
        check.seen[bytes.fromhex(path.parent.name + path.name)] = False
    if not found.broken_files and found.head and _whole_line(check, found.head, 1):
        found.intact = found.head  # the usual case: no empty object, the newest commit whole
        return found
    for candidate in _candidates(repo, found.ref, found.head):
        if _whole_line(check, bytes.fromhex(candidate)):
            found.intact = candidate
            break
        found.broken_commits.append(candidate)
    found.broken_files += [p for p in check.broken if p not in found.broken_files]
    if found.found:  # a power cut happened: every loose object is read, torn ones set aside
        found.broken_files += [
            p for p in torn_loose(repo.objects.dir) if p not in found.broken_files
        ]
    return found


def _symbolic(repo: RepoBase) -> str | None:
    try:
        text = (repo.git_dir / "HEAD").read_text().strip()
    except OSError:
        return None
    return text[5:].strip() if text.startswith("ref: ") else None


def torn_loose(objects_dir: Path) -> list[Path]:
    """Loose object files that do not inflate to their name (read in full: only after a power
    cut was found)."""
    found = []
    for fan in range(256):
        folder = objects_dir / f"{fan:02x}"
        try:
            names = os.listdir(folder)
        except (FileNotFoundError, NotADirectoryError):
            continue
        for name in names:
            if len(name) != 38:
                continue
            path = folder / name
            try:
                raw = path.read_bytes()
            except OSError:
                continue
            if not intact(raw, bytes.fromhex(folder.name + name)):
                found.append(path)
    return found


def _whole_line(check: _Checker, sha: bytes | str, depth: int = WHOLE_RUN) -> bool:
    here: bytes | None = bytes.fromhex(sha) if isinstance(sha, str) else sha
    for _ in range(depth):
        if here is None:
            return True  # the root is whole
        parsed = check.commit(here)
        if parsed is None:
            return False
        tree, parent = parsed
        parent_tree = None
        if parent is not None:
            above = check.commit(parent)
            if above is None:
                return False
            parent_tree = above[0]
        if not check.delta_whole(tree, parent_tree):
            return False
        here = parent
    return True


def _candidates(repo: RepoBase, ref: str | None, head: str | None) -> list[str]:
    """HEAD, then every value the reflogs of HEAD and its branch recorded, newest first,
    each once (lines a crash tore are skipped)."""
    logs = [repo.git_dir / "logs" / "HEAD"]
    if ref:
        logs.insert(0, repo.common_dir / "logs" / ref)
    order = [head] if head else []
    seen = set(order)
    for log in logs:
        try:
            lines = log.read_bytes().splitlines()
        except OSError:
            continue
        for line in reversed(lines):
            parts = line.split(b" ", 2)
            if len(parts) < 3:
                continue
            for value in (parts[1], parts[0]):
                text = value.decode("ascii", "replace")
                hexa = all(c in "0123456789abcdef" for c in text)
                if len(text) == 40 and hexa and text != "0" * 40 and text not in seen:
                    seen.add(text)
                    order.append(text)
    return order


def set_aside(repo: RepoBase, files: list[Path]) -> Path:
    """Move broken loose object files to ``<git dir>/hystate-lost/objects/`` (kept for a
    person to look at, out of git's way: git then sees them as missing, not corrupt)."""
    lost = repo.git_dir / "hystate-lost" / "objects"
    lost.mkdir(parents=True, exist_ok=True)
    for path in files:
        try:
            os.replace(path, lost / f"{path.parent.name}{path.name}")
        except FileNotFoundError:
            continue
    return lost


def reset_branch(repo: RepoBase, ref: str | None, old: str | None, new: str, reason: str) -> None:
    """Point ``ref`` (HEAD when detached) at ``new`` if it still is ``old`` (None: its file is
    torn, and is replaced); then drop the reflog entries that name commits no longer whole
    (``git fsck`` would report them)."""
    if old is None and ref:
        (repo.common_dir / ref).unlink(missing_ok=True)
        old = "0" * 40  # must not exist: nobody made it meanwhile
    repo.git("update-ref", "-m", reason, ref or "HEAD", new, old or "0" * 40)
    repo.git(
        "reflog", "expire", "--stale-fix", "--expire=never", "--expire-unreachable=never",
        "--all", check=False,
    )  # fmt: skip


def reset_index(repo: RepoBase, commit: str, rel_dir: str) -> None:
    """The index entries under ``rel_dir`` as ``commit`` has them (others are left alone),
    written by ``git update-index --index-info``: no object the index names is read (some
    may be the lost ones), and git refreshes the entries' stat data later."""
    tree = repo.git_bytes("ls-tree", "-r", "-z", "--full-tree", commit, "--", rel_dir)
    listed = repo.git_bytes("ls-files", "-z", "-s", "--", rel_dir)
    lines, kept = [], set()
    for record in filter(None, tree.split(b"\0")):
        meta, _, path = record.partition(b"\t")
        mode, _, sha = meta.split(b" ")
        lines.append(b"%s %s\t%s" % (mode, sha, path))
        kept.add(path)
    for record in filter(None, listed.split(b"\0")):
        path = record.partition(b"\t")[2]
        if path not in kept:
            lines.append(b"0 %s\t%s" % (b"0" * 40, path))  # not in the commit: out
            kept.add(path)
    if lines:
        repo.run_input(["update-index", "-z", "--index-info"], b"\0".join(lines) + b"\0")


def index_torn(repo: RepoBase) -> bool:
    """Whether git's index cannot be read (a power cut left it empty or short, or its checksum
    does not match): git then refuses every command that reads it."""
    try:
        data = repo.index_path.read_bytes()
    except FileNotFoundError:
        return False
    return len(data) < 32 or data[:4] != b"DIRC" or hashlib.sha1(data[:-20]).digest() != data[-20:]


def rebuild_index(repo: RepoBase) -> Path:
    """Set the torn index aside (``<git dir>/hystate-lost/``) and make it anew from HEAD with
    ``git read-tree``, as ``rm .git/index && git reset`` would; the work tree is not touched, and
    git refreshes the entries' stat data when it next looks."""
    lost = repo.git_dir / "hystate-lost"
    lost.mkdir(parents=True, exist_ok=True)
    kept = lost / f"index-{time.strftime('%Y%m%dT%H%M%S')}"
    os.replace(repo.index_path, kept)
    repo.git("read-tree", "HEAD")
    return kept
