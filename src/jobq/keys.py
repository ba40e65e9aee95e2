"""Every Redis key jobq uses, in one place.

All keys of one deployment start with ``{<prefix>}:`` where the braces are a Redis Cluster
hash tag, so the whole deployment lives in one slot and every script is Cluster-safe. The Lua
scripts build per-job and per-queue keys from the same suffixes below (`LUA_SUFFIXES` is rendered
into each script's preamble by `scripts.py`), so no key name is written anywhere else.

| key (after the prefix)  | type   | written by                         | read by                      |
|-------------------------|--------|------------------------------------|------------------------------|
| ``job:<id>``            | hash   | enqueue, claim, complete, fail,    | store (status/result), claim |
|                         |        | reap, promote, cancel, rerun       |                              |
| ``q:<queue>``           | zset   | enqueue, promote, reap, requeue    | claim (ZPOPMIN), queues view |
|                         |        | score = -priority * 2^40 + seq     |                              |
| ``wake:<queue>``        | list   | enqueue, promote, reap, claim      | idle workers (BLPOP)         |
| ``stats:<queue>``       | hash   | every transition (counters/gauges) | queues view                  |
| ``queues``              | set    | enqueue, orphans (prunes idle ones)| queues view, orphans (SSCAN) |
| ``orphans:cursor``      | string | orphans (registry walk cursor)     | orphans                      |
| ``scheduled``           | zset   | enqueue (eta), fail (back-off)     | promote (score = due ms)     |
| ``leases``              | zset   | claim, heartbeat, complete, fail   | reap (score = lease deadline)|
| ``dead``                | zset   | fail, reap (attempts exhausted),   | dead-letter list, rerun      |
|                         |        | claim (malformed); trim_dead drops |                              |
|                         |        | those past the retention           |                              |
| ``done:<id>``           | list   | complete/fail/cancel (if waited)   | Job.result (BLPOP)           |
| ``finished``            | zset   | complete, fail, reap, cancel       | job lists (score = finish ms)|
|                         |        | trimmed to the result TTL by maint.|                              |
| ``children:<id>``       | set    | enqueue (child waits on <id>)      | settle (release/fail kids)   |
| ``unique:<key>``        | string | enqueue (unique_key -> job id)     | enqueue; settle deletes it   |
| ``conc:<key>``          | string | claim (+1), settle/requeue (-1)    | claim (limit per key)        |
| ``cwait:<key>``         | list   | claim (job over its key's limit)   | settle (next waiting job)    |
| ``rate:<task>``         | string | claim (next free start slot, GCRA) | claim (rate limit per task)  |
| ``ratelimits``          | hash   | worker start (task -> N:period ms) | claim                        |
| ``periodic``            | hash   | worker/master start, CLI (specs)   | maintenance (fire)           |
| ``periodic:next``       | zset   | periodic registration, fire        | maintenance (due specs)      |
| ``events``              | stream | every transition (capped)          | watch, SSE, dashboard        |
| ``seq``                 | string | enqueue (FIFO order counter)       | -                            |
| ``token``               | string | claim (fencing token counter),     | -                            |
|                         |        | epoch (rebased on a new primary)   |                              |
| ``epoch``               | string | epoch (run id:replication id of    | epoch (on every connect)     |
|                         |        | the primary issuing tokens)        |                              |
| ``leader``              | string | maintenance (leader lease)         | maintenance                  |
| ``master``              | string | jobq master (presence, with TTL)   | workers (defer leadership)   |
| ``worker:<name>``       | hash   | worker heartbeat (with TTL)        | workers view                 |
| ``workers``             | zset   | worker heartbeat (last seen ms)    | workers view                 |
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PREFIX = "jobq"

# Suffixes shared with the Lua preamble: name -> suffix. Lua sees them as K_<NAME>.
LUA_SUFFIXES: dict[str, str] = {
    "JOB": "job:",
    "QUEUE": "q:",
    "WAKE": "wake:",
    "STATS": "stats:",
    "DONE": "done:",
    "FINISHED": "finished",
    "SEQ": "seq",
    "CHILDREN": "children:",
    "UNIQUE": "unique:",
    "CONC": "conc:",
    "CWAIT": "cwait:",
    "RATE": "rate:",
    "RATELIMITS": "ratelimits",
    "WORKERS": "workers",
    "DEAD": "dead",
    "WORKER": "worker:",
}

#: Queue names (not keys) that targeted dispatch uses: a worker's own queue and its group's.
WORKER_QUEUE = "@worker:"
GROUP_QUEUE = "@group:"


def worker_queue(name: str) -> str:
    """The queue only the worker called `name` serves."""
    return WORKER_QUEUE + name


def group_queue(group: str) -> str:
    """The queue every worker of `group` serves."""
    return GROUP_QUEUE + group


@dataclass(frozen=True, slots=True)
class Keys:
    """Key names for one deployment (one prefix)."""

    prefix: str = DEFAULT_PREFIX

    @property
    def base(self) -> str:
        """The common start of every key: ``{<prefix>}:``, the hash tag keeping one slot."""
        return "{" + self.prefix + "}:"

    def job(self, job_id: str) -> str:
        return self.base + LUA_SUFFIXES["JOB"] + job_id

    def queue(self, name: str) -> str:
        return self.base + LUA_SUFFIXES["QUEUE"] + name

    def wake(self, name: str) -> str:
        return self.base + LUA_SUFFIXES["WAKE"] + name

    def stats(self, name: str) -> str:
        return self.base + LUA_SUFFIXES["STATS"] + name

    def done(self, job_id: str) -> str:
        return self.base + LUA_SUFFIXES["DONE"] + job_id

    @property
    def finished(self) -> str:
        return self.base + LUA_SUFFIXES["FINISHED"]

    @property
    def queues(self) -> str:
        return self.base + "queues"

    @property
    def scheduled(self) -> str:
        return self.base + "scheduled"

    @property
    def leases(self) -> str:
        return self.base + "leases"

    @property
    def dead(self) -> str:
        return self.base + LUA_SUFFIXES["DEAD"]

    @property
    def events(self) -> str:
        return self.base + "events"

    @property
    def seq(self) -> str:
        return self.base + LUA_SUFFIXES["SEQ"]

    @property
    def token(self) -> str:
        return self.base + "token"

    @property
    def epoch(self) -> str:
        return self.base + "epoch"

    @property
    def leader(self) -> str:
        return self.base + "leader"

    @property
    def master(self) -> str:
        return self.base + "master"

    def worker(self, name: str) -> str:
        return self.base + LUA_SUFFIXES["WORKER"] + name

    @property
    def workers(self) -> str:
        return self.base + LUA_SUFFIXES["WORKERS"]

    @property
    def ratelimits(self) -> str:
        return self.base + LUA_SUFFIXES["RATELIMITS"]

    def unique(self, key: str) -> str:
        return self.base + LUA_SUFFIXES["UNIQUE"] + key

    def conc(self, key: str) -> str:
        return self.base + LUA_SUFFIXES["CONC"] + key

    @property
    def orphans_cursor(self) -> str:
        return self.base + "orphans:cursor"

    @property
    def periodic(self) -> str:
        return self.base + "periodic"

    @property
    def periodic_next(self) -> str:
        return self.base + "periodic:next"
