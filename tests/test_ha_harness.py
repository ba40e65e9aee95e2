"""Smoke tests of the Sentinel-group harness (tests/ha.py) itself, with plain redis-py clients
built from explicit host/port only: the group starts in sync, Sentinel fails over after a SIGKILL
and on SENTINEL FAILOVER, a restarted old primary is demoted, pause and cut replication work.
Gaps are measured and printed (run with -s), not asserted."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import redis
from ha import HOST, DataNode, SentinelGroup
from redis.backoff import NoBackoff
from redis.retry import Retry


@contextmanager
def plain(node: DataNode, password: str, timeout: float = 5) -> Iterator[redis.Redis]:
    """A redis-py client to exactly this node, nothing from the harness but its address."""
    c = redis.Redis(
        host=HOST,
        port=node.port,
        password=password,
        socket_timeout=timeout,
        retry=Retry(NoBackoff(), 0),  # fail at once: redis-py would retry (and back off) 3 times
    )
    try:
        yield c
    finally:
        c.close()


def role(node: DataNode, password: str) -> str:
    with plain(node, password) as c:
        reply = c.execute_command("ROLE")
    return str(reply[0].decode() if isinstance(reply[0], bytes) else reply[0])


def test_group_starts_in_sync_and_fails_over_on_request(sentinel_group: SentinelGroup) -> None:
    g = sentinel_group
    print(f"\n[ha] group start (1 primary, 1 replica, 3 sentinels): {g.start_seconds:.2f}s")
    primary, replica = g.nodes
    assert g.primary_addr() == (HOST, primary.port)
    assert g.current_primary() is primary
    assert g.node_at((HOST, replica.port)) is replica
    hosts = ",".join(f"{HOST}:{s.port}" for s in g.sentinels)
    assert g.url == f"redis+sentinel://:{g.password}@{hosts}/jobq"
    assert g.sentinel_addrs == [(HOST, s.port) for s in g.sentinels]
    assert role(primary, g.password) == "master"
    assert role(replica, g.password) == "slave"
    with pytest.raises(redis.AuthenticationError), plain(primary, "wrong") as c:
        c.ping()  # requirepass is on
    with plain(primary, g.password) as c:
        c.set("k", "v")
    g.wait_synced(15)
    with plain(replica, g.password) as c:
        assert c.get("k") == b"v"
    assert g.commandstats(primary)["set"]["calls"] >= 1

    before = g.failover()
    assert before == primary.addr
    addr, gap = g.wait_new_primary(before, timeout=45)
    print(f"[ha] SENTINEL FAILOVER gap: {gap:.2f}s")
    assert addr == replica.addr
    assert role(replica, g.password) == "master"
    assert g.current_primary() is replica


def test_kill_and_restart_the_primary(sentinel_group: SentinelGroup) -> None:
    g = sentinel_group
    old, replica = g.nodes
    with plain(old, g.password) as c:
        c.set("before", "1")
    g.wait_synced(15)

    g.kill(old)
    assert not old.alive()
    addr, gap = g.wait_new_primary(old.addr, timeout=45)
    print(f"\n[ha] failover gap after SIGKILL (down-after 1000 ms): {gap:.2f}s")
    assert addr == replica.addr
    assert role(replica, g.password) == "master"
    with plain(replica, g.password) as c:
        assert c.get("before") == b"1"
        c.set("after", "2")

    t0 = time.monotonic()
    g.restart(old)
    assert role(old, g.password) == "master"  # back from its AOF as a primary: split brain
    # settle=False: no failover follows here, so no need to wait for every Sentinel's next
    # INFO of it (up to 10 s; failover() waits for that itself).
    g.wait_demoted(old, timeout=60, settle=False)
    print(f"[ha] restarted old primary demoted after {time.monotonic() - t0:.2f}s")
    assert role(old, g.password) == "slave"
    g.wait_synced(30)
    with plain(old, g.password) as c:
        assert c.get("after") == b"2"
        assert c.get("before") == b"1"


def test_pause_resume_and_cut_replication(sentinel_group: SentinelGroup) -> None:
    g = sentinel_group
    primary, replica = g.nodes
    g.pause(replica)
    with pytest.raises(redis.TimeoutError), plain(replica, g.password, timeout=0.3) as c:
        c.ping()
    with plain(primary, g.password) as c:
        c.set("during-pause", "1")
    g.resume(replica)
    g.wait_synced(15)
    with plain(replica, g.password) as c:
        assert c.get("during-pause") == b"1"

    g.stop_replication(replica)
    with plain(primary, g.password) as c:
        c.set("cut", "1")
    time.sleep(0.3)  # would be plenty to replicate on loopback
    with plain(replica, g.password) as c:
        assert c.get("cut") is None
    assert role(replica, g.password) == "slave"
    g.restore_replication(replica)
    g.wait_synced(15)
    with plain(replica, g.password) as c:
        assert c.get("cut") == b"1"
    assert g.current_primary() is primary  # none of this made Sentinel fail over

    # A write the replica never got, then a failover onto it: the write is gone.
    g.stop_replication(replica)
    with plain(primary, g.password) as c:
        c.set("lost", "1")
    before = g.failover()
    addr, gap = g.wait_new_primary(before, timeout=45)
    print(f"\n[ha] SENTINEL FAILOVER onto a cut replica: {gap:.2f}s")
    assert addr == replica.addr
    g.restore_replication(replica)
    with plain(replica, g.password) as c:
        assert c.get("lost") is None
        assert c.get("cut") == b"1"


def test_factory_with_sentinel_password_and_two_replicas(
    make_sentinel_group: Callable[..., SentinelGroup],
) -> None:
    g = make_sentinel_group(replicas=2, sentinel_password="spw")
    assert g.url.endswith("/jobq?sentinel_password=spw")
    assert len(g.nodes) == 3
    s = g.sentinels[0]
    with pytest.raises(redis.AuthenticationError):
        c = redis.Redis(host=HOST, port=s.port, socket_timeout=5, retry=Retry(NoBackoff(), 0))
        try:
            c.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "jobq")
        finally:
            c.close()
    assert g.primary_addr() == g.nodes[0].addr
    with plain(g.nodes[0], g.password) as c:
        c.set("k", "v")
    g.wait_synced(15)
    for n in g.nodes[1:]:
        with plain(n, g.password) as c:
            assert c.get("k") == b"v"
