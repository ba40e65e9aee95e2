"""Durable submits across a real Sentinel failover (tests/ha.py): with ``?wait_replicas=1`` on
the Sentinel URL a submit is acknowledged only once a replica received it (WAIT), so a SIGKILL
of the primary loses no acknowledged job, even when the replica had stopped replicating just
before (its submits then time out instead of being acknowledged). Without it, the jobs
acknowledged while the replica lagged are lost with the primary: counted and printed (run with
-s), not asserted, since on loopback a plain kill may lose none. A dead replica makes a submit
raise `DurabilityTimeout` after durable_timeout_ms, saying so, with the job queued."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from ha import DataNode, SentinelGroup, poll

from jobq import App, JobState
from jobq.errors import DurabilityTimeout, JobqError
from jobq.keys import Keys
from jobq.model import Outcome

pytestmark = pytest.mark.timeout(120)

LEASE = 30_000


@dataclass
class Produced:
    """What one producer saw: per submit its job id, when it returned, and how."""

    acked: list[tuple[float, str]] = field(default_factory=list)  # (monotonic end, job id)
    refused: list[tuple[float, float, str, str]] = field(default_factory=list)  # t0, t1, id, why

    def refusals(self) -> Counter[str]:
        return Counter(why for _t0, _t1, _id, why in self.refused)


def produce(app: App, until: float, out: Produced, stop: threading.Event) -> None:
    """Submit one job at a time until `until` (monotonic) or `stop`; a submit that raised is
    not acknowledged, whatever it raised (during a failover that may be BrokerUnavailable)."""
    i = 0
    while time.monotonic() < until and not stop.is_set():
        job_id = f"p{i}"
        i += 1
        t0 = time.monotonic()
        try:
            app.submit("t", job_id=job_id)
        except JobqError as exc:
            out.refused.append((t0, time.monotonic(), job_id, type(exc).__name__))
            time.sleep(0.02)  # a producer backs off a little after an error
        else:
            out.acked.append((time.monotonic(), job_id))


def missing_on(node: DataNode, keys: Keys, ids: list[str]) -> list[str]:
    """The ids whose job hash is absent on `node` (read there directly, not through jobq)."""
    client = node.client()
    try:
        pipe = client.pipeline(transaction=False)
        for job_id in ids:
            pipe.exists(keys.job(job_id))
        return [i for i, there in zip(ids, pipe.execute(), strict=True) if not there]
    finally:
        client.close()


def run_failover(
    group: SentinelGroup,
    query: str,
    before_kill: Callable[[DataNode, DataNode], None] | None = None,
    after_kill: Callable[[DataNode, DataNode], None] | None = None,
    load_s: float = 4.0,
) -> tuple[Produced, list[str], float]:
    """A producer on the Sentinel URL (+`query`) for `load_s` s; after 1 s, `before_kill`
    (primary, replica), then SIGKILL the primary, `after_kill`, and wait for Sentinel to
    promote the replica.
    Returns what the producer saw, the acknowledged ids missing on the new primary, and the
    seconds from the kill to the new primary."""
    app = App(group.url + query, prefix="h" + uuid.uuid4().hex[:8])
    out, stop = Produced(), threading.Event()
    primary, replica = group.nodes[0], group.nodes[1]
    try:
        app.submit("t", job_id="warm")  # connect, load the library, probe the wait
        producer = threading.Thread(
            target=produce, args=(app, time.monotonic() + load_s, out, stop), daemon=True
        )
        producer.start()
        try:
            time.sleep(1.0)
            if before_kill is not None:
                before_kill(primary, replica)
            group.kill(primary)
            if after_kill is not None:
                after_kill(primary, replica)
            addr, gap = group.wait_new_primary(primary.addr, timeout=40)
            assert addr == replica.addr
        finally:
            producer.join(load_s + 60)  # its loop ends by itself; one submit may still wait
            stop.set()
        assert not producer.is_alive(), "the producer did not stop"
        assert out.acked, f"no submit was acknowledged: {out.refusals()}"
        acked = [job_id for _t, job_id in out.acked]
        return out, missing_on(group.current_primary(), app.keys, acked), gap
    finally:
        app.close()


class CutReplication:
    """Before the kill: cut the replica off the primary and let the producer run `seconds`
    more, so the promoted replica lacks the writes made during the cut; after the kill, give
    the replica its password back (not before: it would resync from the live primary)."""

    def __init__(self, group: SentinelGroup, seconds: float) -> None:
        self.group, self.seconds = group, seconds
        self.at = float("inf")  # monotonic time the cut took effect

    def cut(self, primary: DataNode, replica: DataNode) -> None:
        self.at = time.monotonic()  # writes from here on may miss the replica
        self.group.stop_replication(replica)
        time.sleep(self.seconds)

    def restore(self, primary: DataNode, replica: DataNode) -> None:
        self.group.restore_replication(replica)


def test_wait_replicas_loses_no_acknowledged_submit_when_the_primary_is_killed(
    sentinel_group: SentinelGroup,
) -> None:
    out, missing, gap = run_failover(sentinel_group, "?wait_replicas=1&durable_timeout_ms=1000")
    print(
        f"\n[ha-durable] wait_replicas=1, SIGKILL under load: {len(out.acked)} acknowledged, "
        f"{len(missing)} lost, refused {dict(out.refusals())}, new primary after {gap:.2f}s"
    )
    assert missing == []
    # The new primary has no replica left: a submit is queued there but not acknowledged.
    app = App(sentinel_group.url + "?wait_replicas=1&durable_timeout_ms=300", prefix="hlate")
    try:
        with pytest.raises(DurabilityTimeout, match="0/1 replicas received them"):
            app.submit("t", job_id="late")
        assert app.store.get_state("late") == JobState.QUEUED
    finally:
        app.close()


@pytest.mark.parametrize("wait", [0, 1])
def test_a_lagging_replica_loses_acknowledged_submits_only_without_wait_replicas(
    sentinel_group: SentinelGroup, wait: int
) -> None:
    """The replica stops replicating for 1 s before the kill, so it lacks the last writes."""
    cut = CutReplication(sentinel_group, 1.0)
    query = f"?wait_replicas={wait}&durable_timeout_ms=300"
    out, missing, gap = run_failover(sentinel_group, query, cut.cut, cut.restore)
    during = {i for t, i in out.acked if t >= cut.at}
    print(
        f"\n[ha-durable] wait_replicas={wait}, replica cut 1 s then primary SIGKILLed: "
        f"{len(out.acked)} acknowledged ({len(during)} after the cut), {len(missing)} "
        f"acknowledged LOST ({len(set(missing) - during)} acknowledged before it), refused "
        f"{dict(out.refusals())}, new primary after {gap:.2f}s"
    )
    if wait:
        assert missing == []
        assert out.refusals()["DurabilityTimeout"] >= 1, "the cut replica confirmed submits?"
    # Without wait_replicas the loss is the point, measured and printed, not asserted (the
    # writes of the last moments before the cut may miss the replica too).


def test_a_dead_replica_makes_wait_replicas_submits_time_out_with_the_job_queued(
    sentinel_group: SentinelGroup, caplog: pytest.LogCaptureFixture
) -> None:
    g = sentinel_group
    primary, replica = g.nodes
    prefix = "h" + uuid.uuid4().hex[:8]
    fast = App(g.url + "?wait_replicas=1&durable_timeout_ms=800", prefix=prefix)
    both = App(g.url + "?wait_replicas=1&durable=1&durable_timeout_ms=1000", prefix=prefix)
    try:
        for node in g.nodes:  # fsync per write, so the fsync wait does not await everysec
            node.call("CONFIG", "SET", "appendfsync", "always")
        g.reset_stats(primary)
        fast.submit("t", job_id="a")  # the probe (WAIT 0 1), then the submit's own WAIT
        both.submit("t", job_id="b")  # durable as well: WAITAOF 1 1 (the replica runs AOF)
        stats = g.commandstats(primary)
        assert stats["wait"]["calls"] == 2 and stats["waitaof"]["calls"] == 2
        claimed = fast.store.claim("w1", ["default"], 2, LEASE)
        assert len(claimed) == 2
        fast.store.report([Outcome(c, ok=True, result=b"[1]") for c in claimed])
        assert g.commandstats(primary)["wait"]["calls"] == 3  # outcomes wait too

        # Durable + wait_replicas counts only replicas that fsync: one without AOF never does.
        replica.call("CONFIG", "SET", "appendonly", "no")
        with pytest.raises(DurabilityTimeout, match="appendonly yes") as err:
            both.submit("t", job_id="b2")
        assert "1/1 local AOF fsync and 0/1 replica fsyncs" in str(err.value)
        both.close()

        g.kill(replica)
        poll(
            lambda: primary.info().get("connected_slaves") == 0,
            20,
            "the primary to see its replica gone",
            g.describe,
        )
        t0 = time.monotonic()
        with pytest.raises(DurabilityTimeout) as err:
            fast.submit("t", job_id="c")
        took = time.monotonic() - t0
        msg = str(err.value)
        print(f"\n[ha-durable] dead replica: raised after {took:.2f}s: {msg}")
        assert 0.7 <= took < 10, took  # it waited the timeout, and not much more
        assert err.value.job_ids == ("c",)
        assert "0/1 replicas received them" in msg and "queued on the primary" in msg
        assert "0 replica(s) connected" in msg and "durable_timeout_ms" in msg
        assert fast.store.get_state("c") == JobState.QUEUED  # written, only not confirmed

        # A worker's outcome is recorded all the same (it cannot take it back): logged once.
        store = fast.store
        claimed = [c for c in store.claim("w1", ["default"], 3, LEASE) if c.id == "c"]
        with caplog.at_level(logging.WARNING, logger="jobq.durability"):
            store.report([Outcome(c, ok=True, result=b"[1]") for c in claimed])
        assert "not confirmed durable" in caplog.text and "WAIT" in caplog.text
        assert store.get_state("c") == JobState.SUCCEEDED

        # The replica back: submits are acknowledged again.
        g.restart(replica)
        g.wait_synced(30)
        assert fast.submit("t", job_id="d").status() == JobState.QUEUED
    finally:
        both.close()
        fast.close()


def test_wait_replicas_probe_warns_when_fewer_replicas_are_connected(
    sentinel_group: SentinelGroup, caplog: pytest.LogCaptureFixture
) -> None:
    g = sentinel_group
    app = App(g.url + "?wait_replicas=2&durable_timeout_ms=200", prefix="h" + uuid.uuid4().hex)
    try:
        with (
            caplog.at_level(logging.WARNING, logger="jobq.durability"),
            pytest.raises(DurabilityTimeout, match="1/2 replicas received them"),
        ):
            app.submit("t", job_id="a")
        assert "has 1 replica(s) connected" in caplog.text
        assert app.store.get_state("a") == JobState.QUEUED
    finally:
        app.close()
