"""The only code that talks to Redis: reads, and every state change through `scripts.py`.

Sync on purpose: one definition of each broker operation, shared by the client, the worker and the
master (whose HTTP handlers call it from a thread pool). Hot paths take lists so callers batch:
one round trip submits, claims or acknowledges many jobs.
"""

from __future__ import annotations

import base64
import contextlib
import time
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import redis

from .errors import BrokerUnavailable, DependencyCycle, JobNotFound
from .keys import Keys
from .model import Claimed, JobRecord, JobSpec, Outcome, QueueInfo, WorkerInfo
from .periodic import PeriodicSpec
from .scripts import Batch, Call, Scripts
from .states import JobState

BrokerErrors = (redis.ConnectionError, redis.TimeoutError)
#: How long a caller waiting for a result rides out a broker outage before giving up.
WAIT_OUTAGE_S = 30.0


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


def _script_error(exc: Exception) -> Exception:
    """Map a script's error reply ("JOBQ_<KIND> message") to our exception."""
    msg = str(exc)
    if msg.startswith("JOBQ_CYCLE"):
        return DependencyCycle(msg.removeprefix("JOBQ_CYCLE ").strip())
    if msg.startswith("JOBQ_PARENT"):
        return JobNotFound("depends_on: " + msg.removeprefix("JOBQ_PARENT ").strip())
    return exc


def _outcome_record(job_id: str, message: bytes) -> JobRecord:
    """The record a finishing script pushed to a waiter: ``<state>|<result or error json>``."""
    state, _, payload = message.partition(b"|")
    st = JobState(state.decode())
    if st == JobState.SUCCEEDED:
        return JobRecord(job_id, "", "", st, result=payload)
    return JobRecord(job_id, "", "", st, error=orjson.loads(payload) if payload else None)


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
        self.events_maxlen = events_maxlen
        self.result_ttl_s = result_ttl_s

    def close(self) -> None:
        """Close this store's connections (the pool's and the scripts' lean ones)."""
        self.scripts.close()
        self.r.close()

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

    def submit(self, specs: Iterable[JobSpec], now: int = 0) -> list[bool]:
        """Create jobs in one round trip; per job, True if created, False if it existed (same
        id, or a pending job holds its unique key)."""
        return [r == 1 for _s, r in self._enqueue(specs, now)]

    def submit_ids(self, specs: Iterable[JobSpec], now: int = 0) -> list[str]:
        """Create jobs in one round trip; per job, the id that now stands for it: its own, or
        that of the pending job holding the same unique key."""
        return [r.decode() if isinstance(r, bytes) else s.id for s, r in self._enqueue(specs, now)]

    def _enqueue(
        self, specs: Iterable[JobSpec], now: int, chunk: int = 500
    ) -> list[tuple[JobSpec, Any]]:
        """Each job with its enqueue reply. A large batch goes as several script calls (so no
        single call holds the server for long), streamed in one round trip: the server runs a
        chunk while the next is built. A bad dependency raises before anything is written."""
        if isinstance(specs, list) and len(specs) <= chunk:  # the common case: one call
            with self.broker("submitting jobs"):
                reply = self.scripts.execute(
                    [self.scripts.enqueue_call([s.as_row() for s in specs], now)]
                )[0]
            if isinstance(reply, redis.ResponseError):
                raise _script_error(reply)
            return list(zip(specs, reply, strict=True))
        it = iter(specs)
        chunks: list[list[JobSpec]] = []

        def calls() -> Iterator[Call]:
            while part := list(islice(it, chunk)):
                chunks.append(part)
                yield self.scripts.enqueue_call([s.as_row() for s in part], now)

        with self.broker("submitting jobs"):
            replies = self.scripts.execute(calls())
        out: list[tuple[JobSpec, Any]] = []
        for part, reply in zip(chunks, replies, strict=True):
            if isinstance(reply, redis.ResponseError):
                raise _script_error(reply)
            out.extend(zip(part, reply, strict=True))
        return out

    # -- workers -----------------------------------------------------------------------------

    def claim(
        self, worker: str, queues: list[str], n: int, lease_ms: int, now: int = 0, start: int = 0
    ) -> list[Claimed]:
        """Claim up to `n` jobs from `queues` (in order) under a lease; the first `start` go
        into idle slots at once and are marked begun (the rest are claimed ahead)."""
        with self.broker("claiming jobs"):
            rows = self.scripts.claim(self.r, worker, queues, n, lease_ms, now, start)
        return [Claimed.from_reply(r) for r in rows]

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
        (1 recorded / 2 dead-lettered / -1 not found / -2 superseded by a newer attempt)."""
        ok = [o for o in outcomes if o.ok]
        bad = [o for o in outcomes if not o.ok]
        with self.broker("reporting results"):
            batch = Batch()
            if ok:
                items = [(o.claimed.id, o.claimed.token, o.result) for o in ok]
                self.scripts.complete(batch, items, self.result_ttl_s, now)
            if bad:
                fitems = [
                    (o.claimed.id, o.claimed.token, orjson.dumps(o.error), o.retry_delay_ms)
                    for o in bad
                ]
                self.scripts.fail(batch, fitems, now)
            replies = self.scripts.execute(batch.calls)
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

    def for_heartbeats(self, timeout_s: float) -> Store:
        """A store on connections of its own with a short socket timeout, for the heartbeat
        thread: a partition then fails a heartbeat within `timeout_s` (and is logged) instead
        of hanging for the long timeout the blocking claim path needs."""
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        client = connect(
            self.url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            health_check_interval=0,
            retry=Retry(NoBackoff(), 0),  # the heartbeat loop retries (and logs) itself
        )
        return Store(
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

    # -- maintenance -------------------------------------------------------------------------

    def reap(self, limit: int = 1000, now: int = 0, max_lost: int = 3) -> tuple[int, int]:
        """Take back jobs whose lease expired: (released or requeued, dead-lettered after
        losing their worker `max_lost` times)."""
        with self.broker("reaping expired leases"):
            requeued, dead = self.scripts.reap(self.r, limit, now, max_lost)
        return int(requeued), int(dead)

    def server_run_id(self) -> str:
        """The server process's run id: it changes when the server restarts (or fails over)."""
        with self.broker("reading the server's run id"):
            info = self.r.info("server")
        return str(info.get("run_id", ""))

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

    def expire_targeted(self, gone_ms: int, now: int = 0, limit: int = 1000) -> int:
        """Fail (or fall back) jobs waiting for a worker not seen for `gone_ms`."""
        with self.broker("checking targeted jobs"):
            return int(self.scripts.orphans(self.r, gone_ms, limit, now))

    # -- periodic jobs -------------------------------------------------------------------------

    def upsert_periodic(self, spec: PeriodicSpec, now: int = 0) -> None:
        """Declare (or update) a periodic job; an unchanged spec keeps its schedule."""
        now = now or self.server_time_ms()
        raw = spec.to_json()
        with self.broker("registering a periodic job"):
            old = self.r.hget(self.keys.periodic, spec.name)
            if old == raw and self.r.zscore(self.keys.periodic_next, spec.name) is not None:
                return
            pipe = self.r.pipeline(transaction=True)
            pipe.hset(self.keys.periodic, spec.name, raw)
            pipe.zadd(self.keys.periodic_next, {spec.name: spec.next_after(now)})
            pipe.execute()

    def remove_periodic(self, name: str) -> bool:
        with self.broker("removing a periodic job"):
            pipe = self.r.pipeline(transaction=True)
            pipe.hdel(self.keys.periodic, name)
            pipe.zrem(self.keys.periodic_next, name)
            removed, _ = pipe.execute()
        return bool(removed)

    def list_periodic(self) -> list[tuple[PeriodicSpec, int | None]]:
        """Every periodic spec with its next due time (ms)."""
        with self.broker("listing periodic jobs"):
            specs = self.r.hgetall(self.keys.periodic)
            due = dict(self.r.zrange(self.keys.periodic_next, 0, -1, withscores=True))
        return [
            (PeriodicSpec.from_json(raw), int(due[name]) if name in due else None)
            for name, raw in sorted(specs.items())
        ]

    def due_periodic(self, now: int) -> list[tuple[PeriodicSpec, int]]:
        with self.broker("reading due periodic jobs"):
            due = self.r.zrange(self.keys.periodic_next, "-inf", now, byscore=True, withscores=True)
            if not due:
                return []
            raws = self.r.hmget(self.keys.periodic, [n for n, _ in due])
        return [
            (PeriodicSpec.from_json(raw), int(score))
            for (_n, score), raw in zip(due, raws, strict=True)
            if raw is not None
        ]

    def advance_periodic(self, name: str, next_ms: int) -> None:
        """Move a spec's due time forward only (two masters cannot move it back)."""
        with self.broker("advancing a periodic job"):
            self.r.zadd(self.keys.periodic_next, {name: next_ms}, xx=True, gt=True)

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

    def get_states(self, job_ids: list[str]) -> list[JobState | None]:
        """The state of each job (None where there is no such job), in one round trip."""
        with self.broker("reading job states"):
            pipe = self.r.pipeline(transaction=False)
            for job_id in job_ids:
                pipe.hget(self.keys.job(job_id), "state")
            raw = pipe.execute() if job_ids else []
        return [JobState(v.decode()) if v else None for v in raw]

    def get_state(self, job_id: str) -> JobState | None:
        with self.broker("reading a job's state"):
            raw = self.r.hget(self.keys.job(job_id), "state")
        return JobState(raw.decode()) if raw else None

    def wait(self, job_id: str, timeout_s: float | None, full: bool = True) -> JobRecord | None:
        """Block until the job is terminal (or the timeout); returns it, None if not found.

        Registers as a waiter inside a script and blocks on ``done:<id>``, to which the
        finishing script pushes the outcome: no polling, and no missed wake-up between the
        check and the block. Both go out pipelined, so a wait is one round trip. With
        ``full=False`` the record is built from the pushed outcome alone (state, result and
        error), saving the read after it.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        outage_started = 0.0
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return self.get_job(job_id)
            # Block in slices so a dead connection is noticed (socket timeout is longer); each
            # slice registers again, in case the job expired or was re-run meanwhile.
            block = 5.0 if left is None else min(max(left, 0.001), 5.0)
            try:
                code, got = self.scripts.await_and_pop(job_id, self.keys.done(job_id), block)
            except BrokerErrors as exc:
                # Waiting is safe to repeat: ride out a restart or a network blip for a while.
                outage_started = outage_started or time.monotonic()
                if time.monotonic() - outage_started > WAIT_OUTAGE_S:
                    with self.broker("waiting for a result"):
                        raise exc
                time.sleep(0.2)
                continue
            outage_started = 0.0
            if code == -1:
                return None
            if got is not None:
                return self.get_job(job_id) if full else _outcome_record(job_id, got[1])

    def progress(self, job_id: str, token: str, fraction: float, message: str = "") -> bool:
        """Record a running attempt's progress; False if the attempt no longer owns the job."""
        with self.broker("recording progress"):
            return int(self.scripts.progress(self.r, job_id, token, fraction, message)) == 1

    def cancel_requested(self, job_id: str) -> bool:
        with self.broker("checking for a cancel request"):
            return bool(self.r.hexists(self.keys.job(job_id), "cancel"))

    def set_rate_limits(self, limits: dict[str, str]) -> None:
        """Publish per-task rate limits (task -> "count:period_ms"); claims enforce them."""
        if limits:
            with self.broker("publishing rate limits"):
                self.r.hset(self.keys.ratelimits, mapping=limits)

    def cancel(self, job_id: str) -> int:
        with self.broker("cancelling a job"):
            return int(self.scripts.cancel(self.r, job_id, self.result_ttl_s))

    def rerun(self, job_id: str) -> int:
        with self.broker("re-running a job"):
            return int(self.scripts.rerun(self.r, job_id))

    def purge(self, queue: str, batch: int = 1000) -> int:
        """Cancel every queued job of `queue` (in batches); returns how many."""
        total = 0
        while True:
            with self.broker("purging a queue"):
                n = int(self.scripts.purge(self.r, queue, batch, self.result_ttl_s))
            total += n
            if n < batch:
                return total

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

    # -- listings for the HTTP API and dashboard (read-only, paged; never scans the keyspace) --
    #
    # Job lists walk the existing indexes (queue zsets, `scheduled`, `leases`, `dead`,
    # `finished`) with a cursor, so a page costs O(log n + page) whatever the number of jobs.
    # Filters the index cannot answer (task, or queue outside a queue zset) are applied to the
    # job hashes read for the page; at most `scan` index entries are examined per call, so a
    # rare filter returns a short (even empty) page with a cursor to continue from.

    _LIST_FIELDS = (
        "task", "queue", "state", "pri", "att", "max", "timeout", "created", "started",
        "finished", "eta", "worker",
    )  # fmt: skip

    def list_jobs(
        self,
        *,
        state: JobState | None = None,
        queue: str | None = None,
        task: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
        scan: int = 2000,
    ) -> tuple[list[JobRecord], str | None]:
        """One page of jobs (without payloads/results) and the cursor of the next page (None at
        the end). Raises ValueError for a cursor this listing did not produce."""
        sources = self._list_sources(state, queue)
        src, after = _decode_cursor(cursor, len(sources))
        out: list[JobRecord] = []
        examined = 0
        chunk = max(1, min(limit * 2, 500))
        with self.broker("listing jobs"):
            while src < len(sources) and len(out) < limit and examined < scan:
                key, rev = sources[src]
                entries = self._index_page(key, after, min(chunk, scan - examined), rev)
                if not entries:
                    src, after = src + 1, None
                    continue
                pipe = self.r.pipeline(transaction=False)
                for job_id, _ in entries:
                    pipe.hmget(self.keys.job(job_id), self._LIST_FIELDS)
                rows = pipe.execute()
                for (job_id, score), row in zip(entries, rows, strict=True):
                    examined += 1
                    after = (score, job_id)
                    if row[2] is None:  # expired, or an index entry of a vanished job
                        continue
                    raw = {f.encode(): v for f, v in zip(self._LIST_FIELDS, row, strict=True)}
                    rec = JobRecord.from_hash(job_id, {k: v for k, v in raw.items() if v})
                    if (
                        (state is None or rec.state == state)
                        and (queue is None or rec.queue == queue)
                        and (task is None or rec.task == task)
                    ):
                        out.append(rec)
                        if len(out) >= limit:
                            break
        if src >= len(sources):
            return out, None
        return out, _encode_cursor(src, after)

    def _list_sources(self, state: JobState | None, queue: str | None) -> list[tuple[str, bool]]:
        """The indexes to walk for a state filter, in order: (key, newest first?)."""
        k = self.keys
        if state in (None, JobState.QUEUED):
            with self.broker("listing queues"):
                names = [queue] if queue else sorted(n.decode() for n in self.r.smembers(k.queues))
            queued = [(k.queue(n), False) for n in names]
            if state is JobState.QUEUED:
                return queued
            return [*queued, (k.scheduled, False), (k.leases, False), (k.finished, True)]
        return {
            JobState.SCHEDULED: [(k.scheduled, False)],
            JobState.RUNNING: [(k.leases, False)],
            JobState.FAILED: [(k.dead, True)],
        }.get(state, [(k.finished, True)])

    def _index_page(
        self, key: str, after: tuple[float, str] | None, n: int, rev: bool
    ) -> list[tuple[str, float]]:
        """Up to `n` (member, score) entries of a zset following `after` in index order."""
        start = 0
        if after is not None:
            score, member = after
            pipe = self.r.pipeline(transaction=False)
            pipe.zscore(key, member)
            (pipe.zrevrank if rev else pipe.zrank)(key, member)
            cur, rank = pipe.execute()
            if cur is None or cur != score or rank is None:
                return self._index_page_by_score(key, after, n, rev)
            start = rank + 1
        got = self.r.zrange(key, start, start + n - 1, desc=rev, withscores=True)
        return [(m.decode(), float(s)) for m, s in got]

    def _index_page_by_score(
        self, key: str, after: tuple[float, str], n: int, rev: bool
    ) -> list[tuple[str, float]]:
        # The cursor's member left the index: resume from its score, skipping ties before it.
        score, member = after
        offset = 0
        while True:
            if rev:
                got = self.r.zrevrangebyscore(key, score, "-inf", offset, n, withscores=True)
            else:
                got = self.r.zrangebyscore(key, score, "+inf", offset, n, withscores=True)
            rows = [(m.decode(), float(s)) for m, s in got]
            keep = [(m, s) for m, s in rows if s != score or (m < member if rev else m > member)]
            if keep or len(rows) < n:
                return keep
            offset += n

    def list_workers(self, limit: int = 200) -> list[WorkerInfo]:
        """The most recently seen workers (newest first) with their registry entries and the
        jobs they run now (from the leases index, at most `running_scan` of them)."""
        with self.broker("listing workers"):
            names = self.r.zrevrange(self.keys.workers, 0, limit - 1, withscores=True)
            pipe = self.r.pipeline(transaction=False)
            for name, _ in names:
                pipe.hgetall(self.keys.worker(name.decode()))
            infos = pipe.execute()
            running = self.running_jobs()
        by_worker: dict[str, list[str]] = {}
        for job_id, worker in running:
            by_worker.setdefault(worker, []).append(job_id)
        out = []
        for (name, seen), info in zip(names, infos, strict=True):
            n = name.decode()
            out.append(
                WorkerInfo(
                    name=n,
                    # Last seen in ms (server clock); scores written in seconds by older
                    # workers are scaled up.
                    last_seen_ms=int(seen if seen > 1e11 else seen * 1000),
                    alive=bool(info),
                    info={k.decode(): v.decode() for k, v in info.items()},
                    jobs=by_worker.get(n, []),
                )
            )
        return out

    def running_jobs(self, limit: int = 2000) -> list[tuple[str, str]]:
        """(job id, worker) of up to `limit` running jobs, from the leases index."""
        with self.broker("listing running jobs"):
            ids = [i.decode() for i in self.r.zrange(self.keys.leases, 0, limit - 1)]
            pipe = self.r.pipeline(transaction=False)
            for i in ids:
                pipe.hget(self.keys.job(i), "worker")
            workers = pipe.execute()
        return [(i, w.decode()) for i, w in zip(ids, workers, strict=True) if w]

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


def _encode_cursor(source: int, after: tuple[float, str] | None) -> str:
    raw = orjson.dumps([source, *(after or ())])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str | None, n_sources: int) -> tuple[int, tuple[float, str] | None]:
    if not cursor:
        return 0, None
    try:
        v = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        src = int(v[0])
        after = (float(v[1]), str(v[2])) if len(v) == 3 else None
        if not 0 <= src <= n_sources or (after is not None and not isinstance(v[2], str)):
            raise ValueError
    except (ValueError, TypeError, IndexError, KeyError) as exc:
        raise ValueError("cursor is not one returned by this listing") from exc
    return src, after
