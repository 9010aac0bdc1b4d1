"""hystate: git-backed state of the Hooting Yard migration (archive.org -> YouTube).

The public API (imported lazily, so ``hystate`` commands start fast)::

    from hystate import StateManager
    manager = StateManager("processed")
    manager.update_state("hy0_hooting_yard_2004-04-14", "downloading", worker="dl-1")
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
    "LockBusy",
    "ProcessingStage",
    "RecoveryManager",
    "ReportGenerator",
    "StateLock",
    "StateManager",
    "StateTransitionValidator",
    "TransitionResult",
    "UnknownEpisode",
    "UsageError",
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
    "StateManager": "hystate.manager",
    "TransitionResult": "hystate.manager",
    "DiscoverResult": "hystate.manager",
    "RecoveryManager": "hystate.recovery",
    "ReportGenerator": "hystate.reports",
}

if TYPE_CHECKING:
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
    from hystate.locks import StateLock
    from hystate.manager import DiscoverResult, StateManager, TransitionResult
    from hystate.model import EpisodeState, ProcessingStage
    from hystate.recovery import RecoveryManager
    from hystate.reports import ReportGenerator
    from hystate.rules import ErrorRecovery, StateTransitionValidator


def __getattr__(name: str) -> object:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'hystate' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value
