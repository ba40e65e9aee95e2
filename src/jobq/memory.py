"""The broker's memory: back-pressure on submits before the server is full, and its policy.

A server at ``maxmemory`` (with ``noeviction``) refuses every write, claims and outcomes
included, so jobs that could finish wedge. Submits are therefore refused earlier, once used
memory passes a share of ``maxmemory`` (`Settings.memory_limit`, default 90%): the rest is room
for the claims, heartbeats and results of the jobs already queued. The check reads ``INFO
memory`` at most once per `CHECK_INTERVAL_S` per process, so a submit costs no extra round trip.
Between readings it adds what this process submitted since (an estimate, on the high side) to
the last one, and reads again at once when that estimate reaches the limit: a fast producer
(measured: one process filling 6 MB of headroom in under a second) would otherwise run past the
limit into the wall before its next reading, and at the wall no job can be claimed or finished.
Near the limit readings are trusted only `NEAR_INTERVAL_S`, so producers in other processes
(whose submits this one cannot count) are noticed soon too. A server that evicts
keys (any policy but ``noeviction``) silently drops jobs: workers and masters warn at start-up
and refuse with ``--strict``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import BrokerError, BrokerFull, BrokerUnavailable, ConfigError, memory_full

if TYPE_CHECKING:
    from .model import JobSpec

log = logging.getLogger("jobq.memory")

#: How long a memory reading is trusted by the submit check.
CHECK_INTERVAL_S = 1.0
#: ... once used memory is within (1 - limit) below the limit (past 80% at the default 90%).
NEAR_INTERVAL_S = 0.1
#: What one job costs the server beyond its id, task and payload bytes: the job hash's other
#: fields, its queue entry, its events and index entries (measured: about 1 KB with a 4 KB
#: payload, 0.55 KB with 100 bytes; estimated high, since too low lets a burst past the limit).
JOB_OVERHEAD_BYTES = 2048


@dataclass(frozen=True, slots=True)
class MemoryState:
    """What the server reports about its memory (``INFO memory``)."""

    used: int
    """Bytes counted against maxmemory (used_memory less replication/AOF buffers)."""
    maxmemory: int
    """0 = no limit."""
    policy: str

    @classmethod
    def from_info(cls, info: dict[str, Any]) -> MemoryState:
        used = int(info.get("used_memory", 0)) - int(info.get("mem_not_counted_for_evict", 0))
        return cls(max(used, 0), int(info.get("maxmemory", 0)), str(info.get("maxmemory_policy")))

    @property
    def share(self) -> float | None:
        """Used share of maxmemory (None without a limit)."""
        return self.used / self.maxmemory if self.maxmemory else None

    @property
    def evicts(self) -> bool:
        """True if the server may delete keys (jobs) to make room."""
        return self.policy != "noeviction"


def job_bytes(spec: JobSpec) -> int:
    """What submitting `spec` costs the server, estimated on the high side."""
    return len(spec.payload) + len(spec.id) + len(spec.task) + JOB_OVERHEAD_BYTES


def read_memory(client: Any) -> MemoryState:
    """One ``INFO memory`` round trip on a redis-py client."""
    return MemoryState.from_info(client.info("memory"))


class RoomCheck:
    """Refuses submits while the server is past `limit` of its maxmemory (a cached reading)."""

    def __init__(
        self,
        read: Callable[[], MemoryState],
        url: str,
        limit: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self.url = url
        self.limit = limit
        self._clock = clock
        self._lock = threading.Lock()
        self._until = 0.0
        self._full: BrokerFull | None = None
        self._sent = 0  # bytes submitted (estimated) since the last reading
        self.last: MemoryState | None = None

    def check(self, cost: int = 0) -> None:
        """Raise `BrokerFull` if the last reading (refreshed when stale) is over the limit.
        `cost`: the bytes this submit will add (estimated); once the last reading plus what was
        submitted since would reach the limit, the reading is refreshed first."""
        if self.limit >= 1.0:  # back-pressure off: only the server's own OOM refuses
            return
        with self._lock:
            now = self._clock()
            if now >= self._until or self._reaches_limit(cost):
                self._refresh(now)
            if self._full is not None:
                raise self._full
            self._sent += cost

    def add(self, cost: int) -> None:
        """Count `cost` bytes submitted without checking first (a batch streamed in chunks)."""
        with self._lock:
            self._sent += cost

    def expire(self) -> None:
        """The server refused a submit for lack of memory: unless this check refused it (its
        reading says full), the reading was behind; forget it, so the next check reads again
        and refuses with the back-pressure error rather than meet one more OOM."""
        with self._lock:
            if self._full is None:
                self._until = 0.0

    def _reaches_limit(self, cost: int) -> bool:
        last = self.last
        if last is None or not last.maxmemory or self._full is not None:
            return False
        return last.used + self._sent + cost >= self.limit * last.maxmemory

    def _refresh(self, now: float) -> None:
        try:
            state = self._read()
        except BrokerUnavailable:
            raise  # the submit would fail the same way
        except BrokerError as exc:  # e.g. an ACL user without INFO: rely on the server's OOM
            if self._until == 0.0 or self._full is not None:
                log.warning("cannot read memory use (%s): submits go on without back-pressure", exc)
            # (and no estimate on an old reading either: it would ask again on every submit)
            self._until, self._full, self.last = now + 60, None, None
            return
        first, self.last, self._sent = self.last is None, state, 0
        share = state.share
        near = share is not None and share >= self.limit - (1 - self.limit)
        self._until = now + (NEAR_INTERVAL_S if near else CHECK_INTERVAL_S)
        # Log changes only (a one-shot CLI submit just gets its error, not a log line too).
        if share is not None and share >= self.limit:
            if self._full is None and not first:
                log.warning("Valkey at %s is %.0f%% full: refusing new jobs", self.url, share * 100)
            self._full = memory_full(self.url, state.used, state.maxmemory, self.limit)
        else:
            if self._full is not None:
                log.warning("Valkey at %s has room again: accepting new jobs", self.url)
            self._full = None


def check_policy(state: MemoryState, url: str, strict: bool, who: str) -> None:
    """Warn loudly (or, with `strict`, refuse) when the server may evict jobq's keys."""
    if not state.evicts:
        return
    msg = (
        f"Valkey at {url} runs with maxmemory-policy {state.policy}: when memory runs out it "
        "deletes keys, and with them queued jobs and results, without a trace. Set "
        "`maxmemory-policy noeviction` (CONFIG SET maxmemory-policy noeviction, and in the "
        "server's config file)"
    )
    if strict:
        raise ConfigError(f"{msg}; {who} refuses to start with --strict")
    log.warning("!!! %s; %s runs anyway (--strict refuses)", msg, who)


def parse_budget(text: str, total_ram: int | None = None) -> int:
    """Bytes for a memory budget: ``512mb``, ``2gb``, ``1073741824``, or ``25%`` of RAM
    (0 = no limit)."""
    raw = text.strip().lower()
    try:
        if raw.endswith("%"):
            ram = total_ram if total_ram is not None else _physical_ram()
            pct = float(raw[:-1])
            if not 0 < pct <= 100:
                raise ValueError
            return int(ram * pct / 100)
        units = {"kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30, "k": 1 << 10, "m": 1 << 20}
        units["g"] = 1 << 30
        for suffix in ("kb", "mb", "gb", "k", "m", "g"):
            if raw.endswith(suffix):
                return int(float(raw[: -len(suffix)]) * units[suffix])
        value = int(raw)
        if value < 0:
            raise ValueError
        return value
    except ValueError as exc:
        raise ConfigError(
            f"memory budget {text!r}: expected bytes (e.g. 512mb, 2gb) or a share of RAM (25%)"
        ) from exc


def _physical_ram() -> int:
    import os

    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 4 << 30
