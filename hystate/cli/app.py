"""The ``hystate`` command's frame: the click group, the options every command shares, and
turning HystateError into a one-line message and its exit code (in one place,
``HystateGroup.invoke``). The commands live in writing.py, reading.py and checks.py; heavy modules
are imported inside the commands that need them, so ``hystate advance`` does not pay for
GitPython or the reporting code."""

from __future__ import annotations

import json
import os
import re
import signal
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from hystate.core.errors import HystateError, as_cannot_write, cannot_write, is_cannot_write

if TYPE_CHECKING:
    from hystate.engine.transition import TransitionResult
    from hystate.manager import StateManager

F = TypeVar("F", bound=Callable[..., Any])

EXIT_INTERRUPTED = 130


@dataclass
class Options:
    verbose: bool = False
    state_dir: str | None = None
    as_json: bool = False  # the command was given --json: its errors are JSON too

    def manager(
        self, worker: str | None = None, *, cli_worker: bool = True, last_good_config: bool = False
    ) -> StateManager:
        from hystate.git import default_worker
        from hystate.manager import StateManager

        # The CLI acts for its caller (the pipeline script): that is the worker by default.
        default = default_worker(os.getppid()) if cli_worker else None
        manager = StateManager(
            self.state_dir, worker=worker or default, last_good_config=last_good_config
        )
        from hystate.cli.terminal import tell  # above any progress line

        manager.notice = lambda message: tell(clean_line(f"hystate: {message}"))
        if manager.config_problem:
            manager.notice(manager.config_problem)
        manager.raise_drops = False  # a dropped earlier step of a named worker is printed
        manager.drops_by_name = worker is not None
        return manager


# Which module of hystate.cli defines each command: a command's module is imported when that
# command runs (or for --help), so `hystate advance` does not pay for the reports, the server or
# the checks (tests/cli/test_lazy_commands.py keeps this table equal to what the modules define).
COMMANDS = {
    "add": "writing", "advance": "writing", "discover": "writing", "fail": "writing",
    "heartbeat": "leases", "init": "writing", "retry": "writing", "skip": "writing",
    "config": "reading", "history": "reading", "list": "reading", "log": "reading",
    "next": "reading", "show": "reading",
    "metrics": "reports", "rebuild": "reports", "report": "reports", "status": "reports",
    "fsck": "checks", "locks": "checks", "merge-driver": "checks", "unlock": "checks",
    "validate": "checks",
    "backup": "migration", "import": "migration", "restore": "migration",
    "events": "events", "serve": "serving", "sync": "cluster", "warm": "warm",
}  # fmt: skip


class HystateGroup(click.Group):
    """Maps errors to exit codes: HystateError -> its code, Ctrl-C -> 130, anything unexpected
    -> 1, in one line (the traceback only with -v). Commands load on first use (COMMANDS)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *self.commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            # the import statement (not importlib), so audit hooks see it as any other import
            __import__(f"hystate.cli.{COMMANDS[cmd_name]}")
        return self.commands.get(cmd_name)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:  # `hystate --json show x`: an error in hystate's own options, said as JSON too
            return super().parse_args(ctx, args)
        except click.ClickException as exc:
            _usage_json(ctx, exc)
            raise

    def invoke(self, ctx: click.Context) -> Any:
        # From here on Ctrl-C unwinds (locks released, files put back) and ends below.
        if signal.getsignal(signal.SIGINT) is _early_exit:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, signal.default_int_handler)
        if signal.getsignal(signal.SIGHUP) is _early_exit:
            signal.signal(signal.SIGHUP, signal.default_int_handler)
        try:
            return super().invoke(ctx)
        except HystateError as exc:
            error = as_cannot_write(exc)
            _fail(ctx, f"error: {error}", error.exit_code, error)
        except (KeyboardInterrupt, click.Abort):
            _fail(ctx, "interrupted", EXIT_INTERRUPTED)
        except BrokenPipeError:
            # The reader went away (`hystate list --json | head -1`): not an error worth a
            # message, exit 0 (click's own handling would make it exit 1, unlike `--csv`).
            _reader_gone()
        except click.ClickException as exc:
            _usage_json(ctx, exc)
            raise
        except click.exceptions.Exit:
            raise
        except OSError as exc:
            if is_cannot_write(exc):  # a full or read-only disk: one code, the way out
                error = cannot_write(exc, exc.filename or "a file of the repository")
                _fail(ctx, f"error: {error}", error.exit_code, error)
            where = f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")
            _fail(ctx, f"error: {where}", _os_code(exc))
        except ValueError as exc:
            if "null byte" not in str(exc):
                _fail(ctx, f"internal error: {type(exc).__name__}: {exc}", 1)
            _fail(ctx, "error: a path or name contains a NUL byte", 5)
        except Exception as exc:
            _fail(ctx, f"internal error: {type(exc).__name__}: {exc}", 1)


def _usage_json(ctx: click.Context, exc: click.ClickException) -> None:
    """A usage error click found, under --json also as JSON on stdout."""
    opts = ctx.find_object(Options)  # an unknown option comes before any is read: argv asked
    if (opts is not None and opts.as_json) or "--json" in sys.argv[1:]:
        shown = {"error": clean(exc.format_message()), "exit_code": exc.exit_code}
        click.echo(_json_line({**shown, "kind": "usage_error"}))


def _os_code(exc: OSError) -> int:
    """An operating-system error inside ``.git``, or raised by the git layer (the only code
    that touches it), is a git problem (exit 7); others exit 1."""
    names = (exc.filename, getattr(exc, "filename2", None))
    inside_git = any(
        isinstance(n, (str, bytes, os.PathLike)) and ".git" in Path(os.fsdecode(n)).parts
        for n in names
        if n is not None
    )
    import traceback  # errors only: traceback imports linecache and tokenize

    frames = traceback.extract_tb(exc.__traceback__)
    in_git_layer = any(f"{os.sep}hystate{os.sep}git{os.sep}" in frame.filename for frame in frames)
    return 7 if inside_git or in_git_layer else 1


# Control characters, DEL, C1 (CSI 0x9b and friends), bidi overrides and lone surrogates (a
# file name that is not UTF-8) never reach a terminal raw; they are shown as \uXXXX escapes,
# which also keeps JSON output valid JSON. Newlines and tabs stay; a CR only before a LF.
_UNSAFE = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069"
    "\ud800-\udfff]|\r(?!\n)"
)
_UNSAFE_LINE = re.compile(_UNSAFE.pattern + "|[\n\r\t]")
LINE_LIMIT = 600  # characters of one error line


def _escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def clean(text: str) -> str:
    """``text`` safe for a terminal: no escape sequences, no control characters."""
    return _UNSAFE.sub(_escape, text)


def clean_line(text: str, limit: int = LINE_LIMIT) -> str:
    """One line, safe for a terminal, at most ``limit`` characters."""
    line = _UNSAFE_LINE.sub(_escape, text[: limit * 2])
    if len(line) > limit or len(text) > limit * 2:
        line = line[: limit - 1] + "…"
    return line


def echo(text: Any = "", *, err: bool = False, nl: bool = True) -> None:
    """click.echo for text that may carry content from files (titles, errors, names)."""
    click.echo(clean(text if isinstance(text, str) else str(text)), err=err, nl=nl)


def quiet(_text: Any = "", *, err: bool = False, nl: bool = True) -> None:
    """``echo`` that prints nothing: the text a command shows people, under --json."""


def _fail(ctx: click.Context, message: str, code: int, exc: HystateError | None = None) -> None:
    """One line on stderr and the exit code; under --json also the error as a JSON object on
    stdout (``{"error": ..., "exit_code": ..., "kind": ...}``), for the program reading it."""
    opts = ctx.find_object(Options)
    if opts is not None and opts.verbose:
        import traceback

        traceback.print_exc()
    if opts is not None and opts.as_json:
        text = message.split(": ", 1)[1] if message.startswith("error: ") else message
        kind = _kind(type(exc).__name__) if exc is not None else _kind_of(message)
        _say(_json_line({"error": clean(text), "exit_code": code, "kind": kind}), err=False)
    _say(clean_line(f"hystate: {message}"), err=True)
    if (opts is None or not opts.verbose) and code == 1 and message.startswith("internal"):
        _say("hystate: run again with -v for the traceback", err=True)
    ctx.exit(code)


def _say(text: str, *, err: bool) -> None:
    """A line of an error; a reader or terminal gone away (a closed pipe, a hung-up pty) does
    not change the exit code: what is left to write goes to /dev/null."""
    try:
        click.echo(text, err=err)
    except OSError:
        _to_devnull((sys.stderr if err else sys.stdout).fileno())


def _kind_of(message: str) -> str:
    """The kind of an error that is no HystateError: ``internal_error``, ``interrupted``,
    ``error`` (an operating system's), snake case as every other kind."""
    return message.split(":", 1)[0].replace(" ", "_")


def _kind(name: str) -> str:
    """``InvalidData`` -> ``invalid_data``: an error's kind in JSON."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _json_line(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=False)


def _json_flag(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    opts = ctx.find_object(Options)
    if value and opts is not None:
        opts.as_json = True
    return value


def json_option(f: F) -> F:
    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        is_eager=True,  # before the other options, so their errors are JSON too
        callback=_json_flag,
        help="Machine-readable output on stdout (errors too, as {error, exit_code, kind}).",
    )(f)


def worker_option(f: F) -> F:
    return click.option(
        "--worker",
        metavar="NAME",
        envvar="HYSTATE_WORKER",
        help="Who does the work (default: $HYSTATE_WORKER, else host:pid of the caller; a "
        "name only: liveness comes from the lease, see `hystate heartbeat`).",
    )(f)


def lease_option(f: F) -> F:
    return click.option(
        "--lease",
        metavar="TOKEN",
        envvar="HYSTATE_LEASE",
        help="The lease token printed when the episode entered its active stage (default: "
        "$HYSTATE_LEASE); leaving the stage or renewing it needs it.",
    )(f)


def print_result(result: TransitionResult, as_json: bool) -> None:
    episode = result.episode
    if as_json:  # the one vocabulary (episode_id, worker, at); "state": the file's own keys
        emit_json(
            {
                "episode_id": episode.episode_id,
                "from": result.from_stage.value if result.from_stage else None,
                "to": episode.stage.value,
                "changed": result.changed,
                "commit": result.commit,
                "lease": result.lease,
                "pending": result.pending,
                "state": episode.data,
            }
        )
        return
    if not result.changed:
        echo(f"{episode.episode_id} is already {episode.stage.value}; nothing to do")
        return
    if result.pending:  # not on the shared remote yet: said plainly
        echo(f"hystate: pending: {episode.episode_id} {result.pending}", err=True)
    old = result.from_stage.value if result.from_stage else "?"
    lease = f"; lease {result.lease}" if result.lease else ""
    echo(
        f"{episode.episode_id}: {old} -> {episode.stage.value} ({(result.commit or '')[:8]})"
        + lease
    )


def emit_json(value: Any) -> None:
    echo(_json(value))


def emit_json_array(items: Iterable[Any]) -> int:
    """A JSON array written item by item, as ``emit_json(list(items))`` would write it (memory
    independent of its length); how many items."""
    import textwrap

    count, parts = 0, []
    for item in items:
        parts.append(("[\n" if not count else ",\n") + textwrap.indent(_json(item), "  "))
        count += 1
        if len(parts) == 256:  # echo flushes: a write per item would cost ~15% more
            echo("".join(parts), nl=False)
            parts.clear()
    echo("".join(parts) + ("\n]" if count else "[]"))
    return count


def _json(value: Any) -> str:
    try:
        return json.dumps(value, indent=2, ensure_ascii=False, allow_nan=False)
    except ValueError as exc:  # NaN or Infinity: JSON has no way to say it (files never hold them)
        from hystate.core.errors import InvalidData

        raise InvalidData(f"cannot write JSON: {exc}") from None


def reader(opts: Options) -> StateManager:
    """A manager for reading commands: cache notices go to stderr."""
    manager = opts.manager(cli_worker=False)
    manager.cache.notice = manager.notice  # one line above any progress line
    manager.refresh_once = True  # one command, one snapshot of the tree
    return manager


@click.group(cls=HystateGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Show tracebacks and more detail.")
@click.option(
    "--state-dir",
    envvar="HYSTATE_STATE_DIR",
    metavar="DIR",
    help="State directory (default: state_directory of hystate.yaml, else processed).",
)
@click.version_option(package_name="hystate")
@click.pass_context
def cli(ctx: click.Context, verbose: bool, state_dir: str | None) -> None:
    """hystate: git-backed state of the Hooting Yard migration.

    One YAML file per episode is the source of truth; every transition is one git commit.

    \b
    Examples:
      hystate init
      hystate discover --from archive-org-search.json
      hystate advance hy0_hooting_yard_2004-04-14 downloading
      hystate show hy0_hooting_yard_2004-04-14
    """
    ctx.obj = Options(verbose, state_dir)


pass_opts = click.make_pass_decorator(Options)


def main() -> None:
    # Until a command runs (click parsing the arguments) Ctrl-C or SIGTERM just ends the
    # process: one line, exit 130. Then HystateGroup.invoke makes both raise
    # KeyboardInterrupt, so locks are released and files put back on the way out.
    signal.signal(signal.SIGINT, _early_exit)
    signal.signal(signal.SIGTERM, _early_exit)
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:  # nohup's choice is kept
        # the terminal closed (a dropped ssh session): unwind as for SIGTERM, not die mid-commit
        signal.signal(signal.SIGHUP, _early_exit)
    try:
        cli.main(prog_name="hystate")
    except BrokenPipeError:
        _reader_gone()


def _reader_gone() -> NoReturn:
    """The reader of stdout went away (`hystate log | head`): exit 0 quietly (what is still
    buffered goes to /dev/null, so the flush at exit does not fail again)."""
    _to_devnull(sys.stdout.fileno())
    sys.exit(0)


def _to_devnull(fd: int) -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def _early_exit(*_: object) -> None:
    """Ctrl-C before any command ran (during imports or argument parsing): one line, 130."""
    try:
        os.write(2, b"hystate: interrupted\n")
    finally:
        os._exit(EXIT_INTERRUPTED)
