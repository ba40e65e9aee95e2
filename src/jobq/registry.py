"""The task catalog: the settings each task declares, published by the workers that run it.

Why: a job is submitted by name from places that never imported the task (a producer of
another code base, `jobq submit`, the HTTP API, `POST /schedule`); without the catalog they
would put it on ``default`` with one attempt, whatever ``@app.task(queue=..., retries=...)``
says. And a worker given a job whose task it does not know needs to tell whether some live
worker knows it (give the job back) or none does (fail it, naming the tasks that exist).

Keys (control partition, keys.py): ``tasks`` (task -> declared settings as JSON) and
``tasks:seen`` (task -> when a worker that knows it was last seen, server ms). A worker writes
both (declare.lua) when it starts and every heartbeat interval while it runs (`Publisher`); a
task is known by a live worker while its last-seen is within `worker_gone_ms`. Two workers
declaring one task differently: the last to publish wins (a rolling upgrade converges once the
old workers stop).

Readers: `Catalog` (one per App) caches each task's entry for `CATALOG_REFRESH_S`, so a
producer's submit stays one round trip; `hand_back` serves the worker's unknown-task path;
`live_tasks` names the known tasks in error messages.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import orjson

from .codes import Handback
from .config import Settings
from .errors import BrokerError, BrokerUnavailable, ConfigError
from .model import Claimed
from .options import TaskOptions
from .store import Store
from .tasks import Task

log = logging.getLogger("jobq.registry")

#: How long a producer trusts a catalog entry it read (then reads it again on the next submit).
CATALOG_REFRESH_S = 2.0
#: How soon a job handed back (its task unknown to the worker that claimed it) may run again:
#: long enough that the same worker does not spin on it, short for a worker that knows it.
HANDBACK_DELAY_MS = 500
#: Most task names an error message lists.
SHOWN_TASKS = 20


class UnknownTask(LookupError):
    """A job's task is not registered in any live worker (the job's error type)."""


def unregistered(task: str) -> str:
    """The one warning text (Python log, CLI, HTTP) for a task no live worker has registered."""
    return f"no live worker has registered task {task!r}"


def gone_ms(settings: Settings) -> int:
    """The liveness window of a worker (`worker_gone_ms`; 0 there means targeted jobs never
    expire, so three heartbeats here)."""
    return settings.worker_gone_ms or 3 * settings.heartbeat_ms


# -- what a worker publishes -------------------------------------------------------------------


def settings_json(options: TaskOptions) -> str:
    """A task's declared settings as stored in the catalog."""
    return orjson.dumps(asdict(options)).decode()


def options_from_json(raw: bytes | str | None) -> TaskOptions | None:
    """The settings a catalog entry holds (fields this version does not know are ignored;
    an entry that does not parse reads as absent)."""
    if raw is None:
        return None
    try:
        data = orjson.loads(raw)
        known = {f.name for f in fields(TaskOptions)}
        return TaskOptions(**{k: v for k, v in data.items() if k in known})
    except (orjson.JSONDecodeError, TypeError, AttributeError):
        return None


def publish(store: Store, tasks: Mapping[str, Task[..., Any]]) -> int:
    """Publish `tasks` with their declared settings and mark them seen now (one call)."""
    items = [(name, settings_json(t.options)) for name, t in sorted(tasks.items())]
    if not items:
        return 0
    shard = store.control
    with shard.broker("publishing the task catalog"):
        return int(shard.scripts.declare(shard.r, items))


class Publisher:
    """Keeps a worker's tasks in the catalog: publishes them every `period_s` until `done`.

    A thread of its own (not the heartbeat's): a refused catalog write must never look like a
    failed heartbeat, and the catalog lives in the control partition only."""

    def __init__(
        self,
        store: Store,
        tasks: Mapping[str, Task[..., Any]],
        period_s: float,
        done: threading.Event,
    ) -> None:
        self.store = store
        self.tasks = tasks
        self.period_s = period_s
        self.done = done
        self.failing = False

    def run(self) -> None:
        while not self.done.wait(self.period_s):
            try:
                publish(self.store, self.tasks)
            except Exception as exc:  # the loop outlives any error; one line per episode
                if not self.failing:
                    log.warning("could not refresh the task catalog (retrying): %s", exc)
                self.failing = True
                continue
            self.failing = False


# -- what producers read -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Declared:
    """A task's catalog entry as read at `now_ms` (server clock)."""

    task: str
    options: TaskOptions | None
    """The settings last published (None: no worker ever published this task)."""
    seen_ms: int | None
    """When a worker that knows the task was last seen (server ms)."""
    now_ms: int

    def live(self, gone: int) -> bool:
        """Whether a worker seen within `gone` ms knows the task."""
        return self.seen_ms is not None and self.now_ms - self.seen_ms < gone


def lookup(store: Store, tasks: Iterable[str]) -> dict[str, Declared]:
    """The catalog entries of `tasks`, with the server clock, in one round trip."""
    names = list(dict.fromkeys(tasks))
    shard = store.control
    keys = shard.keys
    with shard.broker("reading the task catalog"):
        pipe = shard.r.pipeline(transaction=False)
        pipe.time()
        for name in names:
            pipe.hget(keys.tasks, name)
            pipe.zscore(keys.tasks_seen, name)
        reply = pipe.execute()
    sec, usec = reply[0]
    now = int(sec) * 1000 + int(usec) // 1000
    out = {}
    for i, name in enumerate(names):
        raw, seen = reply[1 + 2 * i], reply[2 + 2 * i]
        out[name] = Declared(name, options_from_json(raw), None if seen is None else int(seen), now)
    return out


def live_tasks(store: Store, gone: int) -> list[str]:
    """The tasks a live worker knows, sorted (one round trip)."""
    shard = store.control
    with shard.broker("reading the task catalog"):
        pipe = shard.r.pipeline(transaction=False)
        pipe.time()
        pipe.zrangebyscore(shard.keys.tasks_seen, "-inf", "+inf", withscores=True)
        (sec, usec), rows = pipe.execute()
    now = int(sec) * 1000 + int(usec) // 1000
    return sorted(
        (n.decode() if isinstance(n, bytes) else str(n)) for n, s in rows if now - s < gone
    )


def known_list(names: list[str]) -> str:
    """`names` for a message: "a, b, c" (at most SHOWN_TASKS), or "none"."""
    if not names:
        return "none"
    more = len(names) - SHOWN_TASKS
    return ", ".join(names[:SHOWN_TASKS]) + (f" and {more} more" if more > 0 else "")


class Catalog:
    """One process's cached view of the catalog (an App holds one): each task's entry is read
    at most every `CATALOG_REFRESH_S`, and a task no live worker has registered is logged once."""

    def __init__(self) -> None:
        self._store: Store | None = None
        self._entries: dict[str, tuple[float, Declared]] = {}
        self._warned: set[str] = set()
        self._lock = threading.Lock()

    def stale(self, task: str) -> bool:
        """Whether the entry of `task` is missing or older than the refresh interval."""
        got = self._entries.get(task)
        return got is None or got[0] <= time.monotonic()

    def get(self, store: Store, task: str) -> Declared:
        """The entry of `task` (cached; read again once stale, or for another store). While
        the broker cannot serve (a failover), the last entry read stands; with none, the read
        waits for a primary like a submit does (`failover_wait_s`)."""
        with self._lock:
            if store is not self._store:
                self._store, self._entries = store, {}
            got = self._entries.get(task)
            if got is not None and got[0] > time.monotonic():
                return got[1]
        try:
            entry = lookup(store, [task])[task]
        except BrokerUnavailable:
            if got is not None:
                return got[1]
            entry = store.retrying(
                lambda: lookup(store, [task])[task], store.failover_wait_s, "reading the catalog"
            )
        with self._lock:
            if store is self._store:
                self._entries[task] = (time.monotonic() + CATALOG_REFRESH_S, entry)
        return entry

    def options(self, store: Store, task: str, gone: int) -> TaskOptions:
        """The defaults of a task this process did not import: what its workers declared
        (`TaskOptions()` if none ever did); warns once per task no live worker has."""
        entry = self.get(store, task)
        if not entry.live(gone) and task not in self._warned:
            self._warned.add(task)
            log.warning(
                "%s: the job is queued%s; it runs once a worker that has the task starts",
                unregistered(task),
                " with the settings last published" if entry.options else " with default settings",
            )
        return entry.options or TaskOptions()

    def warning(self, store: Store, task: str, gone: int) -> str | None:
        """The warning a by-name submit of `task` carries (None: a live worker has it)."""
        return None if self.get(store, task).live(gone) else unregistered(task)


def require_live(store: Store, task: str, gone: int, force: bool = False) -> TaskOptions:
    """The declared settings of `task`, or ConfigError naming the known tasks when no live
    worker has it (`jobq periodic add`; with `force`, the settings last published or the
    defaults instead)."""
    entry = lookup(store, [task])[task]
    if force or (entry.live(gone) and entry.options is not None):
        return entry.options or TaskOptions()
    known = known_list(live_tasks(store, gone))
    raise ConfigError(
        f"{unregistered(task)} (known tasks: {known}); start a worker that has it, "
        "or pass --force to add the schedule anyway"
    )


# -- a worker given a task it does not know ------------------------------------------------------


def unknown_task_error(task: str, known: list[str], grace_ms: int) -> UnknownTask:
    return UnknownTask(
        f"unknown task {task!r}: no live worker has registered it for {grace_ms / 1000:g}s "
        f"(known tasks: {known_list(known)})"
    )


def hand_back(store: Store, jobs: list[Claimed], settings: Settings) -> list[Claimed]:
    """Give back claimed jobs whose task this worker does not know, for a worker that does
    (handback.lua: scheduled again shortly, the attempt not counted). Returns the jobs no live
    worker has known the task of for `unknown_task_ms`, and those whose cancel was requested:
    still running, for the caller to fail with `unknown_task_error` (a cancelled one then ends
    `cancelled`). One catalog read, then one call per partition."""
    gone = gone_ms(settings)
    entries = lookup(store, {c.task for c in jobs})
    by_part: dict[int, list[Claimed]] = {}
    for c in jobs:
        by_part.setdefault(store.partition_of(c.id), []).append(c)
    expired: list[Claimed] = []
    for part, group in by_part.items():
        shard = store.shards[part]
        items = []
        for c in group:
            seen = entries[c.task].seen_ms
            items.append((c.id, c.token, 0 if seen is None else seen + gone))
        with shard.broker("handing back jobs of unknown tasks"):
            codes = shard.scripts.handback(
                shard.r, items, HANDBACK_DELAY_MS, settings.unknown_task_ms
            )
        ended = (Handback.GRACE_OVER, Handback.CANCEL_REQUESTED)
        expired += [c for c, code in zip(group, codes, strict=True) if code in ended]
    return expired


def known_now(store: Store, settings: Settings) -> list[str]:
    """The tasks live workers know, for an UnknownTask message (empty if unreadable)."""
    try:
        return live_tasks(store, gone_ms(settings))
    except BrokerError:
        return []
