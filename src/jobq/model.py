"""Typed, I/O-free records for what crosses the wire: jobs as stored, and what a worker claims.

Decoders are tolerant: a missing field takes its default, unknown fields are ignored, so a field
can be added without a migration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .states import JobState


def _s(raw: dict[bytes, bytes], name: str, default: str = "") -> str:
    v = raw.get(name.encode())
    return v.decode() if v is not None else default


def _i(raw: dict[bytes, bytes], name: str, default: int = 0) -> int:
    v = raw.get(name.encode())
    return int(v) if v is not None and v != b"" else default


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

    def as_row(self) -> list[Any]:
        """The 16 fields enqueue.lua takes per job (empty string = the default)."""
        return [
            self.id,
            self.task,
            self.queue,
            self.payload,
            self.priority,
            self.max_attempts,
            "" if self.timeout_ms is None else self.timeout_ms,
            "" if self.backoff_ms is None else self.backoff_ms,
            "" if self.result_ttl_s is None else self.result_ttl_s,
            self.delay_ms,
            ",".join(self.parents),
            self.pass_results,
            self.unique_key or "",
            self.concurrency_key or "",
            self.concurrency_limit if self.concurrency_key else "",
            self.fallback_queue or "",
        ]


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

    @classmethod
    def from_hash(cls, job_id: str, raw: dict[bytes, bytes]) -> JobRecord:
        """Decode an HGETALL reply (tolerant of missing and unknown fields)."""
        import orjson

        err = raw.get(b"error")
        return cls(
            id=job_id,
            task=_s(raw, "task"),
            queue=_s(raw, "queue", "default"),
            state=JobState(_s(raw, "state", "queued")),
            priority=_i(raw, "pri"),
            attempt=_i(raw, "att"),
            max_attempts=_i(raw, "max", 1),
            timeout_ms=_i(raw, "timeout") or None,
            created_ms=_i(raw, "created"),
            started_ms=_i(raw, "started") or None,
            finished_ms=_i(raw, "finished") or None,
            eta_ms=_i(raw, "eta") or None,
            worker=_s(raw, "worker") or None,
            token=_i(raw, "token") or None,
            payload=raw.get(b"payload", b""),
            result=raw.get(b"result"),
            error=orjson.loads(err) if err else None,
            cancel_requested=b"cancel" in raw,
            parents=tuple(p for p in _s(raw, "parents").split(",") if p),
            progress=float(raw[b"progress"]) if b"progress" in raw else None,
            progress_message=_s(raw, "progress_msg"),
            unique_key=_s(raw, "ukey") or None,
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

    @classmethod
    def from_reply(cls, row: list[Any]) -> Claimed:
        def text(v: Any) -> str:
            return v.decode() if isinstance(v, bytes) else str(v)

        return cls(
            id=text(row[0]),
            token=text(row[1]),
            attempt=int(row[2]),
            task=text(row[3]),
            payload=row[4] if isinstance(row[4], bytes) else text(row[4]).encode(),
            max_attempts=int(row[5] or 1),
            timeout_ms=int(row[6]) if row[6] else None,
            queue=text(row[7]),
            backoff_ms=int(row[8]) if row[8] else None,
            pass_results=text(row[9]) if len(row) > 9 else "",
            inputs=tuple(row[10]) if len(row) > 10 else (),
            lost=int(row[11] or 0) if len(row) > 11 else 0,
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
