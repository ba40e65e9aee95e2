"""`jobq` command line: parses, calls `operations.py`, presents with `presenters.py`. Exit
codes (cli_base.py maps errors onto them): 0 ok, 1 job failed or error, 2 usage, 3 broker
unreachable, full, refusing, wrong password or no server, 4 not found, 5 timed out waiting."""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any

import click

from .cli_base import (  # noqa: F401 (EXIT_* are this module's API too)
    EXIT_BROKER,
    EXIT_FAILED,
    EXIT_NOT_FOUND,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    _app,
    common,
    main,
)

__all__ = ["main"]
from . import operations as ops
from . import presenters as present
from .cli_remote import acl_command, listen_options
from .cli_server import server
from .doctor import doctor_command
from .errors import ConfigError
from .logs import FORMATS, use_format

#: --log-format of the long-running commands: text lines, or JSON lines that join traces.
_LOG_FORMAT = click.option(
    "--log-format",
    type=click.Choice(FORMATS),
    default="text",
    show_default=True,
    envvar="JOBQ_LOG_FORMAT",
    help="Log lines as text, or as JSON objects (with trace ids when tracing is on).",
)


@main.command()
@click.argument("app_path")
@click.option(
    "-q",
    "--queues",
    default="default",
    show_default=True,
    help="Comma-separated queues, first served first.",
)
@click.option("-c", "--concurrency", default=1, show_default=True, type=click.IntRange(1))
@click.option(
    "--pool", type=click.Choice(["process", "thread", "async"]), default="thread", show_default=True
)
@click.option("--name", help="Worker name (default: host-pid); jobs may target it.")
@click.option("--group", help="Worker group; jobs may target any worker of it.")
@click.option(
    "--prefetch",
    type=click.IntRange(0),
    help="Jobs claimed ahead of free slots (default: the concurrency).",
)
@click.option(
    "--grace",
    default=30.0,
    show_default=True,
    help="Seconds to finish running jobs on SIGTERM before requeueing them.",
)
@click.option(
    "--cancel-grace",
    default=10.0,
    show_default=True,
    help="Seconds a running job may take to stop after a cancel before it is killed "
    "(process and async pools).",
)
@click.option(
    "--strict",
    is_flag=True,
    help="Refuse to start if the server may evict keys (maxmemory-policy not noeviction).",
)
@_LOG_FORMAT
@click.option(
    "--tracing",
    is_flag=True,
    envvar="JOBQ_TRACING",
    help="OpenTelemetry spans of every job run (needs the `otel` extra: docs/tracing.md).",
)
@common
def worker(
    app_path: str,
    queues: str,
    concurrency: int,
    pool: str,
    name: str | None,
    group: str | None,
    prefetch: int | None,
    grace: float,
    cancel_grace: float,
    strict: bool,
    log_format: str,
    tracing: bool,
    url: str | None,
    prefix: str | None,
) -> None:
    """Run a worker for APP_PATH ('module:app')."""
    from .running import WorkerOptions, run_worker  # (the worker's imports: only when run)

    use_format(log_format)
    if tracing:  # (read by the App as it is built, here and in process-pool children)
        os.environ["JOBQ_TRACING"] = "1"

    opts = WorkerOptions(
        queues, concurrency, pool, name, group, prefetch, grace, cancel_grace, strict
    )
    run_worker(app_path, opts, url, prefix)


@main.command()
@listen_options
@click.option(
    "--http",
    "http_addr",
    default="127.0.0.1:8000",
    show_default=True,
    help="Serve the HTTP API and dashboard on HOST:PORT.",
)
@click.option("--no-http", is_flag=True, help="Run the maintenance loop only.")
@click.option(
    "--token",
    envvar="JOBQ_TOKEN",
    help="Bearer token the HTTP API requires (prefer JOBQ_TOKEN or --token-file: a flag "
    "shows in ps). Off loopback one is generated and printed if none is given.",
)
@click.option(
    "--token-file",
    envvar="JOBQ_TOKEN_FILE",
    type=click.Path(dir_okay=False),
    help="Read the bearer token from this file (keep it chmod 600).",
)
@click.option(
    "--allowed-host",
    "allowed_hosts",
    multiple=True,
    envvar="JOBQ_ALLOWED_HOSTS",
    help="A Host name the HTTP API answers besides its IP and localhost (NAME or NAME:PORT; "
    "repeatable; '*' = any). JOBQ_ALLOWED_HOSTS takes them space-separated.",
)
@click.option(
    "--strict",
    is_flag=True,
    help="Refuse to start if the server may evict keys (maxmemory-policy not noeviction).",
)
@_LOG_FORMAT
@common
def master(
    listen: str | None,
    password: str | None,
    password_file: str | None,
    tls_cert: str | None,
    tls_key: str | None,
    tls_client_ca: str | None,
    http_addr: str,
    no_http: bool,
    token: str | None,
    token_file: str | None,
    allowed_hosts: tuple[str, ...],
    strict: bool,
    log_format: str,
    url: str | None,
    prefix: str | None,
) -> None:
    """Run the maintenance loop (promote due jobs, requeue expired leases), and serve the HTTP
    API and dashboard (needs the `master` extra: pip install 'jobq[master]')."""
    from .running import master_loop  # (the master's imports: only when run)

    use_format(log_format)

    app = _app(url, prefix, start=True)
    if listen:
        from .cli_remote import open_listen

        open_listen(app, listen, password, password_file, tls_cert, tls_key, tls_client_ca)
    m = master_loop(app, strict)
    source = click.get_current_context().get_parameter_source("http_addr")
    required = source is not click.core.ParameterSource.DEFAULT
    try:
        from .master.server import parse_hostport, serve
    except ImportError as exc:
        if required:
            raise ConfigError(
                f"--http needs the master extra: pip install 'jobq[master]' ({exc})"
            ) from exc
        no_http = True
    if no_http:
        m.run_joined()  # (not run(): SIGTERM's handler would deadlock on its wait, see there)
    else:
        from .master.server import http_token

        http_host, http_port = parse_hostport(http_addr)
        source = click.get_current_context().get_parameter_source("token")
        if source is click.core.ParameterSource.COMMANDLINE:
            logging.getLogger("jobq.master").warning(
                "--token is visible to every user in ps: prefer JOBQ_TOKEN or --token-file"
            )
        token, generated = http_token(http_host, token, token_file)
        if generated:
            click.echo(
                f"HTTP on {http_host} is reachable from other hosts, so it needs a token; "
                f"generated one (shown once, not stored):\n  {token}\n"
                "keep it in a file (chmod 600) and pass --token-file FILE to reuse it",
                err=True,
            )
        serve(app, m, http_host, http_port, token, required, allowed_hosts)
    m.stop()


@main.command()
@click.argument("task")
@click.option("--args", "args_json", default="[]", help="JSON list of positional arguments.")
@click.option("--kwargs", "kwargs_json", default="{}", help="JSON object of keyword arguments.")
@click.option("--queue")
@click.option("--priority", type=int)
@click.option("--delay", type=float, help="Seconds before the job may run.")
@click.option("--retries", type=int)
@click.option("--timeout", type=float, help="Hard limit per attempt, seconds.")
@click.option("--job-id", help="Idempotency key: the same id twice makes one job.")
@click.option("--wait", is_flag=True, help="Wait for the result and print it.")
@click.option(
    "--batch",
    type=click.File("r"),
    help="Submit one job per line of this file (a JSON list of arguments each), in one round "
    "trip; with --wait, print one JSON line per job (id, state, result or error).",
)
@click.option("--wait-timeout", type=float, default=None)
@common
def submit(
    task: str,
    args_json: str,
    kwargs_json: str,
    queue: str | None,
    priority: int | None,
    delay: float | None,
    retries: int | None,
    timeout: float | None,
    job_id: str | None,
    wait: bool,
    batch: Any,
    wait_timeout: float | None,
    url: str | None,
    prefix: str | None,
) -> None:
    """Submit a job of TASK (its registered name); print its id."""
    args, kwargs = ops.json_args(args_json, kwargs_json)
    app = _app(url, prefix, start=True)
    if batch is not None:
        opts = {"queue": queue, "priority": priority, "retries": retries, "timeout": timeout}
        jobs = ops.submit_batch(app, task, batch, opts)
        if not wait:
            for j in jobs:
                click.echo(j.id)
            return
        done = ops.follow(
            app, [j.id for j in jobs], wait_timeout, lambda o: click.echo(json.dumps(o.as_json()))
        )
        click.echo(present.summary(done.counts()), err=True)
        sys.exit(done.exit_code())
    job = app.submit(
        task,
        args,
        kwargs,
        queue=queue,
        priority=priority,
        delay=delay,
        retries=retries,
        timeout=timeout,
        job_id=job_id,
    )
    click.echo(job.id)
    if wait:
        click.echo(json.dumps(job.result(timeout=wait_timeout)))


@main.command()
@click.argument("job_ids", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per job, a line each.")
@common
def status(job_ids: tuple[str, ...], as_json: bool, url: str | None, prefix: str | None) -> None:
    """Show jobs' state, attempts, timings, progress and error (exit 4 if any id is unknown;
    the others are still shown). `-` reads ids from stdin."""
    app = _app(url, prefix)
    found, missing = ops.job_records(app, ops.ids_from(job_ids, sys.stdin))
    for n, rec in enumerate(found):
        if as_json:
            click.echo(present.status_json(rec))
        else:
            if n:
                click.echo()
            click.echo("\n".join(present.status_lines(rec)))
    for job_id in missing:
        click.echo(f"error: no job {job_id} (never submitted, or its result expired)", err=True)
    if missing:
        sys.exit(EXIT_NOT_FOUND)


@main.command()
@click.argument("job_id")
@click.option("--timeout", type=float, default=None, help="Seconds to wait (default: forever).")
@common
def result(job_id: str, timeout: float | None, url: str | None, prefix: str | None) -> None:
    """Wait for a job and print its result as JSON (exit 1 if it failed, 4 if there is no
    such job, 5 if it did not finish within --timeout)."""
    click.echo(json.dumps(_app(url, prefix).job(job_id).result(timeout=timeout)))


@main.command()
@click.argument("job_id")
@common
def cancel(job_id: str, url: str | None, prefix: str | None) -> None:
    """Cancel a queued/scheduled job (exit 0); a running one is asked to stop (exit 0: the
    request is recorded); a finished one is left as it is (exit 1); no such job: exit 4."""
    done = ops.cancel_job(_app(url, prefix), job_id)
    click.echo(present.cancel_text(done.outcome, done.state))
    if done.outcome == "finished":
        sys.exit(EXIT_FAILED)


@main.command()
@common
def queues(url: str | None, prefix: str | None) -> None:
    """Depths per state and counters for every queue."""
    rows, dead_count = ops.queue_table(_app(url, prefix))
    if not rows:
        click.echo(present.EMPTY["queues"], err=True)
    click.echo("\n".join(present.queue_lines(rows, dead_count)))


@main.command()
@click.option("--limit", default=50, show_default=True)
@click.option("--rerun", "rerun_ids", multiple=True, help="Queue this dead-lettered job again.")
@click.option("--rerun-all", is_flag=True, help="Queue every listed dead-lettered job again.")
@common
def dead(
    limit: int, rerun_ids: tuple[str, ...], rerun_all: bool, url: str | None, prefix: str | None
) -> None:
    """List dead-lettered jobs, or re-run them."""
    app = _app(url, prefix)
    if rerun_ids or rerun_all:
        for i in ops.rerun_dead(app, list(rerun_ids), rerun_all, limit):
            click.echo(f"queued again: {i}")
        return
    listed = ops.dead_jobs(app, limit)
    if not listed:
        click.echo(present.EMPTY["dead"], err=True)
    for i, rec in listed:
        click.echo(present.dead_line(i, rec))


@main.command()
@click.option("--jobs", "n", default=300, show_default=True, help="How many jobs to submit.")
@click.option("--data-dir", default=".jobq", show_default=True)
@click.option("-v", "--verbose", is_flag=True)
def demo(n: int, data_dir: str, verbose: bool) -> None:
    """End-to-end demo on the embedded server: a master, two workers, a few hundred jobs."""
    from .demo import run_demo
    from .logs import configure

    configure(logging.DEBUG if verbose else logging.WARNING)
    sys.exit(run_demo(n, data_dir))


# Scheduling commands (periodic jobs, batches, waiting, purging) and `jobq migrate` (more
# partitions for an existing deployment) live in their own modules.
from . import cli_migrate, cli_schedule, cli_workers  # noqa: E402, F401

main.add_command(acl_command)
main.add_command(doctor_command)
main.add_command(server)

if __name__ == "__main__":  # pragma: no cover
    main()
