"""hystate: git-backed state of the Hooting Yard migration (archive.org -> YouTube).

The public API (imported lazily, so ``hystate`` commands start fast)::

    from hystate import StateManager
    manager = StateManager("processed")
    manager.update_state("hy0_hooting_yard_2004-04-14", "downloading", worker="dl-1")

The seed document's API works as written beside it (``hystate.seed_api`` says how).
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
    "CheckFailed": "hystate.errors",
    "GitError": "hystate.errors",
    "HystateError": "hystate.errors",
    "IllegalTransition": "hystate.errors",
    "InvalidData": "hystate.errors",
    "LockBusy": "hystate.errors",
    "UnknownEpisode": "hystate.errors",
    "UsageError": "hystate.errors",
    "EpisodeState": "hystate.model",
    "ProcessingStage": "hystate.model",
    "ErrorRecovery": "hystate.rules",
    "StateTransitionValidator": "hystate.rules",
    "StateLock": "hystate.locks",
    "LockTimeout": "hystate.locks",
    "Lease": "hystate.leases",
    "RetryOutcome": "hystate.work",
    "StateDatabase": "hystate.seed_api",
    "YAMLPersistence": "hystate.seed_api",
    "StateManager": "hystate.manager",
    "TransitionResult": "hystate.transition",
    "DiscoverResult": "hystate.discovery",
    "RecoveryManager": "hystate.recovery",
    "ReportGenerator": "hystate.reports",
}

if TYPE_CHECKING:
    from hystate.discovery import DiscoverResult
    from hystate.errors import (
        CheckFailed,
        GitError,
        HystateError,
        IllegalTransition,
        InvalidData,
        LockBusy,
        UnknownEpisode,
        UsageError,
    )
    from hystate.leases import Lease
    from hystate.locks import LockTimeout, StateLock
    from hystate.manager import StateManager
    from hystate.model import EpisodeState, ProcessingStage
    from hystate.recovery import RecoveryManager
    from hystate.reports import ReportGenerator
    from hystate.rules import ErrorRecovery, StateTransitionValidator
    from hystate.seed_api import StateDatabase, YAMLPersistence
    from hystate.transition import TransitionResult
    from hystate.work import RetryOutcome


def __getattr__(name: str) -> object:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'hystate' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value
