"""cluster.py / cluster_url.py on a real Valkey Cluster (tests/cluster.py): Cluster URLs, slot
clients that reach the slot's owner from any seed, follow a live migration (MOVED) and a
SIGKILLed primary's promoted replica, the function library loaded on every primary, and an
audit hook proving no dial goes anywhere but a seed or a node of the map.

Clients are built the way `store.connect` builds them (a short Retry on connection errors),
since that retry is what resends a command a node refused with MOVED.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from cluster import SLOTS, ValkeyCluster
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from jobq import cluster_url
from jobq.cluster import (
    ClusterMap,
    SlotResolver,
    client_for_slot,
    map_for,
    slot_of,
    tag_on_each_primary,
)
from jobq.errors import BrokerUnavailable, ConfigError
from jobq.faults import translate
from jobq.keys import Keys
from jobq.scripts import Scripts, library
from jobq.topology import SlotMoved, check_url, client_for, describe, hooks_of, resolver_of

Addr = tuple[str, int]


def connect(url: str, tag: str, **kwargs: Any) -> redis.Redis:
    """A slot client with store.connect's retry and timeouts."""
    kwargs.setdefault("socket_timeout", 5)
    kwargs.setdefault("socket_connect_timeout", 2)
    kwargs.setdefault("retry", Retry(ExponentialBackoff(cap=1.0, base=0.05), 3))
    kwargs.setdefault("retry_on_error", [redis.ConnectionError])
    return client_for_slot(url, tag, **kwargs)


def myid(client: redis.Redis) -> str:
    reply: Any = client.execute_command("CLUSTER", "MYID")
    return reply.decode() if isinstance(reply, bytes) else str(reply)


# -- URLs (no server) ------------------------------------------------------------------------


def test_cluster_url_parts() -> None:
    t = cluster_url.parse_cluster_url("redis+cluster://u:p%40ss@10.0.0.1:7000,h2:7001,[::1]:7002")
    assert t.seeds == (("10.0.0.1", 7000), ("h2", 7001), ("::1", 7002))
    assert (t.username, t.password, t.ssl) == ("u", "p@ss", False)
    assert cluster_url.parse_cluster_url("valkey+cluster://:pw@h:1?ssl=1").ssl
    assert cluster_url.parse_cluster_url("rediss+cluster://h:1/0").ssl
    assert cluster_url.parse_cluster_url("valkey+cluster://h:1/").password is None
    for url in ("redis+cluster://h:1", "valkey+cluster://h:1,h:2", "rediss+cluster://h:1"):
        assert cluster_url.is_cluster(url)
        check_url(url)
    assert not cluster_url.is_cluster("redis://h:1/0")
    assert describe("redis+cluster://:secret@a:1,b:2") == "Valkey Cluster (seeds a:1,b:2)"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+cluster://", "names no seed"),
        ("redis+cluster://:pw@", "names no seed"),
        ("redis+cluster://h", "has no port"),
        ("redis+cluster://h:1,h2", "has no port"),
        ("redis+cluster://h:port", "bad port"),
        ("redis+cluster://h:99999", "bad port"),
        ("redis+cluster://:1", "has no host"),
        ("redis+cluster://h:1/3", "database 0 only"),
        ("redis+cluster://h:1?colour=red", "unknown option"),
        ("redis+clusters://h:1", "unknown scheme"),
    ],
)
def test_bad_cluster_urls_say_what_to_write(url: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        check_url(url)


def test_bad_cluster_url_errors_hide_the_password() -> None:
    for url in ("redis+cluster://:hunter2@h", "redis+cluster://u:hunter2@h:1/5"):
        with pytest.raises(ConfigError) as err:
            check_url(url)
        assert "hunter2" not in str(err.value)
    assert "hunter2" not in describe("redis+cluster://:hunter2@h:1")


def test_a_cluster_url_needs_a_slot_client() -> None:
    with pytest.raises(ConfigError, match="client_for_slot"):
        client_for("redis+cluster://127.0.0.1:1")
    with pytest.raises(ConfigError, match="no braces"):
        client_for_slot("redis+cluster://127.0.0.1:1", "a}b")


# -- tags (a pure function of the map) -------------------------------------------------------


class _Owners:
    """A made-up slot map: `parts` primaries with even ranges."""

    def __init__(self, parts: int) -> None:
        size = -(-SLOTS // parts)
        self._slots = tuple(("10.0.0.1", 7000 + s // size) for s in range(SLOTS))

    def slots(self) -> tuple[Addr | None, ...]:
        return self._slots


@pytest.mark.parametrize("primaries", [1, 2, 3, 5])
def test_tags_spread_partitions_over_every_primary(primaries: int) -> None:
    owners = _Owners(primaries)
    for n in (1, primaries, 2 * primaries + 1):
        tags = tag_on_each_primary(owners, "jobq", n)
        assert tags[0] == "jobq" and len(set(tags)) == n
        assert all(t == "jobq" or t.startswith("jobq/") for t in tags)
        per: dict[Addr | None, int] = {}
        for t in tags:
            o = owners.slots()[slot_of(t)]
            per[o] = per.get(o, 0) + 1
        assert max(per.values()) - min(per.values()) <= 1
        if n >= primaries:
            assert len(per) == primaries  # every primary has a partition
        assert tag_on_each_primary(owners, "jobq", n) == tags  # deterministic
    with pytest.raises(ValueError):
        tag_on_each_primary(owners, "jobq", 0)


# -- on the session cluster ------------------------------------------------------------------


def test_each_slot_client_reaches_the_owner_from_any_seed(valkey_cluster: ValkeyCluster) -> None:
    """Tags for 3 partitions land on the 3 primaries; a client built on a URL naming only a
    node that does NOT own its slot (even a replica) reaches the owner and runs commands."""
    c = valkey_cluster
    ids = {n.port: n.node_id for n in c.nodes}
    prefix = "t" + str(time.monotonic_ns())
    tags = tag_on_each_primary(map_for(c.url), prefix, 3)
    owners = [c.owner(slot_of(t)) for t in tags]
    assert sorted(o.port for o in owners) == sorted(p.port for p in c.primaries())
    for tag, owner in zip(tags, owners, strict=True):
        for seed in [n for n in c.nodes if n is not owner]:
            r = connect(c.url_for(seed), tag)
            try:
                assert myid(r) == ids[owner.port]
                key = f"{{{tag}}}:k"
                r.incr(key)
                assert r.get(key) is not None
            finally:
                r.close()
        r = owner.client()
        try:
            assert int(r.get(f"{{{tag}}}:k")) == len(c.nodes) - 1
        finally:
            r.close()


def test_the_map_knows_every_node_and_is_shared_per_url(valkey_cluster: ValkeyCluster) -> None:
    c = valkey_cluster
    url = c.url_for(c.nodes[4])
    a, b = connect(url, "x1"), connect(url, "x2")
    try:
        ra, rb = resolver_of(a), resolver_of(b)
        assert isinstance(ra, SlotResolver) and isinstance(rb, SlotResolver)
        assert ra.map is rb.map is map_for(url)
        a.ping()
        assert ra.map.known() == {n.addr for n in c.nodes}
        assert ra.map.primaries() == [p.addr for p in c.primaries()]
        owner = c.owner(slot_of("x1"))
        assert ra.replicas() == [r.addr for r in c.replicas_of(owner)]
        assert hooks_of(a) == [] and hooks_of(a) is not hooks_of(b)
    finally:
        a.close()
        b.close()


def test_refreshes_are_rate_limited_and_shared(valkey_cluster: ValkeyCluster) -> None:
    """Dials ask the map at most every FRESH_S; a redirect asks at once; threads asking
    together share one answer."""
    c = valkey_cluster
    cmap = ClusterMap(c.seeds[:1], password=c.password)
    try:
        assert cmap.refresh() is True
        assert [cmap.refresh() for _ in range(100)].count(True) == 0
        cmap.mark_stale(c.nodes[2].addr)
        assert cmap.refresh() is True
        time.sleep(0.15)
        assert cmap.refresh() is True
        before = _slots_calls(c)
        barrier = threading.Barrier(8)
        answers: list[bool] = []

        def ask() -> None:
            barrier.wait(5)
            answers.append(cmap.refresh(force=True))

        threads = [threading.Thread(target=ask) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert 1 <= answers.count(True) < 8, answers
        assert _slots_calls(c) - before == answers.count(True)
    finally:
        cmap.close()


def _slots_calls(c: ValkeyCluster) -> int:
    """CLUSTER SLOTS calls served by the whole cluster so far."""
    return sum(int(c.commandstats(n).get("cluster|slots", {}).get("calls", 0)) for n in c.nodes)


def test_the_function_library_loads_on_every_primary(valkey_cluster: ValkeyCluster) -> None:
    """`function load` is per node: a Scripts on each partition's slot client loads the
    library on that partition's primary (and its replica gets it), and FCALL runs there; the
    connection hook (check_primary) works on every node."""
    c = valkey_cluster
    prefix = "f" + str(time.monotonic_ns())
    name = library()[0]
    for tag in tag_on_each_primary(map_for(c.url), prefix, 3):
        r = connect(c.url, tag)
        try:
            scripts = Scripts(r, Keys(tag), 1000)
            hooks = hooks_of(r)
            assert hooks is not None
            hooks.append(scripts.check_primary)
            scripts.load()
            reply = scripts.epoch(r, 1_000)
            assert int(reply[0]) == 1
            assert r.get(Keys(tag).epoch)
            scripts.close()
        finally:
            r.close()
    for p in c.primaries():
        libs = p.call("FUNCTION", "LIST", "LIBRARYNAME", name)
        assert libs, f"{p} lacks {name}"


def test_slot_moved_is_retriable_and_readable() -> None:
    exc = SlotMoved("Valkey Cluster node 127.0.0.1:1 refused the command (MOVED: 5 h:2)")
    err = translate(exc, "redis+cluster://:***@127.0.0.1:1", "submitting")
    assert isinstance(err, BrokerUnavailable)
    assert "moved the slot" in str(err) and "retries" in str(err)
    down = translate(redis.ConnectionError("refused"), "redis+cluster://h:1", "claiming")
    assert isinstance(down, BrokerUnavailable) and "failover" in str(down)


def test_a_plain_url_naming_a_cluster_node_is_told_to_use_a_cluster_url(
    valkey_cluster: ValkeyCluster,
) -> None:
    """Not a slot connection: MOVED stays the server's reply (no map to refresh), and jobq's
    translation says what URL to write."""
    c = valkey_cluster
    tag = "plain"
    other = next(n for n in c.primaries() if n is not c.owner(slot_of(tag)))
    url = f"redis://:{c.password}@127.0.0.1:{other.port}/0"
    r = client_for(url)
    try:
        with pytest.raises(redis.exceptions.MovedError) as err:
            r.get(f"{{{tag}}}:k")
        told = translate(err.value, url, "reading")
        assert isinstance(told, BrokerUnavailable) and "redis+cluster://" in str(told)
    finally:
        r.close()


def test_a_user_that_may_not_read_the_map_is_told_what_to_grant(
    valkey_cluster: ValkeyCluster,
) -> None:
    c = valkey_cluster
    user, pw = "nomap" + str(time.monotonic_ns()), "pw-nomap"
    for n in c.nodes:
        n.call("ACL", "SETUSER", user, "on", f">{pw}", "~*", "+@all", "-cluster")
    try:
        r = client_for_slot(f"redis+cluster://{user}:{pw}@127.0.0.1:{c.nodes[0].port}", "acl")
        with pytest.raises(redis.ConnectionError, match=r"\+cluster\|slots") as err:
            r.ping()
        told = translate(err.value, "redis+cluster://127.0.0.1:1", "submitting")
        assert isinstance(told, BrokerUnavailable) and "cluster|slots" in str(told)
        r.close()
    finally:
        for n in c.nodes:
            n.call("ACL", "DELUSER", user)


def test_a_server_without_cluster_support_is_refused_with_the_fix() -> None:
    """A non-Cluster server named by a Cluster URL is refused with the fix."""
    from conftest import ValkeyProcess

    server = ValkeyProcess()
    server.start()
    try:
        r = client_for_slot(f"redis+cluster://127.0.0.1:{server.port}", "jobq")
        with pytest.raises(ConfigError, match="not a Cluster node"):
            r.ping()
        r.close()
    finally:
        server.cleanup()


# -- following the cluster as it changes -----------------------------------------------------


def _hammer(r: redis.Redis, key: str, stop: threading.Event) -> dict[str, Any]:
    """INCR `key` until `stop`; counts acknowledged increments and every error by type."""
    out: dict[str, Any] = {"ok": 0, "errors": {}}

    def run() -> None:
        while not stop.is_set():
            try:
                r.incr(key)
                out["ok"] += 1
            except redis.RedisError as exc:
                name = type(exc).__name__
                out["errors"][name] = out["errors"].get(name, 0) + 1
                time.sleep(0.05)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    out["thread"] = t
    return out


def test_a_client_follows_a_live_migration(make_cluster: Callable[..., ValkeyCluster]) -> None:
    """INCRs run on a slot client while its slot migrates to another primary (the keys of
    the slot MIGRATEd in batches under them): after the move every call goes to the new
    owner, and the count is exact: a command refused with MOVED/ASK/TRYAGAIN never ran, so
    resending it counted nothing twice."""
    c = make_cluster(replicas_per_primary=0)
    tag = "mig"
    slot = slot_of(tag)
    src = c.owner(slot)
    dest = next(p for p in c.primaries() if p is not src)
    seeder = src.client()
    try:
        for i in range(300):  # keys to migrate besides the counter
            seeder.set(f"{{{tag}}}:fill:{i}", i)
    finally:
        seeder.close()
    r = connect(c.url_for(src), tag)
    stop = threading.Event()
    try:
        counts = _hammer(r, f"{{{tag}}}:n", stop)
        time.sleep(0.3)
        moved = c.migrate_slot(slot, dest)
        time.sleep(0.5)
        stop.set()
        counts["thread"].join(10)
        assert myid(r) == c.ids[dest.port]
        total = int(r.get(f"{{{tag}}}:n"))
        assert total == counts["ok"], counts
        assert moved >= 300 and counts["ok"] > 0
        assert set(counts["errors"]) <= {"SlotMoved"}, counts
        print(f"{moved} keys moved under {counts['ok']} INCRs, errors {counts['errors']}")
    finally:
        stop.set()
        r.close()


def test_a_blocked_pop_follows_a_migration(make_cluster: Callable[..., ValkeyCluster]) -> None:
    """A BLPOP blocked on the old owner when its slot moves is redirected (the server unblocks
    it with MOVED), resent to the new owner, and gets what is pushed there."""
    c = make_cluster(primaries=2, replicas_per_primary=0)
    tag = "blk"
    slot = slot_of(tag)
    src = c.owner(slot)
    dest = next(p for p in c.primaries() if p is not src)
    r = connect(c.url_for(src), tag)
    got: list[Any] = []
    t = threading.Thread(target=lambda: got.append(r.blpop([f"{{{tag}}}:wake"], 4)), daemon=True)
    try:
        r.set(f"{{{tag}}}:x", 1)  # the slot has a key to migrate
        t.start()
        time.sleep(0.3)
        c.migrate_slot(slot, dest)
        pusher = dest.client()
        try:
            time.sleep(0.3)
            pusher.rpush(f"{{{tag}}}:wake", "go")
        finally:
            pusher.close()
        t.join(10)
        assert got == [(f"{{{tag}}}:wake".encode(), b"go")]
    finally:
        r.close()


def test_the_lean_script_path_follows_a_migration_and_loads_the_library_there(
    make_cluster: Callable[..., ValkeyCluster],
) -> None:
    """FCALLs on scripts.py's lean path (one connection per thread, its own retry) while the
    slot migrates to a primary that never had the library: they end up on the new owner,
    whose first connection loads the library (check_primary), with no call lost for good."""
    c = make_cluster(replicas_per_primary=0)
    tag = "lean"
    slot = slot_of(tag)
    src = c.owner(slot)
    dest = next(p for p in c.primaries() if p is not src)
    name = library()[0]
    r = connect(c.url_for(src), tag)
    scripts = Scripts(r, Keys(tag), 1000)
    hooks = hooks_of(r)
    assert hooks is not None
    hooks.append(scripts.check_primary)
    scripts.epoch(r, 1_000)
    assert src.call("FUNCTION", "LIST", "LIBRARYNAME", name)
    assert not dest.call("FUNCTION", "LIST", "LIBRARYNAME", name)
    stop = threading.Event()
    out: dict[str, Any] = {"ok": 0, "errors": {}}

    def run() -> None:
        while not stop.is_set():
            try:
                assert int(scripts.epoch(r, 1_000)[0]) == 1
                out["ok"] += 1
            except redis.RedisError as exc:
                out["errors"][type(exc).__name__] = out["errors"].get(type(exc).__name__, 0) + 1
                time.sleep(0.05)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    try:
        seeder = src.client()
        try:
            for i in range(300):
                seeder.set(f"{{{tag}}}:fill:{i}", i)
        finally:
            seeder.close()
        time.sleep(0.2)
        before = out["ok"]
        c.migrate_slot(slot, dest)
        time.sleep(0.5)
        stop.set()
        t.join(10)
        assert out["ok"] > before, out
        assert set(out["errors"]) <= {"SlotMoved"}, out
        # This thread's own lean connection (still on the old owner) redials before sending.
        assert int(scripts.epoch(r, 1_000)[0]) == 1
        assert scripts._conn().port == dest.port
        assert dest.call("FUNCTION", "LIST", "LIBRARYNAME", name)
        print(f"{out['ok']} FCALLs across the migration, errors {out['errors']}")
    finally:
        stop.set()
        scripts.close()
        r.close()


def test_a_client_reaches_the_promoted_replica(make_cluster: Callable[..., ValkeyCluster]) -> None:
    """SIGKILL the primary of a client's slot: the client runs commands on the promoted
    replica within seconds, with no new client and nothing but retries."""
    c = make_cluster()
    tag = "kill"
    owner = c.owner(slot_of(tag))
    (replica,) = c.replicas_of(owner)
    r = connect(c.url_for(c.nodes[0] if owner is not c.nodes[0] else c.nodes[1]), tag)
    try:
        r.set(f"{{{tag}}}:k", "before")
        c.kill(owner)
        t0 = time.monotonic()
        deadline = t0 + 30
        while True:
            try:
                r.set(f"{{{tag}}}:k", "after")
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        gap = time.monotonic() - t0
        assert myid(r) == c.ids[replica.port]
        assert gap < 15, f"{gap:.1f} s"
        print(f"writes reached the promoted replica {gap:.1f} s after the SIGKILL")
    finally:
        r.close()


# -- where connections go --------------------------------------------------------------------

_DIALS: list[Addr] = []
_RECORDING = threading.Event()
_HARNESS = threading.local()  # set while this thread runs the test harness's own probes


@contextlib.contextmanager
def harness() -> Iterator[None]:
    """The harness's own dials (it probes every node) are not jobq's: not recorded."""
    _HARNESS.on = True
    try:
        yield
    finally:
        _HARNESS.on = False


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event == "socket.connect" and _RECORDING.is_set() and not getattr(_HARNESS, "on", False):
        addr = args[1]
        if isinstance(addr, tuple) and len(addr) >= 2:
            _DIALS.append((str(addr[0]), int(addr[1])))


sys.addaudithook(_audit)  # audit hooks cannot be removed: it records only while the flag is set


@pytest.fixture
def dials() -> Iterator[list[Addr]]:
    _DIALS.clear()
    _RECORDING.set()
    try:
        yield _DIALS
    finally:
        _RECORDING.clear()


def test_no_dial_goes_anywhere_but_a_seed_or_a_node_of_the_map(
    make_cluster: Callable[..., ValkeyCluster], dials: list[Addr]
) -> None:
    """Slot clients for three partitions built on ONE seed, through a SIGKILL and failover of
    one primary and a slot migration: every dial of this process goes to the seed or to a
    node some map answer named; none to a default host, none anywhere else."""
    with harness():
        c = make_cluster()
    seed = c.nodes[4]
    url = c.url_for(seed)
    cmap: ClusterMap = map_for(url)
    tags = tag_on_each_primary(cmap, "audit", 3)
    clients = [connect(url, t) for t in tags]
    stop = threading.Event()
    try:
        runs = [_hammer(r, f"{{{t}}}:n", stop) for r, t in zip(clients, tags, strict=True)]
        time.sleep(0.3)
        with harness():
            victim = c.owner(slot_of(tags[1]))
            c.kill(victim)
            promoted, _ = c.wait_failover(victim, timeout=30)
            c.migrate_slot(slot_of(tags[2]), c.owner(slot_of(tags[0])))
        time.sleep(1.0)
        stop.set()
        for run in runs:
            run["thread"].join(10)
        for r, t in zip(clients, tags, strict=True):
            with harness():
                owner = c.owner(slot_of(t))
            assert myid(r) == c.ids[owner.port]
    finally:
        stop.set()
        for r in clients:
            r.close()
    _RECORDING.clear()
    allowed = cmap.seen
    assert seed.addr in allowed and allowed <= {n.addr for n in c.nodes}
    strangers = sorted({d for d in dials if d not in allowed})
    assert not strangers, f"dialed {strangers}; allowed {sorted(allowed)}"
    assert promoted.addr in dials, "the promoted replica was never dialed: no failover seen"
    assert all(run["ok"] > 0 for run in runs)
    print(f"{len(dials)} dials to {len(set(dials))} nodes, all seeds or nodes of the map")
