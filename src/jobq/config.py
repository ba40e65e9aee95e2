"""One frozen settings object with every default, documented.

Precedence: built-in defaults < environment (``JOBQ_*``) < settings carried by the URL's query
(``?durable=1``, see `URL_SETTINGS`) < explicit arguments (CLI flags, keyword arguments).
The environment is injectable (`Settings.from_env(env=...)`) so nothing reads globals at import.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .errors import ConfigError


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a client, worker or master needs to agree on."""

    url: str | None = None
    """Broker URL: redis://, rediss://, unix:// (one server) or
    redis+sentinel://[user:password@]host:port,host:port/SERVICE (a Sentinel group; see
    topology.py). None = the embedded Valkey in `data_dir`."""
    prefix: str = "jobq"
    """Key prefix; several deployments (or test runs) can share one server."""
    data_dir: str = ".jobq"
    """Where the embedded server keeps its AOF, socket and state file."""
    codec: str = "json"
    """Codec for arguments and results: json, msgpack, or pickle (opt-in, runs code on load)."""
    allow_pickle: bool = False
    """Accept pickle payloads from producers (only if every producer is trusted)."""
    lease_ms: int = 30_000
    """How long a claim stays valid without a heartbeat before the job is requeued."""
    heartbeat_ms: int = 10_000
    """How often a worker extends the leases of its running jobs (keep well under lease_ms)."""
    result_ttl_s: int = 86_400
    """How long a finished job (and its result) is kept; dead-lettered jobs: `dead_ttl_s`."""
    dead_ttl_s: int = 7 * 86_400
    """How long a dead-lettered (failed) job stays inspectable and re-runnable before the
    maintenance loop drops it (0 = keep forever)."""
    events_maxlen: int = 100_000
    """Approximate cap of the event stream."""
    tick_ms: int = 200
    """Maintenance tick: promote due jobs, reap expired leases."""
    worker_gone_ms: int = 60_000
    """The named-worker grace: a job targeted at a worker (``worker=``) not seen for this long,
    or at a group (``worker_group=``) none of whose members was, moves to its fallback queue
    (``fallback=``), or fails naming the worker without one; sized so a restart keeps its
    jobs and a dead host's jobs move on within about a minute."""
    unknown_task_ms: int = 60_000
    """A worker that claims a job of a task it does not know gives it back for a worker that
    does (the attempt not counted, tried again about a second later); only once no live worker
    (seen within `worker_gone_ms`) has known the task for this long does the job fail with
    `UnknownTask`, naming the tasks live workers know. ``JOBQ_UNKNOWN_TASK_MS``."""
    leader_ms: int = 5_000
    """Leader lease of the maintenance loop; a new leader takes over this long after one dies."""
    durable: bool = False
    """Acknowledge a submit (and record an outcome) only once the server has fsynced it to its
    AOF (WAITAOF, Valkey >= 8 / Redis >= 7.2); the embedded server then runs with
    ``appendfsync always``. Default off: ``appendfsync everysec`` may lose up to about a second
    of acknowledged writes on a power cut. Also ``?durable=1`` on the URL."""
    wait_replicas: int = 0
    """Acknowledge a submit (and record an outcome) only once this many replicas have it:
    received (WAIT), so a failover loses no acknowledged job; with `durable` also fsynced to
    their own AOF (WAITAOF; replicas without AOF never confirm). See jobq.durability for the
    loss window of each. Also ``?wait_replicas=N`` on the URL."""
    durable_timeout_ms: int = 5_000
    """How long a durable write waits for its acknowledgements before `DurabilityTimeout`
    (longer than one ``everysec`` fsync interval). Also ``?durable_timeout_ms=`` on the URL."""
    memory_limit: float = 0.9
    """Share of the server's maxmemory past which submits are refused (`BrokerFull`), leaving
    the rest for the claims and results of queued jobs; 1 = only when the server is full."""
    embedded_memory: str = "50%"
    """maxmemory of the embedded server (noeviction): bytes with a unit (512mb, 2gb) or a share
    of the machine's RAM (50%); 0 = no limit. Applied when the server starts."""
    read_from_replicas: bool = False
    """Let the master serve its stale-tolerant reads (job lists, queue stats, workers,
    /metrics) from a replica that is at most `max_staleness_ms` behind (replicas.py); job
    status, results and every write stay on the primary. Also ``?read_from_replicas=1``."""
    max_staleness_ms: int = 1000
    """How far behind the primary a replica's answers may be when `read_from_replicas` is on:
    a replica serves only while it provably holds every write acknowledged that long ago.
    Also ``?max_staleness_ms=`` on the URL."""
    max_lost: int = 3
    """How often a job may lose its worker (killed, or cut off past its lease) while running
    before it is dead-lettered as a poison pill; apart from the task's retries. Jobs claimed
    ahead that never started are released without counting."""
    failover_wait_s: float | None = None
    """How long a submit waits for a primary when the broker cannot serve (connection refused,
    a replica where the primary was, no Sentinel naming a primary, LOADING, ...) before it
    raises `BrokerUnavailable`, retrying with back-off meanwhile (safe: enqueue is idempotent
    per job id). Waiting for a result (`Job.result`) rides out the same bound. None = 45 s on a
    Sentinel URL: a failover takes Sentinel's ``down-after-milliseconds`` (30 s as shipped,
    often set to 5-10 s) plus a vote and a promotion (a few seconds), so 45 s covers even the
    shipped default; the same on a Cluster URL (a replica takes over after the cluster's
    ``cluster-node-timeout``, 15 s as shipped, and an election). On a one-server URL None
    means submits fail at once (there is no other primary to wait for, and a stopped server
    or a wrong URL should say so now) and result
    waits ride out 30 s; set it to ride out restarts there too. The HTTP API waits at most a
    few seconds of it, then answers 503. Also ``?failover_wait_s=`` on the URL."""
    partitions: int | None = None
    """How many partitions (slots) a NEW deployment is split into; each queue is spread over
    all of them. None = one on one server or a Sentinel group (the layout jobq always had),
    the number of primaries on a Cluster (so one queue uses every primary). Fixed when the
    deployment is first used (stored in its control partition, layout.py): a process asking
    for another count follows the stored one and logs it. Also ``?partitions=`` on the URL."""

    queue_partitions: str = ""
    """Queues to keep to fewer partitions than all: ``name=k,name=k`` (``JOBQ_QUEUE_PARTITIONS``);
    ``slow=1`` puts every job of queue ``slow`` in one partition, where priorities and FIFO
    order are exact. Jobs with a concurrency or unique key still go by key. Producers apply
    it (workers serve every partition anyway); give every producer the same value."""

    def queue_spread(self) -> dict[str, int]:
        """`queue_partitions` parsed: queue -> how many partitions it uses."""
        out: dict[str, int] = {}
        for item in filter(None, (p.strip() for p in self.queue_partitions.split(","))):
            name, sep, k = item.rpartition("=")
            if not sep or not name or not k.isdigit() or int(k) < 1:
                raise ConfigError(
                    f"queue_partitions item {item!r}: expected name=k with k >= 1, e.g. "
                    "JOBQ_QUEUE_PARTITIONS=reports=1,emails=2"
                )
            out[name] = int(k)
        return out

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``JOBQ_<FIELD>`` variables, then apply non-None overrides."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get("JOBQ_" + f.name.upper())
            if raw is None or raw == "":
                continue
            values[f.name] = _convert(f.name, raw, f.type)
        if values.get("url"):
            values["url"], from_url = url_options(values["url"])
            values.update(from_url)
        settings = cls(**values)
        return settings.with_overrides(**overrides)

    def with_overrides(self, **overrides: Any) -> Settings:
        """A copy with every override that is not None applied."""
        given = {k: v for k, v in overrides.items() if v is not None}
        if given.get("url"):  # the URL's own settings, below explicit arguments
            given["url"], from_url = url_options(given["url"])
            given = {**from_url, **given}
        unknown = set(given) - {f.name for f in fields(self)}
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        out = replace(self, **given)
        out.validate()
        return out

    def validate(self) -> None:
        if self.heartbeat_ms >= self.lease_ms:
            raise ConfigError(
                f"heartbeat_ms ({self.heartbeat_ms}) must be below lease_ms ({self.lease_ms}), "
                "or leases expire between heartbeats"
            )
        if self.worker_gone_ms and self.worker_gone_ms < 2 * self.heartbeat_ms:
            raise ConfigError(
                f"worker_gone_ms ({self.worker_gone_ms}) must be at least twice heartbeat_ms "
                f"({self.heartbeat_ms}), or live workers are taken for gone between heartbeats"
            )
        if not 0 < self.memory_limit <= 1:
            raise ConfigError(
                f"memory_limit ({self.memory_limit}) must be a share of maxmemory in (0, 1], "
                "e.g. JOBQ_MEMORY_LIMIT=0.9"
            )
        if self.max_lost < 1:
            raise ConfigError(f"max_lost ({self.max_lost}) must be at least 1")
        if self.lease_ms <= 0 or self.tick_ms <= 0:
            raise ConfigError("lease_ms and tick_ms must be positive")
        if self.max_staleness_ms <= 0:
            raise ConfigError(
                f"max_staleness_ms ({self.max_staleness_ms}) must be positive, e.g. "
                "JOBQ_MAX_STALENESS_MS=1000"
            )
        if self.failover_wait_s is not None and not 0 <= self.failover_wait_s <= 86_400:
            raise ConfigError(
                f"failover_wait_s ({self.failover_wait_s}) must be seconds in [0, 86400], "
                "e.g. JOBQ_FAILOVER_WAIT_S=30"
            )
        self.queue_spread()  # (raises a ConfigError naming a malformed item)
        if self.partitions is not None and not 1 <= self.partitions <= 256:
            raise ConfigError(
                f"partitions ({self.partitions}) must be between 1 and 256, e.g. JOBQ_PARTITIONS=6"
            )
        if self.wait_replicas < 0 or self.durable_timeout_ms <= 0:
            raise ConfigError(
                f"wait_replicas ({self.wait_replicas}) must be >= 0 and durable_timeout_ms "
                f"({self.durable_timeout_ms}) positive"
            )


#: Settings a broker URL may carry as query parameters (``redis://h:6379/0?durable=1``); they
#: are taken out of the URL before it reaches redis-py, which would refuse them.
URL_SETTINGS = (
    "durable",
    "wait_replicas",
    "durable_timeout_ms",
    "failover_wait_s",
    "read_from_replicas",
    "max_staleness_ms",
    "partitions",
)


def url_options(url: str) -> tuple[str, dict[str, Any]]:
    """The URL without jobq's own query parameters, and those parameters as settings."""
    parts = urlsplit(url)
    if not parts.query:
        return url, {}
    types = {f.name: f.type for f in fields(Settings)}
    ours: dict[str, Any] = {}
    rest: list[tuple[str, str]] = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in URL_SETTINGS:
            try:
                ours[name] = _convert(name, value, types[name])
            except ConfigError:
                raise ConfigError(
                    f"?{name}={value!r} in the broker URL is not a valid {types[name]}"
                ) from None
        else:
            rest.append((name, value))
    if not ours:
        return url, {}
    return urlunsplit(parts._replace(query=urlencode(rest))), ours


def _convert(name: str, raw: str, typ: Any) -> Any:
    kind = str(typ)
    try:
        if "bool" in kind:
            return raw.strip().lower() in ("1", "true", "yes", "on")
        if "int" in kind:
            return int(raw)
        if "float" in kind:
            return float(raw.strip().removesuffix("%")) / (100 if raw.strip().endswith("%") else 1)
    except ValueError as exc:
        raise ConfigError(f"JOBQ_{name.upper()}={raw!r} is not a valid {kind}") from exc
    return raw
