"""Jobs on a real Valkey Cluster (3 primaries + 3 replicas, tests/cluster.py): one queue spread
over every primary, every job run once, results read back from any process."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import cluster as cluster_harness
import pytest
from inprocess import deployment

from jobq import App
from jobq.topology import resolver_of


@pytest.fixture
def capp(valkey_cluster: cluster_harness.ValkeyCluster) -> Iterator[App]:
    a = App(valkey_cluster.url, prefix="c" + uuid.uuid4().hex[:8])

    @a.task
    def add(x: int, y: int) -> int:
        return x + y

    yield a
    a.close()


def test_one_queue_uses_every_primary(
    capp: App, valkey_cluster: cluster_harness.ValkeyCluster
) -> None:
    store = capp.store
    assert store.partitions == len(valkey_cluster.primaries())
    store.ping()  # every partition's client dials its slot's owner
    owners = {resolver_of(s.r).current() for s in store.shards}  # type: ignore[union-attr]
    assert owners == {("127.0.0.1", n.port) for n in valkey_cluster.primaries()}, owners
    jobs = [capp.submit("add", (i, 1)) for i in range(90)]
    per = [int(s.r.zcard(s.keys.queue("default"))) for s in store.shards]
    assert sum(per) == 90 and min(per) >= 10, per  # (30 expected each: 4.5 sigma below)
    with deployment(capp, concurrency=4):
        assert [j.result(timeout=60) for j in jobs] == [i + 1 for i in range(90)]


def test_wait_replicas_on_a_cluster_url_waits_on_each_partitions_primary(
    valkey_cluster: cluster_harness.ValkeyCluster,
) -> None:
    def waits() -> dict[int, int]:
        out = {}
        for node in valkey_cluster.primaries():
            stats = node.info("commandstats")
            out[node.port] = int(stats.get("cmdstat_wait", {}).get("calls", 0))
        return out

    app = App(valkey_cluster.url + "?wait_replicas=1", prefix="w" + uuid.uuid4().hex[:8])

    @app.task
    def echo(x: int) -> int:
        return x

    try:
        before = waits()
        jobs = [app.submit("echo", (i,)) for i in range(30)]
        after = waits()
        # Every primary holds a partition of the queue, so every one was asked to WAIT.
        assert all(after[p] > before[p] for p in before), (before, after)
        with deployment(app, concurrency=2):
            assert [j.result(timeout=60) for j in jobs] == list(range(30))
    finally:
        app.close()


def test_doctor_checks_every_primary_of_a_cluster(
    valkey_cluster: cluster_harness.ValkeyCluster,
) -> None:
    from jobq.config import Settings
    from jobq.doctor import diagnose

    code, checks = diagnose(Settings(url=valkey_cluster.url))
    topo = [c for c in checks if c.name == "topology"]
    assert topo and "Valkey Cluster of 3 primaries" in topo[0].message, topo
    primaries = [c for c in checks if c.name == "primary"]
    assert len(primaries) == 3 and all(c.status == "ok" for c in primaries), primaries
    assert code in (0, 1)  # warnings (no min-replicas-to-write...) are not failures
