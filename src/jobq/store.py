"""The only code that talks to Redis: reads, and every state change through `scripts.py`.

Sync on purpose: one definition of each broker operation, shared by the client, the worker and the
master (whose HTTP handlers call it from a thread pool). Hot paths take lists so callers batch:
one round trip submits, claims or acknowledges many jobs.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import redis

from .errors import BrokerUnavailable
from .keys import Keys
from .model import Claimed, JobRecord, JobSpec, Outcome, QueueInfo
from .scripts import Scripts
from .states import TERMINAL, JobState

BrokerErrors = (redis.ConnectionError, redis.TimeoutError)


def redact(url: str) -> str:
    """The URL with any password replaced by ***, for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def connect(url: str, **kwargs: Any) -> redis.Redis:
    """A client for `url` (redis://, rediss://, unix://) that retries briefly on reconnect."""
    from redis.backoff import ExponentialBackoff
    from redis.retry import Retry

    kwargs.setdefault("health_check_interval", 30)
    kwargs.setdefault("socket_connect_timeout", 5)
    # Longer than any blocking call we make (those block in slices of at most 5 s), so a
    # half-open connection after a network cut raises instead of hanging forever.
    kwargs.setdefault("socket_timeout", 15)
    if not url.startswith("unix:"):
        kwargs.setdefault("socket_keepalive", True)
    kwargs.setdefault("retry", Retry(ExponentialBackoff(cap=1.0, base=0.05), 3))
    kwargs.setdefault("retry_on_error", [redis.ConnectionError])
    return redis.Redis.from_url(url, **kwargs)


class Store:
    """Broker operations for one deployment (client + key prefix + settings)."""

    def __init__(
        self,
        client: redis.Redis,
        url: str,
        keys: Keys,
        *,
        events_maxlen: int = 100_000,
        result_ttl_s: int = 86_400,
    ) -> None:
        # redis-py's annotations cannot express decode_responses=False (replies are bytes).
        self.r: Any = client
        self.url = url
        self.keys = keys
        self.scripts = Scripts(client, keys, events_maxlen)
        self.result_ttl_s = result_ttl_s

    @contextlib.contextmanager
    def broker(self, doing: str) -> Iterator[None]:
        """Turn connection failures into one clear error naming the URL and what to check."""
        try:
            yield
        except BrokerErrors as exc:
            raise BrokerUnavailable(
                f"cannot reach Valkey at {redact(self.url)} while {doing} ({exc}): is the server "
                "(or `jobq master`) running? set JOBQ_URL or --url to point elsewhere"
            ) from exc

    def ping(self) -> None:
        with self.broker("connecting"):
            self.r.ping()

    # -- producers ---------------------------------------------------------------------------

    def submit(self, specs: list[JobSpec], now: int = 0, chunk: int = 500) -> list[bool]:
        """Create jobs in one round trip; per job, True if created, False if the id existed.

        Large batches go as several script calls (so no single call blocks the server for
        long) in one pipeline.
        """
        with self.broker("submitting jobs"):
            if len(specs) <= chunk:
                reply = self.scripts.enqueue(self.r, [s.as_row() for s in specs], now)
                return [bool(x) for x in reply]
            pipe = self.r.pipeline(transaction=False)
            for i in range(0, len(specs), chunk):
                self.scripts.enqueue(pipe, [s.as_row() for s in specs[i : i + chunk]], now)
            replies = pipe.execute()
        return [bool(x) for reply in replies for x in reply]

    # -- workers -----------------------------------------------------------------------------

    def claim(
        self, worker: str, queues: list[str], n: int, lease_ms: int, now: int = 0
    ) -> list[Claimed]:
        """Claim up to `n` jobs from `queues` (in order) under a lease."""
        with self.broker("claiming jobs"):
            rows = self.scripts.claim(self.r, worker, queues, n, lease_ms, now)
        return [Claimed.from_reply(r) for r in rows]

    def wait_for_work(self, queues: list[str], timeout_s: float) -> bool:
        """Block until a queue signals new work (or the timeout); no polling loop."""
        with self.broker("waiting for jobs"):
            got = self.r.blpop([self.keys.wake(q) for q in queues], timeout=timeout_s)
        return got is not None

    def report(self, outcomes: list[Outcome], now: int = 0) -> dict[str, int]:
        """Record many outcomes in one round trip; returns each job id's script code
        (1 recorded / 2 dead-lettered / -1 not found / -2 superseded by a newer attempt)."""
        ok = [o for o in outcomes if o.ok]
        bad = [o for o in outcomes if not o.ok]
        with self.broker("reporting results"):
            pipe = self.r.pipeline(transaction=False)
            if ok:
                items = [(o.claimed.id, o.claimed.token, o.result) for o in ok]
                self.scripts.complete(pipe, items, self.result_ttl_s, now)
            if bad:
                fitems = [
                    (o.claimed.id, o.claimed.token, orjson.dumps(o.error), o.retry_delay_ms)
                    for o in bad
                ]
                self.scripts.fail(pipe, fitems, now)
            replies = pipe.execute()
        codes: dict[str, int] = {}
        for group, reply in zip([g for g in (ok, bad) if g], replies, strict=True):
            for o, code in zip(group, reply, strict=True):
                codes[o.claimed.id] = int(code)
        return codes

    def heartbeat(
        self, items: list[tuple[str, str]], lease_ms: int, now: int = 0
    ) -> tuple[set[str], set[str]]:
        """Extend leases; returns (ids lost to another attempt, ids whose cancel was asked)."""
        if not items:
            return set(), set()
        with self.broker("extending leases"):
            lost, cancel = self.scripts.heartbeat(self.r, items, lease_ms, now)
        return {x.decode() for x in lost}, {x.decode() for x in cancel}

    def requeue(self, items: list[tuple[str, str]], now: int = 0) -> int:
        """Give running jobs back to their queues (shutdown); the attempt is not counted."""
        if not items:
            return 0
        with self.broker("requeueing jobs"):
            return int(self.scripts.requeue(self.r, items, now))

    # -- maintenance -------------------------------------------------------------------------

    def reap(self, limit: int = 1000, now: int = 0) -> tuple[int, int]:
        with self.broker("reaping expired leases"):
            requeued, dead = self.scripts.reap(self.r, limit, now)
        return int(requeued), int(dead)

    def promote(self, limit: int = 1000, now: int = 0) -> int:
        with self.broker("promoting scheduled jobs"):
            return int(self.scripts.promote(self.r, limit, now))

    def trim_finished(self, now: int = 0) -> int:
        """Drop entries older than the result TTL from the finished-jobs index."""
        now = now or self.server_time_ms()
        with self.broker("trimming the finished index"):
            removed: int = self.r.zremrangebyscore(
                self.keys.finished, "-inf", now - self.result_ttl_s * 1000
            )
        return removed

    def lead(self, candidate: str, lease_ms: int, release: bool = False, now: int = 0) -> bool:
        with self.broker("renewing the leader lease"):
            return bool(self.scripts.leader(self.r, candidate, lease_ms, release, now))

    def mark_master_alive(self, master_id: str, ttl_ms: int) -> None:
        with self.broker("announcing the master"):
            self.r.set(self.keys.master, master_id, px=ttl_ms)

    def master_alive(self) -> bool:
        with self.broker("looking for a master"):
            return bool(self.r.exists(self.keys.master))

    def register_worker(self, name: str, info: dict[str, str], ttl_ms: int) -> None:
        with self.broker("registering the worker"):
            pipe = self.r.pipeline(transaction=False)
            pipe.hset(self.keys.worker(name), mapping=info)
            pipe.pexpire(self.keys.worker(name), ttl_ms)
            pipe.zadd(self.keys.workers, {name: time.time()})
            pipe.execute()

    def unregister_worker(self, name: str) -> None:
        with self.broker("unregistering the worker"):
            self.r.delete(self.keys.worker(name))
            self.r.zrem(self.keys.workers, name)

    # -- reads and control -------------------------------------------------------------------

    def get_job(self, job_id: str) -> JobRecord | None:
        with self.broker("reading a job"):
            raw = self.r.hgetall(self.keys.job(job_id))
        return JobRecord.from_hash(job_id, raw) if raw else None

    def get_state(self, job_id: str) -> JobState | None:
        with self.broker("reading a job's state"):
            raw = self.r.hget(self.keys.job(job_id), "state")
        return JobState(raw.decode()) if raw else None

    def wait(self, job_id: str, timeout_s: float | None) -> JobRecord | None:
        """Block until the job is terminal (or the timeout); returns it, None if not found.

        Registers as a waiter inside a script, then blocks on ``done:<id>``, which the finishing
        script pushes to: no polling, and no missed wake-up between the check and the block.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            with self.broker("waiting for a result"):
                code = int(self.scripts.await_(self.r, job_id))
            if code == -1:
                return None
            if code == 0:
                left = 0.0 if deadline is None else deadline - time.monotonic()
                if deadline is not None and left <= 0:
                    return self.get_job(job_id)
                # Block in slices so a dead connection is noticed (socket timeout is longer).
                block = 5.0 if deadline is None else min(max(left, 0.001), 5.0)
                with self.broker("waiting for a result"):
                    self.r.blpop([self.keys.done(job_id)], timeout=block)
            job = self.get_job(job_id)
            if job is None or job.state in TERMINAL:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                return job

    def cancel(self, job_id: str) -> int:
        with self.broker("cancelling a job"):
            return int(self.scripts.cancel(self.r, job_id, self.result_ttl_s))

    def rerun(self, job_id: str) -> int:
        with self.broker("re-running a job"):
            return int(self.scripts.rerun(self.r, job_id))

    def dead_letters(self, limit: int = 100, offset: int = 0) -> list[str]:
        """Ids in the dead-letter set, oldest first."""
        with self.broker("listing dead-lettered jobs"):
            ids = self.r.zrange(self.keys.dead, offset, offset + limit - 1)
        return [i.decode() for i in ids]

    def queues(self) -> list[QueueInfo]:
        """Depths per state and counters for every known queue, in one round trip."""
        with self.broker("reading queues"):
            names = sorted(n.decode() for n in self.r.smembers(self.keys.queues))
            pipe = self.r.pipeline(transaction=False)
            for n in names:
                pipe.zcard(self.keys.queue(n))
                pipe.hgetall(self.keys.stats(n))
            replies = pipe.execute()
        out = []
        for i, n in enumerate(names):
            depth: int = replies[2 * i]
            st: dict[bytes, bytes] = replies[2 * i + 1]

            def g(f: str, st: dict[bytes, bytes] = st) -> int:
                return int(st.get(f.encode(), 0))

            out.append(
                QueueInfo(
                    n,
                    depth,
                    g("scheduled"),
                    g("running"),
                    g("succeeded"),
                    g("failed"),
                    g("cancelled"),
                    g("retried"),
                )
            )
        return out

    def dead_count(self) -> int:
        with self.broker("counting dead-lettered jobs"):
            return int(self.r.zcard(self.keys.dead))

    def server_time_ms(self) -> int:
        with self.broker("reading the server clock"):
            sec, usec = self.r.time()
        return int(sec) * 1000 + int(usec) // 1000
