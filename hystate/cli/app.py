"""The ``hystate`` command's frame: the click group, the options every command shares, and
turning HystateError into a one-line message and its exit code (in one place,
``HystateGroup.invoke``). The commands live in writing.py, reading.py and checks.py; heavy modules
are imported inside the commands that need them, so ``hystate advance`` does not pay for
GitPython or the reporting code."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from hystate.errors import HystateError

if TYPE_CHECKING:
    from hystate.manager import StateManager

F = TypeVar("F", bound=Callable[..., Any])

EXIT_INTERRUPTED = 130


@dataclass
class Options:
    verbose: bool = False
    state_dir: str | None = None

    def manager(self, worker: str | None = None, *, cli_worker: bool = True) -> StateManager:
        from hystate.gitrepo import default_worker
        from hystate.manager import StateManager

        # The CLI acts for its caller (the pipeline script): that is the worker by default.
        default = default_worker(os.getppid()) if cli_worker else None
        return StateManager(self.state_dir, worker=worker or default)


class HystateGroup(click.Group):
    """Maps errors to exit codes: HystateError -> its code, Ctrl-C -> 130, anything
    unexpected -> 1 with a one-line message (the traceback only with -v)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except HystateError as exc:
            _fail(ctx, f"error: {exc}", exc.exit_code)
        except (KeyboardInterrupt, click.Abort):
            _fail(ctx, "interrupted", EXIT_INTERRUPTED)
        except (click.ClickException, click.exceptions.Exit, BrokenPipeError):
            raise
        except OSError as exc:
            _fail(ctx, f"error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), 1)
        except Exception as exc:
            _fail(ctx, f"internal error: {type(exc).__name__}: {exc}", 1)


def _fail(ctx: click.Context, message: str, code: int) -> None:
    opts = ctx.find_object(Options)
    if opts is not None and opts.verbose:
        traceback.print_exc()
    click.echo(f"hystate: {message}", err=True)
    if (opts is None or not opts.verbose) and code == 1 and message.startswith("internal"):
        click.echo("hystate: run again with -v for the traceback", err=True)
    ctx.exit(code)


def json_option(f: F) -> F:
    return click.option(
        "--json", "as_json", is_flag=True, help="Machine-readable output on stdout."
    )(f)


def worker_option(f: F) -> F:
    return click.option(
        "--worker",
        metavar="NAME",
        envvar="HYSTATE_WORKER",
        help="Who does the work (default: $HYSTATE_WORKER, else host:pid of the caller; a "
        "name only: liveness comes from the lease, see `hystate heartbeat`).",
    )(f)


def emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


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
    _show_library_notices()
    if ctx.invoked_subcommand in READING and not any(a in ("-h", "--help") for a in sys.argv):
        from hystate.gitrepo.repo import prefetch_status

        prefetch_status(Path.cwd())


READING = {"status", "list", "next", "log", "report", "metrics"}


class _EchoHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        click.echo(f"hystate: {record.getMessage()}", err=True)


def _show_library_notices() -> None:
    """What the library logs as a warning (a notice about the repository, a failed alert)
    goes to stderr as one line, for people; stdout stays for results."""
    logger = logging.getLogger("hystate")
    logger.handlers = [_EchoHandler(logging.WARNING)]
    logger.propagate = False


pass_opts = click.make_pass_decorator(Options)


def main() -> None:
    # SIGTERM unwinds like Ctrl-C, so locks are released and files put back.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        cli.main(prog_name="hystate")
    except BrokenPipeError:
        # The reader went away (`hystate log | head`): not an error worth a message.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(0)
