"""Valkey Cluster: which node owns a hash slot, and clients that always dial that node.

jobq never needs a cluster-aware client: each partition of a deployment is one hash tag, so
every key a script or command touches is in one slot, served by one primary. A partition's
client (`client_for_slot`) is an ordinary redis-py client whose connections are topology.py's
hooked ones with a `SlotResolver` in place of the Sentinel resolver, so the same machinery
holds: every dial asks where the slot is *now*, the stores' hooks (primary check, token epoch,
library load) run on every new connection, an open connection redials before sending when
the map moved its slot, and the lean path of scripts.py works unchanged (one connection per
thread per partition, i.e. per node).

**The map** (`ClusterMap`): slot -> primary (and its replicas) from ``CLUSTER SLOTS``, asked
of the seed nodes and the nodes the map already names, with short timeouts, the node that
answered last first, one that failed lately last. Nothing else is ever dialed: no address a
reply names is dialed unless it is a seed or in a map a node answered. One map per URL per
process, shared by every partition's client.

**When it is asked again**:
- on every dial, if older than `FRESH_S` (dials are rare: a connection lives for as long as it
  works, so this costs nothing while all is well, and finds a promoted replica while a
  killed primary's connections keep redialing);
- at once after a dial to the owner it named failed (`unreachable`): until QUIET_S later an
  answer still naming that node is taken only if no other node answers without it (the
  nodes learn of a promotion by gossip, one after the other, so right after a failover one
  node's answer may be from before it);
- at once (`SlotMoved`) when a node answers MOVED, ASK, TRYAGAIN or CLUSTERDOWN on a
  partition's connection (topology._Hooked.read_response): the command did not run; the
  connection drops, the map is refreshed (asking the node MOVED names first, if it is known),
  and the callers' reconnect-and-retry (scripts.py, redis-py's Retry, outage.py) resends it.
  During a live migration of the slot, ASK / TRYAGAIN repeat until the slot's last keys
  moved and ``SETSLOT NODE`` made the new owner official: jobq does not send ASKING, so a
  call touching keys already moved waits out the migration (seconds) in those retries.

Refreshes are rate-limited: callers that asked while another thread was refreshing take its
answer instead of asking again.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterable
from typing import Any, Protocol

import redis
from redis.backoff import NoBackoff
from redis.connection import Connection
from redis.crc import key_slot
from redis.exceptions import MovedError
from redis.retry import Retry

from .cluster_url import (
    CLUSTER_SCHEMES,
    ClusterUrl,
    describe,
    is_cluster,
    parse_cluster_url,
    shown,
    ssl_kwargs,
)
from .errors import ConfigError
from .layout import TAG_SEPARATOR
from .topology import (
    Hook,
    NoPrimary,
    PrimaryConnection,
    PrimarySSLConnection,
    _owning,
)

__all__ = [
    "CLUSTER_SCHEMES",
    "ClusterMap",
    "ClusterUrl",
    "SlotResolver",
    "client_for_slot",
    "describe",
    "is_cluster",
    "map_for",
    "parse_cluster_url",
    "slot_of",
    "tag_on_each_primary",
]

SLOTS = 16384
Addr = tuple[str, int]
#: How long one node may take to answer CLUSTER SLOTS before the next one is asked.
NODE_TIMEOUT_S = 1.0
#: How old the map may be when a connection dials before it is asked again.
FRESH_S = 0.1
#: A node that did not answer is asked after the others for this long.
QUIET_S = 5.0
#: How many suffixes `tag_on_each_primary` tries for one partition before giving up.
TAG_SEARCH = 1_000_000


class NoSlotOwner(NoPrimary):
    """No node of the cluster answers for the slot (all unreachable, a slot no node serves):
    a connection error, so callers retry within their bounds."""


def slot_of(tag: str) -> int:
    """The hash slot of every key ``{tag}:...``."""
    return key_slot(("{" + tag + "}").encode())


class ClusterMap:
    """Slot -> primary (and its replicas) of one cluster, as its nodes answer CLUSTER SLOTS
    (see the module docstring for who is asked, and when)."""

    def __init__(
        self,
        seeds: Iterable[Addr],
        username: str | None = None,
        password: str | None = None,
        ssl: bool = False,
        ssl_options: dict[str, Any] | None = None,
        timeout: float = NODE_TIMEOUT_S,
    ) -> None:
        self.seeds: tuple[Addr, ...] = tuple((str(h), int(p)) for h, p in seeds)
        if not self.seeds:
            raise ConfigError("a Cluster map needs at least one seed node")
        self._username, self._password = username, password
        self._ssl = ssl
        self._ssl_options = dict(ssl_options or {})
        self._timeout = timeout
        self._owners: list[Addr | None] = [None] * SLOTS
        self._replicas: dict[Addr, tuple[Addr, ...]] = {}
        self._order: list[Addr] = list(self.seeds)  # who to ask, the last to answer first
        self._clients: dict[Addr, redis.Redis] = {}
        self._quiet: dict[Addr, float] = {}  # node -> asked last until
        self._refused: dict[Addr, float] = {}  # node a dial failed on -> distrusted until
        self._lock = threading.Lock()
        self._at = float("-inf")  # monotonic time the last refresh began
        self._stale = False
        self._answered = False  # some node answered once
        self._hint: Addr | None = None
        self.version = 0  # counts the answers that changed the map
        #: Every address a seed or an answer ever named: all this map has dialed is in it.
        self.seen: set[Addr] = set(self.seeds)

    # -- reading ------------------------------------------------------------------------------

    def owner(self, slot: int) -> Addr | None:
        """The primary serving `slot` as last asked (None: not asked yet, or no owner)."""
        return self._owners[slot]

    def slots(self) -> tuple[Addr | None, ...]:
        """Every slot's owner (index = slot), asking first if the map was never asked."""
        self.ensure()
        return tuple(self._owners)

    def primaries(self) -> list[Addr]:
        """The nodes serving slots, in the order of the first slot each serves."""
        self.ensure()
        out: list[Addr] = []
        seen: set[Addr] = set()
        for owner in self._owners:
            if owner is not None and owner not in seen:
                seen.add(owner)
                out.append(owner)
        return out

    def replicas_of(self, primary: Addr) -> list[Addr]:
        """The replicas the map lists under `primary`."""
        return list(self._replicas.get(primary, ()))

    def known(self) -> set[Addr]:
        """Every address this map may dial: the seeds and every node an answer named."""
        out = set(self.seeds)
        out.update(o for o in self._owners if o is not None)
        for rs in self._replicas.values():
            out.update(rs)
        return out

    # -- asking -------------------------------------------------------------------------------

    def ensure(self) -> None:
        """Ask now if no node ever answered (raises `NoSlotOwner` if none does)."""
        if not self._answered:
            self.refresh(force=True)

    def mark_stale(self, hint: Addr | None = None) -> None:
        """A node redirected a command: the next `refresh` asks at once, `hint` (the node
        MOVED named, if this map may dial it) first."""
        self._hint = hint
        self._stale = True

    def unreachable(self, addr: Addr) -> None:
        """A dial to `addr` failed: the map is asked again at once, and for QUIET_S an answer
        naming `addr` as a slot's owner is taken only if no other node gives one that does
        not (right after a failover some nodes still name the dead primary)."""
        self._refused[addr] = time.monotonic() + QUIET_S
        self._quiet[addr] = time.monotonic() + QUIET_S
        self._stale = True

    def _names_refused(self, rows: Any, asked: Addr) -> bool:
        now = time.monotonic()
        refused = {a for a, until in self._refused.items() if until > now}
        return bool(refused) and any(_addr(row[2], asked) in refused for row in rows)

    def refresh(self, force: bool = False) -> bool:
        """Ask the nodes unless the map is younger than FRESH_S (and not stale, or `force`).
        False when another caller's answer, or the rate limit, served instead. Raises
        `NoSlotOwner` when no node answers (or ConfigError: not a Cluster)."""
        asked = time.monotonic()
        if not (force or self._stale) and asked - self._at < FRESH_S:
            return False
        with self._lock:
            if self._at >= asked:  # another thread asked while this one waited
                return False
            self._at = time.monotonic()
            hint, self._stale, self._hint = self._hint, False, None
            self._ask(hint)
            return True

    def _ask(self, hint: Addr | None) -> None:
        known = self.known()
        now = time.monotonic()
        order = [a for a in self._order if a in known]
        order += sorted(known - set(order))
        order.sort(key=lambda a: self._quiet.get(a, 0.0) > now)  # stable: quiet ones last
        if hint is not None and hint in known:
            order.remove(hint)
            order.insert(0, hint)
        errors: list[str] = []
        doubted: tuple[Addr, Any] | None = None  # an answer naming a node a dial just failed on
        for addr in order:
            try:
                client: Any = self._client(addr)
                rows: Any = client.execute_command("CLUSTER", "SLOTS")
            except redis.ResponseError as exc:
                if "cluster support disabled" in str(exc).lower():
                    raise ConfigError(
                        f"Valkey at {addr[0]}:{addr[1]} is not a Cluster node (cluster "
                        "support disabled): use a redis:// URL for one server, or "
                        "redis+sentinel:// for a Sentinel group"
                    ) from None
                errors.append(f"{addr[0]}:{addr[1]}: {exc}")
                continue
            except redis.AuthenticationError:  # every node has the URL's password: no retry
                raise
            except (redis.RedisError, OSError) as exc:
                self._quiet[addr] = time.monotonic() + QUIET_S
                errors.append(f"{addr[0]}:{addr[1]}: {exc or type(exc).__name__}")
                continue
            self._quiet.pop(addr, None)
            if self._names_refused(rows, addr):
                doubted = doubted or (addr, rows)  # maybe from before a failover: ask on
                continue
            self._take(addr, rows)
            return
        if doubted is not None:  # every node that answered still names it: so be it
            self._take(*doubted)
            return
        advice = "the cluster may be restarting or unreachable; check the seed nodes of the URL"
        if any("NOPERM" in e or "no permissions" in e for e in errors):
            advice = "the URL's user may not run CLUSTER SLOTS: grant it +cluster|slots"
        raise NoSlotOwner(
            "no node of the Valkey Cluster answered CLUSTER SLOTS ("
            + "; ".join(errors)
            + f"): {advice}"
        )

    def _take(self, addr: Addr, rows: Any) -> None:
        """Install `addr`'s answer; `addr` is asked first next time."""
        self._install(addr, rows)
        if addr in self._order:
            self._order.remove(addr)
        self._order.insert(0, addr)

    def _install(self, asked: Addr, rows: Any) -> None:
        owners: list[Addr | None] = [None] * SLOTS
        replicas: dict[Addr, tuple[Addr, ...]] = {}
        for row in rows:
            start, end, primary, *others = row
            p = _addr(primary, asked)
            replicas[p] = tuple(_addr(r, asked) for r in others)
            for slot in range(int(start), int(end) + 1):
                owners[slot] = p
        if owners != self._owners or replicas != self._replicas:
            self.version += 1
        self._owners, self._replicas = owners, replicas
        self._answered = True
        self.seen |= self.known()

    def _client(self, addr: Addr) -> redis.Redis:
        client = self._clients.get(addr)
        if client is None:
            client = self._clients[addr] = redis.Redis(
                host=addr[0],
                port=addr[1],
                socket_timeout=self._timeout,
                socket_connect_timeout=self._timeout,
                ssl=self._ssl,
                **self._ssl_options,
                username=self._username,
                password=self._password,
                retry=Retry(NoBackoff(), 0),  # the next node is the retry
                decode_responses=True,
            )
        return client

    def close(self) -> None:
        """Close the connections used to ask (they reopen on the next refresh)."""
        for client in list(self._clients.values()):
            with contextlib.suppress(Exception):
                client.close()


def _addr(entry: Any, asked: Addr) -> Addr:
    """A node of a CLUSTER SLOTS row; a node that does not know its own address reports an
    empty (or '?') host, meaning the one it was reached at."""
    host = str(entry[0])
    if host in ("", "?"):
        host = asked[0]
    return host, int(entry[1])


class SlotResolver:
    """Where the primary of one slot is: what topology._Hooked asks on every dial (`primary`),
    before each command and after each reply (`current`), and tells when a node redirected a
    command (`redirected`)."""

    def __init__(self, cmap: ClusterMap, slot: int) -> None:
        self.map = cmap
        self.slot = slot

    def primary(self) -> Addr:
        """The slot's owner, the map asked first if older than FRESH_S (or stale). A map no
        node answered keeps its last owner (the dial then says whether it is up)."""
        try:
            self.map.refresh()
        except NoSlotOwner:
            if self.map.owner(self.slot) is None:
                raise
        owner = self.map.owner(self.slot)
        if owner is None:
            raise NoSlotOwner(
                f"no node of the Valkey Cluster serves slot {self.slot} (CLUSTER SLOTS leaves "
                "it out): a failover or resharding may be under way, or slots are unassigned"
            )
        return owner

    def current(self) -> Addr | None:
        """The slot's owner as the map last said (never asks: this runs on every command)."""
        return self.map.owner(self.slot)

    def replicas(self) -> list[Addr]:
        """The replicas of the slot's owner, as the map lists them."""
        owner = self.map.owner(self.slot)
        return self.map.replicas_of(owner) if owner is not None else []

    def unreachable(self, addr: Addr) -> None:
        """A dial to `addr` (the owner as the map said) failed (topology._Hooked._connect)."""
        self.map.unreachable(addr)

    def redirected(self, exc: Exception) -> None:
        """A node answered MOVED/ASK/TRYAGAIN/CLUSTERDOWN: ask the map again before the next
        dial, first the node a MOVED named."""
        hint = None
        if isinstance(exc, MovedError):
            hint = (str(exc.host), int(exc.port))
        self.map.mark_stale(hint)

    def close(self) -> None:
        self.map.close()


_MAPS: dict[str, ClusterMap] = {}
_MAPS_LOCK = threading.Lock()


def _after_fork() -> None:
    """A forked child gets fresh locks: one held by another thread of the parent at the fork
    would never be released in the child (redis-py's pools handle their own connections)."""
    global _MAPS_LOCK
    _MAPS_LOCK = threading.Lock()
    for cmap in _MAPS.values():
        cmap._lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork)


def map_for(url: str) -> ClusterMap:
    """The process's one map of the cluster `url` names (every partition's client shares it)."""
    with _MAPS_LOCK:
        cmap = _MAPS.get(url)
        if cmap is None:
            target = parse_cluster_url(url)
            cmap = _MAPS[url] = ClusterMap(
                target.seeds,
                target.username,
                target.password,
                target.ssl,
                ssl_kwargs(target),
            )
        return cmap


def client_for_slot(url: str, tag: str, **kwargs: Any) -> redis.Redis:
    """A redis-py client whose every connection goes to the current primary of the slot of
    ``{tag}`` (keys ``{tag}:...``), with topology's hooks (the caller installs its own in
    `topology.hooks_of(client)`). Commands on keys of other slots get MOVED: a `SlotMoved`
    retried forever, so keep every key of this client under its tag."""
    target: ClusterUrl = parse_cluster_url(url)
    if not tag or "{" in tag or "}" in tag:
        raise ConfigError(f"hash tag {tag!r} for {shown(url)!r}: a tag is non-empty, no braces")
    hooks: list[Hook] = []
    cls: type[Connection] = PrimarySSLConnection if target.ssl else PrimaryConnection
    pool = redis.ConnectionPool(
        connection_class=cls,
        jobq_resolver=SlotResolver(map_for(url), slot_of(tag)),
        jobq_hooks=hooks,
        username=target.username,
        password=target.password,
        **ssl_kwargs(target),
        **kwargs,
    )
    return _owning(pool)


class SlotOwners(Protocol):
    """What `tag_on_each_primary` reads of a map."""

    def slots(self) -> tuple[Addr | None, ...]: ...


def tag_on_each_primary(cmap: SlotOwners, prefix: str, n: int) -> list[str]:
    """`n` hash tags for the partitions of deployment `prefix`, spread over the primaries.

    Tag 0 is `prefix` itself (the layout of one partition, byte for byte today's keys). The
    primaries are ordered by the first slot each serves; partition i goes to the primary
    ``(k + i) % P`` places after tag 0's owner k, so with ``n == P`` each primary serves exactly
    one partition and with more they are spread round-robin (no primary more than one above
    another). Tag i > 0 is ``f"{prefix}/{j}"`` (layout.TAG_SEPARATOR: no prefix holds a '/')
    for the smallest j >= 1 not taken yet whose slot
    is on that primary: deterministic, so every process computing tags from the same map gets
    the same ones (the stored layout is what they read afterwards: a later resharding moves
    slots, not tags). Pure: it reads `cmap.slots()` only."""
    if n < 1:
        raise ValueError(f"a deployment has at least one partition, not {n}")
    owners = cmap.slots()
    order: list[Addr] = []
    for owner in owners:
        if owner is not None and owner not in order:
            order.append(owner)
    first = owners[slot_of(prefix)]
    if first is None:
        raise ValueError(f"slot {slot_of(prefix)} of tag {prefix!r} has no owner in the map")
    k = order.index(first)
    tags, taken = [prefix], {prefix}
    for i in range(1, n):
        want = order[(k + i) % len(order)]
        for j in range(1, TAG_SEARCH + 1):
            tag = f"{prefix}{TAG_SEPARATOR}{j}"
            if tag not in taken and owners[slot_of(tag)] == want:
                break
        else:
            raise ValueError(f"no tag {prefix}{TAG_SEPARATOR}N has its slot on {want[0]}:{want[1]}")
        tags.append(tag)
        taken.add(tag)
    return tags
