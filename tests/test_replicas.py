"""Reads from replicas (replicas.py) on a real Sentinel group: the master's job list, queue stats
and /metrics come from a fresh replica (counted on the replica itself, INFO commandstats), a
replica cut off from its primary or frozen is not used past the staleness bound (the primary
answers, with the newest jobs), and nothing a replica connection sends can write."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import ha
import httpx
import pytest
from live_master import LiveMaster

from jobq import App
from jobq.replicas import ReadOnlyConnection, ReadRouter, ReplicaWriteRefused
from jobq.topology import hooks_of, resolver_of

BOUND_MS = 500


@pytest.fixture
def group(sentinel_group: ha.SentinelGroup) -> ha.SentinelGroup:
    """The shared group fixture (conftest: a group that fails to settle is replaced once)."""
    return sentinel_group


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)


def calls(group: ha.SentinelGroup, node: ha.DataNode, command: str) -> int:
    return int(group.commandstats(node).get(command, {}).get("calls", 0))


class Deployment:
    """A master (HTTP on a free port) reading from replicas of `url`, with a client."""

    def __init__(self, url: str, bound_ms: int = BOUND_MS) -> None:
        prefix = "rr" + uuid.uuid4().hex[:8]
        query = f"read_from_replicas=1&max_staleness_ms={bound_ms}"
        self.app = App(url + ("&" if "?" in url else "?") + query, prefix=prefix)
        self.app.task(name="add")(lambda x, y: x + y)
        self.master = LiveMaster(self.app, rate_interval_s=0.5).start()
        self.http = httpx.Client(base_url=self.master.url, timeout=30)

    @property
    def router(self) -> ReadRouter:
        return self.master.web.state.jobq.reads()  # type: ignore[no-any-return]

    def submit(self) -> str:
        r = self.http.post("/v1/jobs", json={"task": "add", "args": [1, 2]})
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def listed(self) -> set[str]:
        r = self.http.get("/v1/jobs", params={"limit": 500})
        assert r.status_code == 200, r.text
        return {j["id"] for j in r.json()["jobs"]}

    def close(self) -> None:
        self.http.close()
        self.master.stop()
        self.app.close()


@pytest.fixture
def deployment() -> Iterator[Callable[..., Deployment]]:
    made: list[Deployment] = []

    def make(url: str, bound_ms: int = BOUND_MS) -> Deployment:
        made.append(Deployment(url, bound_ms))
        return made[-1]

    try:
        yield make
    finally:
        for d in made:
            d.close()


def test_fresh_replica_serves_the_lists_and_never_sees_a_write(
    group: ha.SentinelGroup, deployment: Callable[..., Deployment]
) -> None:
    primary, replica = group.current_primary(), group.replicas()[0]
    d = deployment(group.url)
    ids = [d.submit() for _ in range(5)]
    # read-your-writes: a job read right after its submit is found (on the primary)
    assert d.http.get(f"/v1/jobs/{ids[-1]}").status_code == 200
    wait_for(lambda: d.router.replica() is not None, 15, "the replica to be judged fresh")
    group.reset_stats(primary)
    group.reset_stats(replica)
    served_before = dict(d.router.served)
    wait_for(lambda: set(ids) <= d.listed(), 10, "the jobs in the list")
    for _ in range(5):
        assert set(ids) <= d.listed()
        assert d.http.get("/v1/queues").json()["queues"][0]["queued"] == 5
        assert 'jobq_jobs{queue="default",state="queued"} 5' in d.http.get("/metrics").text
        assert d.http.get("/v1/workers").status_code == 200
    served = d.router.served["replica"] - served_before["replica"]
    on_primary = d.router.served["primary"] - served_before["primary"]
    print(f"routed reads: {served} on the replica, {on_primary} on the primary")
    assert served > 0
    # The job lists (HMGET per row) and queue pages (SSCAN) ran on the replica...
    assert calls(group, replica, "hmget") >= 1 and calls(group, replica, "sscan") >= 1
    if on_primary == 0:  # ... and not on the primary (unless a verdict lapsed meanwhile)
        assert calls(group, primary, "hmget") == 0
    # Writes never reach the replica: no client ever sent it a script call.
    assert d.submit()
    assert calls(group, replica, "fcall") == 0 and calls(group, replica, "fcall_ro") == 0

    reader = d.router.replica() or wait_for(d.router.replica, 10, "a fresh replica")
    assert (reader.addr[1]) == replica.port
    # Its connections carry no primary hook and follow no Sentinel: they go where they were told.
    assert hooks_of(reader.r) is None and resolver_of(reader.r) is None
    assert reader.r.connection_pool.connection_class is ReadOnlyConnection
    for write in (
        lambda: reader.r.set("rr-probe", 1),
        lambda: reader.r.flushall(),
        lambda: reader.r.execute_command("FCALL", "x", 0),
        lambda: reader.r.execute_command("CLIENT", "KILL", "TYPE", "master"),
        lambda: reader.r.pipeline(transaction=False).hset("rr-probe", "a", 1).execute(),
    ):
        with pytest.raises(ReplicaWriteRefused, match="only read"):
            write()
    stats = group.commandstats(replica)
    assert "flushall" not in stats and "set" not in stats and "client|kill" not in stats
    assert replica.role() == "slave" and replica.link_up()
    assert not hasattr(reader, "submit") and not hasattr(reader, "cancel")


def test_cut_off_replica_is_not_used_past_the_bound(
    group: ha.SentinelGroup, deployment: Callable[..., Deployment]
) -> None:
    replica = group.replicas()[0]
    d = deployment(group.url)
    d.submit()
    wait_for(lambda: d.router.replica() is not None, 15, "the replica to be judged fresh")
    group.stop_replication(replica)  # still up, answering, but no longer receiving writes
    new = d.submit()
    acked = time.monotonic()
    assert not replica.call("EXISTS", d.app.keys.job(new))
    # Any listing started once the bound has passed since the ack must show the new job.
    time.sleep(BOUND_MS / 1000 + 0.05)
    assert time.monotonic() - acked > BOUND_MS / 1000
    for _ in range(5):
        assert new in d.listed()
    assert d.router.replica() is None
    group.restore_replication(replica)
    wait_for(lambda: d.router.replica() is not None, 20, "the replica to be fresh again")
    assert new in d.listed()


def test_frozen_replica_falls_back_to_the_primary(
    group: ha.SentinelGroup, deployment: Callable[..., Deployment]
) -> None:
    replica = group.replicas()[0]
    d = deployment(group.url)
    d.submit()
    wait_for(lambda: d.router.replica() is not None, 15, "the replica to be judged fresh")
    group.pause(replica)  # SIGSTOP: its sockets stay open, it answers nothing
    try:
        new = d.submit()
        time.sleep(BOUND_MS / 1000 + 0.05)
        t0 = time.monotonic()
        for _ in range(3):
            assert new in d.listed()
        print(f"listings with the replica frozen took {time.monotonic() - t0:.2f} s")
    finally:
        group.resume(replica)


def test_one_server_url_finds_its_replicas_in_info(
    group: ha.SentinelGroup, deployment: Callable[..., Deployment]
) -> None:
    """A plain redis:// URL to the primary: the replicas come from its INFO replication."""
    primary, replica = group.current_primary(), group.replicas()[0]
    d = deployment(f"redis://:{group.password}@{ha.HOST}:{primary.port}/0")
    ids = {d.submit() for _ in range(3)}
    reader = wait_for(d.router.replica, 15, "the replica found through INFO to be fresh")
    assert reader.addr[1] == replica.port
    group.reset_stats(replica)
    wait_for(
        lambda: ids <= d.listed() and calls(group, replica, "hmget") >= 1,
        10,
        "the jobs listed by the replica",
    )


def test_off_by_default_every_read_is_the_primarys(
    group: ha.SentinelGroup,
) -> None:
    app = App(group.url, prefix="rr" + uuid.uuid4().hex[:8])
    try:
        router = ReadRouter(app.store)
        assert router.replica() is None and router._thread is None
        assert router.list_jobs(limit=5) == ([], None)
        assert router.served == {"replica": 0, "primary": 1}
    finally:
        app.close()
