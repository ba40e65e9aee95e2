"""An existing one-slot deployment is never silently misread: asked for several partitions it
is refused with the fix, `jobq migrate` (a real subprocess) gives it more partitions while
nothing runs, its old jobs drain and new ones spread; a plain URL naming a Cluster node is
refused. On the test server and on the session Cluster (tests/cluster.py)."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator

import cluster as cluster_harness
import pytest
import redis
from conftest import free_port, jobq_cmd, subprocess_env
from inprocess import deployment

from jobq import App
from jobq.cli_migrate import MigrationRefused, apply_migration, plan_migration
from jobq.cluster import slot_of
from jobq.errors import ConfigError
from jobq.layout import Layout, NotMigrated
from jobq.states import JobState

pytestmark = pytest.mark.timeout(180)


def migrate(url: str, prefix: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        jobq_cmd("migrate", *args),
        env=subprocess_env(url, prefix),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=90,
    )


def make_app(url: str, prefix: str, partitions: int | None = None) -> App:
    a = App(url, prefix=prefix, partitions=partitions)

    @a.task
    def echo(x: object) -> object:
        return x

    return a


@pytest.fixture
def old(url: str, prefix: str) -> Iterator[tuple[App, list[str]]]:
    """A one-partition deployment holding jobs and no layout record (the default on one
    server): ten queued jobs, two of them holding a unique key, one a concurrency key."""
    a = make_app(url, prefix)
    ids = [a.submit("echo", (i,)).id for i in range(7)]
    ids.append(a.submit("echo", ("u1",), unique_key="mail:1").id)
    ids.append(a.submit("echo", ("u2",), unique_key="mail:2").id)
    ids.append(a.submit("echo", ("c",), concurrency_key="cust", concurrency_limit=1).id)
    a.store.set_rate_limits({"echo": "100:1000"})
    a.close()
    assert stored(url, prefix) is None  # one partition nobody asked for: no record
    yield make_app(url, prefix), ids


def stored(url: str, prefix: str) -> Layout | None:
    r = redis.Redis.from_url(url)
    try:
        raw = r.get("{" + prefix + "}:layout")
    finally:
        r.close()
    return None if raw is None else Layout.from_json(raw, prefix)


# -- refusals ----------------------------------------------------------------------------------


def test_more_partitions_over_a_deployment_holding_jobs_are_refused_with_the_fix(
    old: tuple[App, list[str]], url: str, prefix: str
) -> None:
    more = make_app(url, prefix, partitions=3)
    try:
        with pytest.raises(NotMigrated) as err:
            more.submit("echo", (1,))
    finally:
        more.close()
    text = str(err.value)
    assert "jobq migrate --partitions 3" in text and "leave `partitions`" in text, text
    assert stored(url, prefix) is None  # nothing written
    # Without asking for partitions it is the one partition it always was.
    app, ids = old
    assert app.store.partitions == 1
    assert app.store.get_states(ids) == [JobState.QUEUED] * len(ids)
    app.close()


def test_a_new_prefix_may_have_partitions_at_once(url: str) -> None:
    prefix = "t" + uuid.uuid4().hex[:10]
    a = make_app(url, prefix, partitions=3)
    try:
        assert a.store.partitions == 3
    finally:
        a.close()


def test_migrate_refuses_while_a_worker_or_a_master_is_alive(
    old: tuple[App, list[str]], url: str, prefix: str
) -> None:
    app, _ids = old
    with deployment(app, concurrency=1):
        deadline = time.monotonic() + 20
        while not any(w.alive for w in app.store.list_workers()):
            assert time.monotonic() < deadline, "the worker never registered"
            time.sleep(0.05)
        proc = migrate(url, prefix, "--partitions", "3", "--yes")
    assert proc.returncode == 1, proc
    assert "alive on this deployment" in proc.stderr and "stop every worker" in proc.stderr
    assert "worker " in proc.stderr and "a master" in proc.stderr, proc.stderr
    assert stored(url, prefix) in (None, Layout.single(prefix))
    app.close()


def test_a_worker_starting_after_the_check_stops_the_write(
    old: tuple[App, list[str]], url: str, prefix: str
) -> None:
    app, _ids = old
    plan, store = plan_migration(url, app.keys, 3)
    try:
        with deployment(app, concurrency=1):
            deadline = time.monotonic() + 20
            while not any(w.alive for w in app.store.list_workers()):
                assert time.monotonic() < deadline, "the worker never registered"
                time.sleep(0.05)
            with pytest.raises(MigrationRefused, match="alive on this deployment"):
                apply_migration(plan, store)
    finally:
        store.close()
        app.close()
    assert stored(url, prefix) in (None, Layout.single(prefix))


def test_migrate_asks_first_never_shrinks_and_checks_its_arguments(
    old: tuple[App, list[str]], url: str, prefix: str
) -> None:
    app, _ids = old
    app.close()
    no = migrate(url, prefix, "--partitions", "3", stdin="n\n")
    assert no.returncode == 1, no
    assert "unique and concurrency keys" in no.stdout and "partition 0" in no.stdout
    assert stored(url, prefix) is None
    bad = migrate(url, prefix, "--partitions", "0", "--yes")
    assert bad.returncode == 2, bad
    ok = migrate(url, prefix, "--partitions", "3", stdin="y\n")
    assert ok.returncode == 0, ok
    assert stored(url, prefix) == Layout.even(prefix, 3)
    same = migrate(url, prefix, "--partitions", "3")
    assert same.returncode == 0 and "nothing to do" in same.stdout, same
    fewer = migrate(url, prefix, "--partitions", "2", "--yes")
    assert fewer.returncode == 1 and "only grows" in fewer.stderr, fewer
    grown = migrate(url, prefix, "--partitions", "5", "--yes")
    assert grown.returncode == 0, grown
    layout = stored(url, prefix)
    assert layout is not None and layout.tags[:3] == Layout.even(prefix, 3).tags
    assert layout == Layout.even(prefix, 5)


def test_migrate_exits_3_when_the_broker_is_unreachable(prefix: str) -> None:
    proc = migrate(f"redis://127.0.0.1:{free_port()}/0", prefix, "--partitions", "3", "--yes")
    assert proc.returncode == 3, proc
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr, proc.stderr


def test_new_partitions_holding_jobs_are_refused(url: str, prefix: str) -> None:
    """Keys of a partition-to-be left behind (an earlier layout of the prefix, deleted by
    hand): migrate would adopt jobs it knows nothing of."""
    leftover = make_app(url, prefix, partitions=2)
    job = leftover.submit("echo", ("left",), unique_key="k-in-1")  # CRC-32 % 2 == 1
    assert leftover.store.partition_of(job.id) == 1
    leftover.close()
    r = redis.Redis.from_url(url)
    r.delete("{" + prefix + "}:layout")
    r.close()
    proc = migrate(url, prefix, "--partitions", "2", "--yes")
    assert proc.returncode == 1 and "already hold jobs" in proc.stderr, proc
    assert stored(url, prefix) is None


def test_after_migrating_old_jobs_drain_and_new_ones_spread(
    old: tuple[App, list[str]], url: str, prefix: str
) -> None:
    app, ids = old
    app.close()
    proc = migrate(url, prefix, "--partitions", "3", "--yes")
    assert proc.returncode == 0, proc
    for text in ("1 partition (no layout record", "-> 3 partitions", "10 queued"):
        assert text in proc.stdout, proc.stdout
    a = make_app(url, prefix)
    try:
        store = a.store
        assert store.partitions == 3
        # The rate limit already published is shared out: 100 per 3 s in each partition.
        for shard in store.shards:
            assert shard.r.hget(shard.keys.ratelimits, "echo") == b"100:3000"
        # 90 new jobs: ids are uniform, so each partition gets 30 on average and fewer than 10
        # about once in 10^5 runs (30 jobs with a floor of 3 failed about once in 700).
        new = [a.submit("echo", (i,)) for i in range(90)]
        spread = [int(s.r.zcard(s.keys.queue("default"))) for s in store.shards]
        assert spread[0] >= 20 and min(spread[1:]) >= 10, spread
        with deployment(a, concurrency=4):
            for job_id in ids:
                assert a.job(job_id).result(timeout=60) is not None
            assert [j.result(timeout=60) for j in new] == list(range(90))
    finally:
        a.close()


# -- a Cluster ----------------------------------------------------------------------------------


def test_a_plain_url_naming_a_cluster_node_is_refused(
    valkey_cluster: cluster_harness.ValkeyCluster,
) -> None:
    prefix = "m" + uuid.uuid4().hex[:8]
    owner = valkey_cluster.owner(slot_of(prefix))
    other = next(n for n in valkey_cluster.primaries() if n is not owner)
    replica = valkey_cluster.replicas_of(owner)[0]
    for node in (owner, other, replica):  # the slot's owner too: it would run, one slot only
        plain = f"redis://:{valkey_cluster.password}@127.0.0.1:{node.port}/0"
        a = make_app(plain, prefix)
        try:
            with pytest.raises(ConfigError) as err:
                a.submit("echo", (1,))
        finally:
            a.close()
        text = str(err.value)
        assert "this server is a Cluster node: use redis+cluster://" in text, text
        assert valkey_cluster.password not in text


def test_migrating_on_a_cluster_puts_the_new_partitions_on_other_primaries(
    valkey_cluster: cluster_harness.ValkeyCluster,
) -> None:
    url = valkey_cluster.url
    prefix = "m" + uuid.uuid4().hex[:8]
    one = make_app(url, prefix, partitions=1)
    ids = [one.submit("echo", (i,)).id for i in range(6)]
    assert one.store.partitions == 1
    one.close()
    # A Cluster lays out one partition per primary by default: over jobs in one it refuses.
    owner = valkey_cluster.owner(slot_of(prefix))
    r = redis.Redis(port=owner.port, password=valkey_cluster.password)
    assert r.delete("{" + prefix + "}:layout") == 1
    again = make_app(url, prefix)
    try:
        with pytest.raises(NotMigrated, match="set it to 1 on a Cluster"):
            again.submit("echo", (0,))
    finally:
        again.close()
    proc = migrate(url, prefix, "--partitions", "3", "--yes")
    assert proc.returncode == 0, proc
    raw = r.get("{" + prefix + "}:layout")
    r.close()
    assert raw is not None
    layout = Layout.from_json(raw, prefix)
    assert layout.tags[0] == prefix and layout.count == 3
    owners = {valkey_cluster.owner(slot_of(t)).port for t in layout.tags}
    assert owners == {n.port for n in valkey_cluster.primaries()}, (layout, owners)
    for t in layout.tags:
        assert f"{{{t}}}" in proc.stdout
    a = make_app(url, prefix)
    try:
        assert a.store.partitions == 3
        new = [a.submit("echo", (i,)) for i in range(15)]
        with deployment(a, concurrency=4):
            assert [a.job(i).result(timeout=60) for i in ids] == list(range(6))
            assert [j.result(timeout=60) for j in new] == list(range(15))
    finally:
        a.close()
