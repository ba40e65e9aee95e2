"""Dependencies across partitions: a durable hand-off between slots, applied exactly once.

A job's partition is chosen at submit (layout.py); its parents may live in other partitions,
and no script may touch another partition's keys (on a Cluster that is CROSSSLOT). So a
dependency that crosses partitions travels in four steps, each one atomic script in one slot:

1. **link** (parent's partition, `submit` below): the child is registered on each remote
   parent (``xkids:<parent>``), or, when the parent already finished, link says how (and hands
   back its result when the child takes results). A missing parent is refused (JobNotFound)
   before anything is written in the child's partition, and `submit` checks every parent
   outside the batch exists before its first write anywhere.
2. **enqueue** (child's partition): the child lists its remote parents with link's answers;
   those still pending count as waiting, those already finished apply at once (a success is
   recorded with its result, a failure or cancel fails the child ``DependencyFailed``).
3. **settle** (parent's partition, in the script that finishes the parent: complete, fail,
   cancel, reap, purge, orphans, a malformed claim): one hand-off record per remote child is
   appended to the partition's ``outbox`` stream, in the same script, so the record exists
   exactly when the outcome does (a failover keeps both or loses both).
4. **deliver** (child's partition, `deliver_pending` below): each record is applied by
   deliver.lua, then deleted from the outbox (XDEL of its entry id). The child records each
   parent's outcome in its own hash (field ``x:<parent>``), so a second delivery of the same
   record (a crash between deliver and XDEL, two deliverers racing, a failover that lost the
   XDEL) changes nothing: sending is at least once, applying exactly once. A record that
   arrives before its child exists (the parent finished between link and enqueue) is kept in
   ``dlv:<child>`` for `KEEP_S` and applied by the child's enqueue.

A failover of the child's primary could lose a delivery the replica had not received yet,
after its record was deleted: the child would wait forever. So a record is deleted only once
its delivery is known to survive one. When the child's store waits for replicas or the AOF
(`wait_replicas`, `durable`) the delivery is followed by that wait and the record deleted once
it confirms. Otherwise the record moves (one MULTI: XADD, XDEL) to the partition's ``handed``
stream, and the maintenance sweep delivers it a second time once it is `GRACE_MS` old, then
deletes it: the repeat is a no-op if the first delivery survived, and re-applies it on the new
primary if a failover lost it (replication lags milliseconds, a failover takes seconds; a
second delivery that fails waits for the next sweep).

A failed or cancelled parent fails the child and cascades to the child's own dependents:
local ones in the same script, remote ones through the child partition's outbox. Claim
passes a remote parent's result from the child's hash, a local one's from the parent's hash
as before. Dependencies inside one partition keep the direct path (no hand-off).

Who delivers: whoever settled a job with remote children (`deliver_from` right after its call:
one XRANGE when the outbox is empty), and the maintenance tick over every partition
(`deliver_pending`), which also picks up whatever a crashed deliverer left.

Why the outcome lives in the child's hash rather than a separate per-child record: it expires,
is trimmed and deleted with the child (result TTL, dead-letter retention, purge) with no key
of its own to clean up, and claim reads it from the hash it already reads.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from .codes import Deliver
from .errors import BrokerError, DependencyCycle, JobNotFound, JobqError
from .model import JobSpec, RemoteParent
from .shard import Shard as Store

log = logging.getLogger("jobq.handoff")

#: How long a hand-off that arrived before its child waits for the child's enqueue (seconds):
#: far longer than a submit between its link and its enqueue can take (a failover ride-out
#: included); only a submitter that died in between leaves one to expire.
KEEP_S = 86_400
#: Outbox records read (and delivered) per round trip.
DELIVER_BATCH = 500
#: Rounds per partition per `deliver_pending` call, so one call stays bounded.
MAX_ROUNDS = 20
#: How old a record delivered to a partition that confirms no replica must be before its
#: second delivery (ms): far longer than replication lags, so the second delivery reaches
#: whichever node holds the partition once a failover that lost the first is over.
GRACE_MS = 30_000

#: Finds the partition of a job outside the batch (the layout's home of an id); None: unknown.
Locate = Callable[[str], int | None]


@dataclass(frozen=True, slots=True)
class Delivery:
    """What one delivery pass did with the outbox records it read."""

    applied: int = 0
    """Records that changed their child (queued it, failed it, or recorded a result)."""
    duplicates: int = 0
    """Records delivered before (a repeat): nothing done, record deleted."""
    kept: int = 0
    """Records for a child not enqueued yet, kept in its partition for its enqueue."""
    ignored: int = 0
    """Records whose child does not depend on that parent (or is not a job): deleted."""
    left: int = 0
    """Records left in an outbox for a later pass: their partition did not answer, or did not
    confirm the delivery durable."""
    held: int = 0
    """Of the records delivered, those moved to ``handed`` for their second delivery."""

    def __add__(self, other: Delivery) -> Delivery:
        return Delivery(
            self.applied + other.applied,
            self.duplicates + other.duplicates,
            self.kept + other.kept,
            self.ignored + other.ignored,
            self.left + other.left,
            self.held + other.held,
        )

    @property
    def removed(self) -> int:
        """Records delivered (and deleted, or held for their second delivery)."""
        return self.applied + self.duplicates + self.kept + self.ignored


# -- submit -------------------------------------------------------------------------------------


def submit(
    parts: Sequence[Store],
    jobs: Sequence[tuple[int, JobSpec]],
    *,
    locate: Locate | None = None,
    now: int = 0,
    wait_s: float | None = None,
) -> list[str]:
    """Submit `jobs` (partition index, spec), whose parents may be in other partitions; per
    job, the id that now stands for it (its own, or the pending job's holding its unique key).

    Parents in the batch must come before their children (else DependencyCycle, as within one
    partition); those outside it are found with `locate` (checked there first) or by looking
    in every partition, and must exist (else JobNotFound, before anything is written). Jobs go
    in waves: a child is enqueued after every remote parent of the batch is, and after the
    links to its remote parents. Submitting the same batch again is safe (link and enqueue are
    idempotent per id), which is what to do after an error half-way."""
    if not jobs:
        return []
    for part, _spec in jobs:
        if not 0 <= part < len(parts):
            raise ValueError(f"partition {part} does not exist (there are {len(parts)})")
    home = _check_order(jobs)
    outside = {p: s.id for _part, s in jobs for p in reversed(s.parents) if p not in home}
    where = {**_find(parts, outside, locate, wait_s), **home}
    crossing = any(where[p] != part for part, s in jobs for p in s.parents)
    if not crossing:  # no hand-off: each partition's jobs in one submit, as before
        return _by_partition(parts, list(enumerate(jobs)), now, wait_s)
    levels = _levels(jobs, home)
    ids: dict[int, str] = {}
    alias: dict[str, str] = {}  # a job of the batch -> the pending job holding its unique key
    for level in range(max(levels) + 1):
        wave = [(i, part, spec) for i, (part, spec) in enumerate(jobs) if levels[i] == level]
        linked = _link(parts, wave, where, alias, now, wait_s)
        ready = [(i, (part, linked.get(i, spec))) for i, part, spec in wave]
        for i, got in zip(
            [i for i, _ in ready], _by_partition(parts, ready, now, wait_s), strict=True
        ):
            ids[i] = got
            if got != jobs[i][1].id:
                alias[jobs[i][1].id] = got
    return [ids[i] for i in range(len(jobs))]


def _check_order(jobs: Sequence[tuple[int, JobSpec]]) -> dict[str, int]:
    """The partition of each id of the batch; refuses what enqueue.lua would refuse: a job
    depending on itself, or on one submitted after it in the batch (a cycle could close)."""
    later = {s.id for _p, s in jobs}
    seen: dict[str, int] = {}
    for part, spec in jobs:
        for pid in spec.parents:
            if pid == spec.id:
                raise DependencyCycle(f"{spec.id} depends on itself")
            if pid in later and pid not in seen:
                raise DependencyCycle(
                    f"{spec.id} depends on {pid}, submitted after it in the same batch "
                    "(parents must come first)"
                )
        seen.setdefault(spec.id, part)
    return seen


def _find(
    parts: Sequence[Store], wanted: dict[str, str], locate: Locate | None, wait_s: float | None
) -> dict[str, int]:
    """The partition holding each parent of `wanted` (parent id -> a child naming it): the one
    `locate` names, checked first, then every partition in order. Raises JobNotFound for one
    that none holds, as enqueue would (nothing is written)."""
    ids = set(wanted)
    found: dict[str, int] = {}
    hinted: dict[int, list[str]] = {}
    for job_id in sorted(ids):
        hint = locate(job_id) if locate else None
        if hint is not None and 0 <= hint < len(parts):
            hinted.setdefault(hint, []).append(job_id)
    for part, group in hinted.items():
        found.update({j: part for j in _existing(parts[part], group, wait_s)})
    for part, store in enumerate(parts):
        todo = sorted(ids - set(found))
        if not todo:
            break
        found.update({j: part for j in _existing(store, todo, wait_s)})
    missing = sorted(ids - set(found))
    if missing:
        pid = missing[0]
        raise JobNotFound(f"depends_on: {pid}: no such job (parent of {wanted[pid]})")
    return found


def _existing(store: Store, ids: list[str], wait_s: float | None) -> list[str]:
    """Those of `ids` whose job hash exists in `store`'s partition (one round trip, sent
    again through an outage as a submit is)."""

    def attempt() -> list[Any]:
        with store.broker("looking up parent jobs"):
            pipe = store.r.pipeline(transaction=False)
            for job_id in ids:
                pipe.exists(store.keys.job(job_id))
            return list(pipe.execute())

    bound = store.failover_wait_s if wait_s is None else wait_s
    got = store.retrying(attempt, bound, "looking up parent jobs")
    return [j for j, n in zip(ids, got, strict=True) if n]


def _levels(jobs: Sequence[tuple[int, JobSpec]], home: dict[str, int]) -> list[int]:
    """Each job's wave: one more than its latest parent of the batch in another partition
    (that parent must exist before the child links to it), the same as a parent of the batch
    in its own partition (one enqueue call takes both, parent first)."""
    first: dict[str, int] = {}
    levels: list[int] = []
    for i, (part, spec) in enumerate(jobs):
        level = 0
        for pid in spec.parents:
            if pid in first:
                j = first[pid]
                level = max(level, levels[j] + (home[pid] != part))
        levels.append(level)
        first.setdefault(spec.id, i)
    return levels


def _link(
    parts: Sequence[Store],
    wave: list[tuple[int, int, JobSpec]],
    where: dict[str, int],
    alias: dict[str, str],
    now: int,
    wait_s: float | None,
) -> dict[int, JobSpec]:
    """Link the wave's children to their remote parents (one link call per parent partition);
    the specs that changed: parents renamed by `alias`, remote parents with link's answers."""
    calls: dict[int, list[tuple[str, int, str, bool]]] = {}
    for _i, part, spec in wave:
        for pid in dict.fromkeys(spec.parents):
            pp = where[pid]
            if pp != part:
                calls.setdefault(pp, []).append(
                    (alias.get(pid, pid), part, spec.id, bool(spec.pass_results))
                )
    answers: dict[tuple[str, str], RemoteParent] = {}
    for pp, items in calls.items():
        for (parent, _part, child, _pass), (state, result) in zip(
            items, _link_call(parts[pp], items, now, wait_s), strict=True
        ):
            answers[(child, parent)] = RemoteParent(parent, _text(state), bytes(result))
    out: dict[int, JobSpec] = {}
    for i, part, spec in wave:
        parents = tuple(alias.get(p, p) for p in spec.parents)
        remote = tuple(
            answers[(spec.id, alias.get(p, p))]
            for p in dict.fromkeys(spec.parents)
            if where[p] != part
        )
        if remote or parents != spec.parents:
            out[i] = replace(spec, parents=parents, remote_parents=remote)
    return out


def _link_call(
    store: Store, items: list[tuple[str, int, str, bool]], now: int, wait_s: float | None
) -> list[Any]:
    def attempt() -> list[Any]:
        with store.broker("linking dependencies"):
            return list(store.scripts.link(store.r, items, now))

    bound = store.failover_wait_s if wait_s is None else wait_s
    return store.retrying(attempt, bound, "linking dependencies")


def _by_partition(
    parts: Sequence[Store],
    jobs: list[tuple[int, tuple[int, JobSpec]]],
    now: int,
    wait_s: float | None,
) -> list[str]:
    """Submit (index, (partition, spec)) pairs, one submit per partition (batch order kept
    within each); the ids in the order given."""
    groups: dict[int, list[tuple[int, JobSpec]]] = {}
    for i, (part, spec) in jobs:
        groups.setdefault(part, []).append((i, spec))
    got: dict[int, str] = {}
    for part, group in groups.items():
        ids = parts[part].submit_ids([s for _i, s in group], now, wait_s=wait_s)
        got.update(zip([i for i, _s in group], ids, strict=True))
    return [got[i] for i, _ in jobs]


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


# -- delivery -----------------------------------------------------------------------------------


def deliver_pending(
    parts: Sequence[Store],
    limit: int = DELIVER_BATCH,
    sources: Iterable[int] | None = None,
    now: int = 0,
    grace_ms: int | None = GRACE_MS,
) -> Delivery:
    """Deliver the hand-off records waiting in the outboxes of `sources` (default: every
    partition) to their children's partitions, `limit` records per round trip, at most
    `MAX_ROUNDS` rounds per partition; then (unless `grace_ms` is None) deliver again the
    records delivered once at least `grace_ms` ago (``handed``) and delete them. Never raises
    for a partition that does not answer: its records stay for the next pass. The maintenance
    tick calls this every tick, over every partition."""
    total = Delivery()
    for src in range(len(parts)) if sources is None else sources:
        stages = [None] if grace_ms is None else [None, grace_ms]
        for grace in stages:
            for _ in range(MAX_ROUNDS):
                done, read = _deliver_round(parts, src, limit, now, grace)
                total += done
                if read < limit or done.removed == 0:
                    break
    return total


def deliver_from(parts: Sequence[Store], part: int, limit: int = DELIVER_BATCH) -> Delivery:
    """Deliver what partition `part`'s outbox holds: for whoever just settled jobs there (a
    worker's report, a cancel, a purge), so remote children move on at once rather than at
    the next maintenance tick. One XRANGE when there is nothing to deliver."""
    return deliver_pending(parts, limit, [part], grace_ms=None)


def outbox_length(store: Store) -> int:
    """Hand-off records not delivered yet in `store`'s partition (health checks, tests)."""
    with store.broker("reading the hand-off outbox"):
        return int(store.r.xlen(store.keys.outbox))


def handed_length(store: Store) -> int:
    """Records of `store`'s partition delivered once, awaiting their second delivery."""
    with store.broker("reading the hand-off outbox"):
        return int(store.r.xlen(store.keys.handed))


Item = tuple[str, str, str, bytes]


def _deliver_round(
    parts: Sequence[Store], src: int, limit: int, now: int, grace: int | None
) -> tuple[Delivery, int]:
    """One round: read up to `limit` records of `src`'s outbox (`grace` None), or of its
    ``handed`` stream delivered at least `grace` ms ago, deliver them grouped by the child's
    partition; delete those delivered (and confirmed durable when asked); move those of the
    outbox delivered to a partition that confirms nothing to ``handed``."""
    store = parts[src]
    stream = store.keys.outbox if grace is None else store.keys.handed
    try:
        with store.broker("reading the hand-off outbox"):
            newest = "+"
            if grace:
                newest = str((now or store.server_time_ms()) - grace)
            entries = store.r.xrange(stream, "-", newest, count=limit)
    except BrokerError as exc:
        log.warning("hand-offs of partition %d not read: %s", src, exc)
        return Delivery(), 0
    by_dest: dict[int, list[tuple[bytes, Item]]] = {}
    done: list[bytes] = []
    left = 0
    for eid, fields in entries:
        parsed = _record(fields)
        if parsed is None:
            log.error("partition %d: dropping a malformed hand-off record %r", src, fields)
            done.append(eid)
        elif not 0 <= parsed[0] < len(parts):
            log.warning(
                "partition %d: a hand-off record for partition %d, which this layout lacks "
                "(%d partitions): left in the outbox",
                src,
                parsed[0],
                len(parts),
            )
            left += 1
        else:
            by_dest.setdefault(parsed[0], []).append((eid, parsed[1]))
    result = Delivery(left=left)
    held: list[tuple[bytes, dict[bytes, bytes]]] = []
    raw = dict(entries)
    for dest, records in by_dest.items():
        codes = _deliver_to(parts[dest], [item for _eid, item in records], now)
        if codes is None:
            result += Delivery(left=len(records))
            continue
        if grace is None and not parts[dest].durability:  # confirmed by nothing yet
            held.extend((eid, raw[eid]) for eid, _item in records)
        else:
            done.extend(eid for eid, _item in records)
        result += Delivery(
            applied=codes.count(Deliver.APPLIED),
            duplicates=codes.count(Deliver.DUPLICATE),
            kept=codes.count(Deliver.KEPT),
            ignored=codes.count(Deliver.IGNORED),
            held=len(records) if grace is None and not parts[dest].durability else 0,
        )
    if done or held:
        try:
            with store.broker("deleting delivered hand-offs"):
                pipe = store.r.pipeline(transaction=True)
                for _eid, fields in held:
                    pipe.xadd(store.keys.handed, fields)
                pipe.xdel(stream, *done, *(eid for eid, _f in held))
                pipe.execute()
        except BrokerError as exc:  # delivered: a later pass sends them again, to no effect
            log.warning("delivered hand-offs of partition %d not deleted yet: %s", src, exc)
    return result, len(entries)


#: The parent states a hand-off carries (deliver.lua refuses a call with any other).
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})


def _record(fields: dict[bytes, bytes]) -> tuple[int, Item] | None:
    """(child partition, (child, parent, state, result)) of an outbox entry; None if bad (only
    a hand-written one can be: settle writes every record whole)."""
    try:
        item = (
            fields[b"k"].decode(),
            fields[b"p"].decode(),
            fields[b"s"].decode(),
            fields.get(b"r", b""),
        )
        part = int(fields[b"c"])
    except (KeyError, ValueError, UnicodeDecodeError):
        return None
    return (part, item) if item[2] in TERMINAL else None


def _deliver_to(store: Store, items: list[Item], now: int) -> list[int] | None:
    """Run deliver.lua for `items` in `store`'s partition, then its durability wait if asked;
    the codes per item, or None when not delivered or not confirmed (records stay)."""
    durable = store.durability
    calls = [store.scripts.deliver_call(items, KEEP_S, now)]
    try:
        with store.broker("delivering hand-offs"):
            if durable:
                durable.ensure_supported(store.r)
                calls.append(durable.call())
            replies = store.scripts.execute(calls)
    except JobqError as exc:  # unreachable, refused, or a durable mode it cannot confirm
        log.warning("hand-offs to %s not delivered yet: %s", store.keys.base, exc)
        return None
    if durable and not durable.confirms(replies[1]):
        log.warning(
            "hand-offs delivered to %s not confirmed by %s: their records stay in the outbox "
            "(a repeat delivery changes nothing)",
            store.keys.base,
            durable.command,
        )
        return None
    return [int(c) for c in replies[0]]
