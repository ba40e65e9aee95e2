"""Malformed data and leaks: a corrupt job never strands others or fails a page, every terminal
job expires, the waiter count stays bounded, dead letters are trimmed, and the queue registry is
walked in bounded steps and shrinks (a flood of targeted names does not slow every tick)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import httpx
import orjson
import pytest
from live_master import LiveMaster, LiveWorker

from jobq import App
from jobq.keys import worker_queue
from jobq.maintenance import QUEUES_PER_TICK, tick
from jobq.model import JobSpec, Outcome
from jobq.states import JobState
from jobq.store import Store

pytestmark = pytest.mark.timeout(90)

T = 1_000_000_000
LEASE = 10_000
EMPTY = b"[[],{}]"


@pytest.fixture
def store(app: App) -> Store:
    return app.store


def spec(job_id: str, **kw: object) -> JobSpec:
    return JobSpec(job_id, "t", str(kw.pop("queue", "default")), EMPTY, **kw)  # type: ignore[arg-type]


# -- claim: malformed and missing jobs ---------------------------------------------------------


def test_claim_dead_letters_a_malformed_job_and_claims_the_others(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """Today: the claim errors after its ZPOPMIN, stranding the 3 real jobs popped with it."""
    store.submit([spec("a"), spec("bad"), spec("b"), spec("c")], now=T)
    store.r.hdel(store.keys.job("bad"), "task")
    with caplog.at_level(logging.WARNING, "jobq.store"):
        got = store.claim("w1", ["default"], 4, LEASE, now=T)
    assert sorted(c.id for c in got) == ["a", "b", "c"]
    rec = store.get_job("bad")
    assert rec is not None and rec.state == JobState.FAILED
    assert rec.error == {
        "type": "MalformedJob",
        "message": "job hash lacks field task",
        "traceback": "",
    }
    assert store.dead_letters() == ["bad"]
    assert "dead-lettered 1 malformed job(s) (bad)" in caplog.text


def test_claim_reports_ids_whose_hash_is_gone(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """As after an eviction under allkeys-lru: the id is in the queue, its hash is not."""
    store.submit([spec("a"), spec("gone1"), spec("gone2")], now=T)
    store.r.delete(store.keys.job("gone1"), store.keys.job("gone2"))
    with caplog.at_level(logging.WARNING, "jobq.store"):
        got = store.claim("w1", ["default"], 5, LEASE, now=T)
    assert [c.id for c in got] == ["a"]
    assert "2 queued job id(s) had no job hash" in caplog.text
    assert "gone1, gone2" in caplog.text and "maxmemory-policy" in caplog.text


def test_claim_survives_non_numeric_options_and_a_wrong_type_job_key(store: Store) -> None:
    store.submit([spec("a"), spec("num"), spec("typ"), spec("frac")], now=T)
    store.r.hset(store.keys.job("num"), "max", "lots")
    store.r.hset(store.keys.job("frac"), mapping={"timeout": "1.5", "backoff": "1e400"})
    store.r.delete(store.keys.job("typ"))
    store.r.set(store.keys.job("typ"), "not a hash")
    got = store.claim("w1", ["default"], 5, LEASE, now=T)
    assert [c.id for c in got] == ["a"]
    assert sorted(store.dead_letters()) == ["frac", "num", "typ"]
    frac = store.get_job("frac")
    assert frac is not None and frac.error is not None
    assert frac.error["message"] == "job hash has a max, timeout or backoff that is not an integer"
    rec = store.get_job("typ")  # readable, marked corrupt, not an exception
    assert rec is not None and rec.corrupt and "unreadable" in rec.corrupt


# -- readers: per row ---------------------------------------------------------------------------


def test_a_corrupt_job_is_a_marked_row_not_a_failed_page(store: Store) -> None:
    store.submit([spec("ok1"), spec("junk"), spec("ok2"), spec("typ")], now=T)
    store.r.hset(store.keys.job("junk"), mapping={"state": "weird", "att": "x", "error": "{"})
    store.r.hdel(store.keys.job("junk"), "task")
    store.r.delete(store.keys.job("typ"))
    store.r.set(store.keys.job("typ"), "x")
    page, _ = store.list_jobs(limit=50)
    by_id = {r.id: r for r in page}
    assert by_id["ok1"].corrupt is None and by_id["ok2"].corrupt is None
    junk = by_id["junk"].corrupt or ""
    assert "unknown state 'weird'" in junk and "lacks field task" in junk
    assert by_id["typ"].corrupt
    rec = store.get_job("junk")
    assert rec is not None and rec.corrupt and "field error is not JSON" in rec.corrupt
    assert store.get_states(["ok1", "junk", "typ", "none"]) == [JobState.QUEUED, None, None, None]


@pytest.fixture
def http(app: App) -> Iterator[httpx.Client]:
    master = LiveMaster(app).start()
    with httpx.Client(base_url=master.url, timeout=30) as c:
        yield c
    master.stop()


def test_http_shows_corrupt_jobs_instead_of_500(app: App, http: httpx.Client) -> None:
    store = app.store
    store.submit([spec("good"), spec("junk")])
    store.r.hset(store.keys.job("junk"), mapping={"created": "soon", "progress": "half"})
    r = http.get("/v1/jobs")
    assert r.status_code == 200, r.text
    rows = {j["id"]: j for j in r.json()["jobs"]}
    assert rows["good"]["corrupt"] is None and "created" in rows["junk"]["corrupt"]
    r = http.get("/v1/jobs/junk")
    assert r.status_code == 200 and "progress" in r.json()["corrupt"]
    store.r.hset(store.keys.stats("default"), "running", "lots")
    assert http.get("/v1/queues").status_code == 200


# -- leaks --------------------------------------------------------------------------------------


def test_a_job_cancelled_while_running_expires(store: Store) -> None:
    """Today fail.lua passes no default TTL: the cancelled job is kept forever."""
    store.submit([spec("run")], now=T)
    (c,) = store.claim("w1", ["default"], 1, LEASE, now=T)
    assert store.cancel("run") == 2
    err = {"type": "JobCancelled", "message": "stopped", "traceback": ""}
    codes = store.report([Outcome(c, ok=False, error=err)], now=T + 1)
    assert codes == {"run": 3}
    assert store.get_state("run") == JobState.CANCELLED
    ttl = store.r.ttl(store.keys.job("run"))
    assert 0 < ttl <= store.result_ttl_s


def test_the_waiter_count_is_one_per_caller_not_one_per_slice(store: Store) -> None:
    """Today every 5 s wait slice added a waiter, and the finish pushed one message each."""
    s, r = store.scripts, store.r
    store.submit([spec("w")], now=T)
    assert s.await_(r, "w", now=T) == 0  # caller A registers
    for _ in range(50):  # ...and waits slice after slice
        assert s.await_(r, "w", now=T, mode="renew") == 0
    assert s.await_(r, "w", now=T) == 0  # caller B
    assert r.hget(store.keys.job("w"), "waiters") == b"2"
    assert s.await_(r, "w", now=T, mode="leave") == 0  # B gives up
    assert r.hget(store.keys.job("w"), "waiters") == b"1"
    (c,) = store.claim("w1", ["default"], 1, LEASE, now=T)
    store.report([Outcome(c, ok=True, result=orjson.dumps([7]))], now=T + 1)
    assert r.llen(store.keys.done("w")) == 1  # one message for the one caller left
    assert r.hget(store.keys.job("w"), "waiters") is None


def test_a_waiter_registration_is_capped(store: Store) -> None:
    s, r = store.scripts, store.r
    store.submit([spec("w")], now=T)
    r.hset(store.keys.job("w"), "waiters", 10**9)  # as left by an old version's slices
    (c,) = store.claim("w1", ["default"], 1, LEASE, now=T)
    store.report([Outcome(c, ok=True, result=b"[1]")], now=T + 1)
    assert r.llen(store.keys.done("w")) == 1000  # bounded, in one RPUSH
    assert s.await_(r, "w", now=T) == 1


def test_dead_letters_are_trimmed_after_their_retention(app: App) -> None:
    store = app.store
    store.dead_ttl_s = 60
    store.submit([spec(f"d{i}") for i in range(5)] + [spec("rerun")], now=T)
    claimed = store.claim("w1", ["default"], 6, LEASE, now=T)
    err = {"type": "E", "message": "x", "traceback": ""}
    store.report([Outcome(c, ok=False, error=err) for c in claimed], now=T)
    assert store.dead_count() == 6
    assert store.rerun("rerun") == 1
    assert store.trim_dead(now=T + 59_000) == 0  # within the retention: kept
    assert store.trim_dead(now=T + 61_000, limit=2) == 2  # bounded batches
    report = tick(store, now=T + 61_000)
    assert report.dead_trimmed == 3 and store.dead_count() == 0
    assert not store.r.exists(*(store.keys.job(f"d{i}") for i in range(5)))
    assert store.get_state("rerun") == JobState.QUEUED  # left the dead set, so it stays


def test_dead_letter_retention_is_a_setting(url: str, prefix: str) -> None:
    with App(url, prefix=prefix, dead_ttl_s=5) as a:
        assert a.store.dead_ttl_s == 5


# -- the queue registry -------------------------------------------------------------------------


def test_registry_walk_is_bounded_per_tick_and_the_registry_shrinks(store: Store) -> None:
    """20k distinct worker= names (as a flood over HTTP leaves them): each tick examines a
    bounded batch of the registry, targeted queues of gone workers leave it with their
    counters, an idle named queue nobody serves leaves it after gone_ms, and live workers'
    queues stay."""
    r, k = store.r, store.keys
    gone_ms = 1_000
    store.submit(
        [spec(f"j{i}", queue=worker_queue(f"w{i}")) for i in range(2_000)]
        + [spec("mine", queue=worker_queue("alive")), spec("grp", queue="@group:g")],
        now=T,
    )
    names = [worker_queue(f"w{i}") for i in range(2_000, 20_000)]
    for i in range(0, len(names), 5_000):
        r.sadd(k.queues, *names[i : i + 5_000])
    r.sadd(k.queues, "served", "idle")
    now = T + 2 * gone_ms
    r.zadd(k.workers, {"alive": now})
    r.hset(k.worker("alive"), "queues", f"{worker_queue('alive')},served")
    assert r.scard(k.queues) == 20_004
    settled = 0

    def one_pass(now: int) -> None:
        """Tick until the walk has covered the registry once (bounded)."""
        nonlocal settled
        for _ in range(20_004 // QUEUES_PER_TICK * 3):
            before = r.scard(k.queues)
            report = tick(store, now=now, gone_ms=gone_ms)
            settled += report.orphans_settled
            # bounded work: each tick prunes (so examines) at most about one batch of queues
            assert before - r.scard(k.queues) <= 2 * QUEUES_PER_TICK
            assert report.orphans_settled <= 1000
            if r.get(k.orphans_cursor) == b"0":
                return
        raise AssertionError("the walk never ended")

    one_pass(now)
    assert settled == 2_000  # every job of a gone worker failed WorkerGone
    # The gone workers' queues left at once; an idle named queue only once idle for gone_ms.
    assert r.scard(k.queues) == 4 and r.sismember(k.queues, "idle")
    one_pass(now + gone_ms // 2)
    assert r.sismember(k.queues, "idle")
    later = now + gone_ms + 1
    r.zadd(k.workers, {"alive": later})
    one_pass(later)
    assert sorted(m.decode() for m in r.smembers(k.queues)) == [
        "@group:g",  # holds a job
        worker_queue("alive"),  # its worker is alive (and it holds a job)
        "served",  # a live worker serves it
    ]
    assert not r.exists(k.stats(worker_queue("w7")))  # counters went with the queue
    assert len(store.queues()) == 3


def test_a_worker_runs_the_real_jobs_around_a_malformed_one(url: str, prefix: str) -> None:
    """The reported case: a hash without `task` among real jobs used to strand them and stop the
    worker; now the real ones run and the malformed one is dead-lettered."""
    with App(url, prefix=prefix, heartbeat_ms=200, tick_ms=50) as app:
        jobs = [app.submit("add", (i, 1)) for i in range(3)]
        app.store.submit([spec("bad")])
        app.store.r.hdel(app.keys.job("bad"), "task")
        more = [app.submit("add", (i, 10)) for i in range(3)]
        worker = LiveWorker(app, concurrency=4).start()
        try:
            assert [j.result(timeout=30) for j in jobs + more] == [1, 2, 3, 10, 11, 12]
            assert worker.thread.is_alive()
            rec = app.store.get_job("bad")
            assert rec is not None and rec.state == JobState.FAILED
            assert rec.error is not None and rec.error["type"] == "MalformedJob"
        finally:
            worker.stop()
