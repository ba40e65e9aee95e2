"""Dependencies, chains and chords across partitions (handoff.py), on a real server.

Three partitions on one server: three stores with different hash tags on one client, as a
deployment of three partitions on one server runs; every script still touches only its own
partition's keys. Jobs run through the real claim, the real task code (`run_sync`) and the
real report; hand-offs go through the real outboxes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import redis

from jobq import App
from jobq.canvas import chain, chord
from jobq.errors import DependencyCycle, JobNotFound
from jobq.handoff import (
    Delivery,
    deliver_from,
    deliver_pending,
    handed_length,
    outbox_length,
    submit,
)
from jobq.keys import Keys
from jobq.model import Claimed, JobSpec, Outcome, RemoteParent
from jobq.store import Store, connect
from jobq.worker.runner import run_sync

pytestmark = pytest.mark.timeout(60)

EMPTY = b"[[],{}]"
P = 3


@pytest.fixture
def parts(url: str, prefix: str) -> Iterator[list[Store]]:
    client = connect(url)
    stores = [Store(client, url, Keys(prefix, "" if i == 0 else f"{prefix}.{i}")) for i in range(P)]
    yield stores
    for s in stores:
        s.close()


@pytest.fixture
def wf(url: str, prefix: str) -> Iterator[App]:
    """An app with the tasks of these workflows (it only builds specs and runs tasks here)."""
    a = App(url, prefix=prefix)

    @a.task(name="add")
    def add(x: Any, y: int = 0) -> Any:
        return x + y

    @a.task(name="total")
    def total(xs: list[int]) -> int:
        return sum(xs)

    @a.task(name="boom")
    def boom() -> None:
        raise ValueError("boom")

    yield a
    a.close()


def spec(job_id: str, **kw: Any) -> JobSpec:
    return JobSpec(job_id, kw.pop("task", "t"), kw.pop("queue", "default"), EMPTY, **kw)


def state(store: Store, job_id: str) -> str | None:
    v = store.r.hget(store.keys.job(job_id), "state")
    return v.decode() if v is not None else None


def error_of(store: Store, job_id: str) -> dict[str, Any]:
    raw = store.r.hget(store.keys.job(job_id), "error")
    assert raw, f"{job_id} has no error"
    out: dict[str, Any] = orjson.loads(raw)
    return out


def claim_one(store: Store, job_id: str) -> Claimed:
    got = store.claim("w1", ["default"], 10, 10_000)
    assert [c.id for c in got] == [job_id], (job_id, [c.id for c in got])
    return got[0]


def run(app: App, store: Store, job_id: str) -> Claimed:
    """Claim `job_id` (the only queued job of the partition), run its task, report it."""
    c = claim_one(store, job_id)
    store.report([run_sync(app, c)])
    return c


def inputs(app: App, c: Claimed) -> list[Any]:
    return [app.serializer.decode_result(x) for x in c.inputs]


def result(app: App, store: Store, job_id: str) -> Any:
    return app.serializer.decode_result(store.r.hget(store.keys.job(job_id), "result"))


def run_all(app: App, store: Store) -> list[Claimed]:
    """Claim every queued job of the partition, run each task, report them together."""
    got = store.claim("w1", ["default"], 100, 10_000)
    store.report([run_sync(app, c) for c in got])
    return got


def succeed(store: Store, job_id: str, value: Any) -> Claimed:
    c = claim_one(store, job_id)
    assert store.report([Outcome(c, ok=True, result=orjson.dumps(value))]) == {job_id: 1}
    return c


def fail(store: Store, job_id: str) -> None:
    c = claim_one(store, job_id)
    err = {"type": "ValueError", "message": "boom", "traceback": ""}
    assert store.report([Outcome(c, ok=False, error=err)]) == {job_id: 2}


def drain(parts: list[Store]) -> Delivery:
    """Deliver until every outbox is empty (cascades hand off again), bounded."""
    total = Delivery()
    for _ in range(10):
        got = deliver_pending(parts)
        total += got
        if not any(outbox_length(s) for s in parts):
            return total
    raise AssertionError("outboxes did not drain")


def snapshot(parts: list[Store]) -> dict[bytes, bytes]:
    r = parts[0].r
    out: dict[bytes, bytes] = {}
    for s in parts:
        pattern = s.keys.base.replace("{", "\\{").replace("}", "\\}") + "*"
        for key in r.keys(pattern):
            out[key] = r.dump(key)
    return out


# -- chains and chords --------------------------------------------------------------------


def test_chain_with_each_job_in_another_partition_passes_results(
    parts: list[Store], wf: App
) -> None:
    add = wf.tasks["add"]
    a, b, c = chain(add.s(1, 2), add.s(10), add.s(100)).specs()
    ids = submit(parts, [(0, a), (1, b), (2, c)])
    assert ids == [a.id, b.id, c.id]
    assert (state(parts[1], b.id), state(parts[2], c.id)) == ("scheduled", "scheduled")
    # The links live in the parents' partitions, nothing crosses otherwise.
    assert parts[0].r.smembers(parts[0].keys.xkids(a.id)) == {f"1|1|{b.id}".encode()}
    assert parts[1].r.smembers(parts[1].keys.xkids(b.id)) == {f"2|1|{c.id}".encode()}

    run(wf, parts[0], a.id)
    assert outbox_length(parts[0]) == 1
    got = deliver_from(parts, 0)
    assert (got.applied, outbox_length(parts[0])) == (1, 0)
    cb = run(wf, parts[1], b.id)
    assert inputs(wf, cb) == [3]
    deliver_from(parts, 1)
    cc = run(wf, parts[2], c.id)
    assert inputs(wf, cc) == [13]
    assert state(parts[2], c.id) == "succeeded"
    assert result(wf, parts[2], c.id) == 113
    # Delivered records are gone; nothing is kept for children that came first.
    assert sum(outbox_length(s) for s in parts) == 0
    assert not any(s.r.exists(s.keys.dlv(b.id), s.keys.dlv(c.id)) for s in parts)


def test_chord_with_members_in_every_partition_gets_every_result_in_order(
    parts: list[Store], wf: App
) -> None:
    add, total = wf.tasks["add"], wf.tasks["total"]
    specs = chord([add.s(i, 0) for i in range(6)], total.s()).specs()
    head, body = specs[:-1], specs[-1]
    placed = [(i % P, s) for i, s in enumerate(head)] + [(1, body)]
    submit(parts, placed)
    assert int(parts[1].r.hget(parts[1].keys.job(body.id), "waiting")) == 6
    for i, s in enumerate(head):  # members in the body's partition link directly
        k = parts[i % P].keys
        assert parts[i % P].r.exists(k.children(s.id) if i % P == 1 else k.xkids(s.id))
    # Members finish partition by partition, last partition first.
    for p in (2, 0, 1):
        assert len(run_all(wf, parts[p])) == 2
        deliver_from(parts, p)
        if p != 1:
            assert state(parts[1], body.id) == "scheduled"
    c = run(wf, parts[1], body.id)
    assert inputs(wf, c) == list(range(6))
    assert result(wf, parts[1], body.id) == 15


def test_a_deep_chain_goes_in_waves_and_same_partition_links_stay_direct(
    parts: list[Store], wf: App
) -> None:
    add = wf.tasks["add"]
    specs = chain(*[add.s(1)] + [add.s(1) for _ in range(5)]).specs()
    where = [0, 0, 1, 1, 2, 0]  # two same-partition links (0->0, 1->1), three crossings
    submit(parts, list(zip(where, specs, strict=True)))
    # A same-partition parent keeps the direct path: children set, no hand-off.
    assert parts[0].r.smembers(parts[0].keys.children(specs[0].id)) == {specs[1].id.encode()}
    assert not parts[0].r.exists(parts[0].keys.xkids(specs[0].id))
    for i, s in enumerate(specs):
        c = run(wf, parts[where[i]], s.id)
        if i:
            assert inputs(wf, c) == [i]
        deliver_from(parts, where[i])
    assert result(wf, parts[0], specs[-1].id) == 6
    assert sum(outbox_length(s) for s in parts) == 0


# -- failures and cancels ---------------------------------------------------------------------


def test_a_failed_parent_fails_remote_children_and_grandchildren(parts: list[Store]) -> None:
    submit(
        parts,
        [
            (0, spec("a")),
            (1, spec("b", parents=("a",))),
            (1, spec("b2", parents=("b",))),  # b's local child
            (2, spec("c", parents=("b",))),  # b's remote child
            (0, spec("d", parents=("c",))),  # a remote grandchild of b, back in a's partition
            (2, spec("e", parents=("a", "b2"))),
        ],
    )
    fail(parts[0], "a")
    got = drain(parts)
    assert got.applied == 5  # a->b, a->e, b->c, b2->e (recorded only), c->d; b2 local
    for p, job, parent in [
        (1, "b", "a"),
        (1, "b2", "b"),
        (2, "c", "b"),
        (0, "d", "c"),
        (2, "e", "a"),
    ]:
        assert state(parts[p], job) == "failed", job
        err = error_of(parts[p], job)
        assert err["type"] == "DependencyFailed", job
        assert err["message"].startswith(f"parent job {parent} "), (job, err)
        assert parts[p].r.zscore(parts[p].keys.dead, job) is not None
    # The late hand-off of b2 (failed) to e is a no-op: e failed once.
    assert state(parts[2], "e") == "failed"


def test_a_child_of_a_parent_that_failed_long_ago_fails_at_submit(parts: list[Store]) -> None:
    submit(parts, [(0, spec("a"))])
    fail(parts[0], "a")
    submit(parts, [(1, spec("b", parents=("a",)))])
    assert state(parts[1], "b") == "failed"
    assert error_of(parts[1], "b")["message"] == "parent job a failed"
    assert outbox_length(parts[0]) == 0  # nothing was linked


def test_cancel_of_a_parent_fails_its_remote_children(parts: list[Store]) -> None:
    submit(parts, [(0, spec("a")), (2, spec("b", parents=("a",)))])
    assert parts[0].cancel("a") == 1
    got = deliver_from(parts, 0)
    assert got.applied == 1
    assert state(parts[2], "b") == "failed"
    assert error_of(parts[2], "b")["message"] == "parent job a cancelled"


def test_cancel_of_a_waiting_child_leaves_the_late_hand_off_without_effect(
    parts: list[Store],
) -> None:
    submit(parts, [(0, spec("a")), (1, spec("b", parents=("a",)))])
    assert parts[1].cancel("b") == 1
    succeed(parts[0], "a", 1)
    assert deliver_from(parts, 0).applied == 1  # recorded, but b stays cancelled
    assert state(parts[1], "b") == "cancelled"
    assert parts[1].r.zcard(parts[1].keys.queue("default")) == 0


# -- exactly once -----------------------------------------------------------------------------


def test_a_repeated_delivery_is_applied_once(parts: list[Store]) -> None:
    submit(
        parts,
        [(0, spec("a")), (2, spec("c")), (1, spec("b", parents=("a", "c"), pass_results="list"))],
    )
    succeed(parts[0], "a", "A")
    [(_eid, fields)] = parts[0].r.xrange(parts[0].keys.outbox)
    assert fields[b"r"] == b'"A"'
    first = deliver_from(parts, 0)
    assert first.applied == 1
    assert int(parts[1].r.hget(parts[1].keys.job("b"), "waiting")) == 1
    # A crash between deliver and XDEL: the record is sent again, and again through the script.
    parts[0].r.xadd(parts[0].keys.outbox, fields)
    again = deliver_from(parts, 0)
    assert (again.applied, again.duplicates, outbox_length(parts[0])) == (0, 1, 0)
    item = ("b", "a", "succeeded", b'"A"')
    assert parts[1].scripts.deliver(parts[1].r, [item, item], 60) == [0, 0]
    assert int(parts[1].r.hget(parts[1].keys.job("b"), "waiting")) == 1
    assert state(parts[1], "b") == "scheduled"
    succeed(parts[2], "c", "C")
    deliver_from(parts, 2)
    c = claim_one(parts[1], "b")
    assert [orjson.loads(x) for x in c.inputs] == ["A", "C"]


def test_a_child_released_by_a_remote_parent_waits_from_the_delivery(
    parts: list[Store],
) -> None:
    """Its `ready` is set when the hand-off queues it (release_dependent), so the claim's
    queue wait (ready_ms, tstats) counts from then, not from its submit."""
    t = 1_000_000_000
    submit(parts, [(0, spec("a")), (1, spec("b", parents=("a",)))], now=t)
    assert parts[1].r.hget(parts[1].keys.job("b"), "ready") is None
    item = ("b", "a", "succeeded", b"")
    assert parts[1].scripts.deliver(parts[1].r, [item], 60, now=t + 5_000) == [1]
    assert state(parts[1], "b") == "queued"
    assert parts[1].r.hget(parts[1].keys.job("b"), "ready") == str(t + 5_000).encode()
    (c,) = parts[1].claim("w1", ["default"], 10, 10_000, now=t + 5_100)
    assert (c.id, c.ready_ms, c.claimed_ms) == ("b", t + 5_000, t + 5_100)


def test_a_failure_delivered_twice_fails_the_child_once(parts: list[Store]) -> None:
    submit(parts, [(0, spec("a")), (1, spec("b", parents=("a",)))])
    fail(parts[0], "a")
    [(_eid, fields)] = parts[0].r.xrange(parts[0].keys.outbox)
    deliver_from(parts, 0)
    parts[0].r.xadd(parts[0].keys.outbox, fields)
    assert deliver_from(parts, 0).duplicates == 1
    assert parts[1].r.hget(parts[1].keys.stats("default"), "failed") == b"1"
    events = [f[b"state"] for _i, f in parts[1].r.xrange(parts[1].keys.events) if f[b"job"] == b"b"]
    assert events == [b"scheduled", b"failed"]


def test_a_delivery_that_arrives_before_its_child_is_kept_for_the_enqueue(
    parts: list[Store],
) -> None:
    submit(parts, [(0, spec("a"))])
    # The submitter linked b, then stalled before enqueueing it: a finished and was delivered.
    assert parts[0].scripts.link(parts[0].r, [("a", 1, "b", True)]) == [[b"pending", b""]]
    succeed(parts[0], "a", "A")
    got = deliver_from(parts, 0)
    assert (got.kept, outbox_length(parts[0])) == (1, 0)
    dk = parts[1].keys.dlv("b")
    assert parts[1].r.hgetall(dk) == {b"a": b'succeeded|"A"'}
    assert 0 < parts[1].r.ttl(dk) <= 86_400
    # A second copy is not kept twice.
    assert parts[1].scripts.deliver(parts[1].r, [("b", "a", "succeeded", b'"A"')], 60) == [0]
    # The enqueue still carries link's answer (pending), but the kept hand-off wins.
    late = spec(
        "b", parents=("a",), pass_results="one", remote_parents=(RemoteParent("a", "pending"),)
    )
    assert parts[1].submit([late]) == [True]
    assert state(parts[1], "b") == "queued"
    assert not parts[1].r.exists(dk)
    c = claim_one(parts[1], "b")
    assert [orjson.loads(x) for x in c.inputs] == ["A"]


def test_a_failure_that_arrives_before_its_child_fails_it_at_enqueue(parts: list[Store]) -> None:
    submit(parts, [(0, spec("a"))])
    parts[0].scripts.link(parts[0].r, [("a", 2, "b", False)])
    assert parts[0].cancel("a") == 1
    assert deliver_from(parts, 0).kept == 1
    late = spec("b", parents=("a",), remote_parents=(RemoteParent("a", "pending"),))
    parts[2].submit([late])
    assert state(parts[2], "b") == "failed"
    assert error_of(parts[2], "b")["message"] == "parent job a cancelled"


def test_a_parent_that_finished_between_link_and_enqueue(parts: list[Store]) -> None:
    submit(parts, [(0, spec("a"))])
    parts[0].scripts.link(parts[0].r, [("a", 1, "b", True)])
    succeed(parts[0], "a", "A")  # before the child exists, and not delivered yet
    late = spec(
        "b", parents=("a",), pass_results="one", remote_parents=(RemoteParent("a", "pending"),)
    )
    parts[1].submit([late])
    assert state(parts[1], "b") == "scheduled"  # waits for the hand-off already on its way
    assert deliver_from(parts, 0).applied == 1
    assert state(parts[1], "b") == "queued"
    assert [orjson.loads(x) for x in claim_one(parts[1], "b").inputs] == ["A"]


def test_a_parent_already_succeeded_at_link_time_applies_at_enqueue(parts: list[Store]) -> None:
    submit(parts, [(0, spec("a"))])
    succeed(parts[0], "a", "A")
    submit(parts, [(2, spec("b", parents=("a",), pass_results="one"))])
    assert state(parts[2], "b") == "queued"
    assert not parts[0].r.exists(parts[0].keys.xkids("a"))
    assert [orjson.loads(x) for x in claim_one(parts[2], "b").inputs] == ["A"]


def test_the_outbox_record_stays_until_the_childs_partition_confirms_it_durable(
    parts: list[Store], url: str
) -> None:
    """wait_replicas on the child's partition: the hand-off is applied, but its record is
    deleted only once WAIT confirms it (here never: the server has no replica), so a failover
    of the child's primary could not lose a delivery whose record is gone."""
    submit(parts, [(0, spec("a")), (1, spec("b", parents=("a",)))])
    succeed(parts[0], "a", 1)
    waiting = Store(parts[1].r, url, parts[1].keys, wait_replicas=1, durable_timeout_ms=20)
    view = [parts[0], waiting, parts[2]]
    got = deliver_from(view, 0)
    assert (got.left, outbox_length(parts[0])) == (1, 1)
    assert state(parts[1], "b") == "queued"  # applied once; the record stays for a retry
    assert deliver_from(parts, 0).duplicates == 1
    assert outbox_length(parts[0]) == 0
    waiting.scripts.close()


# -- refusals -----------------------------------------------------------------------------------


def test_a_missing_remote_parent_is_refused_with_nothing_written_anywhere(
    parts: list[Store],
) -> None:
    submit(parts, [(0, spec("a")), (2, spec("x"))])
    before = snapshot(parts)
    with pytest.raises(JobNotFound, match="nope"):
        submit(parts, [(1, spec("b", parents=("a", "x", "nope")))])
    with pytest.raises(JobNotFound, match="nope"):
        submit(parts, [(1, spec("b", parents=("a",))), (2, spec("c", parents=("b", "nope")))])
    with pytest.raises(JobNotFound, match="nope"):  # a wrong hint, too
        submit(parts, [(1, spec("b", parents=("nope", "a")))], locate=lambda _i: 2)
    # The link script itself refuses before writing (a parent gone between check and link).
    with pytest.raises(redis.ResponseError, match="JOBQ_PARENT nope"):
        parts[0].scripts.link(parts[0].r, [("a", 1, "b", False), ("nope", 1, "b", False)])
    assert snapshot(parts) == before


def test_parents_later_in_the_batch_are_refused_before_anything_is_written(
    parts: list[Store],
) -> None:
    before = snapshot(parts)
    with pytest.raises(DependencyCycle):
        submit(parts, [(1, spec("b", parents=("a",))), (0, spec("a"))])
    with pytest.raises(DependencyCycle):
        submit(parts, [(1, spec("b", parents=("b",)))])
    assert snapshot(parts) == before


def test_resubmitting_a_batch_is_safe(parts: list[Store]) -> None:
    batch = [(0, spec("a")), (1, spec("b", parents=("a",))), (2, spec("c", parents=("b",)))]
    assert submit(parts, batch) == ["a", "b", "c"]
    assert submit(parts, batch) == ["a", "b", "c"]
    succeed(parts[0], "a", 1)
    assert drain(parts).applied == 1
    assert state(parts[1], "b") == "queued"
    assert state(parts[2], "c") == "scheduled"


def test_a_child_of_a_unique_duplicate_depends_on_the_job_holding_the_key(
    parts: list[Store],
) -> None:
    submit(parts, [(0, spec("a1", unique_key="u"))])
    ids = submit(parts, [(0, spec("a2", unique_key="u")), (1, spec("b", parents=("a2",)))])
    assert ids == ["a1", "b"]
    assert parts[1].r.hget(parts[1].keys.job("b"), "parents") == b"a1"
    succeed(parts[0], "a1", 1)
    deliver_from(parts, 0)
    assert state(parts[1], "b") == "queued"


# -- failover of the child's primary mid-delivery ------------------------------------------------


def settled_read(read: Any, timeout: float = 30.0) -> Any:
    """`read()` once the client reaches the new primary (Sentinels may still disagree a moment
    after the promotion), bounded."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return read()
        except (redis.RedisError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.mark.timeout(180)
def test_a_delivery_lost_in_a_failover_is_sent_again_and_applied_once(
    parts: list[Store], url: str, prefix: str, sentinel_group: Any
) -> None:
    """The child's partition on a real Sentinel group (primary + replica, wait_replicas=1): the
    replica is cut off, the hand-off is applied on the primary but not confirmed, so its record
    stays; the primary is SIGKILLed and the replica, which lacks the delivery, promoted. The
    next pass delivers again to the new primary: the child runs once, with the result."""
    g = sentinel_group
    primary, replica = g.nodes[0], g.nodes[1]
    child = Store(
        connect(g.url),
        g.url,
        Keys(prefix, f"{prefix}.1"),
        wait_replicas=1,
        durable_timeout_ms=300,
    )
    view = [parts[0], child, parts[2]]
    try:
        submit(view, [(0, spec("a")), (1, spec("b", parents=("a",), pass_results="one"))])
        succeed(parts[0], "a", "A")
        g.stop_replication(replica)
        got = deliver_from(view, 0)
        assert (got.left, outbox_length(parts[0])) == (1, 1)  # WAIT confirmed nothing
        assert state(child, "b") == "queued"  # on the old primary only
        g.kill(primary)
        g.wait_new_primary(primary.addr, timeout=60)
        g.restore_replication(replica)
        # The promoted replica never saw the delivery (read once the client follows it).
        assert settled_read(lambda: state(child, "b")) == "scheduled"
        # The old primary comes back as a replica of the new one, so WAIT can confirm again.
        g.restart(primary)
        g.wait_demoted(primary, timeout=60)
        got = deliver_from(view, 0)
        assert (got.applied, got.left, outbox_length(parts[0])) == (1, 0, 0)
        assert state(child, "b") == "queued"
        c = claim_one(child, "b")
        assert [orjson.loads(x) for x in c.inputs] == ["A"]
        assert child.r.hget(child.keys.stats("default"), "scheduled") == b"0"
    finally:
        child.close()


def test_ids_and_results_with_separator_bytes_travel_intact(parts: list[Store]) -> None:
    """Outbox records are stream fields and enqueue's remote parents are length-prefixed, so
    ids with ':' or '|' and binary results cross unchanged."""
    blob = b"\x00|:x\xff\n"
    submit(parts, [(0, spec("p:1|a")), (2, spec("p|2:b"))])
    succeed(parts[2], "p|2:b", 0)  # finished before the child links: its result via link
    parts[2].r.hset(parts[2].keys.job("p|2:b"), "result", blob)
    kid = spec("k|:1", parents=("p:1|a", "p|2:b"), pass_results="list")
    submit(parts, [(1, kid)])
    c = claim_one(parts[0], "p:1|a")
    parts[0].report([Outcome(c, ok=True, result=blob[::-1])])
    assert deliver_from(parts, 0).applied == 1
    assert claim_one(parts[1], "k|:1").inputs == (blob[::-1], blob)


def test_a_purged_or_reaped_parent_hands_off_too(parts: list[Store]) -> None:
    """Every script that ends a job hands off: purge (cancelled) and the reaper dead-lettering
    a job whose worker kept dying (failed)."""
    submit(
        parts,
        [
            (0, spec("a", queue="purged")),
            (0, spec("r")),
            (1, spec("b", parents=("a",))),
            (2, spec("c", parents=("r",))),
        ],
    )
    assert parts[0].purge("purged") == 1
    parts[0].claim("w1", ["default"], 1, 1_000, now=1_000, start=1)  # begun, then lost
    assert parts[0].reap(10, now=10_000, max_lost=1) == (0, 1)
    assert drain(parts).applied == 2
    assert error_of(parts[1], "b")["message"] == "parent job a cancelled"
    assert error_of(parts[2], "c")["message"] == "parent job r failed"


def test_a_malformed_record_is_dropped_and_one_for_an_unknown_partition_left(
    parts: list[Store], caplog: pytest.LogCaptureFixture
) -> None:
    submit(parts, [(0, spec("a")), (1, spec("b", parents=("a",)))])
    out = parts[0].keys.outbox
    parts[0].r.xadd(out, {"c": "1", "k": "b", "p": "a", "s": "exploded"})
    parts[0].r.xadd(out, {"c": "7", "k": "z", "p": "a", "s": "failed"})
    succeed(parts[0], "a", 1)
    got = deliver_from(parts, 0)
    assert (got.applied, got.left, outbox_length(parts[0])) == (1, 1, 1)
    assert state(parts[1], "b") == "queued"
    assert "malformed hand-off" in caplog.text and "partition 7" in caplog.text


def test_a_delivery_nothing_confirmed_is_made_again_after_the_grace(parts: list[Store]) -> None:
    """Without a durability wait on the child's partition, a delivered record is held in
    `handed` and delivered a second time once GRACE_MS old (a no-op unless a failover lost
    the first), then deleted."""
    submit(parts, [(0, spec("a")), (1, spec("b", parents=("a",)))])
    succeed(parts[0], "a", 1)
    first = deliver_from(parts, 0)
    assert (first.applied, first.held, outbox_length(parts[0]), handed_length(parts[0])) == (
        1,
        1,
        0,
        1,
    )
    assert deliver_pending(parts).removed == 0  # younger than the grace: left alone
    assert handed_length(parts[0]) == 1
    second = deliver_pending(parts, grace_ms=0)
    assert (second.duplicates, handed_length(parts[0])) == (1, 0)
    assert state(parts[1], "b") == "queued"
    assert parts[1].r.zcard(parts[1].keys.queue("default")) == 1


@pytest.mark.timeout(180)
def test_without_a_replica_wait_the_second_delivery_repairs_one_a_failover_lost(
    parts: list[Store], prefix: str, sentinel_group: Any
) -> None:
    """As above with wait_replicas=0 on the child's partition: the record is deleted from the
    outbox at once but held in `handed`; after the failover lost the first delivery, the
    second one (after the grace) applies it on the new primary."""
    g = sentinel_group
    primary, replica = g.nodes[0], g.nodes[1]
    child = Store(connect(g.url), g.url, Keys(prefix, f"{prefix}.1"))
    view = [parts[0], child, parts[2]]
    try:
        submit(view, [(0, spec("a")), (1, spec("b", parents=("a",), pass_results="one"))])
        succeed(parts[0], "a", "A")
        g.stop_replication(replica)
        got = deliver_from(view, 0)
        assert (got.applied, got.held, outbox_length(parts[0])) == (1, 1, 0)
        g.kill(primary)
        g.wait_new_primary(primary.addr, timeout=60)
        g.restore_replication(replica)
        assert settled_read(lambda: state(child, "b")) == "scheduled"  # the delivery was lost
        again = deliver_pending(view, grace_ms=0)
        assert (again.applied, handed_length(parts[0])) == (1, 0)
        assert state(child, "b") == "queued"
        assert [orjson.loads(x) for x in claim_one(child, "b").inputs] == ["A"]
    finally:
        child.close()
