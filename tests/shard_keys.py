"""Raw keys of a deployment split into partitions, for tests that look under the API.

A partitioned deployment holds each job, queue share, stream and counter in one partition's
slot (keys.py `Keys.partition`), so a test that reads or pokes a key goes through the shard that
holds it: the job's (`job_shard`), a routing key's (`key_shard`), or every shard added up
(`total`, `all_events`). With one partition every helper is the plain key of the one shard, so
the same test reads the same thing on every layout.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from jobq import App
from jobq.keys import Keys
from jobq.shard import Shard


def job_shard(app: App, job_id: str) -> Shard:
    """The shard holding `job_id` (its client is `.r`, its key names `.keys`)."""
    return app.store.shard_of(job_id)


def key_shard(app: App, routing_key: str) -> Shard:
    """The shard of a concurrency or unique key (where its counter and its jobs live)."""
    store = app.store
    return store.shards[store.layout.of_key(routing_key)]


def job_exists(app: App, job_id: str) -> bool:
    """Whether any partition holds a hash for `job_id` (a refused submit wrote none)."""
    return any(s.r.exists(s.keys.job(job_id)) for s in app.store.shards)


def total(app: App, command: str, key: Callable[[Keys], str], *args: Any) -> int:
    """`command` on the key `key(keys)` of every shard, the integer replies added up."""
    return sum(int(getattr(s.r, command)(key(s.keys), *args) or 0) for s in app.store.shards)


def hash_total(app: App, key: Callable[[Keys], str]) -> dict[str, int]:
    """A counter hash (stats) of every shard, field by field added up."""
    out: dict[str, int] = {}
    for s in app.store.shards:
        for field, value in s.r.hgetall(key(s.keys)).items():
            name = field.decode()
            out[name] = out.get(name, 0) + int(value)
    return out


def all_events(app: App) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """Every partition's event stream, partition by partition (oldest first within each)."""
    out: list[tuple[bytes, dict[bytes, bytes]]] = []
    for s in app.store.shards:
        out.extend(s.r.xrange(s.keys.events))
    return out


def job_events(app: App, job_id: str) -> list[dict[bytes, bytes]]:
    """The events of one job (they are all in its partition's stream), oldest first."""
    s = job_shard(app, job_id)
    return [f for _id, f in s.r.xrange(s.keys.events) if f.get(b"job") == job_id.encode()]


def ids_in_partition(app: App, part: int, n: int) -> list[str]:
    """`n` fresh job ids whose home is partition `part` (jobs without a routing key submitted
    under them land there), for a test whose jobs must share one partition's slot."""
    layout, stem = app.store.layout, uuid.uuid4().hex[:8]
    ids = (f"{stem}-{k}" for k in range(100 * n * layout.count))
    return [i for i in ids if layout.home(i) == part][:n]
