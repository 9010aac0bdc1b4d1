"""hystate: git-backed state of the Hooting Yard migration (archive.org -> YouTube).

The public API (imported lazily, so ``hystate`` commands start fast)::

    from hystate import StateManager
    manager = StateManager("processed")
    manager.update_state("hy0_hooting_yard_2004-04-14", "downloading", worker="dl-1")

The seed document's API works as written beside it (``hystate.integrations.seed_api`` says how).
"""

from __future__ import annotations

from importlib import import_module

# Not ``typing``: ``hystate`` (the command) imports this first, before it can catch Ctrl-C,
# so it stays as small as it can be.
TYPE_CHECKING = False

__all__ = [
    "CheckFailed",
    "DiscoverResult",
    "EpisodeState",
    "ErrorRecovery",
    "GitError",
    "HystateError",
    "IllegalTransition",
    "InvalidData",
    "Lease",
    "LockBusy",
    "LockTimeout",
    "ProcessingStage",
    "RecoveryManager",
    "ReportGenerator",
    "RetryOutcome",
    "StateDatabase",
    "StateLock",
    "StateManager",
    "StateTransitionValidator",
    "TransitionResult",
    "UnknownEpisode",
    "UsageError",
    "YAMLPersistence",
]

_WHERE = {
    "CheckFailed": "hystate.core.errors",
    "GitError": "hystate.core.errors",
    "HystateError": "hystate.core.errors",
    "IllegalTransition": "hystate.core.errors",
    "InvalidData": "hystate.core.errors",
    "LockBusy": "hystate.core.errors",
    "UnknownEpisode": "hystate.core.errors",
    "UsageError": "hystate.core.errors",
    "EpisodeState": "hystate.core.model",
    "ProcessingStage": "hystate.core.model",
    "ErrorRecovery": "hystate.core.rules",
    "StateTransitionValidator": "hystate.core.rules",
    "StateLock": "hystate.core.locks",
    "LockTimeout": "hystate.core.locks",
    "Lease": "hystate.engine.leases",
    "RetryOutcome": "hystate.engine.retries",
    "StateDatabase": "hystate.integrations.seed_api",
    "YAMLPersistence": "hystate.integrations.seed_api",
    "StateManager": "hystate.manager",
    "TransitionResult": "hystate.engine.transition",
    "DiscoverResult": "hystate.engine.discovery",
    "RecoveryManager": "hystate.fsck.recovery",
    "ReportGenerator": "hystate.reports.generator",
}

if TYPE_CHECKING:
    from hystate.core.errors import (
        CheckFailed,
        GitError,
        HystateError,
        IllegalTransition,
        InvalidData,
        LockBusy,
        UnknownEpisode,
        UsageError,
    )
    from hystate.core.locks import LockTimeout, StateLock
    from hystate.core.model import EpisodeState, ProcessingStage
    from hystate.core.rules import ErrorRecovery, StateTransitionValidator
    from hystate.engine.discovery import DiscoverResult
    from hystate.engine.leases import Lease
    from hystate.engine.retries import RetryOutcome
    from hystate.engine.transition import TransitionResult
    from hystate.fsck.recovery import RecoveryManager
    from hystate.integrations.seed_api import StateDatabase, YAMLPersistence
    from hystate.manager import StateManager
    from hystate.reports.generator import ReportGenerator


def __getattr__(name: str) -> object:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'hystate' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value
