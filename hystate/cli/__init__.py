"""The ``hystate`` command line (click). Importing this package registers every command."""

from hystate.cli import checks, migration, reading, writing
from hystate.cli.app import cli, main

__all__ = ["checks", "cli", "main", "migration", "reading", "writing"]
