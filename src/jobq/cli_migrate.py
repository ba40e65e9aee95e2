"""`jobq migrate --partitions N`: give an existing deployment more partitions.

A deployment's layout (layout.py) is fixed when it is first used, and a process asking for
several partitions where one partition already holds jobs is refused (`layout.NotMigrated`),
because placement would silently change under the pending jobs. This command makes that
change knowingly, while nothing runs:

- partition 0 keeps its tag, so every job already there stays where it is and drains as usual
  (claims rotate over every partition; lookups by id try every partition); the partitions
  that already exist keep theirs too; new partitions are appended (on a Cluster, with tags
  whose slots are spread over the primaries, `cluster.tag_on_each_primary`);
- new jobs are placed over all N partitions. A unique or concurrency key is checked in the
  partition its key hashes to: a job already pending in partition 0 keeps its guarantee only
  inside partition 0 until it finishes (the command says so before asking);
- the per-task rate limits already published are shared out again (limit/N per partition).

It refuses while a worker or a master is alive (their presence is in the control partition:
they would keep placing and claiming by the old layout), when asked for fewer partitions (the
jobs of the dropped ones would be orphaned), and when a new partition's keys already hold
jobs. The record is replaced in a transaction that watches it and the presence keys (and
checks presence again under the watch), so a process creating or migrating the layout, or a
worker or master starting, at the same moment makes this command fail instead of writing.
"""

from __future__ import annotations

import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click
import redis

from .cli_base import _app, common, main
from .cluster_url import is_cluster
from .errors import JobqError
from .faults import RAISED, translate
from .keys import Keys
from .layout import MAX_PARTITIONS, TAG_SEPARATOR, Layout, holds_jobs, partition_tag
from .shard import Shard, connect, redact, refuse_cluster_node
from .store import Store


class MigrationRefused(JobqError):
    """`jobq migrate` cannot change the layout now; the message says what to do first."""


@dataclass
class Plan:
    """What a migration would do: the layout now, the one it writes, what the old one held."""

    url: str
    prefix: str
    current: Layout
    recorded: bool  # a layout record exists (else: one partition, the default)
    raw: bytes | None  # the record as read: the write happens only if it is still this
    target: Layout
    nodes: list[str]  # where each partition of `target` lives (Cluster) or ""
    held: dict[str, int]  # jobs per state in the current partitions

    @property
    def unchanged(self) -> bool:
        return self.target.count == self.current.count

    def describe(self) -> str:
        cur, new = self.current.count, self.target.count
        lines = [
            f"deployment {self.prefix!r} at {redact(self.url)}: "
            f"{cur} partition{'s' if cur > 1 else ''}"
            + ("" if self.recorded else " (no layout record)")
            + f" -> {new} partitions",
        ]
        for i, tag in enumerate(self.target.tags):
            where = f"  on {self.nodes[i]}" if self.nodes[i] else ""
            state = "stays" if i < cur else "new"
            lines.append(f"  partition {i:<3} {{{tag}}}  {state}{where}")
        jobs = ", ".join(f"{n} {s}" for s, n in self.held.items() if n) or "no jobs"
        lines += [
            f"now held: {jobs}",
            "what changes:",
            f"  - jobs already queued, scheduled or running stay in their partition and drain "
            f"as usual; new jobs are spread over all {new} partitions",
            "  - unique and concurrency keys are checked in the partition their key hashes to: "
            "a pending job holding one keeps its guarantee only inside its partition until it "
            "finishes (meanwhile a new job with the same unique key may be created elsewhere, "
            "and one concurrency key may run up to twice its limit)",
            f"  - each partition enforces 1/{new} of every per-task rate limit",
            "  - restart producers (web apps, scripts) too: one that read the old layout keeps "
            "placing jobs by it",
        ]
        return "\n".join(
            textwrap.fill(line, 96, subsequent_indent="      ") if line.startswith("  - ") else line
            for line in lines
        )


def _clients(url: str, prefix: str) -> tuple[Any, Callable[[str], Any] | None]:
    """The control partition's client, and how to reach any other partition's slot."""
    if is_cluster(url):
        return connect(url, prefix), lambda tag: connect(url, tag)
    control = connect(url)
    refuse_cluster_node(control, url)
    return control, None


def _new_tags(url: str, current: Layout, n: int) -> tuple[list[str], list[str]]:
    """Tags for partitions current.count..n-1 (none taken yet), and the node of every
    partition of the result ('' on one server)."""
    prefix = current.prefix
    taken = set(current.tags)
    if not is_cluster(url):
        tags: list[str] = []
        i = 1
        while len(tags) < n - current.count:
            tag = partition_tag(prefix, i)
            if tag not in taken:
                tags.append(tag)
                taken.add(tag)
            i += 1
        return tags, [""] * n
    from .cluster import map_for, slot_of, tag_on_each_primary

    cmap = map_for(url)
    cmap.ensure()
    owners = cmap.slots()
    wanted = tag_on_each_primary(cmap, prefix, n)
    tags = []
    for tag in wanted[current.count :]:
        if tag in taken:  # the map moved since the current tags were chosen: same node, new tag
            owner, j = owners[slot_of(tag)], 1
            while (t := f"{prefix}{TAG_SEPARATOR}{j}") in taken or owners[slot_of(t)] != owner:
                j += 1
            tag = t
        tags.append(tag)
        taken.add(tag)
    nodes = []
    for tag in (*current.tags, *tags):
        owner = owners[slot_of(tag)]
        nodes.append(f"{owner[0]}:{owner[1]}" if owner else "?")
    return tags, nodes


def _held(store: Store) -> dict[str, int]:
    out = {"queued": 0, "scheduled": 0, "running": 0}
    for q in store.queues():
        out["queued"] += q.queued
        out["scheduled"] += q.scheduled
        out["running"] += q.running
    out["dead-lettered"] = store.dead_count()
    return out


def _refuse_if_running(store: Store) -> None:
    # (an entry not yet expired counts too: a worker whose heartbeats stall may still run jobs)
    alive = [w for w in store.list_workers() if w.alive or w.info]
    master = store.master_alive()
    leader = store.leader_holder()
    if not (alive or master or leader):
        return
    now_ms = time.time() * 1000
    found = [
        f"worker {w.name} (seen {max(now_ms - w.last_seen_ms, 0) / 1000:.0f} s ago)" for w in alive
    ]
    if master:
        found.append("a master")
    if leader and not found:
        found.append(f"the maintenance leader {leader}")
    raise MigrationRefused(
        f"{', '.join(found)} {'is' if len(found) == 1 else 'are'} alive on this deployment: "
        "stop every worker and master first (SIGTERM: workers finish or requeue their jobs), "
        "then run this again; a process killed hard stays registered until its presence "
        "expires (a worker: 3 leases, 90 s by default; a master or leader: one leader lease)"
    )


def plan_migration(url: str, keys: Keys, n: int) -> tuple[Plan, Store]:
    """Read the deployment and check the migration may run (`MigrationRefused` if not);
    the store (over the current layout) is the caller's to close."""
    prefix = keys.prefix
    try:
        control, client_for = _clients(url, prefix)
        raw = control.get(keys.layout)
    except RAISED as exc:
        raise translate(exc, redact(url), "reading the partition layout") from exc
    current = Layout.from_json(raw, prefix) if raw is not None else Layout.single(prefix)
    store = Store(control, url, keys, layout=current, client_for=client_for)
    try:
        if n < current.count:
            raise MigrationRefused(
                f"prefix {prefix!r} has {current.count} partitions; fewer ({n}) would orphan "
                "the jobs of the partitions dropped: a deployment's partition count only grows "
                "(to start over with fewer, drain it and use a new prefix)"
            )
        _refuse_if_running(store)
        held = _held(store)
        if n == current.count:
            return Plan(url, prefix, current, raw is not None, raw, current, [""] * n, held), store
        with store.broker("choosing the new partitions"):
            tags, nodes = _new_tags(url, current, n)
            for tag in tags:
                client = control if client_for is None else client_for(tag)
                try:
                    if holds_jobs(client, keys.partition(tag)):
                        raise MigrationRefused(
                            f"the keys of new partition {{{tag}}} already hold jobs (left by "
                            "an earlier layout of this prefix?): remove them, or use a new prefix"
                        )
                finally:
                    if client is not control:
                        client.close()
        target = Layout(prefix, (*current.tags, *tags))
        return Plan(url, prefix, current, raw is not None, raw, target, nodes, held), store
    except BaseException:
        store.close()
        raise


def apply_migration(plan: Plan, store: Store) -> None:
    """Write the new layout if the record is still the one read and no worker, master or
    leader showed up since the check (WATCH on the record and on the presence keys, checked
    again under it), then publish the rate limits shared out over the new partition count."""
    control = store.r
    keys = Keys(plan.prefix)
    changed = MigrationRefused(
        "the layout record, or the presence of a worker or master, changed while this command "
        "ran: run `jobq migrate` again to see it"
    )
    with store.broker("writing the layout"), control.pipeline(transaction=True) as pipe:
        try:
            pipe.watch(keys.layout, keys.workers, keys.master, keys.leader)
            _refuse_if_running(store)
            if pipe.get(keys.layout) != plan.raw:
                raise changed
            pipe.multi()
            pipe.set(keys.layout, plan.target.to_json())
            pipe.execute()
        except redis.WatchError:
            raise changed from None
    limits = _unscaled_rate_limits(store, plan.current.count)
    if limits:
        _publish_rate_limits(store, plan, limits)


def _publish_rate_limits(store: Store, plan: Plan, limits: dict[str, str]) -> None:
    """Every partition of the new layout gets its share (limit/N): the current ones through
    the store's shards, the new ones through shards of their own, closed after."""
    n = plan.target.count
    scaled = {
        task: f"{c}:{int(p) * n}"
        for task, (c, _, p) in ((t, v.partition(":")) for t, v in limits.items())
    }
    for shard in store.shards:
        shard.set_rate_limits(scaled)
    keys = Keys(plan.prefix)
    for tag in plan.target.tags[plan.current.count :]:
        client = connect(plan.url, tag) if is_cluster(plan.url) else connect(plan.url)
        shard = Shard(client, plan.url, keys.partition(tag))
        try:
            shard.set_rate_limits(scaled)
        finally:
            shard.close()


def _unscaled_rate_limits(store: Store, count: int) -> dict[str, str]:
    """The rate limits as workers published them ("N:period ms"), from partition 0's share
    (each of `count` partitions holds the period times `count`)."""
    with store.broker("reading rate limits"):
        raw: dict[bytes, bytes] = store.r.hgetall(store.keys.ratelimits)
    out = {}
    for task, spec in raw.items():
        n, _, period = spec.decode().partition(":")
        if period.isdigit() and int(period) % count == 0:
            out[task.decode()] = f"{n}:{int(period) // count}"
    return out


@main.command()
@click.option(
    "--partitions",
    "n",
    required=True,
    type=click.IntRange(1, MAX_PARTITIONS),
    help="How many partitions the deployment has after the migration (only grows).",
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@common
def migrate(n: int, yes: bool, url: str | None, prefix: str | None) -> None:
    """Give an existing deployment N partitions (every worker and master stopped): its jobs
    stay where they are and drain as usual, new jobs spread over the N partitions."""
    app = _app(url, prefix)
    plan, store = plan_migration(app.url, app.keys, n)
    try:
        if plan.unchanged:
            click.echo(f"prefix {plan.prefix!r} already has {n} partition(s): nothing to do")
            return
        click.echo(plan.describe())
        if not yes:
            click.confirm(f"write the layout of {n} partitions?", abort=True)
        apply_migration(plan, store)
        click.echo(f"prefix {plan.prefix!r} now has {n} partition(s); start the workers again")
    finally:
        store.close()
