"""The read half of `Store` over partitions: counts and queue figures added up, listings
partition after partition, events through one cursor over every partition's stream, workers
from the control partition with their running jobs from every one. `Store` inherits it (as
`Shard` inherits `Reads`), so the module routing jobs stays small."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from .histograms import TaskStats, merge_task_stats
from .listing import Filter, JobLinks, JobListing, OrderKey, decode_recent_cursor, page_after
from .model import JobRecord, QueueInfo, WorkerInfo
from .names import encodable
from .spread import EventCursor, Partitioned, list_jobs_over, merge_queue_infos
from .spread import _decode as spread_cursor
from .spread import _encode as spread_cursor_of
from .states import JobState

if TYPE_CHECKING:
    pass


class SpreadReads(Partitioned):
    """Reads of a deployment; `Store` provides `shards`, `control` and `layout`."""

    def dead_count(self) -> int:
        return sum(s.dead_count() for s in self.shards)

    def dead_letters(self, limit: int = 100, offset: int = 0) -> list[str]:
        """Dead-lettered ids, partition by partition (oldest first within each)."""
        if self.layout.count == 1:
            return self.control.dead_letters(limit, offset)
        out: list[str] = []
        for shard in self.shards:
            out.extend(shard.dead_letters(offset + limit, 0))
        return out[offset : offset + limit]

    def queues(self) -> list[QueueInfo]:
        if self.layout.count == 1:
            return self.control.queues()
        return merge_queue_infos([s.queues() for s in self.shards])

    def queue_infos(self, names: list[str]) -> list[QueueInfo]:
        if self.layout.count == 1:
            return self.control.queue_infos(names)
        return merge_queue_infos([s.queue_infos(names) for s in self.shards], names)

    def queue_page(self, cursor: int = 0, limit: int = 200) -> tuple[list[QueueInfo], int]:
        """One page of queues. Several partitions: `cursor` is an offset into the sorted
        union of every partition's queue names (0 after the last page)."""
        if self.layout.count == 1:
            return self.control.queue_page(cursor, limit)
        names = sorted({q.name for s in self.shards for q in s.queues()})
        page = names[cursor : cursor + limit]
        nxt = cursor + limit if cursor + limit < len(names) else 0
        return self.queue_infos(page), nxt

    def first_queue_infos(self, limit: int) -> tuple[list[QueueInfo], bool]:
        """About the first `limit` queue names of every partition (SSCAN pages, so O(limit)
        per partition however many names exist), sorted, with their figures added up over
        the partitions, and whether names were left out: what a scrape of several partitions
        reads instead of `queue_page`'s union of every name."""
        names: set[str] = set()
        more = False
        for shard in self.shards:
            found: set[str] = set()
            cursor = 0
            with shard.broker("reading queues"):
                while True:
                    cursor, raw = shard.r.sscan(shard.keys.queues, cursor, count=500)
                    found.update(n.decode("utf-8", "replace") for n in raw)
                    if not int(cursor):
                        break
                    if len(found) >= limit:
                        more = True
                        break
            names |= found
        ordered = sorted(names)
        more = more or len(ordered) > limit
        return self.queue_infos(ordered[:limit]), more

    def task_stats(self, queues: list[str] | None = None) -> list[TaskStats]:
        """Per-task figures summed over the partitions, sorted by (queue, task); bounded to
        the first queues by name when `queues` is None (`Reads.task_stats`)."""
        if self.layout.count == 1:
            return self.control.task_stats(queues)
        if queues is None:
            names = sorted({n for s in self.shards for n in s.queue_names()})
            queues = names[: self.control.TASK_STATS_QUEUES]
        return merge_task_stats([s.task_stats(queues) for s in self.shards])

    def oldest_queued(self, queues: list[str]) -> dict[str, int | None]:
        """Per queue, the oldest of the partitions' front jobs' ready times (ms)."""
        if self.layout.count == 1:
            return self.control.oldest_queued(queues)
        out: dict[str, int | None] = dict.fromkeys(queues)
        for shard in self.shards:
            for q, t in shard.oldest_queued(queues).items():
                if t is not None:
                    cur = out[q]
                    out[q] = t if cur is None else min(cur, t)
        return out

    def worker_jobs(
        self, name: str, running: list[str], limit: int = 50, scan: int = 2000
    ) -> list[JobRecord]:
        """Up to `limit` jobs worker `name` ran lately, newest first, over every partition
        (`Reads.worker_jobs`: its running jobs, then its newest finished ones)."""
        if self.layout.count == 1:
            return [r for _, r in self.control.worker_jobs(name, running, limit, scan)]
        found: list[tuple[float, JobRecord]] = []
        for shard in self.shards:  # (a running id another partition holds reads as absent)
            found.extend(shard.worker_jobs(name, running, limit, scan))
        seen: set[str] = set()
        out: list[JobRecord] = []
        for _, rec in sorted(found, key=lambda sr: -sr[0]):
            if rec.id not in seen:
                seen.add(rec.id)
                out.append(rec)
        return out[:limit]

    def has_queue(self, name: str) -> bool:
        return any(s.has_queue(name) for s in self.shards)

    def list_jobs(self, **kwargs: Any) -> tuple[list[JobRecord], str | None]:
        """One page of jobs (see `Reads.list_jobs`); several partitions are listed one after
        the other for a state, the cursor saying which partition comes next, and merged
        newest first for "any"."""
        if self.layout.count == 1:
            return self.control.list_jobs(**kwargs)
        if kwargs.get("state") is None:
            page = self.list_jobs_page(**kwargs)
            return page.jobs, page.next_cursor
        return list_jobs_over(self.shards, **kwargs)

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
        """`Reads.list_jobs_page` over every partition: "any" merges each partition's bounded
        sample newest first; a state listing goes partition after partition (the cursor names
        the partition and its own cursor), a page ending early at a partition's end."""
        args: dict[str, Any] = {
            "state": state, "queue": queue, "task": task, "worker": worker, "q": q,
            "scan": scan,
        }  # fmt: skip
        if self.layout.count == 1:
            return self.control.list_jobs_page(cursor=cursor, limit=limit, **args)
        if state is None:
            after = decode_recent_cursor(cursor)
            if queue is not None and not encodable(queue):
                return JobListing([], None, 0, False)
            flt = Filter(None, queue, task, worker, q)
            rows: list[tuple[OrderKey, JobRecord]] = []
            scanned, truncated = 0, False
            for part, shard in enumerate(self.shards):
                got, n, cut = shard.recent_candidates(flt, scan, part)
                rows += got
                scanned, truncated = scanned + n, truncated or cut
            jobs, nxt = page_after(rows, after, limit)
            return JobListing(jobs, nxt, scanned, truncated)
        part, inner = spread_cursor(cursor, len(self.shards))
        out: list[JobRecord] = []
        scanned, truncated = 0, False
        while part < len(self.shards) and len(out) < limit:
            page = self.shards[part].list_jobs_page(cursor=inner, limit=limit - len(out), **args)
            out.extend(page.jobs)
            scanned += page.scanned
            if page.next_cursor is None:
                part, inner = part + 1, None
            else:
                inner = page.next_cursor
                if page.truncated:  # this partition's scan budget ran out: resume there
                    truncated = True
                    break
        if part >= len(self.shards):
            return JobListing(out, None, scanned, truncated)
        return JobListing(out, spread_cursor_of(part, inner), scanned, truncated)

    def job_links(self, job_ids: list[str]) -> dict[str, JobLinks]:
        """`Reads.job_links` over every partition (each id read where its hash is)."""
        if self.layout.count == 1:
            return self.control.job_links(job_ids)
        out: dict[str, JobLinks] = {}
        left = list(dict.fromkeys(job_ids))
        for shard in self.shards:
            if not left:
                break
            out.update(shard.job_links(left))
            left = [i for i in left if i not in out]
        return out

    def inputs_of(self, job_id: str) -> tuple[str, dict[str, bytes]] | None:
        """`Reads.inputs_of` in whichever partition holds the job."""
        for shard in self.shards:
            got = shard.inputs_of(job_id)
            if got is not None:
                return got
        return None

    def running_jobs(self, limit: int = 2000) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        for shard in self.shards:
            out.extend(shard.running_jobs(limit - len(out)))
            if len(out) >= limit:
                break
        return out

    def list_workers(self, limit: int = 200) -> list[WorkerInfo]:
        workers = self.control.list_workers(limit)
        if self.layout.count == 1:
            return workers
        by_worker: dict[str, list[str]] = {}
        for job_id, name in self.running_jobs():
            by_worker.setdefault(name, []).append(job_id)
        return [dataclasses.replace(w, jobs=by_worker.get(w.name, [])) for w in workers]

    # -- events ------------------------------------------------------------------------------

    def read_events(
        self, after: str, count: int = 500, block_ms: int | None = None
    ) -> list[tuple[str, dict[str, str]]]:
        """Events after cursor `after` (oldest first within each partition), blocking up to
        `block_ms` for new ones. Several partitions: the cursor holds one stream id per
        partition (`spread.EventCursor`); each event carries the cursor just after it."""
        if self.layout.count == 1:
            return self.control.read_events(after, count, block_ms)
        return EventCursor.read(self.shards, after, count, block_ms)

    def last_event_id(self) -> str:
        if self.layout.count == 1:
            return self.control.last_event_id()
        return EventCursor.join([s.last_event_id() for s in self.shards])

    def events_length(self) -> int:
        return sum(s.events_length() for s in self.shards)
