"""The Lua transitions, one section per script, called through Store/Scripts against the real
server. Time is a parameter: every call passes an explicit `now` and tests step it."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson
import pytest
import redis

from jobq import App, JobState
from jobq.errors import InvalidTransition, JobIdConflict, JobNotFound, ResultTimeout
from jobq.maintenance import Maintainer, tick
from jobq.model import Claimed, JobSpec, Outcome
from jobq.store import Store

pytestmark = pytest.mark.timeout(60)

T = 1_000_000_000  # a fake clock, in ms; tests step it
LEASE = 10_000
EMPTY = b"[[],{}]"


@pytest.fixture
def store(app: App) -> Store:
    return app.store


def spec(job_id: str, **kw: Any) -> JobSpec:
    return JobSpec(
        job_id,
        kw.pop("task", "t"),
        kw.pop("queue", "default"),
        kw.pop("payload", EMPTY),
        **kw,
    )


def submit(store: Store, *specs: JobSpec, now: int = T) -> list[bool]:
    return store.submit(list(specs), now=now)


def field(store: Store, job_id: str, name: str) -> str | None:
    v = store.r.hget(store.keys.job(job_id), name)
    return v.decode() if v is not None else None


def state(store: Store, job_id: str) -> str | None:
    return field(store, job_id, "state")


def claim(store: Store, n: int = 1, queues: list[str] | None = None, now: int = T) -> list[Claimed]:
    return store.claim("w1", queues or ["default"], n, LEASE, now=now)


def ok(c: Claimed, value: Any = 1) -> Outcome:
    return Outcome(c, ok=True, result=orjson.dumps([value]))


def bad(c: Claimed, delay_ms: int = -1, message: str = "boom") -> Outcome:
    err = {"type": "ValueError", "message": message, "traceback": ""}
    return Outcome(c, ok=False, error=err, retry_delay_ms=delay_ms)


def events(store: Store, job_id: str) -> list[tuple[str, str | None]]:
    out = []
    for _id, f in store.r.xrange(store.keys.events):
        if f[b"job"].decode() == job_id:
            info = f.get(b"info")
            out.append((f[b"state"].decode(), info.decode() if info else None))
    return out


def zscore(store: Store, key: str, member: str) -> float | None:
    s = store.r.zscore(key, member)
    return None if s is None else float(s)


# -- enqueue -----------------------------------------------------------------------------------


def test_enqueue_creates_a_queued_job(store: Store) -> None:
    assert submit(store, spec("a", task="add", payload=b"[[1,2],{}]", priority=3)) == [True]
    raw = store.r.hgetall(store.keys.job("a"))
    assert raw[b"state"] == b"queued" and raw[b"task"] == b"add"
    assert raw[b"payload"] == b"[[1,2],{}]" and raw[b"created"] == str(T).encode()
    assert raw[b"pri"] == b"3"
    assert store.r.zcard(store.keys.queue("default")) == 1
    assert store.r.sismember(store.keys.queues, "default")
    assert store.r.llen(store.keys.wake("default")) == 1  # an idle worker is woken
    assert events(store, "a") == [("queued", None)]


def test_enqueue_is_idempotent_per_id(store: Store) -> None:
    assert submit(store, spec("same", task="first")) == [True]
    assert submit(store, spec("same", task="first", priority=9)) == [False]  # same task: that job
    with pytest.raises(JobIdConflict, match="'first', not 'second'"):  # another task: refused
        submit(store, spec("same", task="second"))
    assert field(store, "same", "task") == "first"  # unchanged
    assert store.r.zcard(store.keys.queue("default")) == 1
    assert submit(store, spec("x"), spec("x"), spec("y")) == [True, False, True]
    assert store.r.zcard(store.keys.queue("default")) == 3
    # An id that already ran is not created again either.
    (c,) = claim(store)
    store.report([ok(c)], now=T + 1)
    assert submit(store, spec("same", task="first")) == [False]
    assert state(store, "same") == "succeeded"


def test_enqueue_with_delay_is_scheduled(store: Store) -> None:
    assert submit(store, spec("later", delay_ms=5000)) == [True]
    assert state(store, "later") == "scheduled"
    assert field(store, "later", "eta") == str(T + 5000)
    assert zscore(store, store.keys.scheduled, "later") == T + 5000
    assert store.r.zcard(store.keys.queue("default")) == 0
    assert claim(store) == []
    assert events(store, "later") == [("scheduled", None)]


def test_enqueue_stores_options(store: Store) -> None:
    s = spec("o", max_attempts=4, timeout_ms=1500, backoff_ms=200, result_ttl_s=60, queue="q2")
    submit(store, s)
    raw = store.r.hgetall(store.keys.job("o"))
    assert (raw[b"max"], raw[b"timeout"], raw[b"backoff"], raw[b"ttl"]) == (
        b"4",
        b"1500",
        b"200",
        b"60",
    )
    (c,) = claim(store, queues=["q2"])
    assert (c.max_attempts, c.timeout_ms, c.backoff_ms, c.queue) == (4, 1500, 200, "q2")


@pytest.mark.parametrize(
    ("record", "why"),
    [
        (b"not json", "not a JSON object"),
        (b'"pri"', "not a JSON object"),
        (b"[7]", "unknown option 1"),
        (b'{"colour": "red"}', "unknown option colour"),
        (b'{"pri": "high"}', "option pri is not an integer"),
        (b'{"pri": 1.5}', "option pri is not an integer"),
        (b'{"ttl": 1e300}', "option ttl is not an integer"),
        (b'{"delay": null}', "option delay is not an integer"),
        (b'{"parents": ["a"]}', "option parents is not a string"),
    ],
)
def test_enqueue_refuses_a_malformed_options_record_naming_the_job(
    store: Store, record: bytes, why: str
) -> None:
    good = spec("g1", priority=2).as_row()
    bad = ["b1", "t", "default", EMPTY, record, b""]
    store.ping()  # (a new connection writes its token epoch first)
    pattern = store.keys.base.replace("{", "\\{").replace("}", "\\}") + "*"
    before = {k: store.r.dump(k) for k in store.r.scan_iter(match=pattern)}
    with pytest.raises(redis.ResponseError, match=f"JOBQ_ARGS enqueue: job b1: .*: {why}"):
        store.scripts.enqueue(store.r, [good, bad], now=T)
    after = {k: store.r.dump(k) for k in store.r.scan_iter(match=pattern)}
    assert after == before  # nothing written, not even the good job of the batch


def test_large_submit_goes_in_chunks_and_stays_idempotent(store: Store) -> None:
    specs = [spec(f"j{i}") for i in range(1200)]
    assert store.submit(specs, now=T) == [True] * 1200
    assert store.submit([*specs[:700], spec("new")], now=T) == [False] * 700 + [True]
    assert store.r.zcard(store.keys.queue("default")) == 1201


# -- claim -------------------------------------------------------------------------------------


def test_claim_higher_priority_first_fifo_within_a_priority(store: Store) -> None:
    submit(
        store,
        spec("p0-a"),
        spec("p5-a", priority=5),
        spec("pneg", priority=-1),
        spec("p5-b", priority=5),
        spec("p0-b"),
        spec("p1000", priority=1000),
        spec("p5-c", priority=5),
    )
    order = [c.id for c in claim(store, n=3)] + [c.id for _ in range(4) for c in claim(store)]
    assert order == ["p1000", "p5-a", "p5-b", "p5-c", "p0-a", "p0-b", "pneg"]


def test_claim_batch_of_n(store: Store) -> None:
    submit(store, *[spec(f"j{i}") for i in range(10)])
    sizes = [len(claim(store, n=4)) for _ in range(4)]
    assert sizes == [4, 4, 2, 0]


def test_claim_serves_queues_in_the_order_given(store: Store) -> None:
    submit(store, spec("low1", queue="low"), spec("low2", queue="low"))
    submit(store, spec("high1", queue="high"), spec("high2", queue="high"))
    got = claim(store, n=3, queues=["high", "low"])
    assert [(c.id, c.queue) for c in got] == [("high1", "high"), ("high2", "high"), ("low1", "low")]
    assert [c.id for c in claim(store, n=3, queues=["high", "low"])] == ["low2"]


def test_claim_gives_a_lease_and_an_increasing_token(store: Store) -> None:
    submit(store, spec("a", task="add", payload=b"[[1],{}]"), spec("b"))
    (a,) = claim(store, now=T + 7)
    (b,) = claim(store, now=T + 8)
    assert (a.id, a.task, a.payload, a.attempt) == ("a", "add", b"[[1],{}]", 1)
    assert int(b.token) > int(a.token)
    raw = store.r.hgetall(store.keys.job("a"))
    assert raw[b"state"] == b"running" and raw[b"worker"] == b"w1"
    assert raw[b"token"] == a.token.encode() and raw[b"claimed"] == str(T + 7).encode()
    assert b"started" not in raw  # claimed ahead (start=0): it has not begun running
    assert zscore(store, store.keys.leases, "a") == T + 7 + LEASE
    assert events(store, "a") == [("queued", None), ("running", "w1")]


def test_claim_passes_the_wake_up_on_when_work_remains(store: Store) -> None:
    submit(store, *[spec(f"j{i}") for i in range(3)])
    store.r.delete(store.keys.wake("default"))  # as if one idle worker took the marker
    claim(store, n=1)
    assert store.r.llen(store.keys.wake("default")) == 1  # another idle worker is woken
    store.r.delete(store.keys.wake("default"))
    claim(store, n=5)
    assert store.r.llen(store.keys.wake("default")) == 0  # nothing left: nobody woken


def lua_commands(url: str, prefix: str, run: Callable[[], Any]) -> list[str]:
    """The commands scripts ran on the server (touching `prefix`) while `run()` ran, as seen
    by MONITOR; a marker command from another connection ends the capture deterministically."""
    mon = redis.Redis.from_url(url)
    other = redis.Redis.from_url(url)
    marker = "end-of-capture-" + uuid.uuid4().hex
    out: list[str] = []
    try:
        with mon.monitor() as m:
            run()
            other.echo(marker)
            for ev in m.listen():
                if marker in ev["command"]:
                    break
                if ev["client_type"] == "lua" and prefix in ev["command"]:
                    out.append(ev["command"].split(" ", 1)[0].upper())
    finally:
        mon.close()
        other.close()
    return out


def test_claim_cost_does_not_depend_on_queue_length(store: Store, url: str, prefix: str) -> None:
    submit(store, *[spec(f"s{i}", queue="short") for i in range(5)])
    store.submit([spec(f"l{i}", queue="long") for i in range(20_000)], now=T)
    # (each in a new ms: the first token of a ms rebases the token counter on the clock)
    short = lua_commands(url, prefix, lambda: claim(store, n=2, queues=["short"], now=T + 1))
    long = lua_commands(url, prefix, lambda: claim(store, n=2, queues=["long"], now=T + 2))
    assert short, "MONITOR saw no script commands"
    # The same commands, whatever the depth: a pop from the sorted set, then per-job work.
    assert long == short
    assert "ZPOPMIN" in long
    scans = {"ZRANGE", "ZRANGEBYSCORE", "ZSCAN", "SCAN", "KEYS", "LRANGE", "SMEMBERS", "SORT"}
    assert not scans & set(long)


# -- complete / fail: fencing ------------------------------------------------------------------


def test_complete_records_the_result_once(store: Store) -> None:
    submit(store, spec("a"))
    (c,) = claim(store)
    assert store.report([ok(c, {"v": 5})], now=T + 50) == {"a": 1}
    raw = store.r.hgetall(store.keys.job("a"))
    assert raw[b"state"] == b"succeeded" and orjson.loads(raw[b"result"]) == [{"v": 5}]
    assert raw[b"finished"] == str(T + 50).encode()
    assert zscore(store, store.keys.leases, "a") is None
    assert zscore(store, store.keys.finished, "a") == T + 50
    # A second report of the same attempt is refused: the job is no longer running.
    assert store.report([ok(c, "again")], now=T + 60) == {"a": -2}
    assert orjson.loads(store.r.hget(store.keys.job("a"), "result")) == [{"v": 5}]


def test_complete_and_fail_refuse_a_stale_token(store: Store) -> None:
    submit(store, spec("a"))
    (c,) = claim(store)
    forged = Claimed(c.id, str(int(c.token) + 1000), 1, "t", EMPTY, 1, None, "default", None)
    assert store.report([ok(forged)], now=T + 1) == {"a": -2}
    assert store.report([bad(forged)], now=T + 1) == {"a": -2}
    assert state(store, "a") == "running"
    assert store.report([ok(c)], now=T + 2) == {"a": 1}


def test_zombie_attempt_cannot_overwrite_the_newer_one(store: Store) -> None:
    submit(store, spec("z", max_attempts=3))
    (old,) = claim(store, now=T)
    assert store.reap(now=T + LEASE + 1) == (1, 0)  # the lease expired: requeued
    (new,) = claim(store, now=T + LEASE + 2)
    assert new.attempt == old.attempt and new.token != old.token  # a lost lease is not counted
    assert store.report([ok(old, "zombie")], now=T + LEASE + 3) == {"z": -2}
    assert store.report([bad(old)], now=T + LEASE + 3) == {"z": -2}
    assert store.report([ok(new, "fresh")], now=T + LEASE + 4) == {"z": 1}
    assert orjson.loads(store.r.hget(store.keys.job("z"), "result")) == ["fresh"]


def test_complete_refuses_wrong_state_and_unknown_jobs(store: Store) -> None:
    submit(store, spec("q"))
    never_claimed = Claimed("q", "1", 1, "t", EMPTY, 1, None, "default", None)
    ghost = Claimed("ghost", "1", 1, "t", EMPTY, 1, None, "default", None)
    assert store.report([ok(never_claimed), bad(ghost)], now=T) == {"q": -2, "ghost": -1}
    assert state(store, "q") == "queued"


def test_report_batches_successes_and_failures(store: Store) -> None:
    submit(store, *[spec(f"j{i}") for i in range(4)])
    cs = claim(store, n=4)
    codes = store.report([ok(cs[0]), bad(cs[1]), ok(cs[2]), bad(cs[3])], now=T + 1)
    assert codes == {"j0": 1, "j1": 2, "j2": 1, "j3": 2}


# -- fail: retry with back-off, then dead-letter -----------------------------------------------


def test_fail_retries_after_the_delay_then_dead_letters(store: Store) -> None:
    submit(store, spec("f", max_attempts=3))
    (c1,) = claim(store, now=T)
    assert store.report([bad(c1, 500, "first")], now=T + 10) == {"f": 1}
    assert state(store, "f") == "scheduled"
    assert zscore(store, store.keys.scheduled, "f") == T + 510
    assert zscore(store, store.keys.leases, "f") is None
    assert orjson.loads(field(store, "f", "error") or "")["message"] == "first"
    assert store.promote(now=T + 509) == 0  # not due yet
    assert claim(store, now=T + 509) == []
    assert store.promote(now=T + 510) == 1
    (c2,) = claim(store, now=T + 511)
    assert c2.attempt == 2
    assert store.report([bad(c2, 0)], now=T + 520) == {"f": 1}
    store.promote(now=T + 520)
    (c3,) = claim(store, now=T + 521)
    assert c3.attempt == 3
    assert store.report([bad(c3, 0, "last")], now=T + 530) == {"f": 2}  # attempts used up
    assert state(store, "f") == "failed"
    assert zscore(store, store.keys.dead, "f") == T + 530
    assert store.dead_letters() == ["f"]
    assert orjson.loads(field(store, "f", "error") or "")["message"] == "last"
    assert [s for s, _ in events(store, "f")] == [
        "queued",
        "running",
        "scheduled",
        "queued",
        "running",
        "scheduled",
        "queued",
        "running",
        "failed",
    ]


def test_fail_without_retry_dead_letters_at_once(store: Store) -> None:
    submit(store, spec("f", max_attempts=5))
    (c,) = claim(store)
    assert store.report([bad(c, -1)], now=T + 1) == {"f": 2}
    assert state(store, "f") == "failed" and store.dead_letters() == ["f"]


# -- promote -----------------------------------------------------------------------------------


def test_promote_moves_only_due_jobs_and_keeps_priorities(store: Store) -> None:
    submit(
        store,
        spec("d100", delay_ms=100),
        spec("d200-hi", delay_ms=200, priority=7),
        spec("d300", delay_ms=300),
    )
    assert store.promote(now=T + 99) == 0
    assert store.promote(now=T + 250) == 2
    assert state(store, "d100") == "queued" and state(store, "d300") == "scheduled"
    assert [c.id for c in claim(store, n=5, now=T + 251)] == ["d200-hi", "d100"]
    assert events(store, "d100") == [("scheduled", None), ("queued", None), ("running", "w1")]


def test_promote_respects_its_limit_and_skips_stale_entries(store: Store) -> None:
    submit(store, *[spec(f"d{i}", delay_ms=10) for i in range(5)])
    store.r.zadd(store.keys.scheduled, {"vanished": T})  # an entry whose job is gone
    assert store.promote(limit=2, now=T + 10) == 1  # "vanished" was dropped, not counted
    assert store.promote(limit=2, now=T + 10) == 2
    assert store.promote(limit=100, now=T + 10) == 2
    assert store.r.zcard(store.keys.scheduled) == 0


# -- heartbeat ---------------------------------------------------------------------------------


def test_heartbeat_extends_the_lease(store: Store) -> None:
    submit(store, spec("h", max_attempts=2))
    (c,) = claim(store, now=T)
    assert store.heartbeat([(c.id, c.token)], LEASE, now=T + 8000) == (set(), set())
    assert zscore(store, store.keys.leases, "h") == T + 8000 + LEASE
    assert store.reap(now=T + LEASE + 1) == (0, 0)  # the original deadline passed: still ours
    assert state(store, "h") == "running"
    assert store.reap(now=T + 8000 + LEASE + 1) == (1, 0)


def test_heartbeat_reports_lost_jobs_and_does_not_revive_them(store: Store) -> None:
    submit(store, spec("mine"), spec("stolen", max_attempts=2), spec("done"))
    cs = {c.id: c for c in claim(store, n=3, now=T)}
    store.report([ok(cs["done"])], now=T + 1)
    store.r.zadd(store.keys.leases, {"stolen": T})  # its lease ran out ...
    store.reap(now=T + 2)  # ... and it was requeued
    items = [(c.id, c.token) for c in cs.values()] + [("ghost", "1")]
    lost, cancel = store.heartbeat(items, LEASE, now=T + 3)
    assert lost == {"stolen", "done", "ghost"} and cancel == set()
    assert zscore(store, store.keys.leases, "stolen") is None
    assert zscore(store, store.keys.leases, "mine") == T + 3 + LEASE


# -- reap (the deterministic half; tests/test_crash.py kills real workers) ----------------------


def test_reap_requeues_expired_leases_without_counting_the_attempt(store: Store) -> None:
    # (Dead-lettering a job that keeps losing its worker: tests/test_delivery.py.)
    submit(store, spec("again", max_attempts=2, priority=4), spec("last"), spec("fresh"))
    cs = {c.id: c for c in store.claim("w1", ["default"], 3, LEASE, now=T, start=3)}
    store.heartbeat([("fresh", cs["fresh"].token)], LEASE, now=T + 5000)
    assert store.reap(now=T + LEASE) == (2, 0)
    assert state(store, "again") == "queued" and field(store, "again", "att") == "0"
    assert state(store, "fresh") == "running"
    assert state(store, "last") == "queued" and store.dead_letters() == []
    assert field(store, "last", "lost") == "1"  # a suspect now
    assert events(store, "again")[-1][1].startswith("lease expired: worker w1 lost (1 of 3)")
    (c,) = claim(store, now=T + LEASE + 1)
    assert (c.id, c.attempt, c.lost) == ("again", 1, 1)


def test_reap_respects_its_limit(store: Store) -> None:
    submit(store, *[spec(f"j{i}", max_attempts=2) for i in range(5)])
    claim(store, n=5, now=T)
    assert store.reap(limit=3, now=T + LEASE) == (3, 0)
    assert store.reap(limit=3, now=T + LEASE) == (2, 0)


# -- requeue -----------------------------------------------------------------------------------


def test_requeue_does_not_count_the_attempt(store: Store) -> None:
    submit(store, spec("r", max_attempts=1), spec("s"))
    (c, s) = claim(store, n=2)
    assert store.requeue([(c.id, c.token), (s.id, "999999")], now=T + 5) == 1  # stale skipped
    assert state(store, "r") == "queued" and field(store, "r", "att") == "0"
    assert field(store, "r", "token") is None
    assert zscore(store, store.keys.leases, "r") is None
    assert state(store, "s") == "running"
    (again,) = claim(store, now=T + 6)
    assert (again.id, again.attempt) == ("r", 1)  # max_attempts=1 and still allowed to run
    assert store.report([ok(again)], now=T + 7) == {"r": 1}


def test_requeued_job_goes_back_in_priority_order(store: Store) -> None:
    submit(store, spec("hi", priority=5), spec("lo"))
    (c,) = claim(store)
    store.requeue([(c.id, c.token)], now=T + 1)
    assert [x.id for x in claim(store, n=2)] == ["hi", "lo"]


# -- cancel ------------------------------------------------------------------------------------


def test_cancel_queued_and_scheduled_at_once(store: Store) -> None:
    submit(store, spec("q"), spec("s", delay_ms=1000))
    sc = store.scripts
    assert sc.cancel(store.r, "q", 60, now=T + 1) == 1
    assert sc.cancel(store.r, "s", 60, now=T + 1) == 1
    assert state(store, "q") == "cancelled" and state(store, "s") == "cancelled"
    assert store.r.zcard(store.keys.queue("default")) == 0
    assert store.r.zcard(store.keys.scheduled) == 0
    assert claim(store, now=T + 2000) == [] and store.promote(now=T + 2000) == 0
    assert 0 < store.r.ttl(store.keys.job("q")) <= 60  # expires like any finished job
    assert events(store, "s") == [("scheduled", None), ("cancelled", None)]
    assert sc.cancel(store.r, "q", 60, now=T + 3) == 0  # already finished
    assert store.cancel("ghost") == -1


def test_cancel_running_flags_it_and_heartbeat_reports_it(store: Store, app: App) -> None:
    submit(store, spec("r"))
    (c,) = claim(store)
    assert app.job("r").cancel() is False  # running: asked to stop, not cancelled yet
    assert state(store, "r") == "running" and field(store, "r", "cancel") is not None
    assert store.heartbeat([(c.id, c.token)], LEASE, now=T + 1) == (set(), {"r"})
    assert events(store, "r")[-1] == ("running", "cancel requested")
    with pytest.raises(JobNotFound):
        app.job("ghost").cancel()


# -- rerun -------------------------------------------------------------------------------------


def test_rerun_of_a_dead_lettered_job(store: Store, app: App) -> None:
    submit(store, spec("d", max_attempts=2, result_ttl_s=60))
    (c,) = claim(store)
    store.report([bad(c, -1)], now=T + 1)
    assert store.dead_letters() == ["d"]
    app.job("d").rerun()
    assert state(store, "d") == "queued" and field(store, "d", "att") == "0"
    assert store.dead_letters() == [] and store.r.ttl(store.keys.job("d")) == -1
    assert zscore(store, store.keys.finished, "d") is None
    assert events(store, "d")[-1] == ("queued", "rerun")
    (again,) = claim(store, now=T + 2)
    assert again.attempt == 1 and again.max_attempts == 2  # a full set of attempts again


def test_rerun_refuses_jobs_that_are_not_dead(store: Store, app: App) -> None:
    submit(store, spec("q"))
    assert store.rerun("q") == -3
    with pytest.raises(InvalidTransition, match="rerun refused for job q"):
        app.job("q").rerun()
    with pytest.raises(JobNotFound):
        app.job("ghost").rerun()


# -- await / wait: woken by BLPOP, not by polling ----------------------------------------------


def test_await_registers_a_waiter(store: Store) -> None:
    submit(store, spec("a"))
    assert store.scripts.await_(store.r, "a") == 0
    assert field(store, "a", "waiters") == "1"
    assert store.scripts.await_(store.r, "ghost") == -1
    (c,) = claim(store)
    store.report([ok(c)], now=T + 1)
    assert store.r.llen(store.keys.done("a")) == 1  # one token per waiter
    assert field(store, "a", "waiters") is None
    assert store.scripts.await_(store.r, "a") == 1  # finished: read it now


def _blocked_in_blpop(r: redis.Redis) -> int:
    """How many clients are blocked right now in BLPOP (CLIENT LIST: flags b, cmd blpop)."""
    n = 0
    for c in r.client_list():
        if c.get("cmd") == "blpop" and "b" in c.get("flags", ""):
            n += 1
    return n


def test_waiters_are_woken_by_blpop(url: str, prefix: str, store: Store) -> None:
    submit(store, spec("w"))
    baseline = _blocked_in_blpop(store.r)
    results: list[Any] = []
    waiters = []
    apps = [App(url, prefix=prefix) for _ in range(3)]
    for a in apps:
        t = threading.Thread(target=lambda a=a: results.append(a.job("w").result(timeout=60)))
        t.start()
        waiters.append(t)
    # All three register and then sit in BLPOP on the server: no client-side polling loop.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if field(store, "w", "waiters") == "3" and _blocked_in_blpop(store.r) >= baseline + 3:
            break
        time.sleep(0.02)
    assert field(store, "w", "waiters") == "3"
    assert _blocked_in_blpop(store.r) >= baseline + 3
    assert results == []
    (c,) = claim(store)
    t0 = time.monotonic()
    store.report([ok(c, 42)])
    for t in waiters:
        t.join(30)
    # Woken by the push, well before the 5 s BLPOP slice would have ended on its own.
    assert time.monotonic() - t0 < 4.0
    assert results == [42, 42, 42]
    for a in apps:
        a.close()


def test_wait_times_out_and_reports_missing_jobs(app: App, store: Store) -> None:
    submit(store, spec("slow"))
    t0 = time.monotonic()
    with pytest.raises(ResultTimeout, match="still queued"):
        app.job("slow").result(timeout=0.3)
    assert 0.25 <= time.monotonic() - t0 < 5
    with pytest.raises(JobNotFound):
        app.job("ghost").result(timeout=1)
    rec = store.wait("slow", 0.05)
    assert rec is not None and rec.state is JobState.QUEUED


# -- events ------------------------------------------------------------------------------------


def test_one_event_per_transition(store: Store) -> None:
    submit(store, spec("e", max_attempts=2))
    (c,) = claim(store, now=T)
    store.report([bad(c, 10)], now=T + 1)
    store.promote(now=T + 11)
    (c2,) = claim(store, now=T + 12)
    store.report([ok(c2)], now=T + 13)
    assert events(store, "e") == [
        ("queued", None),
        ("running", "w1"),
        ("scheduled", "retry"),
        ("queued", None),
        ("running", "w1"),
        ("succeeded", None),
    ]
    # Each entry names the queue too.
    entries = store.r.xrange(store.keys.events)
    assert all(f[b"queue"] == b"default" for _id, f in entries)


def test_event_stream_is_capped(url: str, prefix: str) -> None:
    with App(url, prefix=prefix, events_maxlen=50) as small:
        small.store.submit([spec(f"j{i}") for i in range(3000)], now=T)
        n = small.store.r.xlen(small.keys.events)
    # MAXLEN ~ trims whole stream nodes (100 entries each by default), so "about 50".
    assert 50 <= n <= 300, n


# -- stats -------------------------------------------------------------------------------------


def test_stats_counters(store: Store) -> None:
    submit(
        store,
        *[spec(f"j{i}", queue="s") for i in range(4)],
        spec("later", queue="s", delay_ms=1000),
    )
    submit(store, spec("retry", queue="s", max_attempts=2))
    got = {c.id: c for c in claim(store, n=3, queues=["s"])}
    assert set(got) == {"j0", "j1", "j2"}
    store.report([ok(got["j0"]), bad(got["j1"])], now=T + 1)
    store.scripts.cancel(store.r, "j3", 60, now=T + 1)
    (info,) = store.queues()
    assert info == info.__class__("s", 1, 1, 1, 1, 1, 1, 0)  # retry queued; j2 running
    (r,) = claim(store, queues=["s"], now=T + 2)
    store.report([bad(r, 10)], now=T + 3)  # retried once
    store.requeue([(got["j2"].id, got["j2"].token)], now=T + 4)
    (info,) = store.queues()
    assert (info.queued, info.scheduled, info.running, info.retried) == (1, 2, 0, 1)
    assert store.promote(now=T + 2000) == 2
    (info,) = store.queues()
    assert (info.queued, info.scheduled) == (3, 0)
    assert store.dead_count() == 1


# -- leader ------------------------------------------------------------------------------------


def test_leader_lease(store: Store) -> None:
    assert store.lead("a", 5000) is True
    assert store.lead("b", 5000) is False
    assert store.lead("a", 5000) is True  # renewed
    assert 0 < store.r.pttl(store.keys.leader) <= 5000
    assert store.lead("b", 5000, release=True) is False  # not b's to release
    assert store.lead("a", 5000, release=True) is False
    assert store.r.get(store.keys.leader) is None
    assert store.lead("b", 5000) is True


# -- maintenance ticks (stepped clock) ---------------------------------------------------------


def test_tick_promotes_and_reaps_in_one_pass(store: Store) -> None:
    submit(store, spec("delayed", delay_ms=100), spec("crashed", max_attempts=2))
    claim(store, now=T)
    report = tick(store, now=T + LEASE)
    assert (report.promoted, report.requeued, report.dead_lettered) == (1, 1, 0)
    assert state(store, "delayed") == "queued" and state(store, "crashed") == "queued"


def test_tick_trims_the_finished_index_to_the_result_ttl(store: Store) -> None:
    submit(store, spec("old"))
    (c,) = claim(store)
    store.report([ok(c)], now=T)
    tick(store, now=T + store.result_ttl_s * 1000 - 1)
    assert zscore(store, store.keys.finished, "old") == T
    tick(store, now=T + store.result_ttl_s * 1000 + 1)
    assert zscore(store, store.keys.finished, "old") is None


def test_maintainer_defers_to_a_live_master(store: Store) -> None:
    worker = Maintainer(store, tick_ms=100, leader_ms=5000, is_master=False, name="w")
    master = Maintainer(store, tick_ms=100, leader_ms=5000, is_master=True, name="m")
    assert worker.step(now=T) is not None and worker.leading
    assert master.step(now=T) is None  # the worker still holds the lease
    assert worker.step(now=T) is None and not worker.leading  # sees the master, hands over
    assert master.step(now=T) is not None and master.leading
    assert worker.step(now=T) is None
    master.stop()
    assert store.r.get(store.keys.leader) is None
