"""Per-task figures counted by the scripts (tstats:<queue>, histograms.py): outcome counts,
runtime and queue-wait histograms, summed per call, tolerant of corrupt job fields; and the
reads of them (`Store.task_stats`, `Store.oldest_queued`) over every partition. Real Valkey,
an explicit clock (`now`) stepped by each test."""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson
import pytest
import redis
from conftest import on_every_layout

from jobq import App
from jobq.histograms import BOUNDS_MS, TaskStats, bucket_of
from jobq.model import Claimed, JobSpec, Outcome
from jobq.store import Store

pytestmark = [pytest.mark.timeout(60), on_every_layout]

T = 1_000_000_000
LEASE = 60_000
EMPTY = b"[[],{}]"


@pytest.fixture
def store(app: App) -> Store:
    return app.store


def spec(job_id: str, **kw: Any) -> JobSpec:
    return JobSpec(job_id, kw.pop("task", "t"), kw.pop("queue", "default"), EMPTY, **kw)


def claim(
    store: Store, n: int = 1, now: int = T, start: int = 0, queue: str = "default"
) -> list[Claimed]:
    return store.claim("w1", [queue], n, LEASE, now=now, start=start)


def ok(c: Claimed, ran_ms: float | None = None) -> Outcome:
    began = None if ran_ms is None else time.monotonic() - ran_ms / 1000
    return Outcome(c, ok=True, result=orjson.dumps([1]), began_s=began)


def bad(c: Claimed, delay_ms: int = -1, ran_ms: float | None = None) -> Outcome:
    began = None if ran_ms is None else time.monotonic() - ran_ms / 1000
    err = {"type": "ValueError", "message": "boom", "traceback": ""}
    return Outcome(c, ok=False, error=err, retry_delay_ms=delay_ms, began_s=began)


def one(store: Store, queue: str = "default", task: str = "t") -> TaskStats:
    (ts,) = [t for t in store.task_stats([queue]) if t.task == task]
    return ts


def test_outcomes_runtime_and_wait_are_counted_per_task(store: Store) -> None:
    store.submit([spec("a", max_attempts=2), spec("b"), spec("c", task="other")], now=T)
    cs = {c.id: c for c in claim(store, n=3, now=T + 300)}  # waited 300 ms each
    codes = store.report(
        [bad(cs["a"], 100, ran_ms=200), ok(cs["b"], ran_ms=200), ok(cs["c"], ran_ms=3)],
        now=T + 310,
    )
    assert codes == {"a": 1, "b": 1, "c": 1}
    assert store.promote(now=T + 410) == 1
    (c2,) = claim(store, now=T + 1410)  # ready at its retry's eta (T + 410): waited 1000 ms
    assert store.report([bad(c2, -1, ran_ms=20)], now=T + 1420) == {"a": 2}

    t = one(store)
    assert (t.succeeded, t.failed, t.retried, t.cancelled) == (1, 1, 1, 0)
    assert t.runtime.count == 3
    assert t.runtime.counts[bucket_of(200)] == 2 and t.runtime.counts[bucket_of(20)] == 1
    assert 420 <= t.runtime.sum_ms < 500
    assert t.wait.count == 3 and t.wait.sum_ms == 300 + 300 + 1000
    assert t.wait.counts[bucket_of(300)] == 2 and t.wait.counts[bucket_of(1000)] == 1
    assert t.failure_rate == pytest.approx(0.5)
    other = one(store, task="other")
    assert (other.succeeded, other.runtime.counts[bucket_of(3)]) == (1, 1)
    assert [(s.queue, s.task) for s in store.task_stats()] == [
        ("default", "other"),
        ("default", "t"),
    ]


def test_runtime_from_started_when_the_worker_measured_nothing(store: Store) -> None:
    store.submit([spec("s")], now=T)
    (c,) = claim(store, now=T, start=1)  # marked begun at the claim: started = T
    assert store.report([ok(c)], now=T + 40) == {"s": 1}
    t = one(store)
    assert t.runtime.counts[bucket_of(40)] == 1 and t.runtime.sum_ms == 40


def test_a_cancel_requested_while_running_counts_cancelled(store: Store) -> None:
    store.submit([spec("x")], now=T)
    (c,) = claim(store, now=T)
    store.cancel("x")
    assert store.report([ok(c, ran_ms=5)], now=T + 10) == {"x": 3}
    t = one(store)
    assert (t.succeeded, t.cancelled, t.runtime.count) == (0, 1, 1)


def test_corrupt_times_skip_the_sample_not_the_transition(store: Store) -> None:
    store.submit([spec("k")], now=T)
    shard = store.shard_of("k")
    jk, r = shard.keys.job("k"), shard.r
    r.hset(jk, mapping={"created": "garbage", "eta": "nan?"})
    (c,) = claim(store, now=T + 5, start=1)
    r.hset(jk, "started", "not-a-number")
    assert store.report([ok(c)], now=T + 10) == {"k": 1}
    t = one(store)
    assert t.succeeded == 1 and t.wait.count == 0 and t.runtime.count == 0


def test_a_dependent_waits_from_when_its_parent_released_it(store: Store) -> None:
    store.submit([spec("p", queue="wf")], now=T)
    store.submit([spec("k", queue="wf", parents=("p",))], now=T)
    (p,) = claim(store, now=T, queue="wf")
    assert store.report([ok(p, ran_ms=1)], now=T + 5000) == {"p": 1}
    (k,) = claim(store, now=T + 5020, queue="wf")  # ready at T + 5000, not created (T)
    assert k.id == "k"
    t = one(store, queue="wf")
    assert t.wait.count == 2 and t.wait.sum_ms == 0 + 20


def test_a_pruned_queue_takes_its_task_stats_with_it(store: Store) -> None:
    """orphans.lua drops an idle queue's tstats with its other counters: a queue that comes
    back starts its figures anew."""
    store.submit([spec("a", queue="idle")], now=T)
    (c,) = claim(store, now=T + 1, queue="idle")
    store.report([ok(c, 5)], now=T + 2)
    assert one(store, "idle").succeeded == 1
    gone_ms = 1_000

    def walk(now: int) -> int:
        pruned = 0
        for _ in range(10):  # (bounded: a pass over a small registry ends in a call or two)
            _moved, p, wrapped = store.walk_queues(gone_ms, now)
            pruned += p
            if wrapped:
                break
        return pruned

    assert walk(T + 10) == 0  # marked idle now: pruned only once idle for gone_ms
    assert one(store, "idle").succeeded == 1
    assert walk(T + 10 + gone_ms) >= 1
    assert store.task_stats(["idle"]) == []


def test_oldest_queued_is_the_front_jobs_ready_time(store: Store) -> None:
    store.submit([spec("o1", queue="old")], now=T)
    store.submit([spec("o2", queue="old")], now=T + 7)
    got = store.oldest_queued(["old", "empty"])
    assert got == {"old": T, "empty": None}
    claim(store, n=2, now=T + 10, queue="old")
    assert store.oldest_queued(["old"]) == {"old": None}


def test_counting_costs_one_hincrby_per_distinct_field(
    store: Store, server_url: str, prefix: str, layout_kind: str
) -> None:
    if layout_kind != "one":
        pytest.skip("counted on one partition (MONITOR sees one server's calls)")
    n = 60
    store.submit([spec(f"j{i}") for i in range(n)], now=T)
    cs = claim(store, n=n, now=T + 3)
    mon = redis.Redis.from_url(server_url)
    other = redis.Redis.from_url(server_url)
    marker = "end-of-capture-" + uuid.uuid4().hex
    tstats: list[str] = []
    try:
        with mon.monitor() as m:
            store.report([ok(c, ran_ms=7) for c in cs], now=T + 20)
            other.echo(marker)
            for ev in m.listen():
                if marker in ev["command"]:
                    break
                cmd = ev["command"]
                if ev["client_type"] == "lua" and f"{prefix}}}:tstats:" in cmd:
                    tstats.append(cmd.split(" ", 1)[0].upper())
    finally:
        mon.close()
        other.close()
    # succeeded, one runtime bucket (maybe two: 7 ms measured may read 7 or 8), its sum.
    assert tstats and set(tstats) == {"HINCRBY"} and len(tstats) <= 4, tstats
    t = one(store)
    assert t.succeeded == n and t.runtime.count == n and t.wait.count == n
    assert t.wait.counts[bucket_of(3)] == n
    assert len(BOUNDS_MS) + 1 == len(t.runtime.counts)


def test_rate_tracker_task_rates_arrivals_and_window(store: Store) -> None:
    from jobq.master.rates import RateTracker

    rt = RateTracker(store, interval_s=2.0)
    assert rt.samples.maxlen == 1800  # one hour of 2 s samples
    assert rt.task_rates() == {} and rt.arrivals_per_s("default") is None
    rt.sample(now_ms=T)
    store.submit([spec(f"r{i}") for i in range(10)], now=T)
    cs = claim(store, n=10, now=T + 1)
    store.report([ok(c, ran_ms=1) for c in cs[:6]] + [bad(c) for c in cs[6:]], now=T + 2)
    rt.sample(now_ms=T + 2000)
    assert rt.task_rates(60)[("default", "t")] == (pytest.approx(3.0), pytest.approx(2.0))
    assert rt.arrivals_per_s("default") == pytest.approx(5.0)
    rt.sample(now_ms=T + 100_000)
    # The last 60 s hold one rate, from the sample before them: nothing happened since.
    assert len(rt.points()) == 2 and len(rt.points(window_s=60)) == 1
    assert rt.points(window_s=60)[0]["succeeded_per_s"] == 0
    assert rt.task_rates(60)[("default", "t")] == (0.0, 0.0)
    assert rt.arrivals_per_s("default", 60) == 0.0


def test_tasks_over_http(url: str, prefix: str) -> None:
    import httpx
    from live_master import LiveMaster, LiveWorker

    app = App(url, prefix=prefix)
    worker_app = App(url, prefix=prefix, heartbeat_ms=200, tick_ms=50)
    worker = LiveWorker(worker_app).start()
    master = LiveMaster(app, rate_interval_s=0.2).start()
    try:
        with httpx.Client(base_url=master.url, timeout=30) as http:
            for i in range(5):
                worker_app.submit("add", (i, i))
            worker_app.submit("boom", ("x",))
            deadline = time.monotonic() + 30

            def fetch() -> dict[str, Any]:
                r = http.get("/v1/tasks")
                assert r.status_code == 200, r.text
                return {t["task"]: t for t in r.json()["tasks"]}

            while True:
                got = fetch()
                boom = next((v for k, v in got.items() if k.endswith("boom")), None)
                add = next((v for k, v in got.items() if k.endswith("add")), None)
                if add and boom and add["succeeded"] == 5 and boom["failed"] == 1:
                    break
                assert time.monotonic() < deadline, got
                time.sleep(0.1)
            assert add["failure_rate"] == 0 and boom["failure_rate"] == 1
            assert add["runs"] == 5 and add["runtime_p50_ms"] is not None
            assert add["wait_p95_ms"] is not None and add["queue"] == "default"
            assert {"succeeded_per_s", "failed_per_s", "retried", "cancelled"} <= set(add)
            only = http.get("/v1/tasks", params={"queue": "nope"}).json()
            assert only == {"tasks": []}
            r = http.get("/v1/throughput", params={"window_s": 1})
            assert r.status_code == 200 and "points" in r.json()
            assert http.get("/v1/throughput", params={"window_s": 0}).status_code == 422
    finally:
        master.stop()
        worker.stop()
        worker_app.close()
        app.close()
