"""topology.py: Sentinel URLs, where connections go, the primary check and the token epoch.

The Sentinel tests run a real group (tests/ha.py). Where connections go is recorded with an audit
hook on ``socket.connect`` (every dial of this process, redis-py's included), so the proof covers
the lean path of scripts.py, the pools, the heartbeat store and the Sentinel queries alike.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import ha
import pytest
import redis
from conftest import ValkeyProcess
from inprocess import deployment
from procs import wait_until

from jobq import App
from jobq.errors import BrokerUnavailable, ConfigError
from jobq.model import JobSpec, Outcome
from jobq.scripts import EPOCH_MARGIN_MS
from jobq.shard import ClusterNodeCheck
from jobq.store import Store
from jobq.topology import (
    UNRESOLVED_HOST,
    check_url,
    hooks_of,
    parse_sentinel_url,
)

EMPTY = b"[[],{}]"

# -- URLs (no server) ------------------------------------------------------------------------


def test_sentinel_url_parts() -> None:
    t = parse_sentinel_url(
        "redis+sentinel://u:p%40ss@10.0.0.1:26380,h2,[::1]:26381/jobq/3?sentinel_password=s"
    )
    assert t.sentinels == (("10.0.0.1", 26380), ("h2", 26379), ("::1", 26381))
    assert (t.service, t.db, t.username, t.password) == ("jobq", 3, "u", "p@ss")
    assert t.sentinel_password == "s" and not t.ssl
    assert parse_sentinel_url("valkey+sentinel://h:1/svc?ssl=1").ssl
    assert parse_sentinel_url("rediss+sentinel://h:1/svc").ssl


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+sentinel://h:1", "/SERVICE"),
        ("redis+sentinel://h:1/a/b/c", "/SERVICE"),
        ("redis+sentinel://h:1/svc/x", "not a number"),
        ("redis+sentinel:///svc", "names no Sentinel"),
        ("redis+sentinel://h:port/svc", "bad port"),
        ("redis+sentinel://h:1/svc?colour=red", "unknown option"),
        ("http://h:1/0", "unknown scheme"),
        ("h:1", "unknown scheme"),
    ],
)
def test_bad_urls_say_what_to_write(url: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        check_url(url)


def test_bad_url_errors_hide_the_password() -> None:
    with pytest.raises(ConfigError) as err:
        check_url("redis+sentinel://:hunter2@h:1/svc?sentinel_password=hunter3&x=1")
    assert "hunter" not in str(err.value)


def test_an_unresolved_connection_has_no_host_to_fall_back_to() -> None:
    """The trap of redis-py's Sentinel pools: a connection dialed before it is resolved goes to
    its default host, localhost. Ours has a host that cannot resolve, and resolves on dial."""
    app = App("redis+sentinel://127.0.0.1:1/svc", prefix="x")
    conn = app.store.r.connection_pool.make_connection()
    assert (conn.host, conn.port) == (UNRESOLVED_HOST, 0)
    app.close()


# -- where connections go --------------------------------------------------------------------

_DIALS: list[tuple[str, int]] = []
_RECORDING = threading.Event()


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event == "socket.connect" and _RECORDING.is_set():
        addr = args[1]
        if isinstance(addr, tuple) and len(addr) >= 2:
            _DIALS.append((str(addr[0]), int(addr[1])))


sys.addaudithook(_audit)  # audit hooks cannot be removed: it records only while the flag is set


@pytest.fixture
def dials() -> Iterator[list[tuple[str, int]]]:
    _DIALS.clear()
    _RECORDING.set()
    try:
        yield _DIALS
    finally:
        _RECORDING.clear()


def test_no_connection_goes_anywhere_but_the_primary_the_sentinels_name(
    sentinel_group: ha.SentinelGroup, dials: list[tuple[str, int]], prefix: str
) -> None:
    """A producer, a worker (claims on the lean path, heartbeats on their own connections) and
    a maintenance loop on a Sentinel URL, through a failover: every dial of this process goes
    to a Sentinel or to the primary the Sentinels named at that moment; none to redis-py's
    default (localhost) nor to anything else."""
    g = sentinel_group
    app = App(g.url, prefix=prefix, lease_ms=5_000, heartbeat_ms=1_000)
    app.task(name="add")(lambda a, b: a + b)
    with app, deployment(app, concurrency=2):
        first = g.primary_addr()
        ids = [app.submit("add", [i, 1]).id for i in range(20)]
        assert [app.job(i).result(timeout=30) for i in ids] == [i + 1 for i in range(20)]
        g.kill(g.current_primary())
        second, gap = g.wait_new_primary(first)
        more: list[str] = []
        deadline = time.monotonic() + 30
        while len(more) < 20 and time.monotonic() < deadline:
            try:
                more.append(app.submit("add", [len(more), 2]).id)
            except BrokerUnavailable:  # the failover window (submits wait elsewhere)
                time.sleep(0.2)
        assert [app.job(i).result(timeout=30) for i in more] == [i + 2 for i in range(20)]
    allowed = {*g.sentinel_addrs, first, second}
    strangers = sorted({d for d in dials if d not in allowed})
    assert not strangers, f"dialed {strangers}; allowed {sorted(allowed)}"
    assert second in dials, "the new primary was never dialed: the test saw no failover"
    print(f"failover gap {gap:.1f} s; {len(dials)} dials, all to Sentinels or the primary")


def test_a_subprocess_worker_dials_only_sentinels_and_the_primary(
    sentinel_group: ha.SentinelGroup, prefix: str, tmp_path: Any
) -> None:
    """The same proof for a `jobq worker` process: a sitecustomize records its dials."""
    import subprocess

    from conftest import jobq_cmd, subprocess_env

    g = sentinel_group
    log = tmp_path / "dials.txt"
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import sys\n"
        f"_LOG = open({str(log)!r}, 'a', buffering=1)\n"
        "def _hook(event, args):\n"
        "    if event == 'socket.connect' and isinstance(args[1], tuple):\n"
        "        _LOG.write('%s %d\\n' % (args[1][0], args[1][1]))\n"
        "sys.addaudithook(_hook)\n"
    )
    env = subprocess_env(g.url, prefix, JOBQ_LEASE_MS="5000", JOBQ_HEARTBEAT_MS="1000")
    env["PYTHONPATH"] = os.pathsep.join([str(site), env["PYTHONPATH"]])
    proc = subprocess.Popen(
        jobq_cmd("worker", "cli_tasks:app", "-c", "2"),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    app = App(g.url, prefix=prefix)
    try:
        ids = [app.submit("add", [i, 1]).id for i in range(10)]
        assert [app.job(i).result(timeout=30) for i in ids] == [i + 1 for i in range(10)]
    finally:
        proc.terminate()
        proc.wait(30)
        app.close()
    dialed = {(h, int(p)) for h, p in (line.split() for line in log.read_text().splitlines())}
    allowed = {*g.sentinel_addrs, g.primary_addr()}
    assert dialed and dialed <= allowed, f"dialed {dialed - allowed}"


# -- the primary check -----------------------------------------------------------------------


def test_a_url_naming_a_replica_is_refused_before_any_write(prefix: str) -> None:
    primary, replica = ValkeyProcess(), ValkeyProcess()
    primary.start()
    replica.start()
    try:
        r = redis.Redis(port=replica.port)
        r.replicaof("127.0.0.1", primary.port)
        wait_until(lambda: r.info("replication")["master_link_status"] == "up", 20, "sync")
        app = App(replica.url, prefix=prefix)
        with pytest.raises(BrokerUnavailable, match="read-only replica"):
            app.submit("t", [])
        # Nothing was written anywhere (the replica refused; the primary was never asked).
        assert redis.Redis(port=primary.port).dbsize() == 0
        app.close()
        r.close()
    finally:
        primary.cleanup()
        replica.cleanup()


# -- the token epoch -------------------------------------------------------------------------


def test_epoch_moves_only_when_the_primary_changes(app: App) -> None:
    s, k = app.store.scripts, app.keys
    r = app.store.r
    s.epoch(r)  # the lean connection exists (its hook ran): what follows runs on it
    r.delete(k.epoch)  # as if another primary had issued the tokens
    r.set(k.token, "5")
    now = int(time.time() * 1000)
    assert list(s.epoch(r, 1_000, now=now)) == [1, 1]
    assert int(r.get(k.token)) == (now + 1_000) * 1024
    assert list(s.epoch(r, 1_000, now=now + 5)) == [1, 0]  # same primary: untouched
    assert int(r.get(k.token)) == (now + 1_000) * 1024
    r.set(k.epoch, "someone-else")
    r.set(k.token, str((now + 999_999) * 1024))  # never lowered
    assert list(s.epoch(r, 1_000, now=now)) == [1, 1]
    assert int(r.get(k.token)) == (now + 999_999) * 1024


def test_every_new_connection_runs_the_epoch_check(app: App) -> None:
    """A plain URL too: the hook runs on the first connection of each store (after the check
    that the server is no Cluster node, shard.ClusterNodeCheck)."""
    hooks = hooks_of(app.store.r)
    assert hooks is not None and len(hooks) == 2 and isinstance(hooks[0], ClusterNodeCheck)
    assert hooks[1] == app.store.scripts.check_primary
    app.submit("t", [])
    assert app.store.r.get(app.keys.epoch)


def test_an_attempt_claimed_before_a_failover_cannot_commit_after_it(
    sentinel_group: ha.SentinelGroup, prefix: str
) -> None:
    """Stop replication, claim on the old primary, fail over, report: rejected.

    The new primary never saw the claim, and its clock is made to lag the old primary's by the
    failover (the same `now` on both): without the epoch it hands the next claim of the job
    the very token the old attempt holds, and the old attempt's report would commit over the
    new one. The control half shows exactly that on a store without the connection hook."""
    g = sentinel_group
    app = App(g.url, prefix=prefix)
    st = app.store
    old = g.current_primary()
    st.submit([JobSpec(f"j{i}", "t", "default", EMPTY) for i in (1, 2)])
    g.wait_synced()
    replica = g.replicas()[0]
    g.stop_replication(replica)
    x = st.server_time_ms() + 2_000
    claimed = {c.id: c for c in st.claim("w-old", ["default"], 2, 60_000, now=x)}
    assert set(claimed) == {"j1", "j2"}
    g.kill(old)
    g.restore_replication(replica)
    new_addr, gap = g.wait_new_primary(old.addr, timeout=60)
    assert new_addr == replica.addr

    # Control: the same claims on a client without jobq's hook reissue the old tokens.
    raw = redis.Redis(host=new_addr[0], port=new_addr[1], password=g.password)
    bare = Store(raw, "control", app.keys)
    again = bare.claim("w-new", ["default"], 1, 60_000, now=x)
    assert [(c.id, c.token) for c in again] == [("j1", claimed["j1"].token)]
    codes = bare.report([Outcome(claimed["j1"], True, b"1")], now=x + 1)
    assert codes == {"j1": 1}, "control: the stale attempt committed (what the epoch prevents)"

    # jobq's store: its first connection to the new primary moves the epoch first.
    fresh = st.claim("w-new", ["default"], 1, 60_000, now=x)
    assert [c.id for c in fresh] == ["j2"]
    assert int(fresh[0].token) > int(claimed["j2"].token)
    assert int(fresh[0].token) >= (x - 5_000 + EPOCH_MARGIN_MS) * 1024
    codes = st.report([Outcome(claimed["j2"], True, b"stale")], now=x + 1)
    assert codes == {"j2": -2}, "the attempt claimed before the failover committed"
    assert st.report([Outcome(fresh[0], True, b"2")], now=x + 1) == {"j2": 1}
    raw.close()
    app.close()
    print(f"failover gap {gap:.1f} s")
