"""The server's two actions, retry and skip: each is a normal transition (one commit, through
``StateManager``), and each has a dry run that says exactly what it would do: the stages, the
commit message and the diff of the file, made by the same rules on the file as it is now."""

from __future__ import annotations

import difflib
import hmac
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hystate.core.errors import UsageError
from hystate.core.model import ProcessingStage, check_id, now_utc
from hystate.core.paths import read_bytes
from hystate.core.rules import Change, NoOp, apply_change, check_message
from hystate.core.schema import episode_problems
from hystate.core.store import dump, invalid_file
from hystate.engine import retries, steps
from hystate.git import audit

if TYPE_CHECKING:
    from hystate.core.model import EpisodeState
    from hystate.manager import StateManager

S = ProcessingStage
ACTIONS = ("retry", "skip")
MIN_TOKEN = 16


@dataclass
class Plan:
    action: str
    episode_id: str
    from_stage: str
    to_stage: str
    commit_message: str
    diff: str
    commit: str | None = None
    dry_run: bool = True

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["from"], out["to"] = out.pop("from_stage"), out.pop("to_stage")
        return out


def plan(manager: StateManager, action: str, episode_id: str, reason: str | None) -> Plan:
    """What ``action`` would do to the episode now (nothing is written)."""
    episode = manager.episode(check_id(episode_id))
    if action == "skip":
        return _preview(manager, "skip", episode, _skip_change(manager, reason))
    if action != "retry":
        raise UsageError(f"unknown action {action!r} (actions: {', '.join(ACTIONS)})")
    decision = manager.recovery.decide(episode)  # IllegalTransition when it is not failed
    if decision.exhausted:
        text = manager.recovery.exhausted_reason(episode, decision)
        change = Change(S.SKIPPED, now_utc(), manager.worker, message=text)
    else:
        steps.check_retry(manager, episode, decision.stage, force=True)
        change = Change(decision.stage, now_utc(), manager.worker, worker=manager.worker)
    return _preview(manager, "retry", episode, change)


def perform(manager: StateManager, action: str, episode_id: str, reason: str | None) -> Plan:
    """Do ``action`` (one commit), returning what was done; the plan is checked first, so a
    refused action changes nothing."""
    planned = plan(manager, action, episode_id, reason)
    if action == "skip":
        result = manager.skip(episode_id, _reason(reason))
        commit, to = result.commit, result.episode.stage.value
    else:
        (outcome,) = retries.retry(manager, [episode_id], now=True)
        commit = outcome.commit
        to = manager.episode(episode_id).stage.value
    path = manager.path_of(episode_id)
    before = manager.repo.git_bytes("show", f"{commit}^:{manager.repo.relpath(path)}", check=False)
    after = read_bytes(path)
    planned.to_stage, planned.commit, planned.dry_run = to, commit, False
    planned.diff = unified(before, after, manager.repo.relpath(path))
    return planned


def _skip_change(manager: StateManager, reason: str | None) -> Change:
    return Change(S.SKIPPED, now_utc(), manager.worker, message=_reason(reason))


def _reason(reason: str | None) -> str:
    text = check_message(reason, "reason")
    if not text:
        raise UsageError("a skip needs a reason (reason=...)")
    return text


def _preview(manager: StateManager, action: str, episode: EpisodeState, change: Change) -> Plan:
    path = manager.path_of(episode.episode_id)
    rel = manager.repo.relpath(path)
    try:
        doc = apply_change(episode, change)
    except NoOp:
        raise UsageError(f"{episode.episode_id}: nothing to do") from None
    problems = episode_problems(doc, rel, expect_id=episode.episode_id)
    if problems:
        raise invalid_file(problems)
    message = audit.transition_message(
        episode.episode_id,
        episode.stage.value,
        change.to.value,
        change.by,
        change.error or change.message,
    )
    before = read_bytes(path)
    return Plan(
        action,
        episode.episode_id,
        episode.stage.value,
        change.to.value,
        message,
        unified(before, dump(doc), rel),
    )


def unified(before: bytes, after: bytes, rel: str) -> str:
    return "".join(
        difflib.unified_diff(
            before.decode("utf-8", "replace").splitlines(keepends=True),
            after.decode("utf-8", "replace").splitlines(keepends=True),
            f"a/{rel}",
            f"b/{rel}",
        )
    )


def token_ok(expected: str, header: str | None) -> bool:
    """``Authorization: Bearer <token>``, compared in constant time."""
    if not header or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[7:].strip().encode(), expected.encode())


def load_token(path: Path | None, env_value: str | None) -> str:
    """The actions' token: the file's first line, else the environment's; at least
    ``MIN_TOKEN`` characters."""
    if path is not None:
        try:
            lines = read_bytes(path).decode("utf-8", "replace").splitlines()
        except OSError as exc:
            raise UsageError(f"cannot read the token file {path}: {exc.strerror or exc}") from None
        token = lines[0].strip() if lines else ""
    else:
        token = (env_value or "").strip()
    if not token:
        raise UsageError("--allow-actions needs a token: --token-file FILE or $HYSTATE_SERVE_TOKEN")
    if len(token) < MIN_TOKEN or not token.isprintable():
        raise UsageError(f"the actions' token must be at least {MIN_TOKEN} printable characters")
    return token
