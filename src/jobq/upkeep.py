"""The maintenance half of `Store`: what the leader's tick, periodic jobs and the presence of
masters and workers write. `Store` inherits it (as it does `Reads`), so the module with the
producers' and workers' transitions stays small; every state change is still one script call
(or, for a periodic slot, one fenced transaction) through the store's `broker` translation.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any, NamedTuple

import redis

from .codes import Enqueue, Leader, OrphansPass
from .keys import Keys
from .memory import RoomCheck, job_bytes
from .model import JobSpec
from .periodic import PeriodicSpec
from .scripts import Scripts, function_name


class Taken(NamedTuple):
    """A job maintenance took back or settled (the first of each call: reap.lua, orphans.lua
    list a bounded number), for the master's transition log line (`maintenance.tick`)."""

    id: str
    queue: str
    task: str
    attempt: int
    event: str
    worker: str


def _text(v: Any) -> str:
    return v.decode(errors="replace") if isinstance(v, bytes) else str(v)


def taken(rows: Any) -> list[Taken]:
    """The job rows of a reap or orphans reply ({id, queue, task, attempt, event, worker})."""
    if not isinstance(rows, list):
        return []
    out: list[Taken] = []
    for row in rows:
        if isinstance(row, list) and len(row) == 6:
            i, q, t, a, e, w = (_text(v) for v in row)
            out.append(Taken(i, q, t, int(a) if a.isdigit() else 0, e, w))
    return out


class Upkeep:
    """Maintenance writes; `Store` provides the client, keys, scripts and `broker`."""

    r: Any
    keys: Keys
    scripts: Scripts
    room: RoomCheck
    result_ttl_s: int
    dead_ttl_s: int

    def broker(self, doing: str) -> contextlib.AbstractContextManager[None]:
        raise NotImplementedError  # Store's

    def _room_kept(self) -> contextlib.AbstractContextManager[None]:
        raise NotImplementedError  # Store's

    def submit(
        self, specs: Iterable[JobSpec], now: int = 0, *, wait_s: float | None = None
    ) -> list[bool]:
        raise NotImplementedError  # Store's

    def server_time_ms(self) -> int:
        raise NotImplementedError  # Store's

    # -- maintenance -------------------------------------------------------------------------

    def reap(self, limit: int = 1000, now: int = 0, max_lost: int = 3) -> tuple[int, int]:
        """Take back jobs whose lease expired: (released or requeued, dead-lettered after
        losing their worker `max_lost` times)."""
        requeued, dead, _jobs = self.reap_listed(limit, now, max_lost)
        return requeued, dead

    def reap_listed(
        self, limit: int = 1000, now: int = 0, max_lost: int = 3
    ) -> tuple[int, int, list[Taken]]:
        """`reap`, with the first jobs it took back (bounded by reap.lua)."""
        with self.broker("reaping expired leases"):
            reply = self.scripts.reap(self.r, limit, now, max_lost)
        return int(reply[0]), int(reply[1]), taken(reply[2] if len(reply) > 2 else None)

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
        """Fail (or fall back) jobs waiting for a worker not seen for `gone_ms` (one bounded
        step of the registry walk, see `walk_queues`); returns how many."""
        return self.walk_queues(gone_ms, now, limit)[0]

    def walk_queues(
        self, gone_ms: int, now: int = 0, limit: int = 1000, queues: int = 200
    ) -> tuple[int, int, bool]:
        """One bounded step over the queue registry (a cursor kept on the server between
        calls): settle jobs of gone workers (at most `limit`), prune idle queues (of at most
        `queues` examined). Returns (jobs settled, queues pruned, whether a pass ended)."""
        return self.walk_queues_listed(gone_ms, now, limit, queues)[:3]

    def walk_queues_listed(
        self, gone_ms: int, now: int = 0, limit: int = 1000, queues: int = 200
    ) -> tuple[int, int, bool, list[Taken]]:
        """`walk_queues`, with the first jobs it settled (bounded by orphans.lua)."""
        with self.broker("checking targeted jobs"):
            reply = self.scripts.orphans(self.r, gone_ms, limit, now, queues)
        jobs = taken(reply[3] if len(reply) > 3 else None)
        return int(reply[0]), int(reply[1]), reply[2] == OrphansPass.DONE, jobs

    def trim_dead(self, now: int = 0, limit: int = 1000) -> int:
        """Drop up to `limit` dead-lettered jobs older than the dead-letter retention
        (`dead_ttl_s`; 0 keeps them forever)."""
        if self.dead_ttl_s <= 0:
            return 0
        now = now or self.server_time_ms()
        with self.broker("trimming dead letters"):
            cutoff = now - self.dead_ttl_s * 1000
            return int(self.scripts.trim_dead(self.r, cutoff, limit, now))

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

    def advance_periodic(self, name: str, next_ms: int) -> None:
        """Move a spec's due time forward only (two masters cannot move it back)."""
        with self.broker("advancing a periodic job"):
            self.r.zadd(self.keys.periodic_next, {name: next_ms}, xx=True, gt=True)

    def fire_periodic_slot(
        self, job: JobSpec, name: str, due: int, next_ms: int, holder: str | None, now: int = 0
    ) -> bool | None:
        """Submit the job of one due periodic slot and move the spec's due time on, in one
        transaction fenced on the slot still being due at `due` and, with `holder`, on the
        leader lease still being `holder`'s (WATCH, then MULTI/EXEC): a leader that stalled
        past its lease (SIGSTOP, a long pause) and resumes mid-tick fires nothing, even once
        the slot's job has expired, so no slot ever fires twice. True = created, False = a job
        with its id existed, None = fenced off (the slot moved, or the lease is another's)."""
        fn, keys, args = self.scripts.enqueue_call([job.as_row()], now)
        watched = [self.keys.periodic_next, *([self.keys.leader] if holder else [])]
        with self._room_kept(), self.broker("firing a periodic job"):
            self.room.check(job_bytes(job))
            with self.r.pipeline(transaction=True) as pipe:
                pipe.watch(*watched)
                if holder is not None and pipe.get(self.keys.leader) != holder.encode():
                    return None
                if pipe.zscore(self.keys.periodic_next, name) != due:
                    return None
                pipe.multi()
                pipe.fcall(function_name(fn), len(keys), *keys, *args)
                pipe.zadd(self.keys.periodic_next, {name: next_ms}, xx=True, gt=True)
                try:
                    created, _ = pipe.execute(raise_on_error=False)
                except redis.WatchError:
                    return None
        if isinstance(created, Exception):
            # The slot is claimed (the ZADD ran) but its enqueue failed, e.g. a server that
            # lost the library: submit it again the ordinary way (loads it; same id).
            return self.submit([job], now, wait_s=0)[0]
        return bool(created[0] == Enqueue.CREATED)

    def lead(self, candidate: str, lease_ms: int, release: bool = False, now: int = 0) -> bool:
        with self.broker("renewing the leader lease"):
            code = self.scripts.leader(self.r, candidate, lease_ms, release, now)
        return int(code) == Leader.LEADS

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
