"""Durable submits: a submit returns, and an outcome counts as recorded, only once the server
says the write is on disk, or on N replicas, or both.

Valkey acknowledges a write once it is in memory on the primary. What can then lose it, and
what each setting waits for (appended to the round trip of every submit and every batch of
outcomes, on the same connection, so it waits for exactly that connection's writes):

=====================  ===========================  =============================================
settings               appended                     what can still lose an acknowledged write
=====================  ===========================  =============================================
(neither)              nothing                      a failover: replication is asynchronous, so
                                                    the promoted replica may lack the last writes
                                                    (a fraction of a millisecond on a LAN; the
                                                    whole lag of a slow or cut-off replica); a
                                                    power cut: up to ~1 s (``everysec``)
``wait_replicas=N``    ``WAIT N timeout``           nothing a failover does, while Sentinel
                                                    promotes one of the N replicas that have it
                                                    (it promotes the replica with the largest
                                                    replication offset among equal priorities);
                                                    a power cut of the primary *and* those N
                                                    replicas at once: their ``everysec`` window
``durable``            ``WAITAOF 1 0 timeout``      a failover, as with neither (the replica may
                                                    lack it); not a power cut of the primary
``durable`` +          ``WAITAOF 1 N timeout``      neither a failover (as above) nor a power
``wait_replicas=N``                                 cut of every host; the N replicas must run
                                                    AOF (``appendonly yes``), or never confirm
=====================  ===========================  =============================================

``WAIT`` confirms that N replicas *received* the write (in memory), which is what protects
against a failover: the promoted replica has it. With N equal to the number of replicas every
candidate has it; with fewer (say 1 of 2, so that one dead replica does not stop submits),
Sentinel's choice rests on the replication offsets it last read from the replicas (about once
a second while the primary is down), so a write acknowledged by one replica can in rare races
be lost when the other, a few milliseconds behind, is promoted (as documented for Redis's WAIT:
it makes such losses unlikely, not impossible). A submit that raised `DurabilityTimeout` is on
the primary and may or may not survive a failover. ``WAITAOF 0 N`` would confirm only replicas
that run AOF and have fsynced, so `wait_replicas` alone uses WAIT. Both wait for the offset of
that connection's own last write, which is why they ride in the same round trip (`scripts.
wait_call`, `scripts.wait_aof_call`); the enqueue script always writes (its FIFO counter), so
even a re-sent submit after a reconnect (to a new primary, too) waits for everything before it.
The embedded server runs with ``appendfsync always`` in durable mode, so the fsync wait costs
one fsync; on a server left at ``everysec`` it waits for the next background fsync (about
100 ms each, see bench/durability.py). The cost of WAIT is one replication round trip
(bench/ha.py, docs/benchmarks-ha.md).

When fewer replicas confirm within `durable_timeout_ms` (a replica down or lagging), the submit
raises `DurabilityTimeout` *after* the jobs were queued on the primary: they will run, but are
not yet safe from a failover, and submitting the same ids again is safe. An outcome is never
taken back: an unconfirmed one is logged once per episode (a lost outcome only means the job
runs again). While a replica is down every submit and outcome batch waits the full timeout, so
run more replicas than `wait_replicas` to keep a dead replica from stopping producers.

Before the first wait the server is probed once, writing nothing: ``WAITAOF 1 0 1`` (durable)
refuses with `DurabilityUnsupported` on a server without WAITAOF (before Valkey 8 / Redis 7.2),
with AOF off or a user without the permission; ``WAIT 0 1`` (replicas only) on a replica or
without the permission. With `wait_replicas` the probe also reads how many replicas are
connected and warns when fewer than asked (every submit would time out).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import redis

from .errors import DurabilityTimeout, DurabilityUnsupported
from .scripts import Call, wait_aof_call, wait_call

log = logging.getLogger("jobq.durability")


class Durability:
    """What a durable write waits for on one deployment, and the reading of its
    acknowledgement: ``WAITAOF numlocal numreplicas`` when `numlocal` (durable), else
    ``WAIT numreplicas``."""

    def __init__(self, url: str, numlocal: int, numreplicas: int, timeout_ms: int) -> None:
        self.url = url
        self.numlocal = numlocal
        self.numreplicas = numreplicas
        self.timeout_ms = timeout_ms
        self._supported = False
        self._warned = False  # one warning per episode of unconfirmed outcomes
        self._client: Any = None  # to say how many replicas are connected when a wait fails

    @classmethod
    def for_settings(
        cls, url: str, durable: bool, wait_replicas: int, timeout_ms: int
    ) -> Durability | None:
        """The wait asked for by the settings, or None when writes are acknowledged at once."""
        if not durable and wait_replicas <= 0:
            return None
        return cls(url, 1 if durable else 0, max(0, wait_replicas), timeout_ms)

    @property
    def command(self) -> str:
        """WAITAOF when the local fsync is waited for, else WAIT (replicas received it)."""
        return "WAITAOF" if self.numlocal else "WAIT"

    def call(self) -> Call:
        """The WAIT or WAITAOF to append to a round trip of writes."""
        if self.numlocal:
            return wait_aof_call(self.numlocal, self.numreplicas, self.timeout_ms)
        return wait_call(self.numreplicas, self.timeout_ms)

    def ensure_supported(self, client: Any) -> None:
        """Raise `DurabilityUnsupported` if the server cannot confirm what is asked (checked
        once, writing nothing); warn when fewer replicas are connected than asked for."""
        if self._supported:
            return
        self._client = client
        try:
            if self.numlocal:
                client.execute_command("WAITAOF", self.numlocal, 0, 1)
            else:
                client.execute_command("WAIT", 0, 1)
        except redis.ResponseError as exc:
            raise self._unsupported(exc, "nothing was written") from exc
        self._supported = True
        if self.numreplicas:
            connected = self._connected_replicas()
            if connected is not None and connected < self.numreplicas:
                log.warning(
                    "wait_replicas=%d, but the primary behind %s has %d replica(s) connected: "
                    "every submit will raise DurabilityTimeout after %d ms (its jobs queued, "
                    "but not safe from a failover) until %d are; start the replicas, or lower "
                    "wait_replicas",
                    self.numreplicas,
                    self.url,
                    connected,
                    self.timeout_ms,
                    self.numreplicas,
                )

    def check_submit(self, reply: Any, job_ids: Sequence[str]) -> None:
        """Raise unless the `reply` to the wait confirms every acknowledgement asked for."""
        if isinstance(reply, redis.ResponseError):
            raise self._unsupported(reply, "the jobs were written; their durability is unconfirmed")
        if self._confirmed(reply):
            return
        shown = ", ".join(job_ids[:5]) + (
            f" and {len(job_ids) - 5} more" if len(job_ids) > 5 else ""
        )
        local, replicas = self._counts(reply)
        if local < self.numlocal:
            risk = "a crash of the primary's host could still lose them"
        else:
            risk = "a failover now could still lose them"
        fix = ["Submitting the same job ids again is safe (no duplicate; it waits again)"]
        if replicas < self.numreplicas:
            fix.append(self._replica_advice())
        if local < self.numlocal:
            fix.append("check the primary's disk and appendfsync")
        fix.append(f"or raise durable_timeout_ms (now {self.timeout_ms})")
        raise DurabilityTimeout(
            f"submitted job(s) {shown} to Valkey at {self.url}, but within {self.timeout_ms} "
            f"ms {self.command} confirmed only {self._acks(reply)}: the jobs are queued on the "
            f"primary and will run, but may or may not be durable ({risk}). " + "; ".join(fix),
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
            "outcomes recorded on Valkey at %s are not confirmed durable (%s confirmed %s "
            "within %d ms): a crash or failover now may lose them and their jobs would run "
            "again; each batch of outcomes waits that long until confirmed again (%s); logged "
            "once until then",
            self.url,
            self.command,
            what,
            self.timeout_ms,
            self._replica_advice() if self.numreplicas else "check the primary's disk",
        )

    def confirms(self, reply: Any) -> bool:
        """Whether `reply` (to `call()`) confirms every acknowledgement asked for; an error
        reply confirms nothing. For callers that keep their own record until it does (the
        outbox of handoff.py)."""
        return not isinstance(reply, redis.ResponseError) and self._confirmed(reply)

    def _counts(self, reply: Any) -> tuple[int, int]:
        """(local fsyncs, replicas) from a WAITAOF pair or a WAIT count."""
        if isinstance(reply, (list, tuple)):
            local, replicas = (int(x) for x in reply)
            return local, replicas
        return 0, int(reply)

    def _confirmed(self, reply: Any) -> bool:
        local, replicas = self._counts(reply)
        return local >= self.numlocal and replicas >= self.numreplicas

    def _acks(self, reply: Any) -> str:
        local, replicas = self._counts(reply)
        if not self.numlocal:
            return f"{replicas}/{self.numreplicas} replicas received them"
        return (
            f"{local}/{self.numlocal} local AOF fsync and {replicas}/{self.numreplicas} "
            "replica fsyncs"
        )

    def _replica_advice(self) -> str:
        connected = self._connected_replicas()
        have = (
            f"the primary has {connected} replica(s) connected, " if connected is not None else ""
        )
        aof = " (WAITAOF counts only replicas with appendonly yes)" if self.numlocal else ""
        return (
            f"{have}wait_replicas is {self.numreplicas}{aof}: restart or resync the missing "
            "replicas (INFO replication on the primary lists them), or lower wait_replicas to "
            "fewer than the replicas you run"
        )

    def _connected_replicas(self) -> int | None:
        """How many replicas the primary has connected (INFO replication), None if unknown."""
        if self._client is None:
            return None
        try:
            info = self._client.info("replication")
            return int(info.get("connected_slaves", 0))
        except Exception:  # only for a message: never mask the error it explains
            return None

    def _unsupported(self, exc: redis.ResponseError, written: str) -> DurabilityUnsupported:
        msg = str(exc)
        low = msg.lower()
        cmd = self.command
        if "unknown command" in low:
            if self.numlocal:
                why = (
                    "does not know WAITAOF (it needs Valkey >= 8 or Redis >= 7.2): upgrade the "
                    "server, or turn durable mode off (durable=0) and accept the loss window of "
                    "its appendfsync setting; wait_replicas=N alone needs only WAIT"
                )
            else:
                why = f"does not know {cmd} (a proxy in between?): connect to Valkey directly"
        elif "appendonly" in low:
            why = (
                "has its AOF off, so it cannot confirm an fsync: turn it on (appendonly yes), "
                "or wait for replicas only (wait_replicas=N without durable)"
            )
        elif "replica" in low:
            why = (
                f"is a replica, where {cmd} cannot confirm anything: point the URL at the "
                "primary (or at the Sentinels: redis+sentinel://host:port,.../SERVICE)"
            )
        elif isinstance(exc, redis.exceptions.NoPermissionError) or "noperm" in low:
            why = (
                f"refuses {cmd} to this URL's user: grant it (+{cmd.lower()}), or turn durable "
                "mode off (durable=0, wait_replicas=0)"
            )
        else:
            why = f"refused {cmd} ({msg})"
        return DurabilityUnsupported(f"durable mode: Valkey at {self.url} {why} ({written})")
