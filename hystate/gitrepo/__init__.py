"""The git layer: the only part of hystate that talks to git."""

from hystate.gitrepo.refs import Head
from hystate.gitrepo.repo import GitRepo, default_worker, merge_file
from hystate.gitrepo.settings import Identity

__all__ = ["GitRepo", "Head", "Identity", "default_worker", "merge_file"]
