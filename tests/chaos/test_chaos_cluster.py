"""Chaos scenarios of a Valkey Cluster (tests/cluster.py: 3 primaries + 3 replicas, AOF
everysec, cluster-node-timeout 1 s) under `jobq worker` and `jobq master` subprocesses and a
producer, all on the cluster's ``redis+cluster://`` URL (one partition per primary).

Faults: the primary of one partition SIGKILLed mid-run (its replica promoted by the cluster's
own election); one partition's slot migrated live to another primary (IMPORTING / MIGRATING,
MIGRATE in batches, SETSLOT NODE) while jobs flow.

Each row checks what every chaos row checks (tests/chaos/harness.py: every acknowledged job
ends exactly once, none lost, duplicates explained, no wedge), plus: no jobq process exits. The
gap (the longest stretch from the fault on with no job succeeding) is measured and reported,
never asserted; each row is bounded (well under a minute on this machine).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import cluster as cluster_harness
import pytest
from cluster import ValkeyCluster

from chaos.harness import check, now, wait_for
from chaos.scenario import Scenario
from chaos.test_chaos_ha import Producer, assert_alive, ended, finish, start_fleet
from jobq import App
from jobq.cluster import slot_of

pytestmark = pytest.mark.timeout(240)


@contextlib.contextmanager
def cluster(sc: Scenario, **kw: Any) -> Iterator[ValkeyCluster]:
    """A started cluster the scenario (and its workers) use; killed at the end. One that does
    not settle in time is replaced once (a loaded machine: the fault is then in the harness's
    start, not in what the scenario tests)."""
    try:
        c = ValkeyCluster(**kw).start(timeout=30)
    except (AssertionError, RuntimeError) as exc:
        print(f"Valkey Cluster did not start, starting another: {str(exc)[:300]}")
        c = ValkeyCluster(**kw).start()
    sc.use(c.url)
    try:
        yield c
    finally:
        c.cleanup()


def partition_slot(app: App, part: int) -> int:
    keys = app.store.shards[part].keys
    return slot_of(keys.tag or keys.prefix)


def cluster_primary_sigkill(sc: Scenario, c: ValkeyCluster, part: int) -> None:
    """The fleet runs; the primary serving partition `part` is SIGKILLed; the cluster
    promotes its replica; the row is checked (the caller asserts the verdict)."""
    start_fleet(sc)
    with App(c.url, prefix=sc.prefix) as app:
        producer = Producer(app, sc, limit=1600)
        producer.start()
        assert wait_for(lambda: ended(sc) >= 150, 60), "no progress before the fault"
        victim = c.owner(partition_slot(app, part))
        t0 = now()
        c.kill(victim)
        new, took = c.wait_failover(victim, timeout=60)
        healed = now()
        sc.rec.fault(f"partition {part}'s primary SIGKILL + promotion", t0, healed)
        time.sleep(2)
        producer.finish()
        sc.verdict = v = check(app, sc.rec)
        finish(sc, v, t0, healed, f"{new.name} promoted after {took:.1f} s (partition {part})")


def cluster_slot_migration(sc: Scenario, c: ValkeyCluster, part: int) -> int:
    """The fleet runs with a backlog; partition `part`'s slot is migrated live to the primary
    of another partition; returns the keys moved."""
    start_fleet(sc)
    with App(c.url, prefix=sc.prefix) as app:
        producer = Producer(app, sc, limit=2400, batch=50)
        producer.start()
        assert wait_for(lambda: ended(sc) >= 150, 60), "no progress before the fault"
        slot = partition_slot(app, part)
        src = c.owner(slot)
        dest = c.owner(partition_slot(app, (part + 1) % app.store.partitions))
        t0 = now()
        moved = c.migrate_slot(slot, dest)
        healed = now()
        sc.rec.fault(f"slot {slot} of partition {part} migrated", t0, healed)
        time.sleep(2)
        producer.finish()
        sc.verdict = v = check(app, sc.rec)
        finish(
            sc, v, t0, healed,
            f"{moved} keys moved {src.name} -> {dest.name} in {healed - t0:.2f} s",
        )  # fmt: skip
        return moved


@pytest.mark.chaos
def test_cluster_primary_sigkill_failover(scenario: Scenario) -> None:
    """The primary of the control partition (leader lease, worker presence) SIGKILLed mid-run:
    its replica is promoted; workers, master and producer follow by themselves; nothing lost
    beyond what asynchronous replication had not yet copied (the row would say so)."""
    sc = scenario
    sc.faults = "control partition's primary SIGKILL mid-run; the cluster promotes its replica"
    with cluster(sc) as c:
        cluster_primary_sigkill(sc, c, part=0)
    assert sc.verdict is not None
    sc.verdict.assert_ok()
    assert_alive(sc)


@pytest.mark.chaos
def test_cluster_live_slot_migration(scenario: Scenario, monkeypatch: pytest.MonkeyPatch) -> None:
    """A partition's slot migrated live to another primary while jobs flow, a few keys per
    MIGRATE so the move lasts while jobs are claimed and reported in that slot: every job ends
    once (a command a node refused with ASK / TRYAGAIN / MOVED never ran, so resending it is
    safe), nothing lost, nothing exits.

    Known to fail now and then (1 run of 6 here) until every key a script touches arrives
    in its KEYS: complete.lua builds the job hash's key inside Lua and declares only events
    and leases, so while those are still on the old owner the node runs it after the job
    hash moved, answers "job not found", and the worker drops the outcome: the job runs
    again after its lease (the row then counts one duplicate and one stale execution)."""
    sc = scenario
    monkeypatch.setattr(cluster_harness, "MIGRATE_BATCH", 5)
    sc.faults = "one partition's slot migrated live to another primary mid-run"
    with cluster(sc) as c:
        moved = cluster_slot_migration(sc, c, part=1)
    assert sc.verdict is not None
    sc.verdict.assert_ok()
    assert moved > 0, "the migration moved no key: the slot held nothing"
    assert sc.verdict.duplicates == 0, f"{sc.verdict.duplicates} jobs ran twice"
    assert_alive(sc)
