"""What the scripts gather per call and write once at its end (counters, the finished index,
leases, wake-ups, fencing tokens) reads exactly as the per-job writes it replaced: checked on
batches, where one call handles many jobs."""

from __future__ import annotations

from typing import Any

import pytest

from jobq import App
from jobq.model import JobSpec, Outcome
from jobq.store import Store

pytestmark = pytest.mark.timeout(60)

T = 1_000_000_000
LEASE = 10_000
EMPTY = b"[[],{}]"


@pytest.fixture
def store(app: App) -> Store:
    return app.store


def spec(job_id: str, **kw: Any) -> JobSpec:
    return JobSpec(job_id, kw.pop("task", "t"), kw.pop("queue", "default"), EMPTY, **kw)


def stats(store: Store, queue: str) -> dict[str, int]:
    raw = store.r.hgetall(store.keys.stats(queue))
    return {k.decode(): int(v) for k, v in raw.items()}


def test_one_claim_of_many_jobs_gives_strictly_increasing_tokens_above_the_clock(
    store: Store,
) -> None:
    store.submit([spec(f"j{i}") for i in range(50)], now=T)
    before = int(store.r.get(store.keys.token) or 0)  # (the epoch moved it past the clock)
    first = store.claim("w1", ["default"], 30, LEASE, now=T)
    tokens = [int(c.token) for c in first]
    assert len(tokens) == 30 and tokens == sorted(set(tokens))
    assert tokens[0] == max(before, T * 1024) + 1
    assert int(store.r.get(store.keys.token)) == tokens[-1]  # the counter holds the last one
    # The next calls continue above them (the counter is ahead of this test's clock).
    same_ms = store.claim("w1", ["default"], 10, LEASE, now=T)
    assert int(same_ms[0].token) == tokens[-1] + 1
    store.submit([spec("late", queue="l")], now=T + 5)
    (late,) = store.claim("w1", ["l"], 1, LEASE, now=T + 5)
    assert int(late.token) == int(same_ms[-1].token) + 1
    # Every lease is there, with its deadline.
    leases = dict(store.r.zrange(store.keys.leases, 0, -1, withscores=True))
    assert len(leases) == 41 and all(v == T + LEASE for k, v in leases.items() if k != b"late")


def test_counters_and_the_finished_index_sum_per_call(store: Store) -> None:
    store.submit([spec(f"a{i}") for i in range(20)] + [spec(f"b{i}", queue="b") for i in range(5)])
    store.submit([spec("s", delay_ms=60_000)], now=T)
    got = store.claim("w1", ["default", "b"], 25, LEASE, now=T)
    assert stats(store, "default") == {"running": 20, "scheduled": 1}
    assert stats(store, "b") == {"running": 5}
    store.report(
        [Outcome(c, ok=True, result=b"1") for c in got[:15]]
        + [
            Outcome(c, ok=False, error={"type": "E", "message": "x", "traceback": ""})
            for c in got[15:]
        ],
        now=T + 1,
    )
    assert stats(store, "default") == {"running": 0, "scheduled": 1, "succeeded": 15, "failed": 5}
    assert stats(store, "b") == {"running": 0, "failed": 5}
    finished = store.r.zrange(store.keys.finished, 0, -1, withscores=True)
    assert len(finished) == 25 and {s for _, s in finished} == {T + 1}
    assert store.r.zcard(store.keys.leases) == 0


def test_the_same_job_twice_in_one_report_is_recorded_once(store: Store) -> None:
    store.submit([spec("x")], now=T)
    (c,) = store.claim("w1", ["default"], 1, LEASE, now=T)
    codes = store.scripts.complete(
        store.r, [("x", c.token, b"1", -1), ("x", c.token, b"2", -1)], 60, now=T + 1
    )
    assert list(codes) == [1, -2]
    assert store.r.hget(store.keys.job("x"), "result") == b"1"
    assert stats(store, "default")["succeeded"] == 1


def test_a_wake_up_list_holds_at_most_one_marker(store: Store) -> None:
    for i in range(5):
        store.submit([spec(f"w{i}a"), spec(f"w{i}b")], now=T)
    assert store.r.lrange(store.keys.wake("default"), 0, -1) == [b"1"]


def test_a_queue_key_of_another_type_dead_letters_the_jobs_submitted_to_it(store: Store) -> None:
    store.r.set(store.keys.queue("bad"), "not a zset")
    assert store.submit([spec("m1", queue="bad"), spec("m2", queue="bad"), spec("ok")], now=T)
    for job_id in ("m1", "m2"):
        raw = store.r.hgetall(store.keys.job(job_id))
        assert raw[b"state"] == b"failed" and b"MalformedQueue" in raw[b"error"]
        assert store.r.zscore(store.keys.dead, job_id) == T
    assert store.r.get(store.keys.queue("bad")) == b"not a zset"
    assert [c.id for c in store.claim("w1", ["default"], 5, LEASE, now=T)] == ["ok"]
