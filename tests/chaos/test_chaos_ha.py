"""Chaos scenarios of high availability: a Sentinel group (tests/ha.py: a primary, one replica and
three Sentinels, AOF everysec, down-after 1 s) under `jobq worker` and `jobq master`
subprocesses and a producer, all on the group's ``redis+sentinel://`` URL.

Faults: the primary SIGKILLed (failover to the replica); SIGKILLed and restarted from its AOF
after the Sentinels promoted the replica (the split-brain window); a graceful
``SENTINEL FAILOVER`` under open connections; the primary SIGSTOPped for three leases (the
Sentinels fail over meanwhile) and then resumed; the leading `jobq master` SIGKILLed (with a
worker) while the broker is healthy.

Each row checks what every chaos row checks (tests/chaos/harness.py: every acknowledged job ends
exactly once, none lost, duplicates explained, no wedge), plus: no jobq process exits, and the
old primary takes no write from jobq between the moment it stopped being the primary and its
demotion (`Watch`: INFO commandstats sampled with ROLE; the Sentinel's and this test's own
commands are not writes). The failover gap is measured (`gap`: the longest stretch from the
fault on with no job succeeding) and reported, never asserted.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from ha import DataNode, SentinelGroup

from chaos.harness import LEASE_S, SHORT_LEASES, Verdict, check, now, submit_batch, wait_for
from chaos.scenario import Scenario
from jobq import App

pytestmark = pytest.mark.timeout(300)
LEADER_S = int(SHORT_LEASES["JOBQ_LEADER_MS"]) / 1000

#: Commands that change data: one of these from a jobq connection on a node that is not the
#: primary any more is a write that will be wiped when the node is demoted.
WRITES = frozenset(
    ("fcall", "eval", "evalsha", "set", "hset", "hsetnx", "hmset", "hdel", "hincrby", "del",
     "unlink", "sadd", "srem", "zadd", "zrem", "zincrby", "lpush", "rpush", "lpop", "rpop",
     "lrem", "lmove", "blmove", "brpoplpush", "rpoplpush", "incr", "incrby", "expire",
     "pexpire", "persist", "xadd", "xtrim", "getdel", "getex")
)  # fmt: skip
# (Not MULTI/EXEC: the Sentinel demotes a node in one; what jobq queues in one is counted.)


@contextlib.contextmanager
def group(sc: Scenario, **kw: Any) -> Iterator[SentinelGroup]:
    """A started Sentinel group the scenario (and its workers) use; killed at the end. A group
    whose Sentinels do not all see one another in time is replaced once (seen on a loaded
    machine: the fault is then in the harness's start, not in what the scenario tests)."""
    try:
        g = SentinelGroup(**kw).start(timeout=15)
    except AssertionError as exc:
        print(f"Sentinel group did not start, starting another: {exc}")
        g = SentinelGroup(**kw).start()
    sc.use(g.url)
    try:
        yield g
    finally:
        g.cleanup()


def ended(sc: Scenario) -> int:
    return sum(e["k"] == "end" for e in sc.rec.entries())


class Producer(threading.Thread):
    """Submits batches of `work` until stopped or `limit` jobs were tried, recording each call;
    a submit that raises (no primary during the failover) is recorded failed or indeterminate,
    never acknowledged."""

    def __init__(self, app: App, sc: Scenario, limit: int, batch: int = 20) -> None:
        super().__init__(daemon=True)
        self.app, self.sc, self.limit, self.batch = app, sc, limit, batch
        self.stop = threading.Event()
        self.tried = 0

    def run(self) -> None:
        while not self.stop.is_set() and self.tried < self.limit:
            submit_batch(self.app, self.sc.rec, "work", [[0.05]] * self.batch)
            self.tried += self.batch
            time.sleep(0.05)

    def finish(self) -> None:
        self.stop.set()
        self.join(60)
        assert not self.is_alive(), "the producer hung in a submit"


class Watch(threading.Thread):
    """Samples ROLE and INFO commandstats of one data node every 50 ms (on one connection of
    its own) while it runs: what it counted while it was a primary, from `arm()` on (the moment
    another node became the primary), is what jobq wrote to a node it must not write to."""

    def __init__(self, node: DataNode) -> None:
        super().__init__(daemon=True)
        self.node = node
        self.stop = threading.Event()
        self.armed_at: float | None = None
        self.base: dict[str, int] = {}
        self.as_primary: dict[str, int] = {}  # writes counted since arm() while role was master
        self.demoted_at: float | None = None
        self.samples = 0

    def arm(self) -> None:
        """Count from now (a sample taken now is the baseline)."""
        self.base = self._stats() or {}
        self.armed_at = now()

    def _stats(self) -> dict[str, int] | None:
        try:
            c = self.node.client(timeout=0.5)
            try:
                raw = c.info("commandstats")
            finally:
                c.close()
        except (redis.RedisError, OSError):
            return None
        return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in raw.items()}

    def run(self) -> None:
        while not self.stop.is_set():
            role = self.node.role()
            stats = self._stats() if role is not None else None
            if role is not None and stats is not None and self.armed_at is not None:
                self.samples += 1
                if role == "master":
                    self.as_primary = {
                        k: n - self.base.get(k, 0)
                        for k, n in stats.items()
                        if k.split("|")[0] in WRITES and n > self.base.get(k, 0)
                    }
                elif self.demoted_at is None:
                    self.demoted_at = now()
            self.stop.wait(0.05)

    def finish(self) -> None:
        self.stop.set()
        self.join(10)


def gap(v: Verdict, t0: float, until: float) -> float | None:
    """The failover gap: the longest stretch, starting between the fault (t0) and `until`,
    with no job succeeding (execution ends that committed); None if none did after t0."""
    times = [t for t in v.commit_times if t > t0]
    if not times:
        return None
    worst, prev = times[0] - t0, times[0]
    for t in times[1:]:
        if prev > until:
            break
        worst, prev = max(worst, t - prev), t
    return round(worst, 2)


def submit_errors(sc: Scenario) -> str:
    calls = [c for c in sc.rec.entries() if c["k"] == "call" and c["st"] != "ok"]
    kinds: dict[str, int] = {}
    for c in calls:
        kinds[c["err"]] = kinds.get(c["err"], 0) + len(c["ids"])
    return ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) or "none"


def start_fleet(sc: Scenario, masters: int = 1, workers: int = 2) -> list[Any]:
    procs = [sc.workers.master("--no-http") for _ in range(masters)]
    return procs + [sc.workers.start("-c", "4") for _ in range(workers)]


def finish(sc: Scenario, v: Verdict, t0: float, healed: float, extra: str) -> None:
    """Record the gap and the notes every HA row carries."""
    g = gap(v, t0, healed + 5)
    sc.extra["gap_s"] = g
    head = f"failover gap {'-' if g is None else f'{g:.1f} s'}; submits raised: {submit_errors(sc)}"
    v.notes.insert(0, f"{head}; {extra}" if extra else head)


def assert_alive(sc: Scenario, exempt: frozenset[int] = frozenset()) -> None:
    dead = [f"{p.name} (exit {p.proc.returncode})" for p in sc.workers.started
            if p.pid not in exempt and not p.alive()]  # fmt: skip
    assert not dead, f"jobq processes exited: {', '.join(dead)}"


# -- scenarios -----------------------------------------------------------------------------------


@pytest.mark.chaos_ci
def test_ha_primary_sigkill_failover(scenario: Scenario) -> None:
    """The primary SIGKILLed mid-run: the Sentinels promote the replica; workers, master and
    producer follow it by themselves; no acknowledged job lost (replication is asynchronous:
    a loss would be the writes the replica had not received, and the row would say so)."""
    sc = scenario
    sc.faults = "primary SIGKILL mid-run; Sentinels promote the replica"
    with group(sc) as g:
        start_fleet(sc)
        with App(g.url, prefix=sc.prefix) as app:
            producer = Producer(app, sc, limit=1600)
            producer.start()
            assert wait_for(lambda: ended(sc) >= 150, 60), "no progress before the fault"
            old = g.current_primary()
            t0 = now()
            g.kill(old)
            _, took = g.wait_new_primary(old.addr, timeout=60)
            healed = now()
            sc.rec.fault("primary SIGKILL + failover", t0, healed)
            time.sleep(2)
            producer.finish()
            sc.verdict = v = check(app, sc.rec)
            finish(sc, v, t0, healed, f"Sentinels named the new primary after {took:.1f} s")
    v.assert_ok()
    assert_alive(sc)


@pytest.mark.chaos
def test_ha_split_brain_old_primary_restarted(scenario: Scenario) -> None:
    """The primary SIGKILLed, then restarted from its AOF once the Sentinels promoted the
    replica: it comes back believing it is a primary until the Sentinels demote it. No jobq
    write lands on it in that window (no FCALL, no plain write in its commandstats), it ends a
    replica, and the jobs acknowledged by the new primary survive its resync."""
    sc = scenario
    sc.faults = "primary SIGKILL; failover; old primary restarted from its AOF (split brain)"
    with group(sc) as g:
        start_fleet(sc)
        with App(g.url, prefix=sc.prefix) as app:
            producer = Producer(app, sc, limit=2400)
            producer.start()
            assert wait_for(lambda: ended(sc) >= 150, 60), "no progress before the fault"
            old = g.current_primary()
            t0 = now()
            g.kill(old)
            _, took = g.wait_new_primary(old.addr, timeout=60)
            g.restart(old)  # its config still says primary: Sentinel never rewrote it
            watch = Watch(old)
            watch.arm()  # a fresh process: every count is from this restart on
            watch.start()
            t_back = now()
            try:
                g.wait_demoted(old, timeout=60)
                healed = now()
                sc.rec.fault("primary SIGKILL, failover, AOF restart", t0, healed)
                time.sleep(2)
                producer.finish()
                sc.verdict = v = check(app, sc.rec)
            finally:
                watch.finish()
            demoted = (watch.demoted_at or healed) - t_back
            what = (
                f"new primary after {took:.1f} s; old primary back as primary for "
                f"{demoted:.1f} s, jobq writes on it: {watch.as_primary or 0}"
            )
            finish(sc, v, t0, healed, what)
            role = old.role()
    v.assert_ok()
    assert watch.samples > 0, "the restarted old primary was never sampled"
    assert not watch.as_primary, f"jobq wrote to the restarted old primary: {watch.as_primary}"
    assert role == "slave", f"the old primary was not demoted (ROLE {role})"
    assert_alive(sc)


@pytest.mark.chaos
def test_ha_sentinel_failover_graceful(scenario: Scenario) -> None:
    """`SENTINEL FAILOVER` while everything runs: the old primary is demoted under jobq's open
    connections (READONLY, then a reconnect through the Sentinels). No write lands on it from
    the replica's promotion on; nothing lost, nothing exits."""
    sc = scenario
    sc.faults = "SENTINEL FAILOVER mid-run (old primary demoted under open connections)"
    with group(sc) as g:
        start_fleet(sc)
        with App(g.url, prefix=sc.prefix) as app:
            producer = Producer(app, sc, limit=2400)
            producer.start()
            assert wait_for(lambda: ended(sc) >= 150, 60), "no progress before the fault"
            old = g.current_primary()
            watch = Watch(old)
            watch.start()
            t0 = now()
            try:
                g.failover()
                new = g.node_at(poll_promoted(g, old))
                watch.arm()  # from the promotion on, the old primary must take no write
                t_promoted = now()
                # The Sentinels name the new primary a moment after it answers ROLE master;
                # wait_demoted takes a majority still naming the old one for a failback.
                g.wait_new_primary(old.addr, timeout=60)
                g.wait_demoted(old, timeout=60)
                healed = now()
                sc.rec.fault("SENTINEL FAILOVER", t0, healed)
                time.sleep(2)
                producer.finish()
                sc.verdict = v = check(app, sc.rec)
            finally:
                watch.finish()
            demoted = (watch.demoted_at or healed) - t_promoted
            finish(sc, v, t0, healed, f"{new.name} promoted {t_promoted - t0:.1f} s after "
                   f"the command; old primary demoted {demoted:.1f} s later; jobq writes on it "
                   f"after the promotion: {watch.as_primary or 0}")  # fmt: skip
    v.assert_ok()
    assert not watch.as_primary, f"jobq wrote to the old primary after the promotion: " \
        f"{watch.as_primary}"  # fmt: skip
    assert_alive(sc)


def poll_promoted(g: SentinelGroup, old: DataNode, timeout: float = 60) -> tuple[str, int]:
    """Until another data node answers ROLE master (the replica was promoted), whatever the
    Sentinels say yet; its address."""
    deadline = now() + timeout
    while now() < deadline:
        for n in g.nodes:
            if n is not old and n.role() == "master":
                return n.addr
        time.sleep(0.02)
    raise AssertionError(f"no replica was promoted in {timeout:g} s\n{g.describe()}")


@pytest.mark.chaos
def test_ha_primary_paused_longer_than_the_lease(scenario: Scenario) -> None:
    """The primary SIGSTOPped for three leases: the Sentinels fail over meanwhile; then SIGCONT,
    and the old primary, which still believes it is one, is demoted. Commands jobq had in
    flight to it must not land after it resumes; nothing lost, no process exits."""
    sc = scenario
    pause_s = 3 * LEASE_S
    sc.faults = f"primary SIGSTOP {pause_s:g} s (3 leases; failover meanwhile), then SIGCONT"
    with group(sc) as g:
        start_fleet(sc)
        with App(g.url, prefix=sc.prefix) as app:
            producer = Producer(app, sc, limit=2400)
            producer.start()
            assert wait_for(lambda: ended(sc) >= 150, 60), "no progress before the fault"
            old = g.current_primary()
            watch = Watch(old)
            t0 = now()
            g.pause(old)
            try:
                _, took = g.wait_new_primary(old.addr, timeout=60)
                time.sleep(max(0.0, t0 + pause_s - now()))
            finally:
                g.resume(old)
            t_back = now()
            # The new primary exists: from the resume on, no write may land here. (Commands
            # queued on its sockets while it was stopped run first; the checker counts what
            # they lose.)
            watch.arm()
            watch.start()
            try:
                g.wait_demoted(old, timeout=60)
                healed = now()
                sc.rec.fault("primary SIGSTOP + failover + SIGCONT", t0, healed)
                time.sleep(2)
                producer.finish()
                sc.verdict = v = check(app, sc.rec)
            finally:
                watch.finish()
            demoted = (watch.demoted_at or healed) - t_back
            finish(sc, v, t0, healed, f"new primary after {took:.1f} s; old primary "
                   f"resumed as primary for {demoted:.1f} s, jobq writes on it: "
                   f"{watch.as_primary or 0}")  # fmt: skip
    v.assert_ok()
    assert not watch.as_primary, f"jobq wrote to the resumed old primary: {watch.as_primary}"
    assert_alive(sc)


@pytest.mark.parametrize(
    "failover",
    [
        pytest.param(False, id="broker_healthy", marks=pytest.mark.chaos_ci),
        pytest.param(True, id="with_failover", marks=pytest.mark.chaos),
    ],
)
def test_ha_leading_master_sigkill(scenario: Scenario, failover: bool) -> None:
    """Two `jobq master` processes; the one holding the leader lease is SIGKILLed with a worker
    (while the broker is healthy, or together with the primary): the other master takes the
    lease within about a lease (after the failover) and reaps the dead worker's jobs; nothing
    lost, the surviving processes all run on."""
    sc = scenario
    sc.faults = "the leading jobq master SIGKILLed with one worker (2 masters), " + (
        "and the primary SIGKILLed at once" if failover else "broker healthy"
    )
    with group(sc) as g:
        procs = start_fleet(sc, masters=2, workers=2)
        masters, workers = procs[:2], procs[2:]
        with App(g.url, prefix=sc.prefix) as app:
            producer = Producer(app, sc, limit=1000)
            producer.start()
            assert wait_for(lambda: ended(sc) >= 150, 60), "no progress before the fault"
            holder = leader(app)
            assert holder, "no master holds the leader lease"
            lead = next(m for m in masters if holder.endswith(f":{m.pid}"))
            other = next(m for m in masters if m is not lead)
            victim = workers[0]
            old = g.current_primary()
            t0 = now()
            lead.proc.kill()
            victim.proc.kill()
            if failover:
                g.kill(old)
            took_over = wait_for(lambda: (leader(app) or "").endswith(f":{other.pid}"), 60)
            t_lead = now()
            sc.rec.fault("leader + worker SIGKILL", t0, t_lead, [lead.pid, victim.pid])
            if failover:
                sc.rec.fault("primary SIGKILL + failover", t0, t_lead)
            time.sleep(2)
            producer.finish()
            sc.verdict = v = check(app, sc.rec)
            what = f"the other master led after {t_lead - t0:.1f} s (leader lease {LEADER_S:g} s)"
            finish(sc, v, t0, t_lead, what)
    v.assert_ok()
    assert took_over, "the surviving master never took the leader lease"
    assert_alive(sc, exempt=frozenset({lead.pid, victim.pid}))


def leader(app: App) -> str | None:
    with contextlib.suppress(Exception):
        return app.store.leader_holder()
    return None
