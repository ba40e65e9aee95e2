"""One typed wrapper per Lua script; the only place scripts are loaded and called.

The scripts in ``lua/`` become one Valkey/Redis *function library*: the key suffixes from
`keys.LUA_SUFFIXES`, then the shared helpers (``_preamble.lua``, ``_tally.lua``: created once when
the library loads), then every ``<name>.lua`` registered as a function. FCALL then runs only the
body; as EVALSHA scripts, re-creating the helpers cost about three times the body of a small script
on every call. The library is named after a hash of its source, so two jobq versions can share a
server, and it is (re)loaded on demand (first use, or a server that lost it). Every call passes the
common ARGV head (key base, `now`, events cap) and the events stream as KEYS[1].

Calls go out on a lean path: each thread keeps one connection of the client's pool and sends
FCALL on it directly, skipping redis-py's per-command pool checkout and wrappers, which cost
more than the scripts themselves on the hot paths (submit, claim, report). `Batch` sends many
calls in one round trip. A redis-py pipeline passed as the client is still honoured.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from collections.abc import Iterable
from functools import cache
from importlib import resources
from typing import Any

import redis
from hiredis import pack_command
from redis.exceptions import NoPermissionError, ResponseError

from .codes import Role
from .keys import LUA_SUFFIXES, WORKER_QUEUE, Keys
from .topology import NotPrimary

SCRIPT_NAMES = (
    "enqueue",
    "claim",
    "complete",
    "fail",
    "reap",
    "promote",
    "heartbeat",
    "requeue",
    "cancel",
    "rerun",
    "await",
    "leader",
    "progress",
    "orphans",
    "purge",
    "trim_dead",
    "delete",
    "epoch",
    "link",
    "deliver",
    "declare",
    "handback",
)


#: Scripts that still run on a server at maxmemory: they only rewrite scores of existing
#: entries (or move a job back to its queue), so they cannot fill it, and a worker keeps its
#: leases (and can hand its jobs back) while memory is freed; no finished job is reaped as
#: lost because its heartbeats were refused. Every other script is refused there (OOM) before
#: it starts, so none stops half-way for lack of memory.
#: `epoch` runs on every new connection (topology.py) and writes two short strings, only when
#: the primary changed: refusing it at maxmemory would refuse every new connection, heartbeats'
#: included.
# The library's shared helpers, in load order (each may use the ones before it).
SHARED = ("_preamble", "_tally")
ALLOW_OOM = frozenset({"heartbeat", "requeue", "epoch"})


@cache
def library() -> tuple[str, str]:
    """The function library: (its name, its full source)."""
    lua = resources.files("jobq") / "lua"
    consts = "".join(f"local K_{k} = '{v}'\n" for k, v in LUA_SUFFIXES.items())
    consts += f"local Q_WORKER = '{WORKER_QUEUE}'\n"
    parts = [consts, *((lua / f"{name}.lua").read_text() for name in SHARED)]
    for name in SCRIPT_NAMES:
        body = (lua / f"{name}.lua").read_text()
        flags = ", flags={'allow-oom'}" if name in ALLOW_OOM else ""
        parts.append(
            f"redis.register_function{{function_name='@FN@_{name}', "
            f"callback=function(keys, args)\nbegin(keys, args)\n{body}\nend{flags}}}\n"
        )
    body = "\n".join(parts)
    lib = "jobq_" + hashlib.sha1(body.encode()).hexdigest()[:12]
    return lib, f"#!lua name={lib}\n" + body.replace("@FN@", lib)


def source(name: str) -> str:
    """The Lua source that runs script `name`: the whole library it is registered in."""
    if name not in SCRIPT_NAMES:
        raise KeyError(name)
    return library()[1]


def function_name(name: str) -> str:
    return f"{library()[0]}_{name}"


#: How far past its own clock a new primary's first fencing token starts (epoch.lua): the
#: clock skew between two primaries up to which a failover can never reissue a token.
EPOCH_MARGIN_MS = 60_000

#: Pauses between reconnection attempts before a call gives up (about 1 s in all).
RECONNECT_PAUSES_S = (0.05, 0.1, 0.2, 0.4)


def _missing_library(reply: Any) -> bool:
    return isinstance(reply, ResponseError) and "function not found" in str(reply).lower()


def _explain_refusal(exc: ResponseError, lib: str) -> ResponseError:
    """A NOPERM on FCALL, told in jobq's terms: a role user (acl.py) may call only the functions
    of the library the master loaded and granted, so another jobq version finds it missing."""
    if not isinstance(exc, NoPermissionError) or "'fcall" not in str(exc):
        return exc
    return NoPermissionError(
        f"{exc}: this URL's user may call only the functions of the jobq library the master "
        f"loaded, and {lib} (this jobq version's) is not among them: the master must load it, "
        "so run the master's jobq version here, or restart `jobq master --listen` with this one"
    )


Call = tuple[str, list[str], list[Any]]

#: This process's id, kept up to date over forks (`os.getpid` is a system call per script call).
_pid = [os.getpid()]
os.register_at_fork(after_in_child=lambda: _pid.__setitem__(0, os.getpid()))

#: Not scripts: a call of one of these names is sent as the plain command, after the writes it
#: waits for (durability.py chooses which).
WAITAOF = "WAITAOF"
WAIT = "WAIT"
WAITS = (WAITAOF, WAIT)


def wait_aof_call(numlocal: int, numreplicas: int, timeout_ms: int) -> Call:
    """A WAITAOF to end a round trip of durable writes (`Scripts.execute`): on the same
    connection, it returns once that connection's writes are fsynced to the AOF locally
    (`numlocal` 1) and on `numreplicas` replicas, or at the timeout, with the acks
    [local, replicas]; an error reply if the server lacks WAITAOF or has AOF off."""
    return (WAITAOF, [], [numlocal, numreplicas, timeout_ms])


def wait_call(numreplicas: int, timeout_ms: int) -> Call:
    """A WAIT to end a round trip of writes (`Scripts.execute`): on the same connection, it
    returns once `numreplicas` replicas have received (not fsynced) that connection's writes,
    or at the timeout, with the number that did."""
    return (WAIT, [], [numreplicas, timeout_ms])


class Batch:
    """Script calls collected to go out together in one round trip (`Scripts.execute`)."""

    def __init__(self) -> None:
        self.calls: list[Call] = []


Client = redis.Redis | redis.client.Pipeline | Batch


class Scripts:
    """The scripts for one deployment; each method runs one atomic transition."""

    def __init__(self, client: redis.Redis, keys: Keys, events_maxlen: int) -> None:
        self.keys = keys
        self.client = client
        self._maxlen = str(events_maxlen)
        self._lib, self._src = library()
        self._fn = {name: function_name(name) for name in SCRIPT_NAMES}
        self._local = threading.local()
        self._conns: list[Any] = []  # every lean connection made, to close them all
        self._closes = 0  # close() calls so far: a thread whose connection predates one re-lists it

    # -- connection hook -----------------------------------------------------------------------

    def check_primary(self, conn: Any) -> None:
        """Run on every new connection (topology.py), before any other command: refuse a node
        that is not a primary, and move the token epoch if the primary changed (epoch.lua).
        A server without the library (new, or wiped) is loaded first when this user may; when
        it may not, there is nothing to check yet: such a server lost its token counter with
        everything else, and the clock floor of `fencing_token` covers it."""
        packed = self._pack(self.epoch_call())
        for attempt in range(2):
            conn.send_packed_command([packed], check_health=False)
            try:
                reply = conn.read_response()
            except ResponseError as exc:
                if not _missing_library(exc) or attempt:
                    raise _explain_refusal(exc, self._lib) from None
                conn.send_command("FUNCTION", "LOAD", "REPLACE", self._src, check_health=False)
                try:
                    conn.read_response()
                except NoPermissionError:
                    return  # a role user; the master loads the library (see load())
                continue
            break
        if int(reply[0]) != Role.PRIMARY:
            primary = reply[1].decode() if isinstance(reply[1], bytes) else str(reply[1])
            raise NotPrimary(f"Valkey at {conn.host}:{conn.port} is a replica of {primary}")

    # -- transport -----------------------------------------------------------------------------

    def _conn(self) -> Any:
        """This thread's own connection (a new one after fork)."""
        conn = getattr(self._local, "conn", None)
        if conn is None or self._local.pid != _pid[0]:
            conn = self.client.connection_pool.make_connection()
            self._local.conn, self._local.pid = conn, _pid[0]
            self._local.closes = self._closes
            self._conns.append(conn)
        elif self._local.closes != self._closes:
            # close() ran since this thread last called (a worker's claim thread still in its
            # blocking wait, say): its connection reconnects on use, so it is listed again to
            # be closed with the others, never left to the garbage collector.
            self._local.closes = self._closes
            self._conns.append(conn)
        return conn

    def close(self) -> None:
        """Close every lean connection (each thread's); they reopen on next use."""
        conns, self._conns = self._conns, []
        self._closes += 1
        for conn in conns:
            conn.disconnect()

    def __del__(self) -> None:
        # A thread that used the store after close() reopened a connection: close it here
        # rather than leave its socket to the garbage collector.
        with contextlib.suppress(Exception):
            self.close()

    def load(self) -> None:
        """Load (or replace) the function library on the server."""
        conn = self._conn()
        conn.send_command("FUNCTION", "LOAD", "REPLACE", self._src)
        try:
            conn.read_response()
        except NoPermissionError as exc:
            # A worker or producer role user (see acl.py) may not load functions, by design.
            raise NoPermissionError(
                f"jobq's function library {self._lib} is not loaded on the server, and this "
                "URL's user may not load it: the master loads it (start `jobq master` of this "
                f"jobq version, or connect once with the admin URL from `jobq acl`) ({exc})"
            ) from exc

    def _pack(self, call: Call) -> bytes:
        name, keys, args = call
        if name in WAITS:
            return bytes(pack_command((name, *args)))
        return bytes(pack_command(("FCALL", self._fn[name], len(keys), *keys, *args)))

    def execute(self, calls: Iterable[Call]) -> list[Any]:
        """Send `calls` in one round trip; replies in order. A list goes out in one write; an
        iterator is sent call by call as it yields, so the server runs early calls while the
        caller builds later ones. Loads the library when the server lacks it and retries once
        on a dropped connection (every script is safe to repeat: enqueue is idempotent per id,
        outcomes are fenced by tokens, a repeated claim only delays jobs until their lease
        expires). An error reply raises (the first one, once every reply is read so the
        connection stays in step): it never passes as a result, which a caller would zip with
        its items. Calls before it in the batch did run."""
        replies = self._execute(calls)
        for reply in replies:
            if isinstance(reply, ResponseError):
                raise reply
        return replies

    def _execute(self, calls: Iterable[Call]) -> list[Any]:
        sent: list[Call] = []
        it = iter(calls)
        try:
            return self._send(calls if isinstance(calls, list) else it, sent)
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            self._conn().disconnect()
        everything = sent if isinstance(calls, list) else [*sent, *it]
        for pause in RECONNECT_PAUSES_S:  # a server restarting, a blip on the network
            try:
                return self._send(everything, [])
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                self._conn().disconnect()
                time.sleep(pause)
        return self._send(everything, [])

    def _send(self, calls: Iterable[Call], sent: list[Call]) -> list[Any]:
        conn = self._conn()
        if isinstance(calls, list):
            sent.extend(calls)
            pack = self._pack
            packed = pack(calls[0]) if len(calls) == 1 else b"".join(map(pack, calls))
            conn.send_packed_command([packed])
        else:
            for call in calls:
                sent.append(call)
                conn.send_packed_command([self._pack(call)])
        replies: list[Any] = []
        refused = False
        read = conn.read_response
        for _ in sent:
            # Read every reply even after an error, or the connection would be out of step.
            try:
                replies.append(read())
            except ResponseError as exc:
                replies.append(_explain_refusal(exc, self._lib))
                refused = True
        if not refused:
            return replies
        missing = [i for i, r in enumerate(replies) if _missing_library(r)]
        if missing:  # a new server, or one restarted without persistence: load, run those again
            if sent[-1][0] in WAITS:  # and wait for the writes of the second run too
                missing.append(len(sent) - 1)
            self.load()
            again = self._send([sent[i] for i in missing], [])
            for i, reply in zip(missing, again, strict=True):
                replies[i] = reply
        return replies

    def _call(self, name: str, keys: list[str], args: list[Any], now: int) -> Call:
        return (name, [self.keys.events, *keys], [self.keys.base, now, self._maxlen, *args])

    def _run(self, client: Client, name: str, keys: list[str], args: list[Any], now: int) -> Any:
        return self._dispatch(client, self._call(name, keys, args, now))

    def _dispatch(self, client: Client, call: Call) -> Any:
        name, keys, args = call
        if isinstance(client, Batch):
            client.calls.append(call)
            return None
        if isinstance(client, redis.client.Pipeline):
            self.load()  # a pipeline cannot recover from a missing library mid-way
            return client.fcall(self._fn[name], len(keys), *keys, *args)
        return self.execute([call])[0]  # a plain client: this thread's lean connection

    def enqueue(self, client: Client, jobs: list[list[Any]], now: int = 0) -> Any:
        """Create jobs (`JobSpec.as_row` each, see enqueue.lua); reply per job: `codes.Enqueue`,
        or the id of the pending job holding the same unique key."""
        return self._dispatch(client, self.enqueue_call(jobs, now))

    def enqueue_call(self, jobs: list[list[Any]], now: int = 0) -> Call:
        """The enqueue call for `jobs`, ready for `execute` (to stream many of them)."""
        flat: list[Any] = [len(jobs)]
        for j in jobs:
            flat.extend(j)
        k = self.keys
        return self._call("enqueue", [k.scheduled, k.seq, k.queues], flat, now)

    def link(self, client: Client, items: list[tuple[str, int, str, bool]], now: int = 0) -> Any:
        """Register children of other partitions on parents here (parent id, child partition,
        child id, wants the result); reply per item {state, result} (link.lua)."""
        flat: list[Any] = [len(items)]
        for parent, part, child, passed in items:
            flat.extend((parent, part, child, "1" if passed else ""))
        return self._run(client, "link", [], flat, now)

    def deliver(
        self,
        client: Client,
        items: list[tuple[str, str, str, bytes]],
        keep_s: int,
        now: int = 0,
    ) -> Any:
        """Apply hand-offs (child id, parent id, parent state, result) to children here, each
        once; a hand-off for a child not enqueued yet is kept `keep_s`. Reply per item: 1
        applied / 0 delivered before / 2 kept / 3 ignored (deliver.lua)."""
        return self._dispatch(client, self.deliver_call(items, keep_s, now))

    def deliver_call(
        self, items: list[tuple[str, str, str, bytes]], keep_s: int, now: int = 0
    ) -> Call:
        """The deliver call for `items`, ready for `execute` (followed by a WAIT)."""
        flat: list[Any] = [keep_s, len(items)]
        for it in items:
            flat.extend(it)
        return self._call("deliver", [], flat, now)

    def claim(
        self,
        client: Client,
        worker: str,
        queues: list[str],
        n: int,
        lease_ms: int,
        now: int = 0,
        start: int = 0,
    ) -> Any:
        """Claim up to `n` jobs, the first `start` of them marked begun (they go into idle slots
        at once); reply rows as documented in claim.lua."""
        return self._dispatch(client, self.claim_call(worker, queues, n, lease_ms, now, start))

    def claim_call(
        self, worker: str, queues: list[str], n: int, lease_ms: int, now: int = 0, start: int = 0
    ) -> Call:
        """The claim call (see `claim`), for `execute` or `block_then`."""
        k = self.keys
        keys = [k.leases, k.token, k.scheduled, k.ratelimits]
        return self._call("claim", keys, [worker, lease_ms, n, start, *queues], now)

    def complete(
        self,
        client: Client,
        items: list[tuple[str, str, bytes, int]],
        default_ttl: int,
        now: int = 0,
    ) -> Any:
        """Record successes (id, token, result, ms since the attempt began or -1); reply per
        job: 1 / 3 cancelled (its cancel was requested) / -1 not found / -2 stale."""
        flat: list[Any] = [default_ttl, len(items)]
        for it in items:
            flat.extend(it)
        jobs = [self.keys.job(it[0]) for it in items]
        return self._run(client, "complete", [self.keys.leases, *jobs], flat, now)

    def fail(
        self,
        client: Client,
        items: list[tuple[str, str, bytes, int, int]],
        default_ttl: int = 0,
        now: int = 0,
    ) -> Any:
        """Record failures (id, token, error, retry delay ms, ms since the attempt began or
        -1); reply: 1 retry / 2 dead /
        3 cancelled (expires after its TTL or `default_ttl`) / -1 / -2."""
        flat: list[Any] = [default_ttl, len(items)]
        for it in items:
            flat.extend(it)
        k = self.keys
        jobs = [k.job(it[0]) for it in items]
        return self._run(client, "fail", [k.leases, k.scheduled, k.dead, *jobs], flat, now)

    def reap(self, client: Client, limit: int, now: int = 0, max_lost: int = 3) -> Any:
        """Release, requeue or dead-letter jobs with expired leases; reply {requeued, dead}."""
        k = self.keys
        return self._run(client, "reap", [k.leases, k.dead, k.seq], [limit, max_lost], now)

    def promote(self, client: Client, limit: int, now: int = 0) -> Any:
        """Queue scheduled jobs that are due; reply: count."""
        return self._run(client, "promote", [self.keys.scheduled, self.keys.seq], [limit], now)

    def heartbeat(
        self,
        client: Client,
        items: list[tuple[str, str]],
        lease_ms: int,
        now: int = 0,
        worker: str = "",
        began: int = 0,
    ) -> Any:
        """Extend leases (and mark `worker` seen), marking the first `began` items begun; reply
        {lost ids, cancel-requested ids}."""
        flat: list[Any] = [lease_ms, worker, began]
        for it in items:
            flat.extend(it)
        k = self.keys
        jobs = [k.job(it[0]) for it in items]
        return self._run(client, "heartbeat", [k.leases, k.workers, *jobs], flat, now)

    def declare(self, client: Client, tasks: list[tuple[str, str]], now: int = 0) -> Any:
        """Publish tasks (name, settings JSON) in the task catalog and mark them seen now
        (declare.lua, control partition); reply: count."""
        flat: list[Any] = [len(tasks)]
        for it in tasks:
            flat.extend(it)
        k = self.keys
        return self._run(client, "declare", [k.tasks, k.tasks_seen], flat, now)

    def handback(
        self,
        client: Client,
        items: list[tuple[str, str, int]],
        delay_ms: int,
        grace_ms: int,
        now: int = 0,
    ) -> Any:
        """Give back running jobs of unknown tasks (id, token, known-until ms), scheduled
        after `delay_ms`; reply per job: 1 handed back / 0 grace over / -1 / -2."""
        flat: list[Any] = [delay_ms, grace_ms, len(items)]
        for it in items:
            flat.extend(it)
        k = self.keys
        jobs = [k.job(it[0]) for it in items]
        return self._run(client, "handback", [k.leases, k.scheduled, *jobs], flat, now)

    def requeue(self, client: Client, items: list[tuple[str, str]], now: int = 0) -> Any:
        """Return running jobs to their queues without counting the attempt; reply: count."""
        flat: list[Any] = []
        for it in items:
            flat.extend(it)
        jobs = [self.keys.job(it[0]) for it in items]
        return self._run(client, "requeue", [self.keys.leases, self.keys.seq, *jobs], flat, now)

    def cancel(self, client: Client, job_id: str, default_ttl: int, now: int = 0) -> Any:
        """Cancel a job; reply 1 cancelled / 2 running (flagged) / 0 finished / -1 not found."""
        return self._run(client, "cancel", [self.keys.scheduled], [job_id, default_ttl], now)

    def rerun(self, client: Client, job_id: str, now: int = 0) -> Any:
        """Queue a dead-lettered job again; reply 1 / -1 not found / -3 not failed."""
        return self._run(client, "rerun", [self.keys.dead, self.keys.seq], [job_id], now)

    def await_(
        self, client: Client, job_id: str, now: int = 0, push: bool = False, mode: str = ""
    ) -> Any:
        """Register a result waiter (mode '' first, 'renew' later slices, 'leave' to give up);
        reply 1 finished / 0 registered / -1 not found."""
        return self._run(client, "await", [], [job_id, "1" if push else "", mode], now)

    def await_and_pop(
        self, job_id: str, done_key: str, block_s: float, renew: bool = False
    ) -> tuple[int, Any]:
        """`await` (pushing a finished job's outcome) and a BLPOP on its done list, pipelined:
        one round trip whether the job is finished, finishes within `block_s`, or is missing.
        `renew` for every slice after the first (the caller is registered already).
        Returns the await code and the BLPOP reply (None on timeout)."""
        conn = self._conn()
        mode = "renew" if renew else ""
        packed = self._pack(self._call("await", [], [job_id, "1", mode], 0))
        blpop = pack_command(("BLPOP", done_key, str(block_s)))  # type: ignore[arg-type]
        try:
            conn.send_packed_command([packed + blpop])
            try:
                code = conn.read_response()
            except ResponseError as exc:
                if not _missing_library(exc):
                    conn.disconnect()
                    raise _explain_refusal(exc, self._lib) from None
                # Drop the connection, and with it the BLPOP queued behind; load and retry.
                conn.disconnect()
                self.load()
                return self.await_and_pop(job_id, done_key, block_s, renew)
            return int(code), conn.read_response()
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            conn.disconnect()
            raise

    def block_then(self, keys: list[str], block_s: float, call: Call) -> tuple[Any, Any]:
        """A BLPOP on `keys`, then `call`, pipelined on this thread's connection: the server
        runs the call the moment the BLPOP returns (a wake-up, or its timeout), so a worker
        woken for a job wakes with it claimed, in one round trip. Returns (the BLPOP reply,
        None on timeout; the call's reply). An error reply of the call raises; a missing
        library is loaded and the call sent again alone. The call must be safe to run
        whether or not the BLPOP popped anything (a claim is: it returns what is queued)."""
        conn = self._conn()
        blpop = pack_command(("BLPOP", *keys, str(block_s)))  # type: ignore[arg-type]
        try:
            conn.send_packed_command([bytes(blpop) + self._pack(call)])
            try:
                popped = conn.read_response()
            except ResponseError:
                conn.disconnect()  # (the call's reply is still on its way: out of step)
                raise
            try:
                reply = conn.read_response()
            except ResponseError as exc:
                if not _missing_library(exc):
                    raise _explain_refusal(exc, self._lib) from None
                self.load()
                return popped, self.execute([call])[0]
            return popped, reply
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            conn.disconnect()
            raise

    def progress(
        self, client: Client, job_id: str, token: str, fraction: float, message: str, now: int = 0
    ) -> Any:
        """Record progress of a running attempt; reply 1 / -2 (not the owner any more)."""
        return self._run(client, "progress", [], [job_id, token, fraction, message], now)

    def orphans(
        self, client: Client, gone_ms: int, limit: int, now: int = 0, queues: int = 200
    ) -> Any:
        """One bounded step over the queue registry: settle jobs targeted at workers gone for
        `gone_ms` (at most `limit` jobs), prune idle queues (of at most `queues` examined);
        reply {jobs settled, queues pruned, 1 if a pass over the registry ended}."""
        k = self.keys
        keys = [k.queues, k.workers, k.dead, k.seq, k.orphans_cursor]
        return self._run(client, "orphans", keys, [gone_ms, limit, queues], now)

    def epoch(self, client: Client, margin_ms: int = 0, now: int = 0) -> Any:
        """Check the node is a primary and move the token epoch if it changed (epoch.lua);
        reply {1, moved} on a primary, {0, its primary's address} on a replica."""
        return self._dispatch(client, self.epoch_call(margin_ms, now))

    def epoch_call(self, margin_ms: int = 0, now: int = 0) -> Call:
        k = self.keys
        return self._call("epoch", [k.epoch, k.token], [margin_ms or EPOCH_MARGIN_MS], now)

    def trim_dead(self, client: Client, cutoff_ms: int, limit: int, now: int = 0) -> Any:
        """Drop up to `limit` jobs dead-lettered at or before `cutoff_ms`; reply: count."""
        k = self.keys
        return self._run(client, "trim_dead", [k.dead, k.finished], [cutoff_ms, limit], now)

    def delete(self, client: Client, job_id: str, now: int = 0) -> Any:
        """Remove a finished job and its index entries; reply 1 / -1 not found / -3 active."""
        k = self.keys
        return self._run(client, "delete", [k.finished, k.dead], [job_id], now)

    def purge(self, client: Client, queue: str, limit: int, default_ttl: int, now: int = 0) -> Any:
        """Cancel up to `limit` queued jobs of `queue`; reply: count."""
        return self._run(client, "purge", [], [queue, limit, default_ttl], now)

    def leader(
        self, client: Client, candidate: str, lease_ms: int, release: bool = False, now: int = 0
    ) -> Any:
        """Take/keep (or release) the maintenance leader lease; reply 1 if `candidate` leads."""
        args: list[Any] = [candidate, lease_ms, "release" if release else ""]
        return self._run(client, "leader", [self.keys.leader], args, now)
