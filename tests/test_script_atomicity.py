"""Every script in lua/ either does its whole transition or writes nothing.

Valkey does not roll back a script that fails half-way, so each script must check everything
before its first write. For every script, starting from a deployment with jobs in every state,
each call is run under every fault we can inflict: bad ARGV (non-numbers, fractions, negative,
huge, missing or extra items), malformed job hashes (a field missing or garbage, in every job at
once), and every key it touches holding the wrong type. Then:

- a call that answers with an error must leave every key of the deployment byte for byte as it
  was (DUMP before and after);
- a call that succeeds must not strand a job: a job popped from its queue is not left `queued`
  in no queue (the claim bug: three real jobs popped with a malformed one were lost).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
import redis

from jobq import App
from jobq.keys import Keys
from jobq.model import JobSpec, Outcome, RemoteParent
from jobq.scripts import SCRIPT_NAMES, Batch, Call, Scripts
from jobq.store import Store

pytestmark = pytest.mark.timeout(120)

T = 1_000_000_000
LEASE = 10_000
LATER = T + 10 * LEASE
EMPTY = b"[[],{}]"
ERR = orjson.dumps({"type": "E", "message": "boom", "traceback": ""})


@dataclass
class World:
    """The deployment every case starts from, and the tokens of its running jobs."""

    tokens: dict[str, str]


def spec(job_id: str, **kw: Any) -> JobSpec:
    return JobSpec(job_id, kw.pop("task", "t"), kw.pop("queue", "default"), EMPTY, **kw)


def build(store: Store) -> World:
    """Jobs in every state: queued (with a unique key and a waiter), running (a parent, holding
    a concurrency slot), scheduled, dead-lettered, waiting on a parent, targeted at a gone
    worker; a live worker and the leader lease."""
    k, r = store.keys, store.r
    store.submit(
        [
            spec("r1", concurrency_key="ck", max_attempts=3, result_ttl_s=60),
            spec("f1"),
        ],
        now=T,
    )
    claimed = store.claim("w1", ["default"], 2, LEASE, now=T)
    tokens = {c.id: c.token for c in claimed}
    error = {"type": "E", "message": "x", "traceback": ""}
    store.report([Outcome(c, ok=False, error=error) for c in claimed if c.id == "f1"], now=T)
    store.submit(
        [
            spec("q1", unique_key="u1"),
            spec("q2", priority=5),
            spec("s1", delay_ms=5_000),
            spec("c1", parents=("r1",), pass_results="one"),
            spec("t1", queue="@worker:gone", fallback_queue=None),
            spec("g1", queue="@group:g"),
        ],
        now=T,
    )
    store.scripts.await_(r, "q1", now=T)
    # Dependencies across partitions (handoff.py): r1 and q2 have children elsewhere, x1 waits
    # on a parent elsewhere, a hand-off waits in the outbox and one for x2, not enqueued yet.
    store.scripts.link(r, [("r1", 1, "k1", True), ("q2", 2, "k2", False)], now=T)
    store.submit(
        [
            spec(
                "x1",
                parents=("rp", "r1"),
                pass_results="list",
                remote_parents=(RemoteParent("rp", "pending"),),
            )
        ],
        now=T,
    )
    store.scripts.deliver(r, [("x2", "rp2", "succeeded", b"[2]")], 60, now=T)
    r.xadd(k.outbox, {"c": "1", "k": "k0", "p": "p0", "s": "succeeded", "r": "[0]"})
    r.zadd(k.workers, {"w1": T})
    r.hset(k.worker("w1"), mapping={"queues": "@worker:w1,default"})
    r.hset(k.ratelimits, "rt", "10:1000")
    store.lead("me", 5_000, now=T)
    return World(tokens)


# -- the calls: every script, in its ordinary uses -------------------------------------------


def calls(s: Scripts, w: World) -> dict[str, list[Call]]:
    tok = w.tokens["r1"]
    b: dict[str, Batch] = {name: Batch() for name in SCRIPT_NAMES}
    s.enqueue(
        b["enqueue"],
        [
            spec("n1", parents=("r1",), unique_key="u2", concurrency_key="ck").as_row(),
            spec("n2", queue="other", delay_ms=10).as_row(),
            spec("n3", unique_key="u1").as_row(),
            spec(
                "n4",
                parents=("rp", "q1"),
                remote_parents=(RemoteParent("rp", "succeeded", b"[1]"),),
            ).as_row(),
            spec("n5", parents=("rp",), remote_parents=(RemoteParent("rp", "failed"),)).as_row(),
            spec("x2", parents=("rp2",), remote_parents=(RemoteParent("rp2", "pending"),)).as_row(),
        ],
        now=T,
    )
    s.claim(b["claim"], "w1", ["@worker:w1", "default", "@group:g"], 3, LEASE, now=T)
    s.complete(b["complete"], [("r1", tok, b"[1]", 5), ("zz", "1", b"[2]", -1)], 60, now=T)
    s.fail(b["fail"], [("r1", tok, ERR, -1, 5), ("zz", "1", ERR, 5, -1)], 60, now=T)
    s.fail(b["fail"], [("r1", tok, ERR, 5, 5)], 60, now=T)
    s.reap(b["reap"], 10, now=LATER)
    s.promote(b["promote"], 10, now=LATER)
    s.heartbeat(b["heartbeat"], [("r1", tok), ("q1", "9")], LEASE, now=T, worker="w1")
    s.requeue(b["requeue"], [("r1", tok)], now=T)
    for job in ("q1", "r1", "s1", "c1"):
        s.cancel(b["cancel"], job, 60, now=T)
    s.rerun(b["rerun"], "f1", now=T)
    s.await_(b["await"], "q1", now=T, push=True)
    s.await_(b["await"], "f1", now=T, push=True)
    s.await_(b["await"], "q1", now=T, mode="leave")
    s.leader(b["leader"], "me", 5_000, now=T)
    s.leader(b["leader"], "other", 5_000, now=T)
    s.progress(b["progress"], "r1", tok, 0.5, "half", now=T)
    s.orphans(b["orphans"], 1_000, 10, now=LATER)
    s.purge(b["purge"], "default", 10, 60, now=T)
    s.trim_dead(b["trim_dead"], LATER, 10, now=LATER)
    for job in ("f1", "q1", "zz"):  # dead-lettered, queued, missing
        s.delete(b["delete"], job, now=T)
    s.epoch(b["epoch"], 1_000, now=T)
    s.link(b["link"], [("q1", 1, "k3", True), ("f1", 2, "k4", False), ("r1", 1, "k1", True)], now=T)
    s.deliver(
        b["deliver"],
        [
            ("x1", "rp", "succeeded", b"[1]"),
            ("x3", "rp", "failed", b""),
            ("c1", "zz", "failed", b""),
        ],
        60,
        now=T,
    )
    s.deliver(
        b["deliver"], [("x1", "rp", "cancelled", b""), ("x1", "rp", "cancelled", b"")], 60, now=T
    )
    s.declare(b["declare"], [("t", '{"queue": "q"}'), ("u", "{}")], now=T)
    s.handback(b["handback"], [("r1", tok, 0), ("q1", "9", 0), ("zz", "1", T)], 500, 60_000, now=T)
    s.handback(b["handback"], [("r1", tok, 0)], 500, 0, now=T)  # grace over: nothing written
    return {name: batch.calls for name, batch in b.items()}


# -- faults ------------------------------------------------------------------------------------

Fault = Callable[[Any, Keys], None]


def _job_keys(r: Any, k: Keys) -> list[bytes]:
    return [key for key in r.keys(_pattern(k.job("*"))) if r.type(key) == b"hash"]


def _pattern(key: str) -> str:
    return key.replace("{", "\\{").replace("}", "\\}")


def set_field(name: str, value: str | None) -> Fault:
    def fault(r: Any, k: Keys) -> None:
        for jk in _job_keys(r, k):
            if value is None:
                r.hdel(jk, name)
            else:
                r.hset(jk, name, value)

    fault.__name__ = f"job.{name}={value!r}"
    return fault


def wrong_type(key_of: Callable[[Keys], str]) -> Fault:
    def fault(r: Any, k: Keys) -> None:
        key = key_of(k)
        was = r.type(key)
        r.delete(key)
        if was == b"string":
            r.rpush(key, "not a string")
        else:
            r.set(key, "not a " + (was.decode() if was != b"none" else "thing"))

    fault.__name__ = f"wrongtype({key_of(Keys('x'))})"
    return fault


def garbage_string(key_of: Callable[[Keys], str], value: str) -> Fault:
    def fault(r: Any, k: Keys) -> None:
        r.set(key_of(k), value)

    fault.__name__ = f"{key_of(Keys('x'))}={value!r}"
    return fault


def garbage_stats(r: Any, k: Keys) -> None:
    for q in ("default", "other", "@worker:gone", "@group:g"):
        r.hset(k.stats(q), mapping={"running": "x", "scheduled": "x", "failed": "x"})


def bad_rate(r: Any, k: Keys) -> None:
    r.hset(k.ratelimits, "t", "0:0")
    r.rpush(k.base + "rate:t", "not a slot")


FAULTS: list[Fault] = [
    # malformed job hashes (every job at once)
    *(set_field(f, None) for f in ("task", "queue", "payload", "state", "token", "created")),
    *(
        set_field(f, "x")
        for f in ("state", "att", "max", "timeout", "backoff", "pri", "waiters", "ttl", "waiting")
    ),
    set_field("ttl", "1e300"),
    set_field("ttl", "1.5"),
    set_field("climit", "x"),
    set_field("parents", ",,,"),
    set_field("rslot", "x"),
    set_field("kids", "1"),
    set_field("cheld", "ck"),
    set_field("xp", "1"),
    set_field("x:rp", "garbage"),
    garbage_stats,
    bad_rate,
    garbage_string(lambda k: k.seq, "abc"),
    garbage_string(lambda k: k.token, "abc"),
    garbage_string(lambda k: k.conc("ck"), "abc"),
    garbage_string(lambda k: k.orphans_cursor, "not a cursor"),
    # every key a script touches, holding another type
    *(
        wrong_type(f)
        for f in (
            lambda k: k.events,
            lambda k: k.queues,
            lambda k: k.scheduled,
            lambda k: k.leases,
            lambda k: k.dead,
            lambda k: k.finished,
            lambda k: k.seq,
            lambda k: k.token,
            lambda k: k.workers,
            lambda k: k.ratelimits,
            lambda k: k.leader,
            lambda k: k.orphans_cursor,
            lambda k: k.queue("default"),
            lambda k: k.queue("other"),
            lambda k: k.queue("@worker:gone"),
            lambda k: k.queue("@worker:w1"),
            lambda k: k.queue("@group:g"),
            lambda k: k.wake("default"),
            lambda k: k.stats("default"),
            lambda k: k.job("q1"),
            lambda k: k.job("r1"),
            lambda k: k.job("s1"),
            lambda k: k.job("f1"),
            lambda k: k.job("c1"),
            lambda k: k.job("t1"),
            lambda k: k.done("q1"),
            lambda k: k.done("r1"),
            lambda k: k.done("f1"),
            lambda k: k.unique("u1"),
            lambda k: k.conc("ck"),
            lambda k: k.base + "cwait:ck",
            lambda k: k.base + "children:r1",
            lambda k: k.base + "rate:t",
            lambda k: k.worker("w1"),
            lambda k: k.outbox,
            lambda k: k.xkids("r1"),
            lambda k: k.xkids("q2"),
            lambda k: k.dlv("x2"),
            lambda k: k.dlv("x3"),
            lambda k: k.job("x1"),
        )
    ),
]

ARGV_VALUES = ("x", "", "1.5", "-1", "1e400", "99999999999999999999")


def argv_variants(call: Call) -> list[tuple[str, Call]]:
    """The call with each argument in turn replaced by something malformed, cut short, longer."""
    name, keys, args = call
    out: list[tuple[str, Call]] = []
    for i in range(1, len(args)):
        for v in ARGV_VALUES:
            out.append((f"ARGV[{i + 1}]={v!r}", (name, keys, [*args[:i], v, *args[i + 1 :]])))
    out.append(("ARGV short by one", (name, keys, args[:-1])))
    out.append(("ARGV one extra", (name, keys, [*args, "extra"])))
    return out


# -- the check ---------------------------------------------------------------------------------


def snapshot(r: Any, k: Keys) -> dict[bytes, bytes]:
    keys = sorted(r.keys(_pattern(k.base) + "*"))
    pipe = r.pipeline(transaction=False)
    for key in keys:
        pipe.dump(key)
    return dict(zip(keys, pipe.execute(), strict=True))


def queued_members(r: Any, k: Keys) -> dict[str, str]:
    """job id -> queue, for every id in a queue zset."""
    out: dict[str, str] = {}
    for qk in r.keys(_pattern(k.queue("*"))):
        if r.type(qk) == b"zset":
            for m in r.zrange(qk, 0, -1):
                out[m.decode()] = qk.decode()
    return out


def stranded(r: Any, k: Keys, before: dict[str, str]) -> list[str]:
    """Jobs popped from their queue by the call yet still `queued` in no queue."""
    after = queued_members(r, k)
    lost = []
    for job_id in set(before) - set(after):
        jk = k.job(job_id)
        if r.type(jk) == b"hash" and r.hget(jk, "state") == b"queued":
            lost.append(job_id)
    return lost


def reset(r: Any, k: Keys) -> None:
    keys = r.keys(_pattern(k.base) + "*")
    if keys:
        r.delete(*keys)


def run_case(store: Store, call: Call, fault: Fault | None) -> tuple[str, Any] | None:
    """Build the world, apply the fault, run the call; a problem found, or None."""
    r, k = store.r, store.keys
    reset(r, k)
    world = build(store)
    if fault is not None:
        fault(r, k)
    # The tokens of this world (a fresh build may number them differently from the template).
    name, keys, args = call
    args = [world.tokens.get("r1") if a == "@TOKEN@" else a for a in args]
    before, queued = snapshot(r, k), queued_members(r, k)
    try:  # (an error reply raises: Scripts.execute never passes one off as a result)
        reply = store.scripts.execute([(name, keys, args)])[0]
    except redis.ResponseError as exc:
        reply = exc
    if isinstance(reply, redis.ResponseError):
        after = snapshot(r, k)
        changed = sorted(
            key.decode() for key in set(before) | set(after) if before.get(key) != after.get(key)
        )
        if changed:
            return ("error after a write", f"{reply}; changed: {changed}")
        return None
    lost = stranded(r, k, queued)
    if lost:
        return ("stranded", f"{sorted(lost)} left queued in no queue; reply {reply!r}")
    return None


@pytest.fixture
def store(app: App) -> Store:
    return app.store


def _template_calls(store: Store) -> dict[str, list[Call]]:
    world = build(store)
    tok = world.tokens["r1"]
    out = {}
    for name, cs in calls(store.scripts, world).items():
        out[name] = [(n, ks, ["@TOKEN@" if a == tok else a for a in args]) for n, ks, args in cs]
    return out


@pytest.mark.parametrize("name", SCRIPT_NAMES)
def test_script_writes_all_or_nothing_under_every_fault(store: Store, name: str) -> None:
    template = _template_calls(store)[name]
    assert template, f"no ordinary call of {name} in calls()"
    problems: list[str] = []
    for call in template:
        cases: list[tuple[str, Call, Fault | None]] = [("no fault", call, None)]
        cases += [(f.__name__, call, f) for f in FAULTS]
        cases += [(label, c, None) for label, c in argv_variants(call)]
        for label, c, fault in cases:
            got = run_case(store, c, fault)
            if got:
                problems.append(f"{name} {c[2][3:6]} under {label}: {got[0]}: {got[1]}")
    assert not problems, "\n".join(problems[:20]) + f"\n({len(problems)} problems)"


def test_every_script_is_covered() -> None:
    offline = Scripts(redis.Redis.from_url("unix:///nonexistent/jobq.sock"), Keys("x"), 100)
    got = calls(offline, World({"r1": "1"}))
    assert set(SCRIPT_NAMES) == set(got) and all(got.values())
