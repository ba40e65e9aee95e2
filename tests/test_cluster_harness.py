"""tests/cluster.py itself: a real Valkey Cluster is built, fails over and reshards as the
cluster tests assume (every wait in it is bounded)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis
from cluster import SLOTS, ValkeyCluster, cluster_for


def test_the_session_cluster_agrees_on_one_map(valkey_cluster: ValkeyCluster) -> None:
    c = valkey_cluster
    assert len(c.nodes) == 6
    primaries = c.primaries()
    assert primaries == c.nodes[:3]
    slot_map = c.slot_map()
    assert len(slot_map) == SLOTS
    # Even ranges, each primary with exactly its one replica.
    counts = {p.port: 0 for p in primaries}
    for owner, _ in slot_map.values():
        counts[owner[1]] += 1
    assert sorted(counts.values()) == [5461, 5461, 5462]
    for i, p in enumerate(primaries):
        assert c.replicas_of(p) == [c.nodes[3 + i]]
        assert c.nodes[3 + i].role() == "slave"
    for n in c.nodes:
        assert n.cluster_info()["cluster_state"] == "ok"
        assert n.slot_map() == slot_map
    assert c.url.startswith(f"redis+cluster://:{c.password}@127.0.0.1:")
    assert c.url.count(",") == 5
    print(f"cluster of 6 started in {c.start_seconds:.1f} s")


def test_the_password_is_required(valkey_cluster: ValkeyCluster) -> None:
    node = valkey_cluster.nodes[0]
    bare = redis.Redis(host="127.0.0.1", port=node.port, socket_timeout=2)
    try:
        with pytest.raises(redis.AuthenticationError):
            bare.ping()
    finally:
        bare.close()


@pytest.mark.parametrize("primaries", [1, 2])
def test_clusters_of_one_and_two_primaries(primaries: int) -> None:
    c = cluster_for(primaries)
    try:
        assert len(c.primaries()) == primaries
        assert len(c.slot_map()) == SLOTS
        assert c.owner(0) is c.nodes[0] and c.owner(SLOTS - 1) is c.nodes[primaries - 1]
    finally:
        c.stop()


def test_a_killed_primary_is_replaced_by_its_replica(
    make_cluster: Callable[..., ValkeyCluster],
) -> None:
    c = make_cluster()
    old = c.primaries()[1]
    (replica,) = c.replicas_of(old)
    c.kill(old)
    new, gap = c.wait_failover(old, timeout=30)
    assert new is replica and new.role() == "master"
    assert gap < 15, f"failover took {gap:.1f} s"
    # The old primary comes back as a replica of the promoted one.
    c.restart(old)
    c.wait_settled(30)
    assert old.role() == "slave"
    assert c.replicas_of(new) == [old]
    print(f"failover in {gap:.1f} s")


def test_a_slot_migrates_with_its_keys(make_cluster: Callable[..., ValkeyCluster]) -> None:
    c = make_cluster(primaries=2, replicas_per_primary=0)
    src, dest = c.primaries()
    slot = 42
    assert c.owner(slot) is src
    r = src.client()
    tag = _tag_for_slot(slot)
    keys = [f"{{{tag}}}:{i}" for i in range(250)]  # more than one MIGRATE batch
    try:
        for k in keys:
            r.set(k, k)
    finally:
        r.close()
    assert c.migrate_slot(slot, dest) == 250
    assert c.owner(slot) is dest
    d = dest.client()
    try:
        assert d.get(keys[0]) == keys[0].encode() and d.get(keys[-1]) == keys[-1].encode()
        assert d.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 250
    finally:
        d.close()
    assert src.call("CLUSTER", "COUNTKEYSINSLOT", slot) == 0
    with pytest.raises(redis.exceptions.MovedError):
        src.call("GET", keys[0])


def _tag_for_slot(slot: int) -> str:
    from redis.crc import key_slot

    for i in range(1_000_000):
        if key_slot(str(i).encode()) == slot:
            return str(i)
    raise AssertionError(slot)
