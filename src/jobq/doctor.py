"""`jobq doctor`: check a deployment and say, one line per check, what is ok, what is risky
(warn) and what is broken (fail), each with the fix.

Checks, in order: the topology (one server, or a Sentinel group: every Sentinel reachable, all
naming the same primary, ``SENTINEL CKQUORUM``), the node reached is a primary, its replicas and
their lag, ``min-replicas-to-write`` (a primary with replicas but without it keeps accepting
writes while cut off from them, and a failover then drops them: warn), AOF and ``appendfsync``,
``maxmemory`` and ``maxmemory-policy noeviction``, this jobq version's function library, and
WAITAOF when the settings ask for durable submits (``durable`` / ``wait_replicas``).

Nothing here writes: the checks are INFO, CONFIG GET, FUNCTION LIST, COMMAND INFO and SENTINEL
queries, on connections without jobq's hooks (no library load, no epoch move). A user the
server refuses CONFIG or FUNCTION to (a worker or producer role, acl.py) gets a warning saying
to run the doctor with the admin URL.

Exit codes follow the CLI's table: 0 no check failed (warnings are printed), 1 a check failed
(or, with ``--strict``, warned), 2 usage (a bad URL or setting), 3 the broker (or every
Sentinel) is unreachable.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import click
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .cluster import ClusterMap
from .cluster_url import is_cluster, parse_cluster_url
from .config import Settings
from .errors import ConfigError
from .memory import read_memory
from .scripts import library
from .topology import (
    SENTINEL_TIMEOUT_S,
    SentinelUrl,
    _pairs,
    _ssl_kwargs,
    client_for,
    describe,
    is_sentinel,
    parse_sentinel_url,
    resolver_of,
)

OK, WARN, FAIL = "ok", "warn", "fail"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_BROKER = 0, 1, 2, 3
#: Seconds since a replica's last acknowledgement past which it is reported as lagging (replicas
#: acknowledge every second).
LAG_WARN_S = 10
TIMEOUT_S = 3.0


@dataclass(frozen=True, slots=True)
class Check:
    """One line of the report."""

    name: str
    status: str
    message: str
    fix: str = ""

    def line(self) -> str:
        fix = f"; fix: {self.fix}" if self.fix else ""
        return f"{self.status:<4}  {self.name}: {self.message}{fix}"


class Unreachable(Exception):
    """The checks cannot go on: no Sentinel or no primary answers."""


def _cmd(client: Any, *args: Any) -> Any:
    """One command with its raw reply (redis-py's stubs leave execute_command untyped)."""
    return client.execute_command(*args)


def _flat(reply: Any) -> dict[str, Any]:
    """A map reply (RESP3 dict, or RESP2 flat [k, v, k, v, ...]) with str keys."""
    if isinstance(reply, dict):
        return {_s(k): v for k, v in reply.items()}
    items = list(reply)
    return {_s(items[i]): items[i + 1] for i in range(0, len(items) - 1, 2)}


def _s(v: Any) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


class Doctor:
    """The checks of one deployment (`settings.url`), collected in `checks`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.url = settings.url or ""
        self.checks: list[Check] = []

    def add(self, name: str, status: str, message: str, fix: str = "") -> None:
        self.checks.append(Check(name, status, message, fix))

    def run(self) -> int:
        """Run every check; the exit code (strictness applied by the caller)."""
        if is_cluster(self.url):
            return self._cluster()
        try:
            client = self._topology()
            try:
                self._data_node(client)
            finally:
                client.close()
                resolver = resolver_of(client)
                if resolver is not None:
                    resolver.close()
        except Unreachable:
            return EXIT_BROKER
        return EXIT_FAILED if any(c.status == FAIL for c in self.checks) else EXIT_OK

    def _cluster(self) -> int:
        """A Cluster: its slot map from the seeds, then every data check on each primary (each
        holds partitions of every queue, so each needs what one server needs)."""
        target = parse_cluster_url(self.url)
        cmap = ClusterMap(target.seeds, target.username, target.password, target.ssl)
        try:
            cmap.ensure()
            primaries = cmap.primaries()
            uncovered = sum(owner is None for owner in cmap.slots())
        except (redis.RedisError, OSError) as exc:
            self.add("topology", FAIL, f"no seed of {describe(self.url)} answered ({exc})")
            cmap.close()
            return EXIT_BROKER
        names = ", ".join(f"{h}:{p}" for h, p in primaries)
        status = WARN if uncovered else OK
        self.add(
            "topology",
            status,
            f"Valkey Cluster of {len(primaries)} primaries ({names})"
            + (f"; {uncovered} slots have no owner" if uncovered else ""),
            "assign every slot (CLUSTER ADDSLOTSRANGE) or fix the failed primary"
            if uncovered
            else "",
        )
        try:
            for host, port in primaries:
                client = redis.Redis(
                    host=host,
                    port=port,
                    username=target.username,
                    password=target.password,
                    socket_timeout=TIMEOUT_S,
                    socket_connect_timeout=TIMEOUT_S,
                    retry=Retry(NoBackoff(), 0),
                    ssl=target.ssl,
                )
                try:
                    self._data_node(client)
                finally:
                    client.close()
        except Unreachable:
            return EXIT_BROKER
        finally:
            cmap.close()
        return EXIT_FAILED if any(c.status == FAIL for c in self.checks) else EXIT_OK

    # -- topology ------------------------------------------------------------------------------

    def _topology(self) -> redis.Redis:
        kwargs: dict[str, Any] = {
            "socket_timeout": TIMEOUT_S,
            "socket_connect_timeout": TIMEOUT_S,
            "retry": Retry(NoBackoff(), 0),
        }
        if not is_sentinel(self.url):
            self.add(
                "topology",
                OK,
                f"one server at {describe(self.url)} (no automatic failover: a Sentinel URL, "
                "redis+sentinel://h1,h2,h3/SERVICE, gives one)",
            )
            return client_for(self.url, **kwargs)
        target = parse_sentinel_url(self.url)
        self._sentinels(target)
        return client_for(self.url, **kwargs)

    def _sentinels(self, target: SentinelUrl) -> None:
        svc = target.service
        named: dict[tuple[str, int], str] = {}
        reachable: list[redis.Redis] = []
        for host, port in target.sentinels:
            where = f"{host}:{port}"
            client = redis.Redis(
                host=host,
                port=port,
                username=target.sentinel_username,
                password=target.sentinel_password,
                socket_timeout=SENTINEL_TIMEOUT_S,
                socket_connect_timeout=SENTINEL_TIMEOUT_S,
                retry=Retry(NoBackoff(), 0),
                ssl=target.ssl,
                **_ssl_kwargs(target),
                decode_responses=True,
            )
            try:
                info = _pairs(_cmd(client, "SENTINEL MASTER", svc))
            except (redis.RedisError, OSError) as exc:
                client.close()
                text = " ".join(str(exc).split())
                if "no such master" in text.lower():
                    self.add(
                        f"sentinel {where}",
                        FAIL,
                        f"does not monitor a service {svc!r}",
                        "check the service name in the URL (`SENTINEL MASTERS` lists them)",
                    )
                else:
                    self.add(
                        f"sentinel {where}",
                        FAIL,
                        f"unreachable ({text})",
                        "start it, or fix the address / sentinel_password in the URL",
                    )
                continue
            reachable.append(client)
            addr = (str(info.get("ip")), int(info.get("port", 0)))
            flags = str(info.get("flags", ""))
            named[addr] = named.get(addr, "") + where + " "
            status, fix = OK, ""
            if {"s_down", "o_down"} & set(flags.split(",")):
                status, fix = FAIL, "the primary is down for this Sentinel: a failover is due"
            self.add(
                f"sentinel {where}",
                status,
                f"names primary {addr[0]}:{addr[1]} (flags {flags}, "
                f"{info.get('num-other-sentinels', '?')} other Sentinels, "
                f"{info.get('num-slaves', '?')} replicas, quorum {info.get('quorum', '?')})",
                fix,
            )
        try:
            if not reachable:
                self.add("topology", FAIL, f"no Sentinel of {len(target.sentinels)} answers")
                raise Unreachable
            self._agreement(target, named, reachable)
        finally:
            for c in reachable:
                c.close()

    def _agreement(
        self,
        target: SentinelUrl,
        named: dict[tuple[str, int], str],
        reachable: list[redis.Redis],
    ) -> None:
        n = len(target.sentinels)
        if len(named) == 1:
            (addr,) = named
            self.add(
                "sentinels agree",
                OK,
                f"{len(reachable)} of {n} Sentinels name {addr[0]}:{addr[1]}",
            )
        else:
            split = "; ".join(f"{h}:{p} by {w.strip()}" for (h, p), w in named.items())
            self.add(
                "sentinels agree",
                FAIL,
                f"the Sentinels name different primaries: {split}",
                "a failover may be under way (check again in a few seconds); if it lasts, the "
                "Sentinels do not see each other: check their network and sentinel_password",
            )
        if n < 3:
            self.add(
                "sentinel count",
                WARN,
                f"the URL names {n} Sentinel(s): losing one can leave no majority to fail over",
                "run 3 (or 5) Sentinels on separate hosts and list them all in the URL",
            )
        try:
            reply = _cmd(reachable[0], "SENTINEL", "CKQUORUM", target.service)
            self.add("quorum", OK, " ".join(_s(reply).split()))
        except (redis.RedisError, OSError) as exc:
            self.add(
                "quorum",
                FAIL,
                " ".join(str(exc).split()),
                "start more Sentinels or lower the quorum (`sentinel monitor ... QUORUM`)",
            )

    # -- the data node -------------------------------------------------------------------------

    def _data_node(self, client: redis.Redis) -> None:
        try:
            repl = dict(client.info("replication"))
        except (redis.RedisError, OSError) as exc:
            self.add(
                "primary",
                FAIL,
                f"unreachable ({' '.join(str(exc).split())})",
                "start the server, or fix the URL (host, port, password)",
            )
            raise Unreachable from exc
        where = self._where(client)
        if repl.get("role") != "master":
            self.add(
                "primary",
                FAIL,
                f"{where} is a replica of {repl.get('master_host')}:{repl.get('master_port')}",
                "point the URL at the primary, or use the Sentinel URL so jobq follows it",
            )
        else:
            self.add("primary", OK, f"{where} is a primary")
        replicas = self._replicas(repl)
        config = self._config(client)
        self._min_replicas(config, replicas)
        self._aof(client, config)
        self._memory(client)
        self._library(client)
        self._durable(client, config, replicas)

    def _where(self, client: redis.Redis) -> str:
        kw = client.connection_pool.connection_kwargs
        if "path" in kw:
            return f"unix:{kw['path']}"
        conn = client.connection_pool.get_connection()
        try:
            return f"{conn.host}:{conn.port}"
        finally:
            client.connection_pool.release(conn)

    def _replicas(self, repl: dict[str, Any]) -> list[dict[str, Any]]:
        """One line per replica; the replicas (INFO's slaveN dicts) returned."""
        rows = [v for k, v in sorted(repl.items()) if k.startswith("slave") and isinstance(v, dict)]
        offset = int(repl.get("master_repl_offset", 0))
        if not rows:
            if is_sentinel(self.url):
                self.add(
                    "replicas",
                    WARN,
                    "the primary has no replica: Sentinel has nothing to promote",
                    "start a replica (`replicaof PRIMARY PORT`) on another host",
                )
            else:
                self.add("replicas", OK, "none (a copy of the data exists only on this server)")
        for r in rows:
            name = f"replica {r.get('ip')}:{r.get('port')}"
            behind = max(0, offset - int(r.get("offset", 0)))
            lag = int(r.get("lag", 0))
            text = f"{r.get('state')}, {behind} bytes behind, last ack {lag} s ago"
            if r.get("state") != "online":
                self.add(name, WARN, text, "it is still syncing, or cannot: see its log")
            elif lag > LAG_WARN_S:
                self.add(name, WARN, text, "check the replica's host, network and log")
            else:
                self.add(name, OK, text)
        return rows

    def _config(self, client: redis.Redis) -> dict[str, str] | None:
        names = ("appendonly", "appendfsync", "min-replicas-to-write", "min-replicas-max-lag")
        try:
            raw: Any = _cmd(client, "CONFIG", "GET", *names)
        except (redis.RedisError, OSError) as exc:
            self.add(
                "config",
                WARN,
                f"cannot read the server's configuration ({' '.join(str(exc).split())})",
                "run `jobq doctor` with the admin URL (`jobq acl --show-secrets`)",
            )
            return None
        return {k: _s(v) for k, v in _flat(raw).items()}

    def _min_replicas(self, config: dict[str, str] | None, replicas: list[dict[str, Any]]) -> None:
        if config is None:
            return
        need = int(config.get("min-replicas-to-write", "0") or 0)
        max_lag = int(config.get("min-replicas-max-lag", "10") or 10)
        good = sum(
            1 for r in replicas if r.get("state") == "online" and int(r.get("lag", 0)) <= max_lag
        )
        fix = (
            "on every data node: CONFIG SET min-replicas-to-write 1, CONFIG SET "
            "min-replicas-max-lag 10, then CONFIG REWRITE (or put both in its config file)"
        )
        if need == 0 and replicas:
            self.add(
                "min-replicas-to-write",
                WARN,
                "0: a primary cut off from its replicas keeps acknowledging writes, which the "
                "failover that replaces it then drops",
                fix,
            )
        elif need == 0:
            self.add("min-replicas-to-write", OK, "0 (no replicas to require)")
        elif good < need:
            self.add(
                "min-replicas-to-write",
                FAIL,
                f"{need} (max lag {max_lag} s) but {good} replica(s) qualify: the primary "
                "refuses every write now (NOREPLICAS)",
                "bring the replicas back, or lower min-replicas-to-write",
            )
        else:
            self.add(
                "min-replicas-to-write",
                OK,
                f"{need} (max lag {max_lag} s); {good} replica(s) qualify",
            )

    def _aof(self, client: redis.Redis, config: dict[str, str] | None) -> None:
        if config is None:
            return
        try:
            persistence = dict(client.info("persistence"))
        except (redis.RedisError, OSError):
            persistence = {}
        if config.get("appendonly") != "yes":
            self.add(
                "aof",
                WARN,
                "appendonly is no: a restart loses every job since the last snapshot",
                "CONFIG SET appendonly yes, then CONFIG REWRITE (the embedded server has it on)",
            )
        elif persistence.get("aof_last_write_status", "ok") != "ok":
            self.add(
                "aof",
                FAIL,
                f"the last AOF write failed ({persistence.get('aof_last_write_status')})",
                "check the server's disk (space, permissions) and its log",
            )
        else:
            fsync = config.get("appendfsync", "?")
            status, text, fix = OK, f"on, appendfsync {fsync}", ""
            if fsync == "everysec":
                text += " (a power cut may lose about the last second: durable=1 avoids it)"
            elif fsync != "always":
                status = WARN
                text += " (the OS flushes when it likes: a power cut may lose much more)"
                fix = "CONFIG SET appendfsync everysec (or always)"
            self.add("aof", status, text, fix)

    def _memory(self, client: redis.Redis) -> None:
        try:
            mem = read_memory(client)
        except (redis.RedisError, OSError) as exc:
            self.add("memory", WARN, f"cannot read INFO memory ({exc})")
            return
        if mem.evicts:
            self.add(
                "maxmemory-policy",
                FAIL,
                f"{mem.policy}: a full server deletes keys, i.e. jobs",
                "CONFIG SET maxmemory-policy noeviction, then CONFIG REWRITE",
            )
        else:
            self.add("maxmemory-policy", OK, "noeviction")
        limit = self.settings.memory_limit
        if not mem.maxmemory:
            self.add(
                "maxmemory",
                WARN,
                "no limit: jobq cannot refuse submits before the machine runs out of memory",
                "CONFIG SET maxmemory <bytes> (e.g. half the RAM), then CONFIG REWRITE",
            )
        elif mem.share is not None and mem.share >= limit:
            self.add(
                "maxmemory",
                FAIL,
                f"{mem.share:.0%} used of {mem.maxmemory} bytes: submits are refused "
                f"(memory_limit {limit:.0%})",
                "let workers drain the queues, purge, or raise maxmemory",
            )
        else:
            share = mem.share or 0.0
            self.add("maxmemory", OK, f"{share:.0%} used of {mem.maxmemory} bytes")

    def _library(self, client: redis.Redis) -> None:
        mine = library()[0]
        try:
            rows: Any = _cmd(client, "FUNCTION", "LIST", "LIBRARYNAME", "jobq_*")
        except (redis.RedisError, OSError) as exc:
            self.add(
                "function library",
                WARN,
                f"cannot list functions ({' '.join(str(exc).split())})",
                "run `jobq doctor` with the admin URL",
            )
            return
        names = sorted(_s(_flat(r).get("library_name", "")) for r in rows)
        others = [n for n in names if n != mine]
        if mine in names:
            extra = f" (also loaded: {', '.join(others)})" if others else ""
            self.add("function library", OK, f"{mine}, this jobq version's, is loaded{extra}")
        else:
            self.add(
                "function library",
                WARN,
                f"{mine} (this jobq version's) is not loaded"
                + (f"; loaded: {', '.join(others)} (another jobq version)" if others else ""),
                "start `jobq master` of this version, or connect once with the admin URL; run "
                "one jobq version everywhere",
            )

    def _durable(
        self, client: redis.Redis, config: dict[str, str] | None, replicas: list[dict[str, Any]]
    ) -> None:
        s = self.settings
        if not s.durable and s.wait_replicas <= 0:
            self.add("waitaof", OK, "not needed (durable off, wait_replicas 0)")
            return
        try:
            reply: Any = _cmd(client, "COMMAND", "INFO", "WAITAOF")
            known = bool(reply) and (
                any(reply.values()) if isinstance(reply, dict) else reply[0] is not None
            )
        except (redis.RedisError, OSError):
            known = False
        asked = f"durable={int(s.durable)}, wait_replicas={s.wait_replicas}"
        if not known:
            self.add(
                "waitaof",
                FAIL,
                f"{asked} asked, but the server has no WAITAOF (or this user may not see it)",
                "use Valkey >= 8 or Redis >= 7.2, or drop durable/wait_replicas",
            )
            return
        if config is not None and config.get("appendonly") != "yes":
            self.add("waitaof", FAIL, f"{asked} asked, but AOF is off", "CONFIG SET appendonly yes")
            return
        online = sum(1 for r in replicas if r.get("state") == "online")
        if s.wait_replicas > online:
            self.add(
                "waitaof",
                FAIL,
                f"wait_replicas={s.wait_replicas} but {online} replica(s) are online: every "
                "durable submit times out",
                "start more replicas (with appendonly yes), or lower wait_replicas",
            )
            return
        self.add(
            "waitaof",
            OK,
            f"supported ({asked}; the replicas waited for need appendonly yes as well)",
        )


def diagnose(settings: Settings) -> tuple[int, list[Check]]:
    """Run the checks of the deployment `settings` names: (exit code, checks)."""
    doctor = Doctor(settings)
    return doctor.run(), doctor.checks


def _settings(url: str | None, prefix: str | None) -> Settings:
    from .embedded import server_url

    settings = Settings.from_env().with_overrides(url=url, prefix=prefix)
    if settings.url:
        return settings
    found = server_url(settings.data_dir)
    if found is None:
        raise Unreachable
    return settings.with_overrides(url=found)


@click.command("doctor")
@click.option("--url", envvar="JOBQ_URL", help="Broker URL (default: the embedded Valkey).")
@click.option(
    "--prefix",
    envvar="JOBQ_PREFIX",
    help="Key prefix (accepted as everywhere; checks are per server).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON document instead of lines.")
@click.option("--strict", is_flag=True, help="Exit 1 on warnings too.")
def doctor_command(url: str | None, prefix: str | None, as_json: bool, strict: bool) -> None:
    """Check a deployment: topology (Sentinels, quorum), primary, replicas and their lag,
    min-replicas-to-write, AOF, maxmemory policy, function library, WAITAOF.

    One line per check: ok, warn (risky; says the fix) or fail (broken; says the fix).
    Exit codes: 0 no check failed (warnings allowed), 1 a check failed (or warned, with
    --strict), 2 bad URL or setting, 3 broker or every Sentinel unreachable.
    """
    emit: Callable[[str], None] = click.echo
    shown: str | None = None
    try:
        settings = _settings(url, prefix)
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    except Unreachable:
        checks = [
            Check(
                "topology",
                FAIL,
                "no --url / JOBQ_URL, and the embedded server is not running",
                "give --url, or start it (`jobq server start`)",
            )
        ]
        code = EXIT_BROKER
    else:
        shown = describe(settings.url or "")
        try:
            code, checks = diagnose(settings)
        except ConfigError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_USAGE)
    if strict and code == EXIT_OK and any(c.status == WARN for c in checks):
        code = EXIT_FAILED
    counts = {k: sum(1 for c in checks if c.status == k) for k in (OK, WARN, FAIL)}
    if as_json:
        emit(
            json.dumps(
                {
                    "url": shown,
                    "checks": [asdict(c) for c in checks],
                    "summary": counts,
                    "exit_code": code,
                },
                indent=2,
            )
        )
    else:
        for c in checks:
            emit(c.line())
        emit(f"{counts[OK]} ok, {counts[WARN]} warning(s), {counts[FAIL]} failure(s)")
    sys.exit(code)
