"""How a deployment is split into partitions, and which partition holds which job.

A partition is one Cluster hash tag, so one slot: every key of a partition shares its tag and
every script runs inside one partition (keys.py). Spreading partitions over a Cluster's
primaries is what lets one queue use every primary: each partition holds a share of every
queue. On one server all partitions live on that server; one partition (the default there) is
the layout jobq always had.

The layout (how many partitions, their tags) is chosen once, by the first process of a
deployment, and stored in the control partition as JSON (``{<prefix>}:layout``); every later
process reads it, so all agree on where a job lives. A process asking for another partition
count than the stored one is told so and follows the stored layout: reading a deployment with
the wrong layout would silently miss its jobs.

Placement (`Layout.place`): the concurrency key if the job has one, else its unique key, else
its job id, hashed (CRC-32) over the partitions, so the jobs of one key share a slot and the
per-key guarantees (at most N running, one pending job per unique key) stay single-slot
script checks. Periodic jobs go to partition 0, where the leader lease that fences their firing
lives. A job id's *home* is the hash of the id itself: lookups by id go there first.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import redis

from .errors import JobqError
from .keys import Keys
from .model import JobSpec

log = logging.getLogger("jobq.layout")

#: Version of the stored layout record; a record of another version is refused.
LAYOUT_VERSION = 1
#: Separator between the prefix and a partition's number in its tag. The name rule forbids
#: '/' in prefixes, so no other deployment's prefix can ever equal one of our tags.
TAG_SEPARATOR = "/"
#: Periodic job ids (``periodic:<name>:<due>``) always live in partition 0.
PERIODIC_PREFIX = "periodic:"
#: Most partitions a deployment may have (each is one slot and one blocking read per worker).
MAX_PARTITIONS = 256


class LayoutMismatch(JobqError):
    """The stored layout cannot be used as asked (another version, a malformed record)."""


class NotMigrated(LayoutMismatch):
    """A layout of several partitions was asked for a deployment that already holds jobs in
    its one partition (made before layouts existed, or by a process that never stored one):
    creating it would move where unique and concurrency keys are checked under the pending
    jobs' feet. `jobq migrate --partitions N` does it knowingly (cli_migrate.py)."""


#: Control-partition keys that exist while the partition holds any job: queued (the queue
#: registry), scheduled, running (leases), dead-lettered, finished with its result kept.
#: A job waiting on parents is registered through its parent, which is in one of these.
JOB_INDEXES = ("queues", "scheduled", "leases", "dead", "finished")


def holds_jobs(client: Any, keys: Keys) -> bool:
    """Whether the partition of `keys` holds jobs: one EXISTS over its indexes (one slot, so
    fine on a Cluster), never a SCAN."""
    names = [getattr(keys, name) for name in JOB_INDEXES]
    return bool(client.exists(*names))


def not_migrated(prefix: str, n: int) -> NotMigrated:
    """The refusal to lay `n` partitions over a one-partition deployment holding jobs, with
    both ways out."""
    return NotMigrated(
        f"prefix {prefix!r} is a deployment of one partition that holds jobs (keys "
        f"{Keys(prefix).base}...) and has no layout record; asked for {n} partitions. Either "
        f"run `jobq migrate --partitions {n}` with every worker and master stopped (it keeps "
        "the jobs where they are, to drain as usual, and spreads new jobs over the "
        f"{n} partitions; see docs/cluster.md), or keep one partition: leave `partitions` "
        "(JOBQ_PARTITIONS, ?partitions=) unset on one server, set it to 1 on a Cluster"
    )


def partition_tag(prefix: str, index: int, salt: int = 0) -> str:
    """The hash tag of partition `index` (`salt` varies it, to land on a chosen Cluster
    node); partition 0's is the prefix itself."""
    if index == 0:
        return prefix
    tag = f"{prefix}{TAG_SEPARATOR}{index}"
    return f"{tag}.{salt}" if salt else tag


def _crc(text: str) -> int:
    return zlib.crc32(text.encode("utf-8", "surrogatepass"))


@dataclass(frozen=True, slots=True)
class Layout:
    """The partitions of one deployment: `tags[i]` is partition i's hash tag."""

    prefix: str
    tags: tuple[str, ...]

    @classmethod
    def single(cls, prefix: str) -> Layout:
        """One partition: the whole deployment in one slot."""
        return cls(prefix, (prefix,))

    @classmethod
    def even(cls, prefix: str, n: int) -> Layout:
        """`n` partitions with plain tags (one server: where the slots fall does not matter)."""
        return cls(prefix, tuple(partition_tag(prefix, i) for i in range(n)))

    @property
    def count(self) -> int:
        return len(self.tags)

    def keys(self, index: int) -> Keys:
        return Keys(self.prefix).partition(self.tags[index])

    def home(self, job_id: str) -> int:
        """The partition a lookup of `job_id` tries first."""
        if self.count == 1 or job_id.startswith(PERIODIC_PREFIX):
            return 0
        return _crc(job_id) % self.count

    def of_key(self, key: str) -> int:
        """The partition of a routing key (a concurrency or unique key)."""
        return 0 if self.count == 1 else _crc(key) % self.count

    def place(
        self,
        spec: JobSpec,
        near: Callable[[str], int | None] | None = None,
        spread: Mapping[str, int] | None = None,
    ) -> int:
        """The partition `spec` is created in (see the module docstring). Without a routing
        key, a job with parents goes where its first parent is (`near`, if it knows), so a
        chain stays in one slot and needs no hand-off; a job of a queue that `spread` limits
        to k partitions goes to one of k (consecutive from the queue's own hash): k = 1 keeps
        a queue's priorities and FIFO order exact. Jobs with a routing key always go by key,
        so a per-key guarantee never depends on every producer agreeing on `spread`."""
        if self.count == 1 or spec.id.startswith(PERIODIC_PREFIX):
            return 0
        if spec.concurrency_key:
            return self.of_key(spec.concurrency_key)
        if spec.unique_key:
            return self.of_key(spec.unique_key)
        if spec.parents and near is not None:
            where = near(spec.parents[0])
            if where is not None:
                return where
        k = spread.get(spec.queue) if spread else None
        if k is not None and 0 < k < self.count:
            return (_crc(spec.queue) + _crc(spec.id) % k) % self.count
        return self.home(spec.id)

    def to_json(self) -> bytes:
        return orjson.dumps({"version": LAYOUT_VERSION, "prefix": self.prefix, "tags": self.tags})

    @classmethod
    def from_json(cls, raw: bytes, prefix: str) -> Layout:
        try:
            rec: Any = orjson.loads(raw)
            version, tags = rec["version"], rec["tags"]
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise LayoutMismatch(
                f"the layout record {Keys(prefix).layout} is not jobq's ({exc}); if nothing "
                "else uses this prefix, delete that key and start again"
            ) from exc
        if version != LAYOUT_VERSION:
            raise LayoutMismatch(
                f"the layout record {Keys(prefix).layout} is of version {version!r}; this jobq "
                f"reads version {LAYOUT_VERSION}: run the jobq version that made it"
            )
        if (
            not isinstance(tags, list)
            or not tags
            or tags[0] != prefix
            or not all(isinstance(t, str) for t in tags)
        ):
            raise LayoutMismatch(f"the layout record {Keys(prefix).layout} lists no valid tags")
        return cls(prefix, tuple(tags))


def load_or_create(
    control: Any,
    prefix: str,
    want: int | None,
    choose: Callable[[int], Sequence[str]],
    default: int = 1,
) -> Layout:
    """The deployment's layout, read from the control partition (`control`: a redis-py client
    whose commands reach it), or created there: `want` partitions (`default` when None) with
    the tags `choose(n)` picks. Two processes creating at once: the first write wins (SET NX)
    and both use it. A stored layout always wins over `want` (logged when they differ).

    No record but jobs in the control partition means a deployment of one partition (the
    default, which writes no record) in use: several partitions are then refused
    (`NotMigrated`), since placing jobs by a hash over N partitions would check unique and
    concurrency keys elsewhere than where the pending jobs holding them are."""
    key = Keys(prefix).layout
    raw = control.get(key)
    if raw is None:
        if want is None and default == 1:
            # One partition, not asked for: what a deployment without a record has always
            # been. Nothing is written (a reader leaves no trace); a later process asking for
            # more partitions creates the record (layout changes: `jobq migrate`).
            return Layout.single(prefix)
        n = default if want is None else want
        if not 1 <= n <= MAX_PARTITIONS:
            raise LayoutMismatch(f"partitions must be between 1 and {MAX_PARTITIONS}, got {n}")
        if n > 1 and holds_jobs(control, Keys(prefix)):
            raise not_migrated(prefix, n)
        tags = tuple(choose(n))
        created = Layout(prefix, tags)
        try:
            stored = control.set(key, created.to_json(), nx=True)
        except redis.exceptions.NoPermissionError:
            # A role user (acl.py) may not write it: the master does when it starts. One
            # partition is what a deployment without a layout record has always been.
            log.debug("layout record %s absent and not writable here: %r", key, created)
            return created
        if stored:
            if n > 1:
                log.info("created a layout of %d partitions for prefix %r", n, prefix)
            return created
        raw = control.get(key)
        if raw is None:  # deleted in between: nobody else can be using it
            return created
    layout = Layout.from_json(raw, prefix)
    if want is not None and want != layout.count:
        log.warning(
            "prefix %r already has %d partition(s); asked for %d: using the stored layout (a "
            "deployment's partition count is fixed when it is created; `jobq migrate "
            "--partitions %d` raises it while no worker or master runs)",
            prefix,
            layout.count,
            want,
            want,
        )
    return layout
