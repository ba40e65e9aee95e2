"""`jobq periodic | wait | purge` and batch submits: the scheduling side of the CLI."""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from dataclasses import replace
from typing import Any

import click

from .cli_base import _app, common, main
from .errors import ConfigError, JobCancelled, JobFailed, JobNotFound, ResultTimeout


@main.group()
def periodic() -> None:
    """Periodic jobs: list, add or remove at run time."""


@periodic.command("list")
@common
def periodic_list(url: str | None, prefix: str | None) -> None:
    """Every periodic job and when it next fires."""
    import datetime as dt

    for spec, due in _app(url, prefix).store.list_periodic():
        when = (
            dt.datetime.fromtimestamp(due / 1000, dt.UTC).isoformat(timespec="seconds")
            if due
            else "-"
        )
        sched = spec.cron if spec.cron else f"every {spec.every_s:g}s"
        click.echo(f"{spec.name:<24} {spec.task:<20} {sched:<16} next {when}  ({spec.missed})")


@periodic.command("add")
@click.argument("name")
@click.argument("task")
@click.option("--cron", help="Cron expression, e.g. '*/5 * * * *'.")
@click.option("--every", type=float, help="Interval in seconds.")
@click.option("--args", "args_json", default="[]", help="JSON list of positional arguments.")
@click.option("--kwargs", "kwargs_json", default="{}", help="JSON object of keyword arguments.")
@click.option("--queue", help="Queue of the fired jobs (default: the task's declared queue).")
@click.option(
    "--missed",
    type=click.Choice(["skip", "once"]),
    default="skip",
    show_default=True,
    help="Ticks missed while no master ran: skip them, or run once.",
)
@click.option("--force", is_flag=True, help="Add it even if no live worker has the task.")
@common
def periodic_add(
    name: str,
    task: str,
    cron: str | None,
    every: float | None,
    args_json: str,
    kwargs_json: str,
    queue: str | None,
    missed: str,
    force: bool,
    url: str | None,
    prefix: str | None,
) -> None:
    """Add (or replace) periodic job NAME running TASK (its fired jobs take the queue, retries
    and priority its workers declared)."""
    from .periodic import PeriodicSpec
    from .registry import gone_ms, require_live

    args, kwargs = _json_args(args_json, kwargs_json)
    spec = PeriodicSpec(name, task, cron, every, args, kwargs, queue or "default", missed)
    app = _app(url, prefix)
    declared = require_live(app.store, task, gone_ms(app.settings), force)
    spec = replace(
        spec, queue=queue or declared.queue, retries=declared.retries, priority=declared.priority
    )
    app.store.upsert_periodic(spec)
    click.echo(f"periodic {name} added")


@periodic.command("remove")
@click.argument("name")
@click.option(
    "--force", is_flag=True, help="Remove one defined in code too (it returns on the next start)."
)
@common
def periodic_remove(name: str, force: bool, url: str | None, prefix: str | None) -> None:
    """Remove periodic job NAME (one added at run time; one defined in code only with --force)."""
    store = _app(url, prefix).store
    spec = next((s for s, _due in store.list_periodic() if s.name == name), None)
    why = spec.removal_refused() if spec is not None else None
    if why and not force:
        raise ConfigError(why)
    if not store.remove_periodic(name):
        raise JobNotFound(f"no periodic job named {name!r}")
    if why:
        click.echo(
            f"warning: periodic {name} is defined in code (@app.periodic): removed for now, it "
            "returns when the next worker starts; remove it from the code to drop it for good",
            err=True,
        )
    click.echo(f"periodic {name} removed")


def submit_file(
    app: Any, task: str, file: Any, options: dict[str, Any], wait: bool, timeout: float | None
) -> int:
    """`jobq submit TASK --batch FILE`: one job per line (a JSON list of arguments, or one
    value), all in one round trip; prints the ids, then follows them if asked."""
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    for n, line in enumerate(file, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise click.BadParameter(f"line {n}: not valid JSON: {exc}") from exc
        calls.append((tuple(item), {}) if isinstance(item, list) else ((item,), {}))
    jobs = app.submit_many(task, calls, **options)
    for j in jobs:
        click.echo(j.id)
    return _follow(app, [j.id for j in jobs], timeout) if wait else 0


@main.command("wait")
@click.argument("job_ids", nargs=-1, required=True)
@click.option("--timeout", type=float, default=None, help="Seconds to wait in all.")
@common
def wait_cmd(
    job_ids: tuple[str, ...], timeout: float | None, url: str | None, prefix: str | None
) -> None:
    """Wait for jobs with a progress bar; print a summary (exit 1 if any failed)."""
    sys.exit(_follow(_app(url, prefix), list(job_ids), timeout))


def _follow(app: Any, ids: list[str], timeout: float | None) -> int:
    deadline = None if timeout is None else time.monotonic() + timeout
    states: Counter[str] = Counter()
    with click.progressbar(ids, label="waiting", show_pos=True, file=sys.stderr) as bar:
        for job_id in bar:
            left = None if deadline is None else max(deadline - time.monotonic(), 0.001)
            try:
                app.job(job_id).result(timeout=left)
                states["succeeded"] += 1
            except JobFailed:
                states["failed"] += 1
            except JobCancelled:
                states["cancelled"] += 1
            except ResultTimeout:
                states["unfinished"] += 1
            except JobNotFound:
                states["not found"] += 1
    click.echo(", ".join(f"{n} {s}" for s, n in sorted(states.items())))
    return 0 if states["succeeded"] == len(ids) else 1


@main.command()
@click.argument("queue")
@click.option("--yes", is_flag=True, help="Don't ask for confirmation.")
@common
def purge(queue: str, yes: bool, url: str | None, prefix: str | None) -> None:
    """Cancel every queued job of QUEUE."""
    app = _app(url, prefix)
    depth = next((q.queued for q in app.queue_info() if q.name == queue), 0)
    if not yes:
        click.confirm(f"cancel {depth} queued job(s) of {queue!r}?", abort=True)
    click.echo(f"cancelled {app.store.purge(queue)} job(s)")


def _json_args(args_json: str, kwargs_json: str) -> tuple[list[Any], dict[str, Any]]:
    try:
        args, kwargs = json.loads(args_json), json.loads(kwargs_json)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}") from exc
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise click.BadParameter("--args must be a JSON list and --kwargs a JSON object")
    return args, kwargs
