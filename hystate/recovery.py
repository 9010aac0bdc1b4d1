"""``hystate fsck [--repair]`` and ``RecoveryManager``: find and mend what a crash can leave.

- an episode file written but not committed (the process died between the two): committed as
  the transition it is when it is valid and legal; otherwise the committed version is put back
  (the bad content is kept under .git/hystate-lost/);
- leftover temp files; git's index out of step with HEAD for state files (entries holding an
  older state than HEAD, which a person's plain `git commit` would record, are set back);
- transitions reverted by a commit made without hystate (a person's `git commit` with a stale
  index, the pre-commit hook bypassed): re-applied by a hystate commit naming that commit;
- stale locks (hystate's, and git's own lock files a dead hystate process left); lock paths
  that are not files (removed only when an empty folder or a FIFO nobody has open);
- episodes stuck in an active stage (their lease expired, or the worker process that registered
  itself on this host is gone: see ``hystate.leases``): they become failed with "worker lost",
  so the retry budget applies;
- orphaned media files (only reported; removed only when asked);
- caches out of date.
Each repair takes the episode's lock first, so an episode a live worker is moving is left alone.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hystate import audit, guard, leases, sweep, yamlio
from hystate.errors import InvalidData, LockBusy
from hystate.gitrepo.objects import object_id
from hystate.locks import lock_status, pid_alive
from hystate.model import EpisodeState, ProcessingStage
from hystate.paths import NotRegularFile, read_bytes
from hystate.rules import legal_move
from hystate.validation import episode_problems

if TYPE_CHECKING:
    from hystate.manager import StateManager

S = ProcessingStage


@dataclass
class Finding:
    # uncommitted | reverted | temp-file | index-drift | stale-lock | stuck | orphan |
    # missing-media | invalid | cache
    kind: str
    path: str
    message: str
    repaired: bool = False
    action: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class RecoveryManager:
    def __init__(self, manager: StateManager) -> None:
        self.manager = manager
        self.repo = manager.repo
        self.store = manager.store

    # -- the seed's API --------------------------------------------------------------------

    def identify_incomplete(self) -> dict[ProcessingStage, list[str]]:
        """The seed's map: every stage but published and skipped -> the ids in it (stages
        with no episode are left out)."""
        incomplete: dict[ProcessingStage, list[str]] = {}
        for stage in S:
            if stage not in (S.PUBLISHED, S.SKIPPED):
                ids = [e.episode_id for e in self.manager.get_episodes_by_stage(stage)]
                if ids:
                    incomplete[stage] = ids
        return incomplete

    def resume_processing(self) -> list[Finding]:
        """Mark stuck episodes failed ("worker lost") so they are retried like any failure."""
        return [f for f in self._stuck(repair=True) if f.repaired]

    def cleanup_orphaned_files(self, *, remove: bool = False) -> list[Finding]:
        return self._orphans(remove=remove)

    # -- fsck ------------------------------------------------------------------------------

    def fsck(self, *, repair: bool = False, remove_orphans: bool = False) -> list[Finding]:
        findings: list[Finding] = []
        findings += self._stale_locks(repair)
        findings += self._temp_files(repair)
        findings += guard.fsck_reverts(self.manager, repair)
        findings += guard.fsck_staged(self.manager, repair)
        kept = {f.path for f in findings if f.kind == "reverted" and not f.repaired}
        findings += self._uncommitted(repair, kept)
        findings += self._index_drift(repair)
        findings += self._invalid()
        findings += self._stuck(repair)
        findings += self._orphans(remove=remove_orphans and repair)
        findings += self._foreign_caches(repair)
        findings += self._cache(repair)
        # several checks see the same index drift: report each (kind, file) once
        unique: dict[tuple[str, str], Finding] = {}
        for finding in findings:
            unique.setdefault((finding.kind, finding.path), finding)
        return list(unique.values())

    def _rel(self, path: Path) -> str:
        return self.store.name(path)

    def _stale_locks(self, repair: bool) -> list[Finding]:
        found = []
        locks_dir = self.manager.locks_dir
        for lock in sorted(locks_dir.glob("*.lock")) + sorted(locks_dir.glob("*.lock.break")):
            owner, stale = lock_status(lock)
            if not stale:
                continue
            who = owner.describe() if owner else "an unfinished write"
            finding = Finding("stale-lock", self._rel(lock), f"lock of {who}, which is gone")
            if repair:
                lock.unlink(missing_ok=True)
                finding.repaired, finding.action = True, "removed"
            found.append(finding)
        found += sweep.foreign_locks(self.manager, repair=repair)
        # git's own lock files, left by a hystate process killed while committing: the git
        # layer knows for certain which are hystate's (never a live process's, never git's).
        for lock in self.repo.git_locks():
            who_left = self.repo.stale_lock_owner(lock)
            if who_left is None:
                continue
            finding = Finding(
                "stale-lock", str(lock.relative_to(self.repo.root)),
                f"git lock left by hystate process {who_left}, which is gone",
            )  # fmt: skip
            if repair and self.repo.break_stale_lock(lock):
                finding.repaired, finding.action = True, "removed"
            found.append(finding)
        return found

    def _temp_files(self, repair: bool) -> list[Finding]:
        found = []
        candidates = self.store.temp_files() + list(self.store.state_dir.glob(".*.tmp"))
        candidates += _object_temp_files(self.repo.common_dir / "objects")
        for path in candidates:
            pid = _pid_in_name(path.name)
            if pid is None and path.name.startswith("tmp_obj_"):
                continue  # git's own temp object: an in-flight write of a git command
            if pid is not None and pid_alive(pid) and pid != os.getpid():
                continue  # a live writer's file
            finding = Finding(
                "temp-file", str(path.relative_to(self.repo.root)), "leftover temp file"
            )
            # hystate's own temp files of a dead writer hold nothing (the rename never
            # happened) and git ignores them: fsck removes them even without --repair
            if repair or (pid is not None and path.name.startswith(".")):
                path.unlink(missing_ok=True)
                finding.repaired, finding.action = True, "removed"
            found.append(finding)
        return found

    def _uncommitted(self, repair: bool, kept: set[str]) -> list[Finding]:
        found = []
        rel_dir = self.manager.rel_state_dir
        for rel in self.repo.dirty_paths(rel_dir):
            if rel in kept:  # a reverted transition fsck could not re-apply: left as it is
                continue
            path = self.repo.root / rel
            parts = rel.split("/")
            year = parts[-2] if len(parts) >= 2 else ""
            if not (rel.endswith(".yaml") and year.isascii() and year.isdigit()):
                continue
            eid = path.stem
            try:
                with self.manager.episode_lock(eid, timeout=0 if not repair else 2):
                    found.append(self._judge_uncommitted(path, rel, repair))
            except LockBusy:
                found.append(
                    Finding("uncommitted", rel, "being changed by a live process; left alone")
                )
        return found

    def _judge_uncommitted(self, path: Path, rel: str, repair: bool) -> Finding:
        committed_sha = self.repo.head_blob(rel)
        committed = self.repo.objects.read(committed_sha)[1] if committed_sha else None
        if not os.path.lexists(path):
            finding = Finding("uncommitted", rel, "episode file deleted but not committed")
            if repair and committed is not None:
                self.store.write(path, committed)
                finding.repaired, finding.action = True, "restored the committed version"
            return finding
        try:
            raw = read_bytes(path)
        except NotRegularFile as exc:
            finding = Finding("uncommitted", rel, f"is {exc.kind}: hystate never follows it")
            if repair and committed is not None:  # the rename replaces the link, not its target
                self.store.write(path, committed)
                finding.repaired, finding.action = True, "restored the committed version"
            return finding
        if committed_sha == object_id(b"blob", raw):
            drift = "git's index differs from HEAD and the work tree"
            return Finding("index-drift", rel, drift, *self._reset_index(rel, repair))
        verdict, message = self._as_transition(rel, raw, committed)
        finding = Finding("uncommitted", rel, verdict)
        if not repair:
            return finding
        if message is not None:
            with self.manager.repo_lock():  # the commit step, serialized like every other
                sha = self.repo.commit({rel: raw}, message)
            finding.repaired, finding.action = True, f"committed as {(sha or '')[:8]}"
        else:
            self._keep_lost(rel, raw)
            if committed is not None:
                self.store.write(path, committed)
                finding.action = (
                    "restored the committed version (the file was kept in .git/hystate-lost/)"
                )
            else:
                path.unlink()
                finding.action = "removed (kept in .git/hystate-lost/)"
            finding.repaired = True
        return finding

    def _as_transition(
        self, rel: str, raw: bytes, committed: bytes | None
    ) -> tuple[str, str | None]:
        """(what the file is, commit message) — no message when it is not a legal transition."""
        from hystate.store import parse_content

        doc, problems = parse_content(raw, rel)
        if problems or not isinstance(doc, dict):
            return (
                "uncommitted and unreadable: "
                + (problems[0].message if problems else "not a mapping"),
                None,
            )
        problems = episode_problems(doc, rel, expect_id=Path(rel).stem)
        if problems:
            return f"uncommitted and invalid: {problems[0].path}: {problems[0].message}", None
        new = EpisodeState(doc)
        if committed is None:
            if new.stage is S.DISCOVERED and len(new.history) == 1:
                return "uncommitted new episode", audit.discover_message(
                    [new.episode_id], None, new.history[0]["by"]
                )
            return "uncommitted new file that is not a fresh discovery", None
        old = EpisodeState(yamlio.load(committed))
        if (
            new.history[: len(old.history)] != old.history
            or len(new.history) != len(old.history) + 1
        ):
            return "uncommitted change that is not one transition", None
        entry = new.history[-1]
        if entry["from"] != old.stage.value or not legal_move(
            old.stage, old.failed_stage, new.stage
        ):
            return f"uncommitted illegal move {old.stage.value} -> {new.stage.value}", None
        body = doc["status_message"]
        if new.stage is S.FAILED and new.error_history:
            body = new.error_history[-1]["error"]
        return (
            f"uncommitted transition {old.stage.value} -> {new.stage.value}",
            audit.transition_message(
                new.episode_id, old.stage.value, new.stage.value, entry["by"], body
            ),
        )

    def _keep_lost(self, rel: str, raw: bytes) -> None:
        lost = self.repo.git_dir / "hystate-lost"
        lost.mkdir(exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        (lost / f"{stamp}-{rel.replace('/', '_')}").write_bytes(raw)

    def _reset_index(self, rel: str, repair: bool) -> tuple[bool, str]:
        if not repair:
            return False, ""
        from hystate.gitrepo.staged import reset_index_entries

        with self.manager.repo_lock():  # no transition commits while the entry is reset
            reset_index_entries(self.repo, [rel], wait=self.manager.config.lock_timeout)
        return True, "index entry set back to HEAD"

    def _index_drift(self, repair: bool) -> list[Finding]:
        out = self.repo.git(
            "diff", "--cached", "--name-only", "-z", "--", self.manager.rel_state_dir
        )
        found = []
        for rel in filter(None, out.split("\0")):
            worktree = self.repo.root / rel
            head = self.repo.head_blob(rel)
            if (
                not worktree.is_symlink()
                and worktree.is_file()
                and head is not None
                and object_id(b"blob", read_bytes(worktree)) == head
            ):
                finding = Finding(
                    "index-drift", rel, "git's index differs from HEAD and the work tree"
                )
                finding.repaired, finding.action = self._reset_index(rel, repair)
                found.append(finding)
        return found

    def _invalid(self) -> list[Finding]:
        return [
            Finding("invalid", p.file, f"{p.path}: {p.message}") for p in self.manager.validate()
        ]

    def _readable(self) -> list[EpisodeState]:
        """Every episode whose file reads; broken ones are left to the `invalid` check."""
        found = []
        for path in self.store.iter_paths():
            try:
                found.append(self.store.read(path)[1])
            except InvalidData:
                continue
        return found

    def stuck(self) -> list[tuple[EpisodeState, str]]:
        """Episodes stuck in an active stage (lease expired, or the worker process that
        registered itself on this host is gone), with the reason. See ``hystate.leases``."""
        now = datetime.now(UTC)
        active = [s for s in S if s.is_active]
        try:
            candidates = self.manager.list_episodes(active)
        except InvalidData:  # a broken file (reported as invalid): read the others directly
            candidates = [e for e in self._readable() if e.stage.is_active]
        found = []
        for episode in candidates:
            reason = leases.stuck_reason(self.manager, episode, now)
            if reason is not None:
                found.append((episode, reason))
        return found

    def _stuck(self, repair: bool) -> list[Finding]:
        found = []
        if repair and self.manager.locks_dir.is_dir():
            active = [e.episode_id for e in self._readable() if e.stage.is_active]
            leases.prune(self.manager.locks_dir, active, datetime.now(UTC))
        for episode, reason in self.stuck():
            path = episode.path or episode.episode_id
            finding = Finding("stuck", path, f"{episode.stage.value}: {reason}")
            if repair:
                try:
                    leases.mark_lost(self.manager, episode.episode_id, by="hystate-fsck")
                    finding.repaired, finding.action = True, "marked failed (worker lost)"
                except leases.StillWorking:
                    continue  # renewed meanwhile: not stuck after all
                except Exception as exc:
                    finding.action = f"not repaired: {exc}"
            found.append(finding)
        return found

    def _orphans(self, *, remove: bool) -> list[Finding]:
        if not self.manager.config.get("media.directories"):
            return []
        try:  # the cache (fresh): validate has just read every file, no need to parse them twice
            episodes = self.manager.list_episodes()
        except InvalidData:  # a broken file (reported as invalid): read the others directly
            episodes = self._readable()
        return sweep.orphans(self.manager, episodes, remove=remove)

    def _foreign_caches(self, repair: bool) -> list[Finding]:
        return sweep.foreign_caches(self.manager, repair=repair)

    def _cache(self, repair: bool) -> list[Finding]:
        cache = self.manager.cache
        if cache.is_current():
            return []
        finding = Finding("cache", self._rel(cache.db_path), "caches out of date")
        if repair:
            self.manager.refresh()
            finding.repaired, finding.action = True, "refreshed"
        return [finding]


def _object_temp_files(objects: Path) -> list[Path]:
    """tmp_obj_* files of the loose object folders; folders may vanish meanwhile (git gc)."""
    found = []
    try:
        folders = [e.path for e in os.scandir(objects) if len(e.name) == 2]
    except FileNotFoundError:
        return []
    for folder in folders:
        try:
            found += [Path(e.path) for e in os.scandir(folder) if e.name.startswith("tmp_obj_")]
        except FileNotFoundError:
            continue
    return found


def _pid_in_name(name: str) -> int | None:
    """The writer's pid in a temp file's name: ``.<name>.<pid>.tmp`` or ``tmp_obj_<pid>_<sha>``."""
    if name.startswith("tmp_obj_"):
        # hystate's own (tmp_obj_<pid>_<8 hex>); git's (tmp_obj_XXXXXX) are git's to clean
        parts = name.split("_")
        if len(parts) != 4 or len(parts[3]) != 8:
            return None
        part = parts[2]
    elif name.endswith(".tmp"):
        part = name[:-4].rsplit(".", 1)[-1]
    else:
        return None
    return int(part) if part.isdigit() and int(part) > 0 else None
