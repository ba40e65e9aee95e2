"""Reads from replicas: the master's dashboard lists, queue stats and ``/metrics`` may be served
by a replica whose staleness is bounded; every write, and every read that must see the caller's
own writes, goes to the primary.

Turned on with ``read_from_replicas`` (``JOBQ_READ_FROM_REPLICAS=1`` or ``?read_from_replicas=1``
on the URL); the bound is ``max_staleness_ms`` (default 1000; ``JOBQ_MAX_STALENESS_MS`` or
``?max_staleness_ms=``). Off by default: then `ReadRouter` sends everything to the primary.

**What may be stale, and by how much.** Routed here (and nowhere else): ``GET /v1/jobs`` (the
job list), ``GET /v1/queues`` (depths, counters, dead-letter count), ``GET /v1/workers`` and
``GET /metrics``. A page served by a replica reflects every write the primary acknowledged more
than ``max_staleness_ms`` before the reply; it may miss later ones. ``GET /v1/jobs/<id>``,
``/status/<id>``, results, waits, submits, cancels, re-runs, purges, ``/healthz`` and the event
stream always use the primary (read-your-writes: a job read right after its submit is found).

**How the bound is kept.** A probe thread, every ``max_staleness_ms / 4`` (50 ms to 1 s), reads
the primary's replication offset (``INFO replication``: ``master_repl_offset``), noting the
time *before* asking, then each replica's ``slave_repl_offset``. A replica whose offset reached
the primary's offset sampled at time t holds every write acknowledged before t (Valkey appends a
write to the replication stream before it replies), so it may serve reads until
``t + max_staleness_ms`` and no longer; the next probes move t forward while it keeps up. A
replica is also required to report its link ``up`` and the primary's replication id (after a
failover, offsets of another history mean nothing). With no fresh replica, or when a read on one
fails (the replica died or hangs: its socket timeout is short), the read goes to the primary.
Nothing needs the probe to run: if it stops, every verdict expires by itself.

**Where the replicas are.** A Sentinel URL: ``SENTINEL REPLICAS`` (`topology.SentinelResolver.
replicas`, up and linked ones). A one-server URL: the ``slaveN`` lines of the primary's ``INFO
replication`` (the address each replica connected from, or its ``replica-announce-ip``). The
replicas are dialed with the URL's credentials and TLS options.

**Never a write.** Replica connections are `ReadOnlyConnection`s: they carry none of the
primary's hooks (no primary check, no epoch move, no library load) and refuse, before anything
is sent, every command outside `READ_COMMANDS` (`ReplicaWriteRefused`). The reader on them is a
`ReplicaReads`, the read half of the store (`reads.Reads`), which has no write method at all.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, Protocol, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.connection import Connection, SSLConnection
from redis.retry import Retry

from .errors import BrokerError, JobqError
from .faults import RAISED, translate
from .histograms import TaskStats
from .keys import Keys
from .listing import JobListing
from .model import JobRecord, QueueInfo, WorkerInfo
from .outage import Outage
from .reads import Reads
from .states import JobState
from .topology import resolver_of

log = logging.getLogger("jobq.replicas")
T = TypeVar("T")

#: How long one command on a replica may take before the read goes to the primary instead.
REPLICA_TIMEOUT_S = 1.0

#: The only commands a replica connection sends: the handshake and the reads of `Reads`.
READ_COMMANDS = frozenset(
    {
        "AUTH", "HELLO", "SELECT", "PING", "ECHO", "INFO", "ROLE", "TIME", "READONLY",
        "HGETALL", "HGET", "HMGET", "HLEN", "HEXISTS", "GET", "MGET", "EXISTS", "TYPE",
        "ZRANGE", "ZREVRANGE", "ZRANGEBYSCORE", "ZREVRANGEBYSCORE", "ZSCORE", "ZRANK",
        "ZREVRANK", "ZCARD", "ZCOUNT", "SSCAN", "SMEMBERS", "SISMEMBER", "SCARD", "LLEN",
        "XLEN", "XRANGE", "XREVRANGE",
    }
)  # fmt: skip
#: CLIENT subcommands of redis-py's handshake (naming the connection, its notifications;
#: never KILL or PAUSE).
_CLIENT_READS = frozenset({"SETNAME", "SETINFO", "GETNAME", "ID", "MAINT_NOTIFICATIONS"})


class ReplicaWriteRefused(JobqError):
    """A command other than a read was about to be sent on a replica connection (a bug: writes
    go to the primary); nothing was sent."""


def _word(arg: Any) -> str:
    raw = arg.decode("utf-8", "replace") if isinstance(arg, (bytes, bytearray)) else str(arg)
    return raw.upper()


class _GuardedPacker:
    """Wraps a connection's command packer (every path of redis-py, plain, pipelined or raw
    `send_command`, packs through it) and refuses any command that is not a read."""

    def __init__(self, inner: Any, where: Callable[[], str]) -> None:
        self._inner = inner
        self._where = where

    def pack(self, *args: Any) -> Any:
        words = [_word(w) for w in _word(args[0]).split()] + [_word(a) for a in args[1:2]]
        name = words[0] if words else ""
        ok = name in READ_COMMANDS or (
            name == "CLIENT" and len(words) > 1 and words[1] in _CLIENT_READS
        )
        if not ok:
            raise ReplicaWriteRefused(
                f"refused to send {name} to the replica at {self._where()}: replica "
                "connections only read (writes go to the primary)"
            )
        return self._inner.pack(*args)


class _ReadOnly:
    """Mixin of the replica connections: the guarded packer, and none of jobq's hooks."""

    host: str
    port: int

    def _construct_command_packer(self, packer: Any) -> Any:
        inner = super()._construct_command_packer(packer)  # type: ignore[misc]
        return _GuardedPacker(inner, lambda: f"{self.host}:{self.port}")


class ReadOnlyConnection(_ReadOnly, Connection):
    """TCP connection to a replica that can only read."""


class ReadOnlySSLConnection(_ReadOnly, SSLConnection):
    """TLS connection to a replica that can only read."""


def replica_client(primary: Any, host: str, port: int) -> redis.Redis:
    """A client for the replica at host:port with the primary client's credentials, database and
    TLS options, short timeouts, no retries (the primary is the retry) and no hooks."""
    pool = primary.connection_pool
    kwargs = {
        k: v
        for k, v in pool.connection_kwargs.items()
        if k not in ("jobq_hooks", "jobq_resolver", "path", "host", "port")
    }
    cls = ReadOnlySSLConnection if issubclass(pool.connection_class, SSLConnection) else None
    if cls is None:
        kwargs = {k: v for k, v in kwargs.items() if not k.startswith("ssl")}
    kwargs.update(
        host=host,
        port=port,
        socket_timeout=REPLICA_TIMEOUT_S,
        socket_connect_timeout=REPLICA_TIMEOUT_S,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
    )
    return redis.Redis(
        connection_pool=redis.ConnectionPool(
            connection_class=cls or ReadOnlyConnection, max_connections=64, **kwargs
        )
    )


class ReplicaReads(Reads):
    """The store's reads (`reads.Reads`) on one replica, plus the two counters the listings
    show. No write method exists here, and its connections refuse any (see above)."""

    def __init__(self, client: redis.Redis, keys: Keys, addr: tuple[str, int]) -> None:
        self.r: Any = client
        self.keys = keys
        self.addr = addr

    @property
    def where(self) -> str:
        return f"replica {self.addr[0]}:{self.addr[1]}"

    @contextlib.contextmanager
    def broker(self, doing: str) -> Iterator[None]:
        try:
            yield
        except RAISED as exc:
            raise translate(exc, self.where, doing) from exc

    def dead_count(self) -> int:
        with self.broker("counting dead-lettered jobs"):
            return int(self.r.zcard(self.keys.dead))

    def events_length(self) -> int:
        with self.broker("reading events"):
            return int(self.r.xlen(self.keys.events))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.r.close()
            self.r.connection_pool.disconnect()  # a client given its pool does not close it


def _info(client: Any) -> dict[str, Any]:
    return dict(client.info("replication"))


def replicas_in_info(info: dict[str, Any]) -> list[tuple[str, int]]:
    """The online replicas a primary's ``INFO replication`` lists (``slaveN`` lines)."""
    out = []
    for key, value in info.items():
        if (
            key.startswith("slave")
            and key[5:].isdigit()
            and isinstance(value, dict)
            and str(value.get("state", "online")) == "online"
            and "ip" in value
        ):
            out.append((str(value["ip"]), int(value["port"])))
    return out


class Listings(Protocol):
    """The reads a `ReadRouter` routes: `ReplicaReads` and the primary's `Store` both have them."""

    def list_jobs(
        self,
        *,
        state: JobState | None = None,
        queue: str | None = None,
        task: str | None = None,
        worker: str | None = None,
        q: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
        scan: int = 2000,
    ) -> tuple[list[JobRecord], str | None]: ...
    def list_jobs_page(
        self,
        *,
        state: JobState | None = None,
        queue: str | None = None,
        task: str | None = None,
        worker: str | None = None,
        q: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
        scan: int = 2000,
    ) -> JobListing: ...
    def queue_page(self, cursor: int = 0, limit: int = 200) -> tuple[list[QueueInfo], int]: ...
    def list_workers(self, limit: int = 200) -> list[WorkerInfo]: ...
    def dead_count(self) -> int: ...
    def events_length(self) -> int: ...
    def task_stats(self, queues: list[str] | None = None) -> list[TaskStats]: ...
    def oldest_queued(self, queues: list[str]) -> dict[str, int | None]: ...


class ReadRouter:
    """Where the master's stale-tolerant reads go: a fresh replica, or the primary `store`.

    The methods are the reads the routed endpoints make (see the module docstring); each runs
    on the freshest replica whose verdict is still valid, and on the primary when none is or
    the replica fails. With `enabled` False nothing is probed and every call is the primary's.
    """

    def __init__(
        self,
        store: Any,
        *,
        enabled: bool = False,
        max_staleness_ms: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.enabled = enabled
        self.max_staleness_s = max(max_staleness_ms, 1) / 1000
        self.probe_interval_s = min(max(self.max_staleness_s / 4, 0.05), 1.0)
        self.clock = clock
        self.outage = Outage(log, "master: replica probe")
        self._readers: dict[tuple[str, int], ReplicaReads] = {}
        self._fresh_until: dict[tuple[str, int], float] = {}
        self._samples: deque[tuple[float, int]] = deque(maxlen=256)  # (time sent, offset)
        self._replid: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: Reads served by a replica / by the primary since start (for tests and /metrics).
        self.served = {"replica": 0, "primary": 0}

    # -- the routed reads ----------------------------------------------------------------------

    def list_jobs(self, **kwargs: Any) -> tuple[list[JobRecord], str | None]:
        return self._route(lambda r: r.list_jobs(**kwargs))

    def list_jobs_page(self, **kwargs: Any) -> JobListing:
        return self._route(lambda r: r.list_jobs_page(**kwargs))

    def queue_page(self, cursor: int = 0, limit: int = 200) -> tuple[list[QueueInfo], int]:
        return self._route(lambda r: r.queue_page(cursor, limit))

    def list_workers(self, limit: int = 200) -> list[WorkerInfo]:
        return self._route(lambda r: r.list_workers(limit))

    def dead_count(self) -> int:
        return self._route(lambda r: r.dead_count())

    def events_length(self) -> int:
        return self._route(lambda r: r.events_length())

    def task_stats(self, queues: list[str] | None = None) -> list[TaskStats]:
        return self._route(lambda r: r.task_stats(queues))

    def oldest_queued(self, queues: list[str]) -> dict[str, int | None]:
        return self._route(lambda r: r.oldest_queued(queues))

    # -- routing -------------------------------------------------------------------------------

    def replica(self) -> ReplicaReads | None:
        """The reader of the freshest replica whose verdict is valid now, or None."""
        if not self.enabled:
            return None
        self._ensure_thread()
        now = self.clock()
        with self._lock:
            best = max(self._fresh_until.items(), key=lambda kv: kv[1], default=None)
            if best is None or best[1] <= now:
                return None
            return self._readers.get(best[0])

    def _route(self, read: Callable[[Listings], T]) -> T:
        reader = self.replica()
        if reader is not None:
            try:
                out = read(reader)
            except BrokerError as exc:
                with self._lock:
                    self._fresh_until.pop(reader.addr, None)
                log.warning("%s failed a read; reading from the primary (%s)", reader.where, exc)
            else:
                self._count("replica")
                return out
        self._count("primary")
        return read(self.store)

    def _count(self, where: str) -> None:
        with self._lock:
            self.served[where] += 1

    # -- probing -------------------------------------------------------------------------------

    def probe(self) -> None:
        """Measure every replica's lag once and renew (or drop) its verdict."""
        sent = self.clock()
        info = _info(self.store.r)
        replid = str(info.get("master_replid", ""))
        offset = int(info.get("master_repl_offset", 0))
        with self._lock:
            if replid != self._replid:  # a new primary (or history): old samples mean nothing
                self._samples.clear()
                self._fresh_until.clear()
                self._replid = replid
            self._samples.append((sent, offset))
            horizon = sent - self.max_staleness_s - 2 * self.probe_interval_s
            while len(self._samples) > 1 and self._samples[0][0] < horizon:
                self._samples.popleft()
            samples = list(self._samples)
        addrs = self._discover(info)
        for addr in addrs:
            until = self._verdict(addr, replid, samples)
            with self._lock:
                if until is None:
                    self._fresh_until.pop(addr, None)
                else:
                    self._fresh_until[addr] = max(until, self._fresh_until.get(addr, until))
        self._forget(set(addrs))

    def _discover(self, info: dict[str, Any]) -> list[tuple[str, int]]:
        resolver = resolver_of(self.store.r)
        if resolver is not None:
            return list(resolver.replicas())
        return replicas_in_info(info)

    def _verdict(
        self, addr: tuple[str, int], replid: str, samples: list[tuple[float, int]]
    ) -> float | None:
        """Until when `addr` may serve reads (None: not now), from its offset and `samples`."""
        reader = self._reader(addr)
        try:
            rinfo = _info(reader.r)
        except (redis.RedisError, OSError, JobqError) as exc:
            log.debug("replica %s:%d unusable for reads: %s", addr[0], addr[1], exc)
            return None
        if (
            rinfo.get("role") != "slave"
            or rinfo.get("master_link_status") != "up"
            or str(rinfo.get("master_replid", "")) != replid
        ):
            return None
        have = int(rinfo.get("slave_repl_offset", -1))
        caught_up = [t for t, off in samples if off <= have]
        if not caught_up:
            return None
        return max(caught_up) + self.max_staleness_s

    def _reader(self, addr: tuple[str, int]) -> ReplicaReads:
        with self._lock:
            reader = self._readers.get(addr)
        if reader is None:
            client = replica_client(self.store.r, addr[0], addr[1])
            reader = ReplicaReads(client, self.store.keys, addr)
            with self._lock:
                self._readers.setdefault(addr, reader)
                reader = self._readers[addr]
        return reader

    def _forget(self, keep: set[tuple[str, int]]) -> None:
        """Drop replicas no longer listed (their verdict and connections)."""
        with self._lock:
            gone = [a for a in self._readers if a not in keep]
            readers = [self._readers.pop(a) for a in gone]
            for a in gone:
                self._fresh_until.pop(a, None)
        for reader in readers:
            reader.close()

    def _ensure_thread(self) -> None:
        if self._thread is not None or self._stop.is_set():
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="jobq-replica-probe", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.probe()
                self.outage.ok()
            except Exception as exc:  # the probe outlives any error (outage.py)
                self.outage.failed(exc)
            self._stop.wait(self.probe_interval_s)

    def close(self) -> None:
        """Stop the probe and close the replica connections."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self._forget(set())
