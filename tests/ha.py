"""A real Sentinel group for high-availability tests: a primary, its replicas and Sentinels, all
the embedded valkey-server binary on free loopback ports, each in its own temp dir.

Why it looks like this:
- Every data node and Sentinel runs from a config file in its own dir, so Sentinel's
  ``CONFIG REWRITE`` works as in production (a node restarted after Sentinel reconfigured it keeps
  that role; a SIGKILLed old primary never got rewritten, so it restarts as a primary from its AOF
  until Sentinel demotes it, which is the split-brain window the HA tests need).
- The Sentinel configs are seeded with each other's ids and the replicas (what Sentinel itself
  would write after discovery), so a group is ready in about a second instead of waiting for
  hello messages and the 10 s INFO period.
- Every wait is bounded and fails naming what it waited for and the group's state; every client
  is built with an explicit host/port (never a default host) and closed after use.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from jobq.embedded import find_binary

HOST = "127.0.0.1"
Addr = tuple[str, int]
T = TypeVar("T")


def _ephemeral_floor() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A loopback port nobody listens on right now, below the kernel's ephemeral range. A port
    the kernel hands out for bind(0) is one it also hands to outgoing connections, and the
    tests open thousands: one of them could take it before the server binds it ("Address
    already in use", a Sentinel that exits at start)."""
    floor = _ephemeral_floor()
    low = 20_000 if floor > 21_000 else 1_024
    for _ in range(1_000):
        port = low + secrets.randbelow(max(1, floor - low))
        with socket.socket() as s:
            try:
                s.bind((HOST, port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # nothing free below the range: take what the kernel gives
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def poll(check: Callable[[], T], timeout: float, what: str, state: Callable[[], str]) -> T:
    """check()'s first truthy value; after `timeout` s an AssertionError naming `what` and the
    group's state (so a failing HA test says where it stuck)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}\n{state()}")
        time.sleep(0.05)


class Node:
    """One valkey-server process (data node or Sentinel) we own: its port, dir, config file."""

    kind = "node"

    def __init__(self, name: str, root: Path, password: str | None) -> None:
        self.name = name
        self.port = free_port()
        self.dir = root / name
        self.dir.mkdir(mode=0o700)
        self.conf = self.dir / f"{self.kind}.conf"
        self.log_path = self.dir / f"{self.kind}.log"
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False

    @property
    def addr(self) -> Addr:
        return (HOST, self.port)

    def __repr__(self) -> str:
        return f"<{self.name} {HOST}:{self.port}>"

    def argv(self) -> list[str]:
        return [find_binary(), str(self.conf)]

    def spawn(self) -> None:
        """Start the process from its config file (not waiting for it)."""
        if self.alive():
            raise RuntimeError(f"{self} is already running (pid {self.pid})")
        self.proc = subprocess.Popen(
            self.argv(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.dir
        )
        self.paused = False

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        """The process runs (possibly SIGSTOPped)."""
        return self.proc is not None and self.proc.poll() is None

    def client(self, timeout: float = 5.0, **kwargs: Any) -> redis.Redis:
        """A redis-py client to exactly this node (explicit host/port/password). Close it."""
        kwargs.setdefault("password", self.password)
        return redis.Redis(
            host=HOST,
            port=self.port,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            **kwargs,
        )

    def _probe(self) -> redis.Redis:
        # Short timeouts, no retries: probes must see a dead or paused node at once.
        return self.client(timeout=0.5, retry=Retry(NoBackoff(), 0))

    def call(self, *args: Any) -> Any:
        """One command on a fresh short-timeout connection (raises redis errors as they come)."""
        c = self._probe()
        try:
            return c.execute_command(*args)  # type: ignore[no-untyped-call]
        finally:
            c.close()

    def call_raw(self, *args: Any) -> Any:
        """A command's reply as the server sent it (no redis-py reply parsing, which reshapes
        SENTINEL replies), on a fresh short-timeout connection."""
        c = self._probe()
        try:
            conn = c.connection_pool.get_connection()
            try:
                conn.send_command(*args)  # type: ignore[no-untyped-call]
                reply = conn.read_response()
            finally:
                conn.disconnect()  # type: ignore[no-untyped-call]
                c.connection_pool.release(conn)
            if isinstance(reply, redis.ResponseError):
                raise reply
            return reply
        finally:
            c.close()

    def try_call(self, *args: Any) -> Any:
        """call(), but None when the node is down, paused, loading or refuses."""
        try:
            return self.call(*args)
        except (redis.RedisError, OSError):
            return None

    def wait_up(self, timeout: float = 15) -> None:
        """Until the node answers PING (past LOADING); fails at once if the process exited."""
        deadline = time.monotonic() + timeout
        while True:
            if self.try_call("PING"):
                return
            if not self.alive():
                raise RuntimeError(
                    f"{self} exited ({self.proc and self.proc.returncode}):\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{self} did not answer PING in {timeout:g}s:\n{self.log_tail()}"
                )
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL (also works on a paused process) and reap it."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None
        self.paused = False

    def pause(self) -> None:
        """SIGSTOP: the process holds its sockets but answers nothing (a hung host)."""
        if not self.alive():
            raise RuntimeError(f"cannot pause {self}: not running")
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        """SIGCONT after pause()."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return f"  ({self.name}: no log)"
        return "\n".join(f"  {self.name}| {line}" for line in text[-lines:])


class DataNode(Node):
    """A primary or replica: AOF, requirepass + masterauth, its own config file."""

    kind = "valkey"

    def write_config(
        self, appendonly: bool, appendfsync: str, primary: DataNode | None, extra: Sequence[str]
    ) -> None:
        lines = [
            f"port {self.port}",
            f"bind {HOST}",
            f"dir {self.dir}",
            f"logfile {self.log_path}",
            'save ""',
            f"appendonly {'yes' if appendonly else 'no'}",
            f"appendfsync {appendfsync}",
            f"requirepass {self.password}",
            f"masterauth {self.password}",
            # The default 5 s diskless-sync delay would make every (re)sync slow.
            "repl-diskless-sync-delay 0",
            "enable-debug-command local",
        ]
        if primary is not None:
            lines.append(f"replicaof {HOST} {primary.port}")
        self.conf.write_text("\n".join([*lines, *extra]) + "\n")

    def info(self, section: str = "replication") -> dict[str, Any]:
        """INFO <section> parsed by redis-py; {} when the node is unreachable."""
        c = self._probe()
        try:
            return dict(c.info(section))
        except (redis.RedisError, OSError):
            return {}
        finally:
            c.close()

    def role(self) -> str | None:
        """'master' / 'slave' from ROLE, None when unreachable."""
        reply = self.try_call("ROLE")
        return _s(reply[0]) if reply else None

    def link_up(self) -> bool:
        """A replica whose replication link to its primary is up."""
        i = self.info()
        return i.get("role") == "slave" and i.get("master_link_status") == "up"


class SentinelNode(Node):
    """One Sentinel (the same binary with --sentinel) with a writable sentinel.conf."""

    kind = "sentinel"

    def argv(self) -> list[str]:
        return [find_binary(), str(self.conf), "--sentinel"]

    def master_addr(self, service: str) -> Addr | None:
        """SENTINEL GET-MASTER-ADDR-BY-NAME, None when unreachable or unknown."""
        reply = self.try_call("SENTINEL", "GET-MASTER-ADDR-BY-NAME", service)
        if not reply:
            return None
        return (_s(reply[0]), int(reply[1]))

    def table(self, *args: str) -> list[dict[str, str]]:
        """A SENTINEL subcommand's reply as dicts ([] when unreachable)."""
        try:
            reply = self.call_raw("SENTINEL", *args)
        except (redis.RedisError, OSError):
            return []
        if not reply:
            return []
        rows = (
            [reply] if isinstance(reply, dict) or not isinstance(reply[0], (list, dict)) else reply
        )
        return [_row(r) for r in rows]


def _row(row: Any) -> dict[str, str]:
    """One Sentinel table row, RESP2 flat list or RESP3 map, as str -> str."""
    if isinstance(row, dict):
        return {_s(k): _s(v) for k, v in row.items()}
    return {_s(k): _s(v) for k, v in zip(row[::2], row[1::2], strict=True)}


class SentinelGroup:
    """A primary + `replicas` replicas + `sentinels` Sentinels monitoring them as `service`.

    Use as a context manager or call start()/cleanup(). Node 0 is the first primary; after a
    failover use current_primary() / primary_addr(), which ask the Sentinels.

    down_after_ms=1000 gives ~2-3 s failovers; on a CPU-saturated box a node can miss its PINGs
    for that long and Sentinel then fails over by itself: pass more for load-heavy tests."""

    def __init__(
        self,
        replicas: int = 1,
        sentinels: int = 3,
        service: str = "jobq",
        password: str | None = None,
        appendonly: bool = True,
        appendfsync: str = "everysec",
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 5000,
        sentinel_password: str | None = None,
        extra_config: Sequence[str] = (),
    ) -> None:
        self.service = service
        self.password = password or "pw-" + secrets.token_hex(6)
        self.sentinel_password = sentinel_password
        self.quorum = sentinels // 2 + 1
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.root = Path(tempfile.mkdtemp(prefix="jobq-test-ha-"))
        self.nodes: list[DataNode] = [
            DataNode(f"node{i}", self.root, self.password) for i in range(1 + replicas)
        ]
        self.sentinels: list[SentinelNode] = [
            SentinelNode(f"sentinel{i}", self.root, sentinel_password) for i in range(sentinels)
        ]
        first = self.nodes[0]
        for n in self.nodes:
            n.write_config(appendonly, appendfsync, None if n is first else first, extra_config)
        self._write_sentinel_configs()
        self.last_fault: float | None = None  # monotonic time of the last kill/pause/failover
        self.start_seconds: float | None = None

    # -- addresses ------------------------------------------------------------------------

    @property
    def sentinel_addrs(self) -> list[Addr]:
        return [s.addr for s in self.sentinels]

    @property
    def url(self) -> str:
        """The jobq Sentinel URL of this group (data-node password; sentinel_password as the
        query parameter when the Sentinels require one)."""
        hosts = ",".join(f"{h}:{p}" for h, p in self.sentinel_addrs)
        query = f"?sentinel_password={self.sentinel_password}" if self.sentinel_password else ""
        return f"redis+sentinel://:{self.password}@{hosts}/{self.service}{query}"

    def _write_sentinel_configs(self) -> None:
        ids = {s.name: secrets.token_hex(20) for s in self.sentinels}
        svc, first = self.service, self.nodes[0]
        for s in self.sentinels:
            lines = [
                f"port {s.port}",
                f"bind {HOST}",
                f"dir {s.dir}",
                f"logfile {s.log_path}",
                f"sentinel myid {ids[s.name]}",
                f"sentinel monitor {svc} {HOST} {first.port} {self.quorum}",
                f"sentinel auth-pass {svc} {self.password}",
                f"sentinel down-after-milliseconds {svc} {self.down_after_ms}",
                f"sentinel failover-timeout {svc} {self.failover_timeout_ms}",
                f"sentinel parallel-syncs {svc} 1",
            ]
            if self.sentinel_password:
                lines += [
                    f"requirepass {self.sentinel_password}",
                    f"sentinel sentinel-pass {self.sentinel_password}",
                ]
            lines += [f"sentinel known-replica {svc} {HOST} {n.port}" for n in self.nodes[1:]]
            lines += [
                f"sentinel known-sentinel {svc} {HOST} {o.port} {ids[o.name]}"
                for o in self.sentinels
                if o is not s
            ]
            s.conf.write_text("\n".join(lines) + "\n")

    # -- lifecycle ------------------------------------------------------------------------

    def start(self, timeout: float = 30) -> SentinelGroup:
        """Start everything; return once every replica's link is up and every Sentinel sees the
        primary, all replicas (link ok) and all other Sentinels. Sets start_seconds."""
        t0 = time.monotonic()
        try:
            for n in self.nodes:
                n.spawn()
            for n in self.nodes:
                n.wait_up(timeout)
            self.wait_synced(timeout)
            # Sentinels only now: one started next to a primary still busy starting (a loaded
            # box) could count it down after down_after_ms and fail over before any test ran.
            for s in self.sentinels:
                s.spawn()
            for s in self.sentinels:
                s.wait_up(timeout)
            poll(
                self._sentinels_ready,
                timeout,
                "every Sentinel to see the whole group",
                self.state,
            )
        except BaseException:
            self.cleanup()
            raise
        self.start_seconds = time.monotonic() - t0
        return self

    def _sentinels_ready(self) -> bool:
        """At start: every Sentinel sees the first primary, every replica and every other
        Sentinel, all healthy."""
        for s in self.sentinels:
            sens = s.table("SENTINELS", self.service)
            if len(sens) != len(self.sentinels) - 1 or any(
                o.get("flags") != "sentinel" for o in sens
            ):
                return False
        return self._sentinels_settled(self.nodes[0])

    def _sentinels_settled(self, primary: DataNode | None = None, link: bool = True) -> bool:
        """Every live Sentinel names `primary` (default: the majority's) as a healthy master and
        sees every other live data node as a healthy replica of it, by the replica's own last
        reported role. Why the role: a Sentinel still remembering a demoted node as 'master'
        converts it back to a replica the moment a forced failover promotes it (its promotion
        then times out, and nothing retries a forced failover). `link`: also require each
        replica's link up (not for a failover onto a replica cut by stop_replication)."""
        if primary is None:
            addr = self._majority_primary()
            if addr is None:
                return False
            primary = self.node_at(addr)
        want = {n.port for n in self.nodes if n is not primary and n.alive() and not n.paused}
        for s in self.sentinels:
            if not s.alive() or s.paused:
                continue
            master = s.table("MASTER", self.service)
            if not master:
                return False
            m = master[0]
            if m.get("flags") != "master" or int(m.get("port", 0)) != primary.port:
                return False
            seen = {
                int(r.get("port", 0))
                for r in s.table("REPLICAS", self.service)
                if r.get("flags") == "slave"
                and r.get("role-reported") == "slave"
                and (r.get("master-link-status") == "ok" or not link)
                and int(r.get("master-port", 0)) == primary.port
            }
            if not want <= seen:
                return False
        return True

    def wait_sentinels_settled(self, timeout: float = 30, link: bool = True) -> None:
        """Until every live Sentinel agrees on the primary and on each live replica's role (see
        _sentinels_settled; a Sentinel refreshes a replica's role every 10 s)."""
        poll(
            lambda: self._sentinels_settled(None, link),
            timeout,
            "the Sentinels to agree on every role",
            self.state,
        )

    def cleanup(self) -> None:
        """Kill every process and remove the dirs (idempotent)."""
        for n in [*self.sentinels, *self.nodes]:
            with contextlib.suppress(Exception):
                n.kill()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> SentinelGroup:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cleanup()

    # -- who is primary -------------------------------------------------------------------

    def _majority_primary(self) -> Addr | None:
        votes: dict[Addr, int] = {}
        for s in self.sentinels:
            addr = s.master_addr(self.service) if s.alive() and not s.paused else None
            if addr is not None:
                votes[addr] = votes.get(addr, 0) + 1
        for addr, count in votes.items():
            if count >= self.quorum:
                return addr
        return None

    def primary_addr(self) -> Addr:
        """The primary as a majority of the Sentinels name it (AssertionError if none does)."""
        addr = self._majority_primary()
        if addr is None:
            raise AssertionError(f"no majority of Sentinels names a primary\n{self.state()}")
        return addr

    def node_at(self, addr: Addr) -> DataNode:
        """The data node listening on `addr`."""
        for n in self.nodes:
            if n.addr == (addr[0], int(addr[1])):
                return n
        raise KeyError(f"no data node of this group at {addr[0]}:{addr[1]}: {self.nodes}")

    def current_primary(self) -> DataNode:
        return self.node_at(self.primary_addr())

    def replicas(self) -> list[DataNode]:
        """Data nodes other than the current primary (alive or not)."""
        primary = self.current_primary()
        return [n for n in self.nodes if n is not primary]

    # -- faults ---------------------------------------------------------------------------

    def kill(self, node: Node) -> None:
        """SIGKILL a data node or Sentinel; marks the fault time for wait_new_primary."""
        self.last_fault = time.monotonic()
        node.kill()

    def restart(self, node: Node, timeout: float = 30) -> None:
        """Start a killed node again: same port, dir and config file (its AOF, and whatever
        Sentinel's CONFIG REWRITE left there). Returns once it answers PING."""
        node.kill()
        node.spawn()
        node.wait_up(timeout)

    def pause(self, node: Node) -> None:
        """SIGSTOP a node (marks the fault time)."""
        self.last_fault = time.monotonic()
        node.pause()

    def resume(self, node: Node) -> None:
        node.resume()

    def stop_replication(self, replica: DataNode) -> None:
        """Cut a replica off its primary while it stays up and answers Sentinel: wrong
        masterauth, then drop the link, so writes on the primary no longer reach it (and it can
        still be promoted while the cut is shorter than 10 x down_after_ms)."""
        replica.call("CONFIG", "SET", "masterauth", "wrong-" + secrets.token_hex(4))
        replica.call("CLIENT", "KILL", "TYPE", "master")
        poll(
            lambda: replica.info().get("master_link_status") == "down",
            10,
            f"{replica} replication link to go down",
            self.state,
        )

    def restore_replication(self, replica: DataNode) -> None:
        """Undo stop_replication (the node reconnects by itself if it is still a replica)."""
        replica.call("CONFIG", "SET", "masterauth", self.password)

    def failover(self, timeout: float = 30) -> Addr:
        """SENTINEL FAILOVER on the first Sentinel that accepts it (retrying while one is in
        progress or no replica is good yet), once every Sentinel agrees on every role (else a
        Sentinel's stale view can undo the promotion). Returns the primary's address before it."""
        self.wait_sentinels_settled(timeout, link=False)
        old = self.primary_addr()
        last: Exception | None = None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for s in self.sentinels:
                if not s.alive() or s.paused:
                    continue
                try:
                    s.call("SENTINEL", "FAILOVER", self.service)
                    self.last_fault = time.monotonic()
                    return old
                except (redis.RedisError, OSError) as e:  # INPROG / NOGOOD / unreachable
                    last = e
            time.sleep(0.2)
        raise AssertionError(
            f"no Sentinel accepted FAILOVER in {timeout:g}s ({last})\n{self.state()}"
        )

    # -- waits ----------------------------------------------------------------------------

    def wait_new_primary(
        self, old_addr: Addr, timeout: float = 30, since: float | None = None
    ) -> tuple[Addr, float]:
        """Until a majority of Sentinels names a primary other than `old_addr` and that node
        answers ROLE master. Returns (addr, seconds since `since`, default the last fault)."""
        t0 = since if since is not None else (self.last_fault or time.monotonic())

        def check() -> Addr | None:
            addr = self._majority_primary()
            if addr is None or addr == tuple(old_addr):
                return None
            return addr if self.node_at(addr).role() == "master" else None

        addr = poll(check, timeout, f"a new primary other than {old_addr}", self.state)
        assert addr is not None
        return addr, time.monotonic() - t0

    def wait_demoted(self, node: DataNode, timeout: float = 30, settle: bool = True) -> None:
        """Until `node` is a replica of the current primary with its link up, and (settle) every
        Sentinel has seen it report that role, so the next failover may promote it."""

        def check() -> bool:
            i = node.info()
            primary = self._majority_primary()
            if primary == node.addr:
                raise AssertionError(
                    f"{node} is the primary again: the Sentinels failed over back to it, so it "
                    "will never be demoted (the primary looked down for down_after_ms: a "
                    f"saturated box? raise down_after_ms)\n{self.state()}"
                )
            return (
                primary is not None
                and i.get("role") == "slave"
                and i.get("master_link_status") == "up"
                and int(i.get("master_port", 0)) == primary[1]
            )

        poll(check, timeout, f"{node} to be demoted to a synced replica", self.state)
        if settle:
            self.wait_sentinels_settled(timeout)

    def _synced(self) -> bool:
        primary = self.nodes[0] if self.start_seconds is None else self.current_primary()
        p_offset = primary.info().get("master_repl_offset")
        if p_offset is None:
            return False
        for n in self.nodes:
            if n is primary or not n.alive() or n.paused:
                continue
            i = n.info()
            if i.get("master_link_status") != "up" or i.get("master_port") != primary.port:
                return False
            if int(i.get("slave_repl_offset", -1)) < int(p_offset):
                return False
        return True

    def wait_synced(self, timeout: float = 30) -> None:
        """Until every live, unpaused replica's link to the current primary is up and it has
        everything the primary had when checked (offsets; Sentinel hellos keep them moving)."""
        poll(self._synced, timeout, "the live replicas to be in sync", self.state)

    # -- introspection --------------------------------------------------------------------

    def commandstats(self, node: DataNode) -> dict[str, dict[str, float]]:
        """INFO commandstats as {command: {calls, usec, ...}} (e.g. 'set', 'client|setname')."""
        raw = node.info("commandstats")
        return {k.removeprefix("cmdstat_"): dict(v) for k, v in raw.items()}

    def reset_stats(self, node: DataNode) -> None:
        """CONFIG RESETSTAT, so commandstats() counts from now."""
        node.call("CONFIG", "RESETSTAT")

    def describe(self) -> str:
        """The group's state in a few lines (for failure messages)."""
        out = [f"Sentinel group {self.service!r} (root {self.root}):"]
        for n in self.nodes:
            state = "paused" if n.paused else ("up" if n.alive() else "down")
            i = n.info() if state == "up" else {}
            role = i.get("role", "?")
            extra = (
                f" -> {i.get('master_port')} link {i.get('master_link_status')}"
                if role == "slave"
                else ""
            )
            out.append(f"  {n.name} :{n.port} {state} role={role}{extra}")
        for s in self.sentinels:
            state = "paused" if s.paused else ("up" if s.alive() else "down")
            addr = s.master_addr(self.service) if state == "up" else None
            out.append(f"  {s.name} :{s.port} {state} primary={addr}")
        return "\n".join(out)

    def state(self) -> str:
        """describe() and the logs' last lines: what a timed-out wait reports."""
        return self.describe() + "\nlogs:\n" + self.logs(8)

    def logs(self, lines: int = 15) -> str:
        """The last lines of every log (for failure messages)."""
        return "\n".join(n.log_tail(lines) for n in [*self.nodes, *self.sentinels])
