"""The git layer: the only part of hystate that talks to git."""

from hystate.gitrepo.refs import Head
from hystate.gitrepo.repo import GitRepo, Identity, default_worker, merge_file

__all__ = ["GitRepo", "Head", "Identity", "default_worker", "merge_file"]
