"""Durable mode: a submit returns, and an outcome counts as recorded, only once the server says
the write is on disk (and on N replicas).

Valkey acknowledges a write once it is in memory; with the default ``appendfsync everysec``
the AOF reaches the disk about once a second, so a power cut or kernel crash can lose up to
about a second of acknowledged writes (a crash of the Valkey process alone loses nothing: the
kernel still holds what it wrote). In durable mode every submit and every batch of outcomes
ends its round trip with ``WAITAOF numlocal numreplicas timeout`` on the same connection:
numlocal is 1 with `durable`, numreplicas is `wait_replicas`. WAITAOF waits for the offset of
that connection's own last write, which is why it rides in the same round trip (`scripts.
wait_aof_call`); the enqueue script always writes (its FIFO counter), so even a re-sent submit
after a reconnect waits for everything before it. The embedded server runs with ``appendfsync
always`` in durable mode, so the wait costs one fsync; on a server left at ``everysec`` it
waits for the next background fsync (about 100 ms each, see bench/durability.py).

Before the first durable submit the server is probed once (``WAITAOF <numlocal> 0 1``, which
writes nothing), so a server without WAITAOF (before Valkey 8 / Redis 7.2), with AOF off or a
user without the permission refuses with `DurabilityUnsupported` before any job is written.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import redis

from .errors import DurabilityTimeout, DurabilityUnsupported
from .scripts import Call, wait_aof_call

log = logging.getLogger("jobq.durability")


class Durability:
    """What a durable write waits for on one server, and the reading of its acknowledgement."""

    def __init__(self, url: str, numlocal: int, numreplicas: int, timeout_ms: int) -> None:
        self.url = url
        self.numlocal = numlocal
        self.numreplicas = numreplicas
        self.timeout_ms = timeout_ms
        self._supported = False
        self._warned = False  # one warning per episode of unconfirmed outcomes

    @classmethod
    def for_settings(
        cls, url: str, durable: bool, wait_replicas: int, timeout_ms: int
    ) -> Durability | None:
        """The wait asked for by the settings, or None when writes are acknowledged at once."""
        if not durable and wait_replicas <= 0:
            return None
        return cls(url, 1 if durable else 0, max(0, wait_replicas), timeout_ms)

    def call(self) -> Call:
        """The WAITAOF to append to a round trip of writes."""
        return wait_aof_call(self.numlocal, self.numreplicas, self.timeout_ms)

    def ensure_supported(self, client: Any) -> None:
        """Raise `DurabilityUnsupported` if the server cannot confirm an fsync (checked once)."""
        if self._supported:
            return
        try:
            client.execute_command("WAITAOF", self.numlocal, 0, 1)
        except redis.ResponseError as exc:
            raise self._unsupported(exc, "nothing was written") from exc
        self._supported = True

    def check_submit(self, reply: Any, job_ids: Sequence[str]) -> None:
        """Raise unless the WAITAOF `reply` confirms every acknowledgement asked for."""
        if isinstance(reply, redis.ResponseError):
            raise self._unsupported(reply, "the jobs were written; their fsync is unconfirmed")
        shown = ", ".join(job_ids[:5]) + (
            f" and {len(job_ids) - 5} more" if len(job_ids) > 5 else ""
        )
        if not self._confirmed(reply):
            raise DurabilityTimeout(
                f"submitted job(s) {shown} to Valkey at {self.url}, but within "
                f"{self.timeout_ms} ms the server confirmed {self._acks(reply)}: the jobs may or "
                "may not be durable (they are queued, but a crash could still lose them). "
                "Submitting the same job ids again is safe; check the replicas, or raise "
                "durable_timeout_ms",
                tuple(job_ids),
            )

    def check_outcomes(self, reply: Any) -> None:
        """Log (never raise) when outcomes already recorded are not confirmed durable: the
        worker cannot take them back, and a lost outcome only means the job runs again."""
        if not isinstance(reply, redis.ResponseError) and self._confirmed(reply):
            self._warned = False
            return
        if self._warned:
            return
        self._warned = True
        what = str(reply) if isinstance(reply, redis.ResponseError) else self._acks(reply)
        log.warning(
            "outcomes recorded on Valkey at %s are not confirmed durable (%s): a crash now may "
            "lose them and their jobs would run again; logged once until confirmed again",
            self.url,
            what,
        )

    def _confirmed(self, reply: Any) -> bool:
        local, replicas = (int(x) for x in reply)
        return local >= self.numlocal and replicas >= self.numreplicas

    def _acks(self, reply: Any) -> str:
        local, replicas = (int(x) for x in reply)
        return (
            f"{local}/{self.numlocal} local AOF fsync and {replicas}/{self.numreplicas} "
            "replica fsyncs"
        )

    def _unsupported(self, exc: redis.ResponseError, written: str) -> DurabilityUnsupported:
        msg = str(exc)
        low = msg.lower()
        if "unknown command" in low:
            why = (
                "does not know WAITAOF (it needs Valkey >= 8 or Redis >= 7.2): upgrade the "
                "server, or turn durable mode off (durable=0, wait_replicas=0) and accept the "
                "loss window of its appendfsync setting"
            )
        elif "appendonly" in low:
            why = (
                "has its AOF off, so it cannot confirm an fsync: turn it on (appendonly yes), "
                "or wait for replicas only (wait_replicas=N without durable)"
            )
        elif isinstance(exc, redis.exceptions.NoPermissionError) or "noperm" in low:
            why = (
                "refuses WAITAOF to this URL's user: grant it (+waitaof), or turn durable mode off"
            )
        else:
            why = f"refused WAITAOF ({msg})"
        return DurabilityUnsupported(f"durable mode: Valkey at {self.url} {why} ({written})")
