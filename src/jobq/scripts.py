"""One typed wrapper per Lua script; the only place scripts are loaded and called.

Each script in ``lua/`` gets the key suffixes from `keys.LUA_SUFFIXES` and ``_preamble.lua``
prepended, so key names exist only in `keys.py`. Every call passes the common ARGV head
(key base, `now`, events cap) and the events stream as KEYS[1]. redis-py's `Script` runs
EVALSHA and reloads on NOSCRIPT (after a server restart), also inside pipelines.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

import redis

from .keys import LUA_SUFFIXES, Keys

Client = redis.Redis | redis.client.Pipeline

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
)


@cache
def source(name: str) -> str:
    """The full Lua source of script `name`, preamble included."""
    lua = resources.files("jobq") / "lua"
    consts = "".join(f"local K_{k} = '{v}'\n" for k, v in LUA_SUFFIXES.items())
    preamble = (lua / "_preamble.lua").read_text()
    body = (lua / f"{name}.lua").read_text()
    return consts + preamble + "\n" + body


class Scripts:
    """The scripts, registered on one client; each method runs one atomic transition."""

    def __init__(self, client: redis.Redis, keys: Keys, events_maxlen: int) -> None:
        self.keys = keys
        self._maxlen = str(events_maxlen)
        self._s = {name: client.register_script(source(name)) for name in SCRIPT_NAMES}

    def _run(self, client: Client, name: str, keys: list[str], args: list[Any], now: int) -> Any:
        head: list[Any] = [self.keys.base, now, self._maxlen]
        return self._s[name](keys=[self.keys.events, *keys], args=head + args, client=client)

    def enqueue(self, client: Client, jobs: list[list[Any]], now: int = 0) -> Any:
        """Create jobs (10 fields each, see enqueue.lua); reply: 1 created / 0 existed per job."""
        flat: list[Any] = [len(jobs)]
        for j in jobs:
            flat.extend(j)
        k = self.keys
        return self._run(client, "enqueue", [k.scheduled, k.seq, k.queues], flat, now)

    def claim(
        self, client: Client, worker: str, queues: list[str], n: int, lease_ms: int, now: int = 0
    ) -> Any:
        """Claim up to `n` jobs; reply rows as documented in claim.lua."""
        k = self.keys
        return self._run(client, "claim", [k.leases, k.token], [worker, lease_ms, n, *queues], now)

    def complete(
        self, client: Client, items: list[tuple[str, str, bytes]], default_ttl: int, now: int = 0
    ) -> Any:
        """Record successes (id, token, result); reply: 1 / -1 not found / -2 stale per job."""
        flat: list[Any] = [default_ttl, len(items)]
        for it in items:
            flat.extend(it)
        return self._run(client, "complete", [self.keys.leases], flat, now)

    def fail(self, client: Client, items: list[tuple[str, str, bytes, int]], now: int = 0) -> Any:
        """Record failures (id, token, error, retry delay ms); reply: 1 retry / 2 dead / -1 / -2."""
        flat: list[Any] = [len(items)]
        for it in items:
            flat.extend(it)
        k = self.keys
        return self._run(client, "fail", [k.leases, k.scheduled, k.dead], flat, now)

    def reap(self, client: Client, limit: int, now: int = 0) -> Any:
        """Requeue or dead-letter jobs with expired leases; reply {requeued, dead}."""
        k = self.keys
        return self._run(client, "reap", [k.leases, k.dead, k.seq], [limit], now)

    def promote(self, client: Client, limit: int, now: int = 0) -> Any:
        """Queue scheduled jobs that are due; reply: count."""
        return self._run(client, "promote", [self.keys.scheduled, self.keys.seq], [limit], now)

    def heartbeat(
        self, client: Client, items: list[tuple[str, str]], lease_ms: int, now: int = 0
    ) -> Any:
        """Extend leases; reply {lost ids, cancel-requested ids}."""
        flat: list[Any] = [lease_ms]
        for it in items:
            flat.extend(it)
        return self._run(client, "heartbeat", [self.keys.leases], flat, now)

    def requeue(self, client: Client, items: list[tuple[str, str]], now: int = 0) -> Any:
        """Return running jobs to their queues without counting the attempt; reply: count."""
        flat: list[Any] = []
        for it in items:
            flat.extend(it)
        return self._run(client, "requeue", [self.keys.leases, self.keys.seq], flat, now)

    def cancel(self, client: Client, job_id: str, default_ttl: int, now: int = 0) -> Any:
        """Cancel a job; reply 1 cancelled / 2 running (flagged) / 0 finished / -1 not found."""
        return self._run(client, "cancel", [self.keys.scheduled], [job_id, default_ttl], now)

    def rerun(self, client: Client, job_id: str, now: int = 0) -> Any:
        """Queue a dead-lettered job again; reply 1 / -1 not found / -3 not failed."""
        return self._run(client, "rerun", [self.keys.dead, self.keys.seq], [job_id], now)

    def await_(self, client: Client, job_id: str, now: int = 0) -> Any:
        """Register a result waiter; reply 1 finished / 0 registered / -1 not found."""
        return self._run(client, "await", [], [job_id], now)

    def leader(
        self, client: Client, candidate: str, lease_ms: int, release: bool = False, now: int = 0
    ) -> Any:
        """Take/keep (or release) the maintenance leader lease; reply 1 if `candidate` leads."""
        args: list[Any] = [candidate, lease_ms, "release" if release else ""]
        return self._run(client, "leader", [self.keys.leader], args, now)
