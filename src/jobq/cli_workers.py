"""`jobq workers`: the workers the broker knows, alive or gone (the same listing as
``GET /v1/workers`` and the dashboard, read by `Reads.list_workers`)."""

from __future__ import annotations

import json

import click

from .cli_base import _app, common, main
from .model import WorkerInfo
from .presenters import EMPTY


def _ago(ms: int) -> str:
    s = ms / 1000
    if s < 90:
        return f"{s:.0f} s ago"
    if s < 5400:
        return f"{s / 60:.0f} min ago"
    return f"{s / 3600:.0f} h ago"


def worker_row(w: WorkerInfo) -> dict[str, object]:
    """One worker as `--json` prints it (the fields of ``GET /v1/workers``)."""
    return {
        "name": w.name,
        "state": "alive" if w.alive else "gone",
        "alive": w.alive,
        "last_seen_ms": w.last_seen_ms,
        "seen_ago_s": round(w.seen_ago_ms / 1000, 3),
        "info": w.info,
        "jobs": w.jobs,
    }


@main.command("workers")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per worker.")
@click.option("--limit", type=click.IntRange(1, 1000), default=200, show_default=True)
@common
def workers_cmd(as_json: bool, limit: int, url: str | None, prefix: str | None) -> None:
    """Workers, newest first: alive, or gone (not seen for 3 heartbeat intervals; listed for
    15 minutes after)."""
    rows = _app(url, prefix).store.list_workers(limit)
    if as_json:
        for w in rows:
            click.echo(json.dumps(worker_row(w)))
        return
    if not rows:
        click.echo(EMPTY["workers"], err=True)
        return
    for w in rows:
        state = "alive" if w.alive else "gone"
        pool = f"{w.info.get('pool', '?')} x{w.info.get('concurrency', '?')}"
        where = f"{w.info.get('host', '?')}:{w.info.get('pid', '?')}"
        click.echo(
            f"{w.name:<28} {state:<5} seen {_ago(w.seen_ago_ms):<10} {where:<24} "
            f"{pool:<12} queues {w.info.get('queues', '')}  running {len(w.jobs)}"
        )
