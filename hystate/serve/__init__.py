"""``hystate serve``: a live dashboard, a page per episode, a JSON API, a read-only GraphQL
endpoint and (only when enabled with a token) the retry and skip actions, over one
``StateManager``.

The modules: ``readmodel`` (what every view shows, read from the cache and git), ``feed`` (one
background task watching HEAD and handing new commits to the Server-Sent Events clients),
``pages`` (HTML), ``api`` (JSON), ``gql`` (GraphQL), ``actions``, ``scheduler`` (the configured
reports), ``app`` (routes, headers, start-up). Needs the ``serve`` extra
(``pip install 'hystate[serve]'``).
"""

from __future__ import annotations

MISSING_EXTRA = "`hystate serve` needs the serve extra: pip install 'hystate[serve]'"


def missing_extra() -> str | None:
    """The module of the serve extra that cannot be imported, else None."""
    import importlib.util

    for name in ("starlette", "uvicorn", "strawberry"):
        if importlib.util.find_spec(name) is None:
            return name
    return None
