"""What every `jobq` command shares: the command group, the --url/--prefix/--verbose options
with the error-to-exit-code mapping, and the App a command works on. The command modules
(cli.py, cli_schedule.py, cli_migrate.py) import it and register their commands on `main`;
cli.py imports them, so none of them imports another."""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

import click

from .errors import (
    BrokerError,
    InvalidOption,
    JobFailed,
    JobIdConflict,
    JobNotFound,
    JobqError,
    ResultTimeout,
)
from .names import InvalidName

EXIT_FAILED, EXIT_USAGE, EXIT_BROKER, EXIT_NOT_FOUND, EXIT_TIMEOUT = 1, 2, 3, 4, 5


def _setup_logging(verbose: bool) -> None:
    from .logs import configure

    # Control characters in messages are escaped: a name or an error cannot forge a log line.
    configure(
        logging.DEBUG if verbose else logging.INFO,
        "%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        "%H:%M:%S",
    )


def common(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--url/--prefix/--verbose on every command, and JobqError -> message + exit code."""

    @click.option("--url", envvar="JOBQ_URL", help="Broker URL (default: embedded Valkey).")
    @click.option("--prefix", envvar="JOBQ_PREFIX", help="Key prefix of the deployment.")
    @click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
    @functools.wraps(fn)
    def wrapper(url: str | None, prefix: str | None, verbose: bool, **kw: Any) -> Any:
        _setup_logging(verbose)
        # Exported so process-pool children and apps built at import see the same settings.
        if url:
            os.environ["JOBQ_URL"] = url
        if prefix:
            os.environ["JOBQ_PREFIX"] = prefix
        try:
            return fn(url=url, prefix=prefix, **kw)
        except BrokerError as exc:  # unreachable, full (BrokerFull), refused: one line
            click.echo(f"error: {' '.join(str(exc).split())}", err=True)
            sys.exit(EXIT_BROKER)
        except JobNotFound as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_NOT_FOUND)
        except ResultTimeout as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_TIMEOUT)
        except (InvalidName, InvalidOption, JobIdConflict) as exc:  # usage: names option, fix
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_USAGE)
        except JobFailed as exc:
            click.echo(f"error: {exc}", err=True)
            if exc.remote_traceback:
                click.echo(exc.remote_traceback, err=True)
            sys.exit(EXIT_FAILED)
        except JobqError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_FAILED)

    return wrapper


def _app(url: str | None, prefix: str | None) -> Any:
    from .client import App

    return App(url, prefix=prefix)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="jobq")
def main() -> None:
    """jobq: a distributed job queue on Valkey/Redis."""
