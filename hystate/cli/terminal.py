"""What only a person at a terminal sees: shell completion of episode ids and stages, and the
progress of long commands on stderr (nothing when stderr is not a terminal)."""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import click
import click.shell_completion


def complete_episode_ids(
    ctx: click.Context, _param: click.Parameter, incomplete: str
) -> list[click.shell_completion.CompletionItem]:
    """Shell completion of an episode id: the ids in the state folder's year folders that
    start with what was typed (file names only: nothing is read or refreshed)."""
    from click.shell_completion import CompletionItem

    try:
        from hystate.manager import StateManager

        root = ctx.find_root()
        state_dir = root.params.get("state_dir") if root.params else None
        store = StateManager(state_dir).store
        names = (p.stem for p in store.iter_paths() if p.name.startswith(incomplete))
        return [CompletionItem(n) for n in sorted(names)[:500]]
    except Exception:  # completion never fails loudly: no repository, no state yet
        return []


def complete_stages(
    _ctx: click.Context, _param: click.Parameter, incomplete: str
) -> list[click.shell_completion.CompletionItem]:
    from click.shell_completion import CompletionItem

    from hystate.core.model import ProcessingStage

    return [CompletionItem(s.value) for s in ProcessingStage if s.value.startswith(incomplete)]


def progress_bar(label: str) -> Callable[[int, int], None] | None:
    """A progress bar on stderr for long work, only when stderr is a terminal."""
    if not sys.stderr.isatty():
        return None
    bar: Any = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = click.progressbar(length=total, label=label, file=sys.stderr)
            bar.__enter__()
        bar.update(done - bar.pos)
        if done >= total:
            bar.__exit__(None, None, None)

    return update


@contextlib.contextmanager
def working(label: str) -> Iterator[None]:
    """While a long command works, a line on stderr saying so with the time it has taken
    (redrawn four times a second, erased at the end); only when stderr is a terminal."""
    if not sys.stderr.isatty():
        yield
        return
    done = threading.Event()
    started = time.monotonic()

    def draw() -> None:
        frames = "|/-\\"
        tick = 0
        while True:  # drawn at once, then every quarter of a second until done
            elapsed = time.monotonic() - started
            sys.stderr.write(f"\r{frames[tick % 4]} {label}… {elapsed:.1f}s ")
            sys.stderr.flush()
            tick += 1
            if done.wait(0.25):
                return

    thread = threading.Thread(target=draw, name="hystate-working", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        sys.stderr.write("\r\x1b[K")
        sys.stderr.flush()
