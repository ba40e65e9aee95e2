"""Where the primary is: one URL picks the topology, and every connection jobq opens goes to the
node that is the primary now, or to none.

- ``redis://``, ``rediss://``, ``unix://``: one server, at the address the URL names.
- ``redis+sentinel://[user:password@]h1:p1[,h2:p2...]/SERVICE[/DB]`` (also ``valkey+sentinel://``,
  and ``rediss+sentinel://`` or ``?ssl=1`` for TLS to the data nodes; ``?sentinel_password=``
  and ``?sentinel_username=`` when the Sentinels have their own credentials): a Sentinel group.
  The user and password in the URL are the data nodes'.
- ``redis+cluster://[user:password@]h1:p1[,h2:p2...]`` (cluster_url.py, cluster.py): a Valkey
  Cluster; each client follows the primary of one hash slot (`cluster.client_for_slot`).

Every connection is a `PrimaryConnection` (or its TLS/unix sibling). Two things happen on each
connect and reconnect, in the one method every path of redis-py goes through:

1. **Resolve** (Sentinel only): `_connect`, the socket dial itself, asks the Sentinels for the
   primary's address right before dialing. redis-py's own `SentinelManagedConnection` resolves in
   `connect()`, but `send_packed_command` reconnects through `connect_check_health()`, which
   skips `connect()` and dials the connection's default host, ``localhost:6379``: the lean path
   of `scripts.py` would then talk to whatever runs there (a machine's own Redis). Here the
   default host is an ``.invalid`` name that cannot resolve, and no dial happens without an
   address the Sentinels gave.
2. **Check** (every topology): after the handshake, the hooks the stores installed run on the
   new connection before any command of the caller; `Scripts.check_primary` refuses a node that
   is not a primary (a demoted old primary restarted from its AOF, a replica named by mistake)
   and moves the fencing-token epoch when the primary changed. A READONLY reply on an open
   connection (the node was demoted under it) drops the connection and raises a connection
   error, so the caller's usual reconnect finds the new primary.

3. **Recheck** (Sentinel only): an open connection, before each command and after each reply,
   compares its node with the primary the Sentinels name (all of them surveyed at most every
   `FRESH_S`; none is named while one of them is failing the service over). Sentinel demotes
   a reachable old primary only ~10 s after promoting a replica (a `SENTINEL FAILOVER`, a
   primary stopped and resumed), and that node takes every write meanwhile, then its demotion
   wipes them: measured in tests/chaos/test_chaos_ha.py, 1,920 of 2,400 acknowledged jobs
   without this check. A stale connection redials before sending; a reply that arrived from
   a replaced node is `NotPrimary` (a connection error the callers retry), not an ack.

The Sentinels are asked with short timeouts, starting with the one that answered last; one that
says the primary is down (``s_down``/``o_down``) is not believed. Nothing here retries: the
callers' loops already back off (`outage.py`), and `Scripts.execute` reconnects briefly.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qsl, unquote

import redis
from redis.backoff import NoBackoff
from redis.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    ReadOnlyError,
    TryAgainError,
)
from redis.retry import Retry

from . import cluster_url
from .errors import ConfigError

SENTINEL_SCHEMES = ("redis+sentinel", "valkey+sentinel", "rediss+sentinel", "valkeys+sentinel")
PLAIN_SCHEMES = ("redis", "rediss", "valkey", "valkeys", "unix")
DEFAULT_SENTINEL_PORT = 26379
#: A host name that can never resolve (RFC 2606): what a Sentinel-managed connection dials if
#: anything ever dialed before resolving, instead of redis-py's default localhost.
UNRESOLVED_HOST = "primary-not-resolved.invalid"
#: How long one Sentinel may take to answer before the next one is asked.
SENTINEL_TIMEOUT_S = 1.0
#: How old the Sentinels' answer may be when a connection checks, before sending a command,
#: that its node is still the primary (`_Hooked.send_packed_command`); when no Sentinel
#: answers, they are asked again after RECHECK_S, not on every command.
FRESH_S = 0.1
RECHECK_S = 2.0
#: A Sentinel that did not answer a survey is left out of the next ones for this long: with one
#: of three hosts cut off, a survey must not wait out its timeout every FRESH_S.
QUIET_S = 5.0
#: What `SentinelResolver.current` names while a failover is under way (no node is at it).
FAILING_OVER = ("failover-in-progress.invalid", 0)

#: Called on every new connection after its handshake, before the caller's first command.
Hook = Callable[[Connection], None]
_SSL_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs", "ssl_ca_path")


class NotPrimary(redis.ConnectionError):
    """The node reached is a replica (demoted in a failover, or named by mistake): a connection
    error, so every caller's reconnect logic applies and, on a Sentinel URL, finds the primary."""


class NoPrimary(redis.ConnectionError):
    """No Sentinel of the group names a primary that is up: a failover under way, or a wrong
    service name. A connection error, so callers retry (within their bounds)."""


class SlotMoved(redis.ConnectionError):
    """A Cluster node refused a command for the connection's slot (MOVED, ASK, TRYAGAIN,
    CLUSTERDOWN): the slot moved (resharding, failover) or is moving, or the cluster is down.
    The command was never executed, so resending is safe: a connection error, so the callers'
    reconnect finds the slot's owner in the refreshed map."""


class Resolver(Protocol):
    """Where a connection dials: `SentinelResolver`, or `cluster.SlotResolver` (the owner of
    one hash slot). `primary` is asked on every dial, `current` (cached, cheap) before each
    command and after each reply."""

    def primary(self) -> tuple[str, int]: ...

    def current(self) -> tuple[str, int] | None: ...

    def replicas(self) -> list[tuple[str, int]]: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class SentinelUrl:
    """A parsed ``redis+sentinel://`` URL."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None
    ssl: bool = False
    ssl_options: dict[str, str] = field(default_factory=dict)


def is_sentinel(url: str) -> bool:
    """Whether `url` names a Sentinel group."""
    return url.split("://", 1)[0].lower() in SENTINEL_SCHEMES


def check_url(url: str) -> None:
    """Raise `ConfigError` (saying what to write instead) unless jobq can use `url`."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in SENTINEL_SCHEMES:
        parse_sentinel_url(url)
        return
    if scheme in cluster_url.CLUSTER_SCHEMES:
        cluster_url.parse_cluster_url(url)
        return
    if scheme not in PLAIN_SCHEMES:
        raise ConfigError(
            f"broker URL {_shown(url)!r}: unknown scheme {scheme or '(none)'!r}; use "
            "redis://host:port/0, rediss:// (TLS), unix:///path/to.sock, "
            "redis+sentinel://host:port,host:port/SERVICE, or "
            "redis+cluster://host:port,host:port (a Valkey Cluster)"
        )


def parse_sentinel_url(url: str) -> SentinelUrl:
    """Parse ``redis+sentinel://[user:pw@]h1:p1,h2:p2/SERVICE[/DB][?options]``."""
    scheme, _, rest = url.partition("://")
    netloc, _, tail = rest.partition("/")
    path, _, query = tail.partition("?")
    userinfo, at, hosts = netloc.rpartition("@")
    if not at:
        userinfo, hosts = "", netloc
    username, _, password = userinfo.partition(":")
    shown = _shown(url)
    example = "redis+sentinel://:PASSWORD@host1:26379,host2:26379,host3:26379/jobq"
    sentinels = tuple(_host_port(h, shown) for h in hosts.split(",") if h.strip())
    if not sentinels:
        raise ConfigError(f"broker URL {shown!r} names no Sentinel: write {example}")
    parts = [p for p in path.split("/") if p]
    if not parts or len(parts) > 2:
        raise ConfigError(
            f"broker URL {shown!r}: the path must be /SERVICE or /SERVICE/DB (the name the "
            f"Sentinels monitor the primary under), e.g. {example}"
        )
    db = 0
    if len(parts) == 2:
        if not parts[1].isdigit():
            raise ConfigError(f"broker URL {shown!r}: database {parts[1]!r} is not a number")
        db = int(parts[1])
    opts = dict(parse_qsl(query, keep_blank_values=True))
    unknown = set(opts) - {"sentinel_password", "sentinel_username", "ssl", *_SSL_OPTIONS}
    if unknown:
        raise ConfigError(
            f"broker URL {shown!r}: unknown option(s) {', '.join(sorted(unknown))} for a "
            "Sentinel URL (known: sentinel_password, sentinel_username, ssl, ssl_ca_certs, "
            "ssl_certfile, ssl_keyfile, ssl_cert_reqs, and jobq's own settings)"
        )
    ssl = scheme.lower().startswith(("rediss", "valkeys")) or opts.get("ssl", "").lower() in (
        "1",
        "true",
        "yes",
    )
    return SentinelUrl(
        sentinels=sentinels,
        service=unquote(parts[0]),
        db=db,
        username=unquote(username) or None,
        password=unquote(password) or None,
        sentinel_username=opts.get("sentinel_username") or None,
        sentinel_password=opts.get("sentinel_password") or None,
        ssl=ssl,
        ssl_options={k: v for k, v in opts.items() if k in _SSL_OPTIONS},
    )


def _host_port(text: str, shown: str) -> tuple[str, int]:
    text = text.strip()
    if text.startswith("["):  # [ipv6]:port
        host, _, port = text[1:].partition("]")
        port = port.removeprefix(":")
    else:
        host, _, port = text.rpartition(":") if ":" in text else (text, "", "")
    if not host:
        raise ConfigError(f"broker URL {shown!r}: Sentinel {text!r} has no host")
    if port and not port.isdigit():
        raise ConfigError(f"broker URL {shown!r}: Sentinel {text!r} has a bad port")
    return host, int(port) if port else DEFAULT_SENTINEL_PORT


def _shown(url: str) -> str:
    """`url` with its passwords hidden (the store's `redact` handles one-host URLs only)."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, hosts = rest.rpartition("@")
    if at and ":" in userinfo:
        rest = userinfo.partition(":")[0] + ":***@" + hosts
    out = scheme + sep + rest
    if "password=" in out:
        head, _, query = out.partition("?")
        pairs = [
            (k, "***" if "password" in k else v)
            for k, v in parse_qsl(query, keep_blank_values=True)
        ]
        out = head + "?" + "&".join(f"{k}={v}" for k, v in pairs)
    return out


class SentinelResolver:
    """Asks a Sentinel group where the primary (and the replicas) of one service are."""

    def __init__(self, target: SentinelUrl) -> None:
        self.target = target
        self._order = list(target.sentinels)
        self._clients: dict[tuple[str, int], redis.Redis] = {}
        self._lock = threading.Lock()
        self._last: tuple[str, int] | None = None  # the primary as last resolved
        self._next = 0.0  # monotonic time after which current() asks again
        self._refreshing = threading.Lock()
        self._failover = False  # a Sentinel said it is failing the service over
        self._quiet: dict[tuple[str, int], float] = {}  # Sentinel -> skip in surveys until

    def _client(self, addr: tuple[str, int]) -> redis.Redis:
        client = self._clients.get(addr)
        if client is None:
            t = self.target
            client = self._clients[addr] = redis.Redis(
                host=addr[0],
                port=addr[1],
                username=t.sentinel_username,
                password=t.sentinel_password,
                socket_timeout=SENTINEL_TIMEOUT_S,
                socket_connect_timeout=SENTINEL_TIMEOUT_S,
                ssl=t.ssl,
                **_ssl_kwargs(t),
                retry=Retry(NoBackoff(), 0),  # the next Sentinel is the retry
                decode_responses=True,
            )
        return client

    def _ask(self, ask: Callable[[redis.Redis], Any]) -> Any:
        """`ask` of the first Sentinel that answers; that one is asked first next time."""
        errors: list[str] = []
        with self._lock:
            order = list(self._order)
        for addr in order:
            try:
                answer = ask(self._client(addr))
            except redis.AuthenticationError:  # a wrong Sentinel password: no retry fixes it
                raise
            except (redis.RedisError, OSError) as exc:
                errors.append(f"{addr[0]}:{addr[1]}: {exc}")
                continue
            if answer is None:
                errors.append(f"{addr[0]}:{addr[1]}: says the primary is down")
                continue
            with self._lock:
                if self._order[0] != addr and addr in self._order:
                    self._order.remove(addr)
                    self._order.insert(0, addr)
            return answer
        names = ", ".join(f"{h}:{p}" for h, p in order)
        raise NoPrimary(
            f"no Sentinel of {names} names a reachable primary for service "
            f"{self.target.service!r} ({'; '.join(errors)}); a failover may be under way, or "
            "the service name is wrong (`SENTINEL MASTERS` on a Sentinel lists them)"
        )

    def primary(self) -> tuple[str, int]:
        """The primary's address, as the first Sentinel that believes it is up says; refused
        while the last survey (`current`) saw a Sentinel failing the service over."""
        if self._failover:
            if time.monotonic() >= self._next:
                self._next = time.monotonic() + FRESH_S
                self._survey()
            if self._failover:
                raise redis.ConnectionError(
                    f"a Sentinel is failing over service {self.target.service!r}: no primary "
                    "to write to until it names the new one (usually a few seconds)"
                )

        def ask(client: Any) -> tuple[str, int] | None:
            state: Any = client.execute_command("SENTINEL MASTER", self.target.service)
            return _believed(_pairs(state))

        host, port = self._ask(ask)
        self._last, self._next = (host, port), time.monotonic() + FRESH_S
        return host, port

    def current(self) -> tuple[str, int] | None:
        """The primary as last surveyed, surveyed again when older than FRESH_S (by one
        thread; the others go on with the last answer); FAILING_OVER while a Sentinel is
        failing the service over; None before the first answer.

        Why: Sentinel demotes a reachable old primary only seconds after promoting a replica
        (a graceful failover, a primary paused and resumed), and the old one takes writes
        meanwhile, which its demotion wipes. Connections resolve only when they dial, so an
        open one must notice the switch itself (see `_Hooked.send_packed_command`). Costs one
        `SENTINEL MASTER` per Sentinel every FRESH_S per process while it sends."""
        if time.monotonic() >= self._next and self._refreshing.acquire(blocking=False):
            try:
                self._next = time.monotonic() + RECHECK_S  # no answer: not on every command
                self._survey()
            finally:
                self._refreshing.release()
        return FAILING_OVER if self._failover else self._last

    def _survey(self) -> None:
        """Ask every Sentinel. Only the Sentinel leading a failover knows of it until it names
        the new primary (the flag ``failover_in_progress``); the replica it promotes stops
        replicating from the old primary at once, so from then on a write to the old one is
        lost: while any Sentinel says so, there is no primary."""
        failover, found = False, None
        now = time.monotonic()
        for addr in list(self._order):
            if self._quiet.get(addr, 0.0) > now:
                continue  # failed lately: a host that is down must not cost every survey
            client: Any = self._client(addr)
            try:
                state: Any = client.execute_command("SENTINEL MASTER", self.target.service)
            except (redis.RedisError, OSError):
                self._quiet[addr] = time.monotonic() + QUIET_S
                continue
            self._quiet.pop(addr, None)
            info = _pairs(state)
            if "failover_in_progress" in str(info.get("flags", "")):
                failover = True
                break
            found = found or _believed(info)
        self._failover = failover
        if failover or found is not None:
            self._next = time.monotonic() + FRESH_S
        if found is not None and not failover:
            self._last = found

    def replicas(self) -> list[tuple[str, int]]:
        """Addresses of the replicas the Sentinels see up and linked to the primary."""

        def ask(client: Any) -> list[tuple[str, int]]:
            rows: Any = client.execute_command("SENTINEL REPLICAS", self.target.service)
            out = []
            for row in rows:
                info = _pairs(row)
                flags = set(str(info.get("flags", "")).split(","))
                if flags & {"s_down", "o_down", "disconnected"}:
                    continue
                if str(info.get("master-link-status", "ok")) != "ok":
                    continue
                out.append((str(info["ip"]), int(info["port"])))
            return out

        return list(self._ask(ask))

    def close(self) -> None:
        for client in self._clients.values():
            with contextlib.suppress(Exception):
                client.close()


def _believed(info: dict[str, Any]) -> tuple[str, int] | None:
    """The primary's address from one Sentinel's `SENTINEL MASTER` reply, unless that Sentinel
    thinks it is down."""
    flags = set(str(info.get("flags", "")).split(","))
    if flags & {"s_down", "o_down", "disconnected"} or "master" not in flags:
        return None
    return str(info["ip"]), int(info["port"])


def _pairs(reply: Any) -> dict[str, Any]:
    """A Sentinel reply as a dict: RESP2 flat [k, v, k, v, ...] or already a dict."""
    if isinstance(reply, dict):
        return {str(k): v for k, v in reply.items()}
    items = list(reply)
    return {str(items[i]): items[i + 1] for i in range(0, len(items) - 1, 2)}


def _ssl_kwargs(target: SentinelUrl) -> dict[str, Any]:
    if not target.ssl:
        return {}
    out: dict[str, Any] = dict(target.ssl_options)
    if out.get("ssl_cert_reqs", "").lower() == "none":
        out["ssl_cert_reqs"] = None
    return out


class _Hooked:
    """The mixin of jobq's connections: resolve the address on each dial (Sentinel), run the
    stores' hooks after each handshake, and turn READONLY into a reconnect."""

    host: str
    port: int

    def __init__(
        self,
        *args: Any,
        jobq_resolver: Resolver | None = None,
        jobq_hooks: list[Hook] | None = None,
        **kwargs: Any,
    ) -> None:
        self.jobq_resolver = jobq_resolver
        self.jobq_hooks = jobq_hooks if jobq_hooks is not None else []
        self.jobq_handshake = False
        super().__init__(*args, **kwargs)
        if jobq_resolver is not None:
            self.host, self.port = UNRESOLVED_HOST, 0

    def _connect(self) -> Any:
        resolver = self.jobq_resolver
        if resolver is None:
            return super()._connect()  # type: ignore[misc]
        self.host, self.port = resolver.primary()
        try:
            return super()._connect()  # type: ignore[misc]
        except OSError:
            # A Cluster map naming a dead primary: the next dial asks again, preferring an
            # answer that no longer names it (cluster.ClusterMap.unreachable).
            unreachable = getattr(resolver, "unreachable", None)
            if unreachable is not None:
                unreachable((self.host, self.port))
            raise

    def on_connect_check_health(self, check_health: bool = True) -> None:
        self.jobq_handshake = True
        try:
            super().on_connect_check_health(check_health)  # type: ignore[misc]
            for hook in list(self.jobq_hooks):
                hook(self)  # type: ignore[arg-type]
        finally:
            self.jobq_handshake = False

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        # An open connection to a node the Sentinels no longer name as the primary (they
        # promoted another; this one is not demoted yet and would take the write): redial,
        # which resolves the primary anew. Not during the handshake of a fresh connection.
        resolver = self.jobq_resolver
        if resolver is not None and not self.jobq_handshake and self._sock is not None:  # type: ignore[attr-defined]
            primary = resolver.current()
            if primary is not None and primary != (self.host, self.port):
                self.disconnect()  # type: ignore[attr-defined]
        super().send_packed_command(command, check_health)  # type: ignore[misc]

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            reply = super().read_response(*args, **kwargs)  # type: ignore[misc]
        except ReadOnlyError as exc:
            # The node was demoted under this connection: find the primary on reconnect.
            where = f"{self.host}:{self.port}"
            self.disconnect()  # type: ignore[attr-defined]
            raise NotPrimary(f"Valkey at {where} is no longer the primary ({exc})") from exc
        except (AskError, TryAgainError, ClusterDownError) as exc:  # MovedError is an AskError
            # A Cluster node refused the command (never ran it): on a slot-resolved
            # connection, refresh the map and redial its owner; anywhere else, the reply.
            redirected = getattr(self.jobq_resolver, "redirected", None)
            if redirected is None:
                raise
            redirected(exc)
            where = f"{self.host}:{self.port}"
            self.disconnect()  # type: ignore[attr-defined]
            kind = "MOVED" if isinstance(exc, MovedError) else type(exc).__name__
            raise SlotMoved(
                f"Valkey Cluster node {where} refused the command ({kind}: {exc}): the slot "
                "moved or is moving (resharding, failover); resent to its owner"
            ) from exc
        resolver = self.jobq_resolver
        if resolver is not None and not self.jobq_handshake:
            # A reply from a node the Sentinels replaced while the command was under way (it
            # was stopped, or slow, across the failover): what it did is wiped when it is
            # demoted, so this is no acknowledgement. A connection error: callers retry on
            # the new primary, or report the outcome as unknown.
            primary = resolver.current()
            if primary is not None and primary != (self.host, self.port):
                where = f"{self.host}:{self.port}"
                self.disconnect()  # type: ignore[attr-defined]
                raise NotPrimary(
                    f"Valkey at {where} answered after the Sentinels made another node the "
                    "primary: its write will be wiped, retry on the new primary"
                )
        return reply


class PrimaryConnection(_Hooked, Connection):
    """TCP connection to the primary (see the module docstring)."""


class PrimarySSLConnection(_Hooked, SSLConnection):
    """TLS connection to the primary."""


class PrimaryUnixConnection(_Hooked, UnixDomainSocketConnection):
    """Unix-socket connection to a one-server deployment (hooks only: nothing to resolve)."""


_HOOKED = {
    Connection: PrimaryConnection,
    SSLConnection: PrimarySSLConnection,
    UnixDomainSocketConnection: PrimaryUnixConnection,
}


def _owning(pool: redis.ConnectionPool) -> redis.Redis:
    """A client that disconnects `pool` when closed (redis-py leaves a pool it was given open,
    so `Store.close` would leave its sockets to the garbage collector)."""
    client = redis.Redis(connection_pool=pool)
    client.auto_close_connection_pool = True
    return client


def client_for(url: str, **kwargs: Any) -> redis.Redis:
    """A redis-py client for `url` whose every connection is one of jobq's (see above)."""
    check_url(url)
    if cluster_url.is_cluster(url):
        raise ConfigError(
            f"broker URL {_shown(url)!r} names a Valkey Cluster: a client follows one hash "
            "slot there, so build it with jobq.cluster.client_for_slot(url, tag)"
        )
    hooks: list[Hook] = []
    if is_sentinel(url):
        target = parse_sentinel_url(url)
        cls: type[Connection] = PrimarySSLConnection if target.ssl else PrimaryConnection
        pool = redis.ConnectionPool(
            connection_class=cls,
            jobq_resolver=SentinelResolver(target),
            jobq_hooks=hooks,
            db=target.db,
            username=target.username,
            password=target.password,
            **_ssl_kwargs(target),
            **kwargs,
        )
        return _owning(pool)
    url = url.replace("valkey://", "redis://", 1).replace("valkeys://", "rediss://", 1)
    pool = redis.ConnectionPool.from_url(url, **kwargs)
    base = pool.connection_class
    hooked = _HOOKED.get(base)
    if hooked is None:  # a connection class of redis-py's we do not know: keep it, unhooked
        return _owning(pool)
    pool.connection_class = hooked
    pool.connection_kwargs["jobq_hooks"] = hooks
    return _owning(pool)


def hooks_of(client: Any) -> list[Hook] | None:
    """The hook list every new connection of `client` runs, or None for a client jobq did not
    build (a plain redis-py client or pipeline passed in by a test or a user)."""
    pool = getattr(client, "connection_pool", None)
    if pool is None or not issubclass(pool.connection_class, _Hooked):
        return None
    hooks: list[Hook] | None = pool.connection_kwargs.get("jobq_hooks")
    return hooks


def resolver_of(client: Any) -> Resolver | None:
    """The resolver behind `client`, if it follows a Sentinel group or a Cluster slot."""
    pool = getattr(client, "connection_pool", None)
    if pool is None:
        return None
    resolver: Resolver | None = pool.connection_kwargs.get("jobq_resolver")
    return resolver


def describe(url: str) -> str:
    """The topology of `url` in a few words, for logs (passwords hidden)."""
    if is_sentinel(url):
        t = parse_sentinel_url(url)
        names = ",".join(f"{h}:{p}" for h, p in t.sentinels)
        return f"Sentinel group {names} (service {t.service!r})"
    if cluster_url.is_cluster(url):
        return cluster_url.describe(url)
    return _shown(url)
