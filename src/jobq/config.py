"""One frozen settings object with every default, documented.

Precedence: built-in defaults < environment (``JOBQ_*``) < explicit arguments (URL, CLI flags).
The environment is injectable (`Settings.from_env(env=...)`) so nothing reads globals at import.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from .errors import ConfigError


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a client, worker or master needs to agree on."""

    url: str | None = None
    """Broker URL (redis://, rediss://, unix://). None = the embedded Valkey in `data_dir`."""
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
    """How long a finished job (and its result) is kept; dead-lettered jobs stay until re-run."""
    events_maxlen: int = 100_000
    """Approximate cap of the event stream."""
    tick_ms: int = 200
    """Maintenance tick: promote due jobs, reap expired leases."""
    worker_gone_ms: int = 300_000
    """A job targeted at a worker not seen for this long fails (or goes to its fallback)."""
    leader_ms: int = 5_000
    """Leader lease of the maintenance loop; a new leader takes over this long after one dies."""
    max_lost: int = 3
    """How often a job may lose its worker (killed, or cut off past its lease) while running
    before it is dead-lettered as a poison pill; apart from the task's retries. Jobs claimed
    ahead that never started are released without counting."""

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
        settings = cls(**values)
        return settings.with_overrides(**overrides)

    def with_overrides(self, **overrides: Any) -> Settings:
        """A copy with every override that is not None applied."""
        given = {k: v for k, v in overrides.items() if v is not None}
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
        if self.max_lost < 1:
            raise ConfigError(f"max_lost ({self.max_lost}) must be at least 1")
        if self.lease_ms <= 0 or self.tick_ms <= 0:
            raise ConfigError("lease_ms and tick_ms must be positive")


def _convert(name: str, raw: str, typ: Any) -> Any:
    kind = str(typ)
    try:
        if "bool" in kind:
            return raw.strip().lower() in ("1", "true", "yes", "on")
        if "int" in kind:
            return int(raw)
    except ValueError as exc:
        raise ConfigError(f"JOBQ_{name.upper()}={raw!r} is not a valid {kind}") from exc
    return raw
