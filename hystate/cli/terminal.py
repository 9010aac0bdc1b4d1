"""What only a person at a terminal sees: shell completion of episode ids and stages, and the
progress of long commands on stderr (nothing when stderr is not a terminal)."""

from __future__ import annotations

import contextlib
import io
import os
import sys
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, TextIO

import click

if TYPE_CHECKING:
    import click.shell_completion

MAX_SHOWN = 500  # completions offered at most (a shell lists them all)


def _store(ctx: click.Context) -> Any:
    """The state folder's store for the repository completion runs in (``--state-dir`` as
    typed on the line); nothing is read or refreshed, and no notice is printed."""
    from hystate.manager import StateManager

    root = ctx.find_root()
    state_dir = root.params.get("state_dir") if root.params else None
    return StateManager(state_dir).store


def complete_episode_ids(
    ctx: click.Context, _param: click.Parameter, incomplete: str
) -> list[click.shell_completion.CompletionItem]:
    """Shell completion of an episode id: the ids in the state folder's year folders that
    start with what was typed (file names only: nothing is read or refreshed). A file name
    that is no episode id (a newline, a comma, an escape sequence: anything a hostile branch
    can name a file) is never offered: it would break the shell's protocol or the terminal."""
    from click.shell_completion import CompletionItem

    from hystate.core.model import ID_PATTERN

    try:
        names = {
            p.stem
            for p in _store(ctx).iter_paths()
            if p.name.startswith(incomplete) and ID_PATTERN.fullmatch(p.stem)
        }
        return [CompletionItem(n) for n in sorted(names)[:MAX_SHOWN]]
    except Exception:  # completion never fails loudly: no repository, no state yet
        return []


def complete_years(
    ctx: click.Context, _param: click.Parameter, incomplete: str
) -> list[click.shell_completion.CompletionItem]:
    """Shell completion of a year: the state folder's year folders."""
    from click.shell_completion import CompletionItem

    try:
        years = (p.name for p in _store(ctx).year_dirs() if p.name.startswith(incomplete))
        return [CompletionItem(y) for y in years]
    except Exception:
        return []


def complete_stages(
    _ctx: click.Context, _param: click.Parameter, incomplete: str
) -> list[click.shell_completion.CompletionItem]:
    from click.shell_completion import CompletionItem

    from hystate.core.model import ProcessingStage

    return [CompletionItem(s.value) for s in ProcessingStage if s.value.startswith(incomplete)]


# Progress lines being drawn (their streams), and the lock every drawing and `tell` takes: a
# notice printed while a bar or spinner is shown erases the line first, never lands inside it.
_LOCK = threading.RLock()
_ACTIVE: list[TextIO] = []


def tell(line: str) -> None:
    """One line on stderr for people (a notice), above any progress drawn there: the progress
    line is erased first and drawn again at its next update."""
    with _LOCK:
        if _ACTIVE:
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.write("\r\x1b[K")
        click.echo(line, err=True)


class Progress:
    """A counted progress bar on stderr, ``label: what [####----] done/total pct%``, for long
    work: the engine calls it as ``progress(done, total, what)`` (``what`` names the phase; a
    total of 0 is a phase of unknown length, shown as the ``working`` spinner). Redrawn at most
    ten times a second and erased when closed. Drawing never fails the work: a terminal that
    went away only stops the drawing."""

    def __init__(self, label: str, stream: TextIO) -> None:
        self.label = label
        self.stream = stream
        self.phase: tuple[str, int] | None = None
        self.drawn = 0.0
        self.spinner: contextlib.AbstractContextManager[None] | None = None
        self.broken = False

    def __call__(self, done: int, total: int, what: str = "") -> None:
        label = f"{self.label}: {what}" if what else self.label
        if self.phase != (label, total):
            self._stop_spinner()
            self.phase, self.drawn = (label, total), 0.0
            if total <= 0:
                self.spinner = working(label, self.stream)
                self.spinner.__enter__()
                return
        if total <= 0:
            return
        now = time.monotonic()
        if now - self.drawn < 0.1 and 0 < done < total:
            return
        self.drawn = now
        self._write(f"\r{_line(done, total, clean_label(label), self.stream)}\x1b[K")

    def close(self) -> None:
        self._stop_spinner()
        if self.phase is not None:
            self._write("\r\x1b[K")
        self.phase = None
        with _LOCK:
            if self.stream in _ACTIVE:
                _ACTIVE.remove(self.stream)

    def _stop_spinner(self) -> None:
        if self.spinner is not None:
            spinner, self.spinner = self.spinner, None
            spinner.__exit__(None, None, None)

    def _write(self, text: str) -> None:
        if self.broken:
            return
        with _LOCK:
            if self.stream not in _ACTIVE:
                _ACTIVE.append(self.stream)
            try:
                self.stream.write(text)
                self.stream.flush()
            except (OSError, ValueError):  # the terminal went away (EIO, EPIPE, closed)
                self.broken = True


def clean_label(text: str, limit: int = 80) -> str:
    """A label safe to draw: anything not printable (control characters, escape sequences,
    bidi overrides, lone surrogates) as ``\\uXXXX``, at most ``limit`` characters."""
    shown = "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in text[: limit * 2])
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def _columns(stream: TextIO) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns or 80
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        return 80


def _fit(line: str, stream: TextIO) -> str:
    """``line`` cut to the terminal's width (a line that wraps cannot be drawn over)."""
    room = max(1, _columns(stream) - 1)
    return line if len(line) <= room else line[: room - 1] + "…"


def _line(done: int, total: int, label: str, stream: TextIO) -> str:
    """``label [####----] done/total pct%`` as wide as the terminal allows (the bar goes
    first when it is narrow, then the label is cut; the count stays)."""
    done = max(0, min(done, total))
    count = f"{done:,}/{total:,} {100 * done // total:3d}%"
    room = _columns(stream) - 1
    width = min(40, room - len(label) - len(count) - 4)
    if width < 10:  # no bar; the label cut so the count stays
        keep = room - len(count) - 1
        label = label if len(label) <= keep else label[: max(0, keep - 1)] + "…"
        return _fit(f"{label} {count}", stream)
    filled = width * done // total
    return f"{label} [{'#' * filled}{'-' * (width - filled)}] {count}"


def on_terminal() -> bool:
    """True when stderr is a terminal (progress is drawn only then)."""
    try:
        return sys.stderr.isatty()
    except (OSError, ValueError, AttributeError):
        return False


@contextlib.contextmanager
def progress_bar(label: str) -> Iterator[Progress | None]:
    """A ``Progress`` on stderr while the block runs, erased at its end; None (nothing drawn)
    when stderr is not a terminal."""
    if not on_terminal():
        yield None
        return
    bar = Progress(label, sys.stderr)
    try:
        yield bar
    finally:
        bar.close()


@contextlib.contextmanager
def working(label: str, stream: TextIO | None = None) -> Iterator[None]:
    """While a long command works, a line on stderr saying so with the time it has taken
    (redrawn four times a second, erased at the end); only when stderr is a terminal. For work
    whose length is not known up front (a push, a bundle)."""
    if stream is None:
        if not on_terminal():
            yield
            return
        stream = sys.stderr
    out = stream
    done = threading.Event()
    started = time.monotonic()
    shown = clean_label(label)

    def write(text: str) -> bool:
        with _LOCK:
            try:
                out.write(text)
                out.flush()
                return True
            except (OSError, ValueError):  # the terminal went away: stop drawing, not the work
                return False

    def draw() -> None:
        frames = "|/-\\"
        tick = 0
        while True:  # drawn at once, then every quarter of a second until done
            elapsed = time.monotonic() - started
            line = _fit(f"{frames[tick % 4]} {shown}… {elapsed:.1f}s", out)
            if not write(f"\r{line}\x1b[K"):
                return
            tick += 1
            if done.wait(0.25):
                return

    thread = threading.Thread(target=draw, name="hystate-working", daemon=True)
    with _LOCK:
        _ACTIVE.append(out)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        write("\r\x1b[K")
        with _LOCK:
            _ACTIVE.remove(out)
