"""Typed, I/O-free records for what crosses the wire: jobs as stored, and what a worker claims.

Decoders are tolerant: a missing field takes its default, unknown fields are ignored, so a field
can be added without a migration.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from .states import JobState


class _Fields:
    """Reads one job hash field by field; a field that does not parse takes its default and is
    noted in `problems`, so one bad field never makes the whole record (or page) unreadable."""

    def __init__(self, raw: dict[bytes, bytes]) -> None:
        self.raw = raw
        self.problems: list[str] = []

    def s(self, name: str, default: str = "") -> str:
        v = self.raw.get(name.encode())
        if v is None:
            return default
        try:
            return v.decode()
        except UnicodeDecodeError:
            self.problems.append(f"field {name} is not UTF-8")
            return v.decode("utf-8", "replace")

    def i(self, name: str, default: int = 0) -> int:
        v = self.raw.get(name.encode())
        if v is None or v == b"":
            return default
        try:
            return int(v)
        except ValueError:
            try:
                return int(float(v))  # Lua may write integral floats as "1e+12"
            except ValueError:
                self.problems.append(f"field {name} is not a number ({v[:40]!r})")
                return default

    def f(self, name: str) -> float | None:
        v = self.raw.get(name.encode())
        if v is None:
            return None
        try:
            return float(v)
        except ValueError:
            self.problems.append(f"field {name} is not a number ({v[:40]!r})")
            return None


@dataclass(frozen=True, slots=True)
class JobSpec:
    """A job about to be submitted (all options resolved)."""

    id: str
    task: str
    queue: str
    payload: bytes
    priority: int = 0
    max_attempts: int = 1
    timeout_ms: int | None = None
    backoff_ms: int | None = None
    result_ttl_s: int | None = None
    delay_ms: int = 0
    parents: tuple[str, ...] = ()
    pass_results: str = ""
    """'' = no; 'one' = the single parent's result is the first argument (chain);
    'list' = the list of all parents' results, in order, is the first argument (fan-in)."""
    unique_key: str | None = None
    concurrency_key: str | None = None
    concurrency_limit: int = 1
    fallback_queue: str | None = None
    """For a job targeted at a worker: where it goes if that worker is gone (else it fails)."""
    remote_parents: tuple[RemoteParent, ...] = ()
    """Those of `parents` that live in other partitions, with what their partition said when
    the child was linked to them (handoff.py fills it in; users leave it empty)."""
    trace: str = ""
    """The submitter's trace context (W3C traceparent, then a newline and the tracestate if
    any), set by tracing.py only when tracing is on; '' = none, and no field on the job."""

    def for_call(self, job_id: str, payload: bytes) -> JobSpec:
        """This spec for another call of its task: a new id and payload, the same options
        (what `dataclasses.replace` does, at less than half its cost: it runs per job of a
        batch submit)."""
        return JobSpec(
            job_id,
            self.task,
            self.queue,
            payload,
            self.priority,
            self.max_attempts,
            self.timeout_ms,
            self.backoff_ms,
            self.result_ttl_s,
            self.delay_ms,
            self.parents,
            self.pass_results,
            self.unique_key,
            self.concurrency_key,
            self.concurrency_limit,
            self.fallback_queue,
            self.remote_parents,
            self.trace,
        )

    def as_row(self) -> list[Any]:
        """The 6 fields enqueue.lua takes per job: id, task, queue, payload, one record of the
        options that differ from their defaults (JSON; '' when none differs, the common case,
        which the script then need not decode), and the remote parents (b'' unless handoff.py
        filled them in). The payload and the remote parents' results stay out of the JSON:
        they are any bytes (a pickle, msgpack), which JSON cannot carry."""
        opts: dict[str, Any] = {}
        if self.priority:
            opts["pri"] = self.priority
        if self.max_attempts != 1:
            opts["max"] = self.max_attempts
        if self.timeout_ms is not None:
            opts["timeout"] = self.timeout_ms
        if self.backoff_ms is not None:
            opts["backoff"] = self.backoff_ms
        if self.result_ttl_s is not None:
            opts["ttl"] = self.result_ttl_s
        if self.delay_ms:
            opts["delay"] = self.delay_ms
        if self.parents:
            opts["parents"] = ",".join(self.parents)
            if self.pass_results:
                opts["pass"] = self.pass_results
        if self.unique_key:
            opts["ukey"] = self.unique_key
        if self.concurrency_key:
            opts["ckey"] = self.concurrency_key
            if self.concurrency_limit != 1:
                opts["climit"] = self.concurrency_limit
        if self.fallback_queue:
            opts["fallback"] = self.fallback_queue
        if self.trace:
            opts["trace"] = self.trace
        return [
            self.id,
            self.task,
            self.queue,
            self.payload,
            orjson.dumps(opts) if opts else "",
            encode_remote_parents(self.remote_parents),
        ]


@dataclass(frozen=True, slots=True)
class RemoteParent:
    """A parent in another partition, as link.lua answered for it: `state` is ``pending`` (a
    hand-off will follow when it settles) or its terminal state; `result` its result blob when
    it succeeded and the child takes results."""

    id: str
    state: str
    result: bytes = b""


def encode_remote_parents(parents: tuple[RemoteParent, ...]) -> bytes:
    """The remote-parents field of enqueue.lua: per parent ``<state>:<len id>:<len result>:``
    then the id and the result (lengths in bytes), so ids and results may hold any byte."""
    if not parents:  # (nearly every job: no parent in another partition)
        return b""
    out = bytearray()
    for p in parents:
        pid = p.id.encode()
        out += b"%s:%d:%d:%s%s" % (p.state.encode(), len(pid), len(p.result), pid, p.result)
    return bytes(out)


@dataclass(frozen=True, slots=True)
class JobRecord:
    """A job as the broker holds it."""

    id: str
    task: str
    queue: str
    state: JobState
    priority: int = 0
    attempt: int = 0
    max_attempts: int = 1
    timeout_ms: int | None = None
    created_ms: int = 0
    started_ms: int | None = None
    """When the current (or last) attempt began running; None while a claimed job waits in a
    worker's prefetch."""
    claimed_ms: int | None = None
    """When a worker claimed the current (or last) attempt (prefetched jobs: before it ran)."""
    finished_ms: int | None = None
    eta_ms: int | None = None
    worker: str | None = None
    token: int | None = None
    payload: bytes = b""
    result: bytes | None = None
    error: dict[str, Any] | None = None
    cancel_requested: bool = False
    parents: tuple[str, ...] = ()
    progress: float | None = None
    progress_message: str = ""
    unique_key: str | None = None
    corrupt: str | None = None
    """What is wrong with the stored hash (None when it decodes cleanly): readers show such a
    job as a row with this marker instead of failing the request."""

    @classmethod
    def from_hash(cls, job_id: str, raw: dict[bytes, bytes]) -> JobRecord:
        """Decode an HGETALL reply (tolerant of missing, unknown and malformed fields)."""
        return cls.decode(job_id, raw)

    @classmethod
    def decode(cls, job_id: str, raw: dict[bytes, bytes]) -> JobRecord:
        """Decode a job hash field by field: never raises; problems land in `corrupt`."""
        import orjson

        r = _Fields(raw)
        state_text = r.s("state", "queued")
        try:
            state = JobState(state_text)
        except ValueError:
            r.problems.append(f"unknown state {state_text[:40]!r}")
            state = JobState.QUEUED
        for required in ("state", "task", "queue"):
            if required.encode() not in raw:
                r.problems.append(f"job hash lacks field {required}")
        err: dict[str, Any] | None = None
        if raw.get(b"error"):
            try:
                loaded = orjson.loads(raw[b"error"])
                err = loaded if isinstance(loaded, dict) else {"message": str(loaded)}
            except orjson.JSONDecodeError:
                r.problems.append("field error is not JSON")
                err = {"type": "Unknown", "message": r.s("error")}
        return cls(
            id=job_id,
            task=r.s("task"),
            queue=r.s("queue", "default"),
            state=state,
            priority=r.i("pri"),
            attempt=r.i("att"),
            max_attempts=r.i("max", 1),
            timeout_ms=r.i("timeout") or None,
            created_ms=r.i("created"),
            started_ms=r.i("started") or None,
            claimed_ms=r.i("claimed") or None,
            finished_ms=r.i("finished") or None,
            eta_ms=r.i("eta") or None,
            worker=r.s("worker") or None,
            token=r.i("token") or None,
            payload=raw.get(b"payload", b""),
            result=raw.get(b"result"),
            error=err,
            cancel_requested=b"cancel" in raw,
            parents=tuple(p for p in r.s("parents").split(",") if p),
            progress=r.f("progress"),
            progress_message=r.s("progress_msg"),
            unique_key=r.s("ukey") or None,
            corrupt="; ".join(r.problems) or None,
        )


@dataclass(frozen=True, slots=True)
class Claimed:
    """One attempt handed to a worker: what to run, and the token that fences its outcome."""

    id: str
    token: str
    attempt: int
    task: str
    payload: bytes
    max_attempts: int
    timeout_ms: int | None
    queue: str
    backoff_ms: int | None
    pass_results: str = ""
    inputs: tuple[bytes, ...] = ()
    """Encoded results of the parents, in order, when `pass_results` is set."""
    lost: int = 0
    """How often this job's worker died (or lost its lease) under it: > 0 makes it a suspect,
    which the worker runs alone."""
    trace: str = ""
    """The trace context the job was submitted under ('' = none): tracing.py."""
    ready_ms: int = 0
    """When the job became ready to run (server clock, ms; 0 = unknown): the queue wait's start."""
    claimed_ms: int = 0
    """When this attempt was claimed (server clock, ms; 0 = unknown): the queue wait's end."""

    @classmethod
    def from_reply(cls, row: list[Any]) -> Claimed:
        """Decode a claim row; claim.lua dead-letters jobs whose options do not parse, and the
        numbers are read leniently anyway, so one odd row cannot stop a worker."""

        def text(v: Any) -> str:
            return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)

        def number(v: Any) -> int | None:
            try:
                return int(v) if v not in (None, b"", "") else None
            except ValueError:
                try:
                    return int(float(v))
                except (ValueError, OverflowError):
                    return None

        return cls(
            id=text(row[0]),
            token=text(row[1]),
            attempt=number(row[2]) or 1,
            task=text(row[3]),
            payload=row[4] if isinstance(row[4], bytes) else text(row[4]).encode(),
            max_attempts=number(row[5]) or 1,
            timeout_ms=number(row[6]) or None,
            queue=text(row[7]),
            backoff_ms=number(row[8]) or None,
            pass_results=text(row[9]) if len(row) > 9 else "",
            inputs=tuple(row[10]) if len(row) > 10 else (),
            lost=int(row[11] or 0) if len(row) > 11 else 0,
            trace=text(row[12]) if len(row) > 12 else "",
            ready_ms=(number(row[13]) or 0) if len(row) > 13 else 0,
            claimed_ms=(number(row[14]) or 0) if len(row) > 14 else 0,
        )


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a worker reports for one attempt."""

    claimed: Claimed
    ok: bool
    result: bytes = b""
    error: dict[str, Any] = field(default_factory=dict)
    retry_delay_ms: int = -1
    """For failures: back-off before the next attempt; negative = do not retry."""
    runtime_s: float = 0.0
    """How long the attempt ran (the worker sizes its prefetch from it)."""
    began_s: float | None = None
    """When the attempt began running, on this process's `time.monotonic()` clock (set by the
    pool as it starts the attempt; None = unknown)."""
    span: str = ""
    """The traceparent of the attempt's run span ('' when tracing is off): the completion span
    and the transition log line join it."""

    def ran_ms(self, now_s: float | None = None) -> int:
        """Milliseconds since the attempt began (-1 if unknown), for the outcome scripts, which
        set `started` to their server clock minus this: a duration, so no clock skew between
        the worker's host and the server enters the record."""
        if self.began_s is None:
            return -1
        now = time.monotonic() if now_s is None else now_s
        return max(0, int((now - self.began_s) * 1000))


@dataclass(frozen=True, slots=True)
class QueueInfo:
    """Depths per state and lifetime counters of one queue."""

    name: str
    queued: int
    scheduled: int
    running: int
    succeeded: int
    failed: int
    cancelled: int
    retried: int


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A worker as the registry knows it: its entry (absent once it expired) and running jobs."""

    name: str
    last_seen_ms: int
    alive: bool
    info: dict[str, str]
    jobs: list[str]
    seen_ago_ms: int = 0
    """How long ago its last heartbeat was (server clock) when it was listed."""
