"""The only code that talks to Redis: reads, and every state change through `scripts.py`.

Sync on purpose: one definition of each broker operation, shared by the client, the worker and the
master (whose HTTP handlers call it from a thread pool). Hot paths take lists so callers batch:
one round trip submits, claims or acknowledges many jobs. The submits (`submits.py`), the
reads (`reads.py`) and the maintenance writes (`upkeep.py`) are inherited halves of `Shard`.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import orjson
import redis
from redis.retry import Retry

from .claims import claimed_jobs
from .cluster import client_for_slot
from .cluster_url import is_cluster
from .codes import Await, Cancel, Delete, Progress, Rerun
from .durability import Durability
from .errors import BrokerUnavailable, ConfigError, JobqError, gave_up_waiting
from .faults import RAISED, translate
from .keys import Keys
from .memory import MemoryState, RoomCheck, read_memory
from .model import Claimed, JobRecord, Outcome
from .names import encodable
from .outage import Outage
from .reads import Reads
from .scripts import Batch, Scripts
from .states import JobState
from .submits import Submits
from .topology import client_for, hooks_of, is_sentinel, resolver_of
from .upkeep import Upkeep

log = logging.getLogger("jobq.store")
T = TypeVar("T")

#: How long a caller waiting for a result rides out a broker outage before giving up, unless
#: `failover_wait_s` says otherwise.
WAIT_OUTAGE_S = 30.0
#: What `failover_wait_s=None` means on a Sentinel or Cluster URL (see
#: `Settings.failover_wait_s`): both promote a replica within seconds, and a producer should
#: wait for it, not raise (one partition's primary gone stops that partition's submits).
SENTINEL_FAILOVER_WAIT_S = 45.0


def follows_failovers(url: str) -> bool:
    """Whether `url` names a topology that promotes a replica by itself (Sentinel, Cluster)."""
    return is_sentinel(url) or is_cluster(url)


_QUERY_SECRET = re.compile(r"([?&][^=&#]*password[^=&#]*=)[^&#]*", re.IGNORECASE)


def redact(url: str) -> str:
    """The URL with any password (in the netloc or a `?password=` style query parameter)
    replaced by ***, for logs and error messages."""
    url = _QUERY_SECRET.sub(r"\1***", url)
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


class _NoAuthRetry(Retry):
    """redis-py's retry, except on a refused password: `redis.AuthenticationError` is a
    `ConnectionError` to redis-py, but reconnecting with the same password cannot succeed, so
    it reaches the caller at once (as `errors.AuthFailed`) instead of after the back-off."""

    def call_with_retry(
        self,
        do: Callable[[], T],
        fail: Callable[[Exception], Any] | Callable[[Exception, int], Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> T:
        def retryable(exc: Exception) -> bool:
            if isinstance(exc, redis.AuthenticationError):
                return False
            return is_retryable is None or is_retryable(exc)

        return super().call_with_retry(do, fail, retryable, with_failure_count)


def connect(url: str, tag: str | None = None, **kwargs: Any) -> redis.Redis:
    """A client for `url` (redis://, rediss://, unix://, redis+sentinel://,
    redis+cluster://; see topology.py) that retries briefly on reconnect and whose every
    connection checks it reached the primary. On a Cluster, `tag` names the partition (hash
    tag) whose slot's primary the client reaches (default: the slot of the bare tag '')."""
    from redis.backoff import ExponentialBackoff

    kwargs.setdefault("health_check_interval", 30)
    kwargs.setdefault("socket_connect_timeout", 5)
    # Longer than any blocking call we make (those block in slices of at most 5 s), so a
    # half-open connection after a network cut raises instead of hanging forever.
    kwargs.setdefault("socket_timeout", 15)
    if not url.startswith("unix:"):
        kwargs.setdefault("socket_keepalive", True)
    kwargs.setdefault("retry", _NoAuthRetry(ExponentialBackoff(cap=1.0, base=0.05), 3))
    kwargs.setdefault("retry_on_error", [redis.ConnectionError])
    if is_cluster(url):
        return client_for_slot(url, tag or "", **kwargs)
    return client_for(url, **kwargs)


def _cluster_node_error(url: str) -> ConfigError:
    return ConfigError(
        f"{redact(url)}: this server is a Cluster node: use "
        "redis+cluster://[:password@]host:port[,host:port...] (any nodes of the cluster as "
        "seeds; see docs/cluster.md) instead of a one-server URL"
    )


def refuse_cluster_node(client: Any, url: str) -> None:
    """Refuse a one-server URL that names a node of a Valkey Cluster (``cluster_enabled:1``),
    for a client without a shard's hooks (see `ClusterNodeCheck`): one ``INFO cluster``."""
    info = client.info("cluster")
    if str(info.get("cluster_enabled", "0")) == "1":
        raise _cluster_node_error(url)


class ClusterNodeCheck:
    """The first hook of a one-server client's connections: refuse a node of a Valkey Cluster.

    Through a one-server URL a Cluster node would serve only the keys whose slots it owns:
    the primary check of the first connection already fails with MOVED on any other node, and
    on the owner of the control slot the deployment would run in one slot (while a
    ``redis+cluster://`` process lays it out over every primary). One ``INFO cluster`` on the
    first connection of each client, before any command touching a key; later connections of
    the same client skip it (a server does not turn into a Cluster node under a URL). A
    `ConfigError`, not a connection error: retrying does not fix the URL."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.checked = False

    def __call__(self, conn: Any) -> None:
        if self.checked:
            return
        conn.send_command("INFO", "cluster", check_health=False)
        info = conn.read_response()
        text = info.decode("utf-8", "replace") if isinstance(info, bytes) else str(info)
        if "cluster_enabled:1" in text:
            conn.disconnect()  # never handed out half set up
            raise _cluster_node_error(self.url)
        self.checked = True


def _outcome_record(job_id: str, message: bytes) -> JobRecord:
    """The record a finishing script pushed to a waiter: ``<state>|<result or error json>``."""
    state, _, payload = message.partition(b"|")
    st = JobState(state.decode())
    if st == JobState.SUCCEEDED:
        return JobRecord(job_id, "", "", st, result=payload)
    return JobRecord(job_id, "", "", st, error=orjson.loads(payload) if payload else None)


class Shard(Submits, Reads, Upkeep):
    """Broker operations on one partition of a deployment (client + its keys + settings):
    one Valkey slot, so every call here is a call to one node."""

    def __init__(
        self,
        client: redis.Redis,
        url: str,
        keys: Keys,
        *,
        events_maxlen: int = 100_000,
        result_ttl_s: int = 86_400,
        durable: bool = False,
        wait_replicas: int = 0,
        durable_timeout_ms: int = 5_000,
        memory_limit: float = 0.9,
        dead_ttl_s: int = 7 * 86_400,
        failover_wait_s: float | None = None,
    ) -> None:
        # redis-py's annotations cannot express decode_responses=False (replies are bytes).
        self.r: Any = client
        self.url = url
        self.keys = keys
        self.scripts = Scripts(client, keys, events_maxlen)
        self.events_maxlen = events_maxlen
        self.result_ttl_s = result_ttl_s
        #: Durable mode: what submits and outcomes wait for (WAITAOF); None = acknowledge at once.
        self.durability = Durability.for_settings(
            redact(url), durable, wait_replicas, durable_timeout_ms
        )
        #: Back-pressure: submits refused past `memory_limit` of maxmemory (see memory.py).
        self.room = RoomCheck(self.memory, redact(url), memory_limit)
        self.dead_ttl_s = dead_ttl_s
        #: How long a submit waits for a primary before raising (`Settings.failover_wait_s`).
        self.failover_wait_s = (
            (SENTINEL_FAILOVER_WAIT_S if follows_failovers(url) else 0.0)
            if failover_wait_s is None
            else failover_wait_s
        )
        #: How long a result wait rides out an outage: the same bound, at least 30 s by default.
        self.outage_wait_s = (
            max(WAIT_OUTAGE_S, self.failover_wait_s) if failover_wait_s is None else failover_wait_s
        )
        # One episode log for every submit of this store (all threads), not one line per retry.
        self.submit_outage = Outage(log, f"submit (waits up to {self.failover_wait_s:g} s)")
        # Every new connection first checks it reached the primary and moves the token epoch
        # if the primary changed (Scripts.check_primary), before any of our commands.
        hooks = hooks_of(client)
        if hooks is not None:
            if not is_cluster(url) and not any(isinstance(h, ClusterNodeCheck) for h in hooks):
                hooks.insert(0, ClusterNodeCheck(url))  # before anything touches a key
            hooks.append(self.scripts.check_primary)

    def close(self) -> None:
        """Close this store's connections (the pool's, the scripts' lean ones, and those to
        the Sentinels)."""
        self.scripts.close()
        self.r.close()
        resolver = resolver_of(self.r)
        if resolver is not None:
            resolver.close()

    @contextlib.contextmanager
    def broker(self, doing: str) -> Iterator[None]:
        """Turn every redis-py failure into jobq's typed error naming the URL and what to check
        (`faults.translate`): retriable ones are `BrokerUnavailable`, a full server `BrokerFull`."""
        try:
            yield
        except RAISED as exc:
            raise self.fault(exc, doing) from exc

    def fault(self, exc: Exception, doing: str) -> JobqError:
        """jobq's typed error for a redis-py failure `exc` while `doing` (what `broker` raises),
        for a path that catches `faults.RAISED` itself."""
        return translate(exc, redact(self.url), doing)

    def ping(self) -> None:
        with self.broker("connecting"):
            self.r.ping()

    def memory(self) -> MemoryState:
        """The server's memory use, limit and eviction policy (one INFO round trip)."""
        with self.broker("reading memory use"):
            return read_memory(self.r)

    # -- workers -----------------------------------------------------------------------------

    def claim(
        self, worker: str, queues: list[str], n: int, lease_ms: int, now: int = 0, start: int = 0
    ) -> list[Claimed]:
        """Claim up to `n` jobs from `queues` (in order) under a lease; the first `start` go
        into idle slots at once and are marked begun (the rest are claimed ahead)."""
        with self.broker("claiming jobs"):
            rows = self.scripts.claim(self.r, worker, queues, n, lease_ms, now, start)
        return claimed_jobs(queues, rows)

    def claim_woken(
        self,
        worker: str,
        queues: list[str],
        n: int,
        lease_ms: int,
        timeout_s: float,
        start: int = 0,
    ) -> list[Claimed]:
        """Block until a queue signals new work (or the timeout), then `claim`, in one round
        trip: the BLPOP on the wake lists and the claim go out pipelined, so the server claims
        the moment the wake-up arrives and the worker wakes with its jobs (a claim after a
        timeout is harmless: it returns what is queued, mostly nothing). Server clock."""
        wake = [self.keys.wake(q) for q in queues]
        call = self.scripts.claim_call(worker, queues, n, lease_ms, 0, start)
        with self.broker("waiting for jobs"):
            _popped, rows = self.scripts.block_then(wake, timeout_s, call)
        return claimed_jobs(queues, rows)

    def wake(self, queue: str) -> None:
        """Wake one worker blocked on `queue` (e.g. a worker's own queue, to stop it)."""
        with self.broker("waking a worker"):
            self.r.rpush(self.keys.wake(queue), "1")

    def wait_for_work(self, queues: list[str], timeout_s: float) -> bool:
        """Block until a queue signals new work (or the timeout); no polling loop."""
        with self.broker("waiting for jobs"):
            got = self.r.blpop([self.keys.wake(q) for q in queues], timeout=timeout_s)
        return got is not None

    def report(self, outcomes: list[Outcome], now: int = 0) -> dict[str, int]:
        """Record many outcomes in one round trip; returns each job id's script code
        (`codes.Complete` for a success, `codes.Fail` for a failure)."""
        ok = [o for o in outcomes if o.ok]
        bad = [o for o in outcomes if not o.ok]
        with self.broker("reporting results"):
            batch = Batch()
            if ok:
                items = [(o.claimed.id, o.claimed.token, o.result, o.ran_ms()) for o in ok]
                self.scripts.complete(batch, items, self.result_ttl_s, now)
            if bad:
                fitems = [
                    (
                        o.claimed.id,
                        o.claimed.token,
                        orjson.dumps(o.error),
                        o.retry_delay_ms,
                        o.ran_ms(),
                    )
                    for o in bad
                ]
                self.scripts.fail(batch, fitems, self.result_ttl_s, now)
            if self.durability and batch.calls:
                batch.calls.append(self.durability.call())
            replies = self.scripts.execute(batch.calls)
        if self.durability and batch.calls:
            self.durability.check_outcomes(replies.pop())
        codes: dict[str, int] = {}
        for group, reply in zip([g for g in (ok, bad) if g], replies, strict=True):
            for o, code in zip(group, reply, strict=True):
                codes[o.claimed.id] = int(code)
        return codes

    def heartbeat(
        self,
        items: list[tuple[str, str]],
        lease_ms: int,
        now: int = 0,
        worker: str = "",
        began: Iterable[tuple[str, str]] = (),
    ) -> tuple[set[str], set[str]]:
        """Extend leases and mark `worker` as seen (server clock); the `began` (id, token) pairs
        are also marked as started (so a lost lease counts as a lost worker, not a release).
        Returns (ids no longer ours: reaped, finished or taken by a newer attempt, ids whose
        cancel was requested)."""
        marks = list(began)
        if marks:
            seen = set(marks)
            items = marks + [it for it in items if it not in seen]
        if not items and not worker:
            return set(), set()
        with self.broker("extending leases"):
            lost, cancel = self.scripts.heartbeat(
                self.r, items, lease_ms, now, worker, began=len(marks)
            )
        return {x.decode() for x in lost}, {x.decode() for x in cancel}

    def for_heartbeats(self, timeout_s: float) -> Shard:
        """A store on connections of its own with a short socket timeout, for the heartbeat
        thread: a partition then fails a heartbeat within `timeout_s` (and is logged) instead
        of hanging for the long timeout the blocking claim path needs."""
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        client = connect(
            self.url,
            self.keys.tag or self.keys.prefix,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            health_check_interval=0,
            retry=Retry(NoBackoff(), 0),  # the heartbeat loop retries (and logs) itself
        )
        return Shard(
            client,
            self.url,
            self.keys,
            events_maxlen=self.events_maxlen,
            result_ttl_s=self.result_ttl_s,
        )

    def requeue(self, items: list[tuple[str, str]], now: int = 0) -> int:
        """Give running jobs back to their queues (shutdown); the attempt is not counted."""
        if not items:
            return 0
        with self.broker("requeueing jobs"):
            return int(self.scripts.requeue(self.r, items, now))

    # -- reads and control -------------------------------------------------------------------

    def wait(self, job_id: str, timeout_s: float | None, full: bool = True) -> JobRecord | None:
        """Block until the job is terminal (or the timeout); returns it, None if not found.

        Registers as a waiter inside a script and blocks on ``done:<id>``, to which the
        finishing script pushes the outcome: no polling, and no missed wake-up between the
        check and the block. Both go out pipelined, so a wait is one round trip. With
        ``full=False`` the record is built from the pushed outcome alone (state, result and
        error), saving the read after it.
        """
        if not encodable(job_id):
            return None
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        outage_started = 0.0
        registered = False
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                if registered:  # give the registration back: the count stays one per caller
                    with contextlib.suppress(*RAISED):
                        self.scripts.await_(self.r, job_id, mode="leave")
                return self.get_job(job_id)
            # Block in slices so a dead connection is noticed (socket timeout is longer); each
            # slice renews the registration (counted once per caller, not once per slice), in
            # case the job expired or was re-run meanwhile.
            block = 5.0 if left is None else min(max(left, 0.001), 5.0)
            try:
                code, got = self.scripts.await_and_pop(
                    job_id, self.keys.done(job_id), block, renew=registered
                )
                registered = code == Await.REGISTERED
            except RAISED as exc:
                err = self.fault(exc, "waiting for a result")
                # Waiting is safe to repeat: ride out a restart, a failover or a network blip
                # (anything retriable) for a while.
                outage_started = outage_started or time.monotonic()
                if not isinstance(err, BrokerUnavailable):
                    raise err from exc
                waited = time.monotonic() - outage_started
                if waited > self.outage_wait_s:
                    sentinel = is_sentinel(self.url)
                    raise gave_up_waiting(err, waited, "waiting for a result", sentinel) from exc
                time.sleep(0.2)
                continue
            outage_started = 0.0
            if code == Await.NOT_FOUND:
                return None
            if got is not None:
                return self.get_job(job_id) if full else _outcome_record(job_id, got[1])

    def progress(self, job_id: str, token: str, fraction: float, message: str = "") -> bool:
        """Record a running attempt's progress; False if the attempt no longer owns the job."""
        with self.broker("recording progress"):
            code = self.scripts.progress(self.r, job_id, token, fraction, message)
        return int(code) == Progress.RECORDED

    def cancel_requested(self, job_id: str) -> bool:
        with self.broker("checking for a cancel request"):
            return bool(self.r.hexists(self.keys.job(job_id), "cancel"))

    def set_rate_limits(self, limits: dict[str, str]) -> None:
        """Publish per-task rate limits (task -> "count:period_ms"); claims enforce them."""
        if limits:
            with self.broker("publishing rate limits"):
                self.r.hset(self.keys.ratelimits, mapping=limits)

    def cancel(self, job_id: str) -> int:
        if not encodable(job_id):
            return Cancel.NOT_FOUND  # no job can have this id
        with self.broker("cancelling a job"):
            return int(self.scripts.cancel(self.r, job_id, self.result_ttl_s))

    def rerun(self, job_id: str) -> int:
        if not encodable(job_id):
            return Rerun.NOT_FOUND
        with self.broker("re-running a job"):
            return int(self.scripts.rerun(self.r, job_id))

    def delete(self, job_id: str) -> int:
        """Remove a finished job (delete.lua); a `codes.Delete`."""
        if not encodable(job_id):
            return Delete.NOT_FOUND
        with self.broker("deleting a job"):
            return int(self.scripts.delete(self.r, job_id))

    def purge(self, queue: str, batch: int = 1000) -> int:
        """Cancel every queued job of `queue` (in batches); returns how many."""
        if not encodable(queue):
            return 0  # no queue can have this name
        total = 0
        while True:
            with self.broker("purging a queue"):
                n = int(self.scripts.purge(self.r, queue, batch, self.result_ttl_s))
            total += n
            if n < batch:
                return total

    def dead_count(self) -> int:
        with self.broker("counting dead-lettered jobs"):
            return int(self.r.zcard(self.keys.dead))

    def server_time_ms(self) -> int:
        with self.broker("reading the server clock"):
            sec, usec = self.r.time()
        return int(sec) * 1000 + int(usec) // 1000

    def read_events(
        self, after: str, count: int = 500, block_ms: int | None = None
    ) -> list[tuple[str, dict[str, str]]]:
        """Events after stream id `after` (oldest first), blocking up to `block_ms` for new ones."""
        with self.broker("reading events"):
            reply = self.r.xread({self.keys.events: after}, count=count, block=block_ms)
        if not reply:
            return []
        return [
            (eid.decode(), {k.decode(): v.decode() for k, v in fields.items()})
            for eid, fields in reply[0][1]
        ]

    def last_event_id(self) -> str:
        """The id of the newest event ("0-0" when there is none)."""
        with self.broker("reading events"):
            got = self.r.xrevrange(self.keys.events, "+", "-", count=1)
        return got[0][0].decode() if got else "0-0"

    def events_length(self) -> int:
        with self.broker("reading events"):
            return int(self.r.xlen(self.keys.events))

    def leader_holder(self) -> str | None:
        """Who holds the maintenance leader lease now, if anyone."""
        with self.broker("reading the leader lease"):
            v = self.r.get(self.keys.leader)
        return v.decode() if v else None
