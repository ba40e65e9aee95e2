"""What every `jobq` command shares: the command group, whose `invoke` is the one place errors
become a message and an exit code; the --url/--prefix/--verbose options; and the App a command
works on. The command modules (cli.py, cli_schedule.py, cli_migrate.py, ...) import it and
register their commands on `main`; cli.py imports them, so none of them imports another.

Exit codes (README's table): 0 ok, 1 a job failed or another error, 2 usage (click's own and
ours: a malformed URL, contradicting options, a bad name), 3 broker unreachable, refusing or
full, wrong or missing password, or no server to talk to, 4 no such job, 5 timed out waiting.
A user error is one line on stderr; its traceback only with -v (on the group or the command).
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

import click

from .errors import (
    BrokerError,
    DurabilityUnsupported,
    InvalidOption,
    JobFailed,
    JobIdConflict,
    JobNotFound,
    JobqError,
    ResultTimeout,
    UsageProblem,
)
from .names import InvalidName
from .operations import (
    EXIT_BROKER,
    EXIT_FAILED,
    EXIT_NOT_FOUND,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    check_broker_url,
    open_app,
)

__all__ = [
    "EXIT_BROKER",
    "EXIT_FAILED",
    "EXIT_NOT_FOUND",
    "EXIT_TIMEOUT",
    "EXIT_USAGE",
    "common",
    "exit_code",
    "main",
]

#: Set by -v/--verbose (the group's or a command's): show tracebacks of user errors too.
_VERBOSE = {"on": False}


def _setup_logging(verbose: bool) -> None:
    from .logs import configure

    # Control characters in messages are escaped: a name or an error cannot forge a log line.
    configure(
        logging.DEBUG if verbose else logging.INFO,
        "%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        "%H:%M:%S",
    )


def exit_code(exc: BaseException) -> int:
    """The README's exit code for an error a command raised."""
    if isinstance(exc, BrokerError):  # unreachable, full, refusing, AuthFailed, NoServer
        return EXIT_BROKER
    if isinstance(exc, JobNotFound):
        return EXIT_NOT_FOUND
    if isinstance(exc, ResultTimeout):
        return EXIT_TIMEOUT
    usage = InvalidName | UsageProblem | InvalidOption | JobIdConflict  # a value to fix
    if isinstance(exc, usage) and not isinstance(exc, DurabilityUnsupported):
        return EXIT_USAGE
    return EXIT_FAILED


def report(exc: BaseException) -> int:
    """Print `exc` as the one line a user reads (a failed job's remote traceback after it),
    with our traceback too under -v; returns the exit code."""
    if _VERBOSE["on"]:
        traceback.print_exception(exc, file=sys.stderr)
    if isinstance(exc, BrokerError):
        text = " ".join(str(exc).split())  # server replies may carry newlines: one line
    elif isinstance(exc, OSError) and not isinstance(exc, JobqError):
        text = f"{exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}"
    else:
        text = str(exc)
    click.echo(f"error: {text}", err=True)
    if isinstance(exc, JobFailed) and exc.remote_traceback:
        click.echo(exc.remote_traceback.rstrip(), err=True)
    return exit_code(exc)


class JobqGroup(click.Group):
    """The `jobq` group: every error a subcommand raises on purpose (a `JobqError`, or an
    OSError such as a data directory it may not write) ends here as one line and the exit
    code of the README's table. Click's own usage errors keep click's handling (exit 2)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (JobqError, OSError) as exc:
            sys.exit(report(exc))


def common(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--url/--prefix/--verbose on every command that talks to a deployment."""

    @click.option("--url", envvar="JOBQ_URL", help="Broker URL (default: embedded Valkey).")
    @click.option("--prefix", envvar="JOBQ_PREFIX", help="Key prefix of the deployment.")
    @click.option("-v", "--verbose", is_flag=True, help="Debug logging, and tracebacks.")
    @functools.wraps(fn)
    def wrapper(url: str | None, prefix: str | None, verbose: bool, **kw: Any) -> Any:
        verbose = verbose or _VERBOSE["on"]
        _VERBOSE["on"] = verbose
        _setup_logging(verbose)
        if url:
            check_broker_url(url)  # a malformed URL is a usage error (2), before anything runs
        # Exported so process-pool children and apps built at import see the same settings.
        if url:
            os.environ["JOBQ_URL"] = url
        if prefix:
            os.environ["JOBQ_PREFIX"] = prefix
        return fn(url=url, prefix=prefix, **kw)

    return wrapper


def _app(url: str | None, prefix: str | None, start: bool = False) -> Any:
    """The App of the deployment a command names; only producers and servers (`start`) may
    start the embedded server, any other command says there is none (exit 3)."""
    return open_app(url, prefix, start=start)


@click.group(cls=JobqGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Tracebacks of errors (and debug logging).")
@click.version_option(package_name="jobq")
def main(verbose: bool) -> None:
    """jobq: a distributed job queue on Valkey/Redis."""
    _VERBOSE["on"] = verbose
