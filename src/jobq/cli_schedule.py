"""`jobq periodic | wait | purge`: the scheduling side of the CLI (what they do is in
operations.py)."""

from __future__ import annotations

import sys

import click

from . import operations as ops
from . import presenters as present
from .cli_base import _app, common, main
from .errors import UsageProblem


@main.group()
def periodic() -> None:
    """Periodic jobs: list, add or remove at run time."""


@periodic.command("list")
@common
def periodic_list(url: str | None, prefix: str | None) -> None:
    """Every periodic job and when it next fires."""
    listed = ops.periodic_list(_app(url, prefix))
    if not listed:
        click.echo(present.EMPTY["periodic"], err=True)
    for spec, due in listed:
        click.echo(present.periodic_line(spec, due))


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

    args, kwargs = ops.json_args(args_json, kwargs_json)
    spec = PeriodicSpec(name, task, cron, every, args, kwargs, queue or "default", missed)
    ops.add_periodic(_app(url, prefix), spec, queue_given=queue is not None, force=force)
    click.echo(f"periodic {name} added")


@periodic.command("remove")
@click.argument("name")
@click.option(
    "--force", is_flag=True, help="Remove one defined in code too (it returns on the next start)."
)
@common
def periodic_remove(name: str, force: bool, url: str | None, prefix: str | None) -> None:
    """Remove periodic job NAME (one added at run time; one defined in code only with --force)."""
    if ops.remove_periodic(_app(url, prefix), name, force=force):
        click.echo(
            f"warning: periodic {name} is defined in code (@app.periodic): removed for now, it "
            "returns when the next worker starts; remove it from the code to drop it for good",
            err=True,
        )
    click.echo(f"periodic {name} removed")


@main.command("wait")
@click.argument("job_ids", nargs=-1, required=True)
@click.option("--timeout", type=float, default=None, help="Seconds to wait in all.")
@common
def wait_cmd(
    job_ids: tuple[str, ...], timeout: float | None, url: str | None, prefix: str | None
) -> None:
    """Wait for jobs (`-` reads ids from stdin, whitespace-separated) with a progress bar;
    print a summary. Exit 0 if all succeeded, else 1 if any failed or was cancelled, 4 if an
    id is unknown, 5 if any was unfinished when --timeout ran out."""
    app = _app(url, prefix)
    ids = ops.ids_from(job_ids, sys.stdin)
    if not ids:
        raise UsageProblem("wait: no job ids (none given, or none read from stdin)")
    with click.progressbar(length=len(ids), label="waiting", show_pos=True, file=sys.stderr) as bar:
        done = ops.follow(app, ids, timeout, lambda _o: bar.update(1))
    for o in done.outcomes:
        if o.state == "not found":
            click.echo(f"error: no job {o.job_id}", err=True)
    click.echo(present.summary(done.counts()))
    sys.exit(done.exit_code())


@main.command()
@click.argument("queue")
@click.option("--yes", is_flag=True, help="Don't ask for confirmation.")
@common
def purge(queue: str, yes: bool, url: str | None, prefix: str | None) -> None:
    """Cancel every queued job of QUEUE."""

    def confirm(depth: int) -> None:
        if not yes:
            click.confirm(f"cancel {depth} queued job(s) of {queue!r}?", abort=True)

    click.echo(f"cancelled {ops.purge_queue(_app(url, prefix), queue, confirm)} job(s)")
