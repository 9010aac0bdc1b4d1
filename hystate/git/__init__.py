"""The git layer: the only part of hystate that talks to git."""

from hystate.git.refs import Head
from hystate.git.repo import GitRepo, default_worker, merge_file
from hystate.git.settings import Identity

__all__ = ["GitRepo", "Head", "Identity", "default_worker", "merge_file"]
