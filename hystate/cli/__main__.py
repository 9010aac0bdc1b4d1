"""``python -m hystate.cli``: the same as the ``hystate`` command."""

from hystate.cli import main

main()
