"""One deployment split into partitions on one server: the same code paths a Cluster takes
(every partition its own slot), checked where a server is cheap. A Cluster adds only where the
slots live (tests/test_cluster*.py)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest
import redis
from inprocess import deployment

from jobq import App
from jobq.layout import Layout
from jobq.states import JobState

P = 3


@pytest.fixture
def papp(url: str, prefix: str) -> Iterator[App]:
    a = App(url, prefix=prefix, partitions=P)

    @a.task
    def add(x: int, y: int) -> int:
        return x + y

    @a.task
    def echo(x: object) -> object:
        return x

    @a.task
    def one_at_a_time(key: str) -> str:
        time.sleep(0.05)
        return key

    yield a
    a.close()


def queued_per_partition(app: App, queue: str = "default") -> list[int]:
    store = app.store
    return [int(s.r.zcard(s.keys.queue(queue))) for s in store.shards]


def test_the_layout_is_stored_and_followed(papp: App, url: str, prefix: str, caplog) -> None:
    assert papp.store.partitions == P
    raw = redis.Redis.from_url(url).get("{" + prefix + "}:layout")
    assert raw is not None and Layout.from_json(raw, prefix).count == P
    # A process asking for one partition follows the stored three, and says so.
    with caplog.at_level(logging.WARNING, "jobq.layout"):
        other = App(url, prefix=prefix, partitions=1)
        try:
            assert other.store.partitions == P
        finally:
            other.close()
    assert any("already has 3 partition(s)" in r.getMessage() for r in caplog.records)
    # Each partition is its own hash tag: three slots.
    slots = {redis.crc.key_slot(s.keys.job("x").encode()) for s in papp.store.shards}
    assert len(slots) == P


def test_one_queue_spreads_over_every_partition_and_every_job_runs(papp: App) -> None:
    jobs = [papp.submit("add", (i, 1)) for i in range(60)]
    spread = queued_per_partition(papp)
    assert sum(spread) == 60 and min(spread) >= 5, spread
    with deployment(papp, concurrency=4):
        assert [j.result(timeout=30) for j in jobs] == [i + 1 for i in range(60)]
    assert sum(q.succeeded for q in papp.store.queues()) == 60


def test_a_blocked_worker_wakes_for_work_in_any_partition(papp: App) -> None:
    with deployment(papp, concurrency=2):
        time.sleep(0.5)  # the worker is blocked now, on every partition
        for i in range(9):  # ids land in every partition
            job = papp.submit("add", (i, i))
            t0 = time.monotonic()
            assert job.result(timeout=10) == 2 * i
            assert time.monotonic() - t0 < 5


def test_a_concurrency_key_keeps_its_jobs_in_one_partition(papp: App) -> None:
    jobs = [
        papp.submit("one_at_a_time", ("k1",), concurrency_key="k1", concurrency_limit=1)
        for _ in range(6)
    ]
    store = papp.store
    where = {store.partition_of(j.id) for j in jobs}
    assert len(where) == 1
    with deployment(papp, concurrency=4):
        assert [j.result(timeout=30) for j in jobs] == ["k1"] * 6


def test_a_unique_key_dedupes_across_partitions(papp: App) -> None:
    first = papp.submit("echo", (1,), unique_key="only-one")
    again = [papp.submit("echo", (i,), unique_key="only-one") for i in range(5)]
    assert {j.id for j in again} == {first.id}


def test_a_user_id_placed_by_its_key_is_found_by_any_process(papp: App, url: str) -> None:
    job = papp.submit("echo", ("x",), job_id="user-given-id", unique_key="some-key")
    fresh = App(url, prefix=papp.settings.prefix)  # knows nothing of where it went
    try:
        rec = fresh.store.get_job(job.id)
        assert rec is not None and rec.state == JobState.QUEUED
        assert fresh.store.get_states([job.id, "nope"]) == [JobState.QUEUED, None]
        assert fresh.store.cancel(job.id) == 1
    finally:
        fresh.close()


def test_listings_and_counts_cover_every_partition(papp: App) -> None:
    ids = {papp.submit("echo", (i,)).id for i in range(25)}
    seen: list[str] = []
    cursor = None
    for _ in range(20):
        rows, cursor = papp.store.list_jobs(limit=7, cursor=cursor)
        seen.extend(r.id for r in rows)
        if cursor is None:
            break
    assert sorted(seen) == sorted(ids)
    (q,) = papp.store.queues()
    assert q.queued == 25
    page, nxt = papp.store.queue_page(0, 10)
    assert [x.name for x in page] == ["default"] and nxt == 0


def test_events_of_every_partition_come_through_one_cursor(papp: App) -> None:
    store = papp.store
    start = store.last_event_id()
    assert start.count("_") == P - 1
    ids = {papp.submit("echo", (i,)).id for i in range(12)}
    got = store.read_events(start, 100)
    assert {f["job"] for _c, f in got} == ids
    # Resuming from the last cursor reads nothing new; blocking returns on a new event.
    last = got[-1][0]
    assert store.read_events(last, 100) == []
    job = papp.submit("echo", ("late",))
    later = store.read_events(last, 100, block_ms=2000)
    assert [f["job"] for _c, f in later] == [job.id]


def test_rate_limits_are_shared_out_between_partitions(papp: App) -> None:
    papp.store.set_rate_limits({"echo": "10:1000"})
    specs = [s.r.hget(s.keys.ratelimits, "echo") for s in papp.store.shards]
    assert specs == [b"10:3000"] * P


def test_a_heartbeat_marks_the_worker_seen_in_every_partition(papp: App) -> None:
    # Each partition's orphan walk reads its own record of live workers: a partition that
    # never saw a worker would fail the jobs queued there for it as "worker gone".
    store = papp.store
    store.heartbeat([], 30_000, worker="w-seen")
    seen = [s.r.zscore(s.keys.workers, "w-seen") for s in store.shards]
    assert all(x is not None for x in seen), seen
