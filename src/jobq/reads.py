"""Every read of the broker: jobs, states, queues, periodic specs and the paged listings.

`Store` inherits these; they live apart so the module with the state changes stays small. A
reader parses each record on its own: a corrupt job hash (a field missing or garbage, a key of
another type) reads as a row whose `corrupt` says what is wrong, never as a failed page or a
500, and an id that cannot even be encoded (a lone surrogate) is simply not found.
"""

from __future__ import annotations

import base64
import contextlib
import logging
from typing import Any

import orjson
import redis

from .errors import JobqError
from .histograms import TaskStats, parse_task_stats
from .keys import Keys
from .listing import (
    Filter,
    JobLinks,
    JobListing,
    OrderKey,
    decode_recent_cursor,
    fair_shares,
    links_of,
    order_key,
    page_after,
)
from .model import JobRecord, QueueInfo, WorkerInfo
from .names import encodable, escape_controls
from .periodic import PeriodicSpec
from .states import JobState

log = logging.getLogger("jobq.store")

#: A worker is shown gone once its last heartbeat is this many of its intervals old.
GONE_AFTER_BEATS = 3
#: ... but never sooner than this (ms): a loaded machine delays a short heartbeat a little.
MIN_GONE_AFTER_MS = 1_000
#: How long a gone worker stays in the listing (ms), as `gone`, before it is left out.
GONE_LISTED_MS = 15 * 60_000
#: The heartbeat interval assumed for a worker that does not publish its own (`Settings`).
DEFAULT_HEARTBEAT_MS = 10_000


def gone_after_ms(info: dict[str, str], heartbeat_ms: int = DEFAULT_HEARTBEAT_MS) -> int:
    """How old a worker's last heartbeat may be while it still counts as alive: a few of the
    intervals it publishes in its entry (``heartbeat_ms``), else of `heartbeat_ms`."""
    try:
        beat = int(info.get("heartbeat_ms") or heartbeat_ms)
    except ValueError:
        beat = heartbeat_ms
    return max(GONE_AFTER_BEATS * max(beat, 1), MIN_GONE_AFTER_MS)


class Reads:
    """The read half of `Store` (which provides the client, the keys and `broker`)."""

    r: Any
    keys: Keys

    def broker(self, doing: str) -> contextlib.AbstractContextManager[None]:
        raise NotImplementedError  # Store's: connection failures -> BrokerUnavailable

    def get_job(self, job_id: str) -> JobRecord | None:
        """The job (None if there is none). A corrupt hash still reads, as a record whose
        `corrupt` says what is wrong, so it can be seen and cancelled."""
        if not encodable(job_id):  # no job can have this id (and it cannot be sent)
            return None
        with self.broker("reading a job"):
            try:
                raw = self.r.hgetall(self.keys.job(job_id))
            except redis.ResponseError as exc:  # the key holds another type
                return _corrupt_record(job_id, exc)
        return JobRecord.decode(job_id, raw) if raw else None

    def get_states(self, job_ids: list[str]) -> list[JobState | None]:
        """The state of each job (None where there is no such job), in one round trip."""
        ids = [i for i in job_ids if encodable(i)]
        with self.broker("reading job states"):
            pipe = self.r.pipeline(transaction=False)
            for job_id in ids:
                pipe.hget(self.keys.job(job_id), "state")
            raw = dict(zip(ids, pipe.execute(raise_on_error=False), strict=True)) if ids else {}
        return [_state_of(raw.get(i)) for i in job_ids]

    def get_state(self, job_id: str) -> JobState | None:
        if not encodable(job_id):
            return None
        with self.broker("reading a job's state"):
            try:
                raw = self.r.hget(self.keys.job(job_id), "state")
            except redis.ResponseError:
                return None  # the key holds another type: no job lives there
        return _state_of(raw)

    def list_periodic(self) -> list[tuple[PeriodicSpec, int | None]]:
        """Every periodic spec with its next due time (ms)."""
        with self.broker("listing periodic jobs"):
            specs = self.r.hgetall(self.keys.periodic)
            due = dict(self.r.zrange(self.keys.periodic_next, 0, -1, withscores=True))
        out = []
        for name, raw in sorted(specs.items()):
            spec = _periodic_or_none(name, raw)
            if spec is not None:
                out.append((spec, int(due[name]) if name in due else None))
        return out

    def due_periodic(self, now: int) -> list[tuple[PeriodicSpec, int]]:
        with self.broker("reading due periodic jobs"):
            due = self.r.zrange(self.keys.periodic_next, "-inf", now, byscore=True, withscores=True)
            if not due:
                return []
            raws = self.r.hmget(self.keys.periodic, [n for n, _ in due])
        out = []
        for (name, score), raw in zip(due, raws, strict=True):
            spec = _periodic_or_none(name, raw) if raw is not None else None
            if spec is not None:
                out.append((spec, int(score)))
        return out

    def dead_letters(self, limit: int = 100, offset: int = 0) -> list[str]:
        """Ids in the dead-letter set, oldest first."""
        with self.broker("listing dead-lettered jobs"):
            ids = self.r.zrange(self.keys.dead, offset, offset + limit - 1)
        return [i.decode() for i in ids]

    def queues(self) -> list[QueueInfo]:
        """Depths per state and counters for every known queue, in one round trip."""
        with self.broker("reading queues"):
            names = sorted(n.decode() for n in self.r.smembers(self.keys.queues))
        return self.queue_infos(names)

    def queue_page(self, cursor: int = 0, limit: int = 200) -> tuple[list[QueueInfo], int]:
        """About `limit` queues (SSCAN order; a name added meanwhile may show twice) and the
        cursor of the next page (0 after the last), so a listing costs O(page) however many
        queues there are."""
        with self.broker("reading queues"):
            nxt, raw = self.r.sscan(self.keys.queues, cursor, count=limit)
        return self.queue_infos(sorted(n.decode() for n in raw)), int(nxt)

    def queue_names(self) -> list[str]:
        """Every known queue's name, sorted."""
        with self.broker("reading queues"):
            return sorted(n.decode("utf-8", "replace") for n in self.r.smembers(self.keys.queues))

    def has_queue(self, name: str) -> bool:
        with self.broker("reading queues"):
            return bool(self.r.sismember(self.keys.queues, name))

    def queue_infos(self, names: list[str]) -> list[QueueInfo]:
        """Depths and counters of the queues `names`, in one round trip."""
        with self.broker("reading queues"):
            pipe = self.r.pipeline(transaction=False)
            for n in names:
                pipe.zcard(self.keys.queue(n))
                pipe.hgetall(self.keys.stats(n))
            replies = pipe.execute(raise_on_error=False)
        out = []
        for i, n in enumerate(names):
            # Per queue: a key of the wrong type or a garbage counter reads as 0, never a 500.
            depth = replies[2 * i] if isinstance(replies[2 * i], int) else 0
            st = replies[2 * i + 1] if isinstance(replies[2 * i + 1], dict) else {}

            def g(f: str, st: dict[bytes, bytes] = st) -> int:
                try:
                    return int(st.get(f.encode(), 0))
                except ValueError:
                    return 0

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

    #: How many queues `task_stats` reads when none are named (the first ones, by name).
    TASK_STATS_QUEUES = 2000

    def task_stats(self, queues: list[str] | None = None) -> list[TaskStats]:
        """Per-task figures (counts, runtime and wait histograms; histograms.py) of `queues`
        (None: the first `TASK_STATS_QUEUES` known queues by name), sorted by (queue, task):
        one pipelined HGETALL per queue. A hash of the wrong type reads as no figures."""
        with self.broker("reading task stats"):
            if queues is None:
                queues = self.queue_names()[: self.TASK_STATS_QUEUES]
            pipe = self.r.pipeline(transaction=False)
            for q in queues:
                pipe.hgetall(self.keys.tstats(q))
            replies = pipe.execute(raise_on_error=False)
        out: list[TaskStats] = []
        for q, raw in zip(queues, replies, strict=True):
            if isinstance(raw, dict):
                out.extend(parse_task_stats(q, raw))
        return sorted(out, key=lambda t: (t.queue, t.task))

    def oldest_queued(self, queues: list[str]) -> dict[str, int | None]:
        """Per queue, when the job at its front became ready (ms, server clock: the latest of
        its `created`, `eta` and `ready` fields), None when nothing is queued (or the front
        job is unreadable). Two pipelined round trips, one cheap read per queue in each."""
        out: dict[str, int | None] = dict.fromkeys(queues)
        with self.broker("reading the oldest queued jobs"):
            pipe = self.r.pipeline(transaction=False)
            for q in queues:
                pipe.zrange(self.keys.queue(q), 0, 0)
            fronts = pipe.execute(raise_on_error=False)
            found = [
                (q, f[0].decode("utf-8", "replace"))
                for q, f in zip(queues, fronts, strict=True)
                if isinstance(f, list) and f
            ]
            pipe = self.r.pipeline(transaction=False)
            for _, job_id in found:
                pipe.hmget(self.keys.job(job_id), "created", "eta", "ready")
            rows = pipe.execute(raise_on_error=False)
        for (q, _), row in zip(found, rows, strict=True):
            if not isinstance(row, list):
                continue
            times = []
            for v in row:
                try:
                    times.append(int(float(v)))
                except (TypeError, ValueError):
                    continue
            out[q] = max(times) if times else None
        return out

    # -- listings for the HTTP API and dashboard (read-only, paged; never scans the keyspace) --
    #
    # Job lists walk the existing indexes (queue zsets, `scheduled`, `leases`, `dead`,
    # `finished`) with a cursor, so a page costs O(log n + page) whatever the number of jobs.
    # Filters the index cannot answer (task, or queue outside a queue zset) are applied to the
    # job hashes read for the page; at most `scan` index entries are examined per call, so a
    # rare filter returns a short (even empty) page with a cursor to continue from.

    _LIST_FIELDS = (
        "task", "queue", "state", "pri", "att", "max", "timeout", "created", "started",
        "finished", "eta", "worker", "claimed", "parents",
    )  # fmt: skip

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
    ) -> tuple[list[JobRecord], str | None]:
        """One page of jobs (without payloads/results) and the cursor of the next page (None at
        the end). Raises ValueError for a cursor this listing did not produce."""
        page = self.list_jobs_page(
            state=state, queue=queue, task=task, worker=worker, q=q, cursor=cursor,
            limit=limit, scan=scan,
        )  # fmt: skip
        return page.jobs, page.next_cursor

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
    ) -> JobListing:
        """`list_jobs` with what the scan cost: a state listing walks that state's indexes in
        their order (a cursor into them); no state ("any") lists newest first from a bounded
        sample of every index (`listing.py`)."""
        flt = Filter(state, queue, task, worker, q)
        if queue is not None and not encodable(queue):
            return JobListing([], None, 0, False)  # no queue can have this name
        if state is None:
            after = decode_recent_cursor(cursor)
            rows, scanned, truncated = self.recent_candidates(flt, scan)
            jobs, nxt = page_after(rows, after, limit)
            return JobListing(jobs, nxt, scanned, truncated)
        return self._walk_indexes(flt, cursor, limit, scan)

    def _fields_for(self, flt: Filter) -> tuple[str, ...]:
        # (the payload only for a text search: it is the one large field)
        return (*self._LIST_FIELDS, "payload") if flt.q else self._LIST_FIELDS

    def _read_rows(
        self, ids: list[str], flt: Filter
    ) -> list[tuple[JobRecord | None, bytes | None]]:
        """The listing's view of each job (None for an index entry of a vanished job) and its
        payload when searching, pipelined; a corrupt hash reads as a row marked corrupt."""
        names = self._fields_for(flt)
        out: list[tuple[JobRecord | None, bytes | None]] = []
        for at in range(0, len(ids), 500):
            chunk = ids[at : at + 500]
            pipe = self.r.pipeline(transaction=False)
            for job_id in chunk:
                pipe.hmget(self.keys.job(job_id), names)
            for job_id, row in zip(chunk, pipe.execute(raise_on_error=False), strict=True):
                if isinstance(row, Exception):
                    out.append((_corrupt_record(job_id, row), None))
                elif not row[2] and not any(row):
                    out.append((None, None))  # expired, or an index entry of a vanished job
                else:
                    raw = {f.encode(): v for f, v in zip(names, row, strict=True) if v}
                    payload = raw.pop(b"payload", None)
                    out.append((JobRecord.decode(job_id, raw), payload))
        return out

    def recent_candidates(
        self, flt: Filter, scan: int = 2000, part: int = 0
    ) -> tuple[list[tuple[OrderKey, JobRecord]], int, bool]:
        """The "any" listing's sample of this partition: the jobs `flt` keeps among at most
        `scan` index entries (a fair share of each index, newest end first), with their order
        keys; how many entries were examined; whether some were left out."""
        sources = self._list_sources(None, flt.queue)
        with self.broker("listing jobs"):
            pipe = self.r.pipeline(transaction=False)
            for key, _ in sources:
                pipe.zcard(key)
            sizes = [n if isinstance(n, int) else 0 for n in pipe.execute(raise_on_error=False)]
            shares = fair_shares(sizes, scan)
            pipe = self.r.pipeline(transaction=False)
            for (key, _), n in zip(sources, shares, strict=True):
                pipe.zrange(key, 0, max(n - 1, 0), desc=True, withscores=True)
            got = pipe.execute(raise_on_error=False)
            entries: list[tuple[str, int, float]] = []
            for src, ((_, _), n, rows) in enumerate(zip(sources, shares, got, strict=True)):
                if n and isinstance(rows, list):
                    entries += [(m.decode(), src, float(s)) for m, s in rows[:n]]
            seen: set[str] = set()
            unique = []
            for e in entries:  # (a job moving between indexes meanwhile: listed once)
                if e[0] not in seen:
                    seen.add(e[0])
                    unique.append(e)
            recs = self._read_rows([e[0] for e in unique], flt)
        out = [
            (order_key(rec, part, src, score), rec)
            for (_, src, score), (rec, payload) in zip(unique, recs, strict=True)
            if rec is not None and flt.keeps(rec, payload)
        ]
        return out, len(entries), sum(shares) < sum(sizes)

    def _walk_indexes(self, flt: Filter, cursor: str | None, limit: int, scan: int) -> JobListing:
        """A state listing: that state's indexes in their order, from the cursor, at most
        `scan` entries examined (a rare filter returns a short page and a cursor)."""
        sources = self._list_sources(flt.state, flt.queue)
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
                rows = self._read_rows([job_id for job_id, _ in entries], flt)
                for (job_id, score), (rec, payload) in zip(entries, rows, strict=True):
                    examined += 1
                    after = (score, job_id)
                    if rec is not None and flt.keeps(rec, payload):
                        out.append(rec)
                        if len(out) >= limit:
                            break
        if src >= len(sources):
            return JobListing(out, None, examined, False)
        return JobListing(out, _encode_cursor(src, after), examined, len(out) < limit)

    def worker_jobs(
        self, name: str, running: list[str], limit: int = 50, scan: int = 2000
    ) -> list[tuple[float, JobRecord]]:
        """(sort key, record) of up to `limit` jobs worker `name` ran lately, newest first:
        `running` (its current jobs, first) then the newest `scan` entries of the finished
        index whose `worker` is `name`. Bounded: O(scan) reads however many jobs exist."""
        with self.broker("listing a worker's jobs"):
            entries = [(job_id, float("inf")) for job_id in running[:limit]]
            seen = {job_id for job_id, _ in entries}
            for raw_id, score in self.r.zrevrange(self.keys.finished, 0, scan - 1, withscores=True):
                job_id = raw_id.decode("utf-8", "replace")
                if job_id not in seen:
                    entries.append((job_id, float(score)))
            pipe = self.r.pipeline(transaction=False)
            for job_id, _ in entries:
                pipe.hmget(self.keys.job(job_id), self._LIST_FIELDS)
            rows = pipe.execute(raise_on_error=False)
        out: list[tuple[float, JobRecord]] = []
        for (job_id, score), row in zip(entries, rows, strict=True):
            if not isinstance(row, list) or not any(row):
                continue
            raw = {f.encode(): v for f, v in zip(self._LIST_FIELDS, row, strict=True) if v}
            if raw.get(b"worker", b"").decode("utf-8", "replace") != name:
                continue
            out.append((score, JobRecord.decode(job_id, raw)))
            if len(out) >= limit:
                break
        return out

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

    def job_links(self, job_ids: list[str]) -> dict[str, JobLinks]:
        """Each job's node and edges for the workflow graph (ids with no job hash here are
        absent), in one round trip."""
        ids = [i for i in job_ids if encodable(i)]
        if not ids:
            return {}
        with self.broker("reading a workflow"):
            pipe = self.r.pipeline(transaction=False)
            for i in ids:
                pipe.hmget(
                    self.keys.job(i), ("task", "state", "queue", "created", "parents", "kids")
                )
                pipe.smembers(self.keys.children(i))
                pipe.smembers(self.keys.xkids(i))
            got = pipe.execute(raise_on_error=False)
        out = {}
        for n, i in enumerate(ids):
            links = links_of(i, got[3 * n], got[3 * n + 1], got[3 * n + 2])
            if links is not None:
                out[i] = links
        return out

    def inputs_of(self, job_id: str) -> tuple[str, dict[str, bytes]] | None:
        """How a job takes its parents' results (its `pass` field: '' when it takes none) and
        the outcomes of parents in other partitions handed to it (`x:<parent>` fields,
        ``<state>|<result>``); None when there is no such job here."""
        if not encodable(job_id):
            return None
        with self.broker("reading a job's inputs"):
            try:
                head = self.r.hmget(self.keys.job(job_id), ("state", "pass", "parents", "xp"))
                if not head[0]:
                    return None
                parents = [p for p in (head[2] or b"").decode().split(",") if p]
                xs: dict[str, bytes] = {}
                if head[1] and head[3] and parents:
                    vals = self.r.hmget(self.keys.job(job_id), [f"x:{p}" for p in parents])
                    xs = {p: v for p, v in zip(parents, vals, strict=True) if v is not None}
            except (redis.ResponseError, UnicodeDecodeError):
                return None  # not a job hash (or a corrupt one): nothing was handed over
        return (head[1] or b"").decode("utf-8", "replace"), xs

    def list_workers(
        self, limit: int = 200, heartbeat_ms: int = DEFAULT_HEARTBEAT_MS
    ) -> list[WorkerInfo]:
        """The most recently seen workers (newest first) with their registry entries and the
        jobs they run now (from the leases index, at most `running_scan` of them).

        A worker is alive while its last heartbeat (server clock) is at most
        `GONE_AFTER_BEATS` of its heartbeat intervals old (the interval it publishes, else
        `heartbeat_ms`): a SIGKILLed worker shows as gone within seconds, not when its entry
        expires. A gone worker stays listed for `GONE_LISTED_MS`, then is left out."""
        with self.broker("listing workers"):
            sec, usec = self.r.time()
            now = int(sec) * 1000 + int(usec) // 1000
            names = self.r.zrevrangebyscore(
                self.keys.workers, "+inf", now - GONE_LISTED_MS, 0, limit, withscores=True
            )
            pipe = self.r.pipeline(transaction=False)
            for name, _ in names:
                pipe.hgetall(self.keys.worker(name.decode()))
            infos = [i if isinstance(i, dict) else {} for i in pipe.execute(raise_on_error=False)]
            running = self.running_jobs()
        by_worker: dict[str, list[str]] = {}
        for job_id, worker in running:
            by_worker.setdefault(worker, []).append(job_id)
        out = []
        for (name, seen), raw in zip(names, infos, strict=True):
            n = name.decode()
            info = {k.decode(): v.decode() for k, v in raw.items()}
            # Last seen in ms (server clock); scores written in seconds by older workers are
            # scaled up.
            seen_ms = int(seen if seen > 1e11 else seen * 1000)
            ago = max(now - seen_ms, 0)
            out.append(
                WorkerInfo(
                    name=n,
                    last_seen_ms=seen_ms,
                    alive=bool(info) and ago <= gone_after_ms(info, heartbeat_ms),
                    info=info,
                    jobs=by_worker.get(n, []),
                    seen_ago_ms=ago,
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
            workers = pipe.execute(raise_on_error=False)
        return [
            (i, w.decode("utf-8", "replace"))
            for i, w in zip(ids, workers, strict=True)
            if isinstance(w, bytes) and w
        ]


def _periodic_or_none(name: bytes, raw: bytes) -> PeriodicSpec | None:
    """A stored periodic spec, or None (logged) if it no longer decodes: one bad spec must not
    stop every other from firing or listing."""
    try:
        return PeriodicSpec.from_json(raw)
    except (ValueError, TypeError, JobqError) as exc:
        log.warning(
            "periodic spec %s is unreadable and skipped (%s): remove it with "
            "`jobq periodic remove`",
            escape_controls(name.decode("utf-8", "replace")),
            escape_controls(str(exc)),
        )
        return None


def _corrupt_record(job_id: str, exc: Exception) -> JobRecord:
    """What a reader shows for a job key that is not a job hash: a row marked corrupt."""
    return JobRecord(job_id, "", "", JobState.FAILED, corrupt=f"job key unreadable: {exc}")


def _state_of(raw: Any) -> JobState | None:
    """A stored state; None if missing or not one jobq writes (a corrupt hash)."""
    if not raw or not isinstance(raw, bytes):
        return None
    try:
        return JobState(raw.decode())
    except (ValueError, UnicodeDecodeError):
        return None


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
