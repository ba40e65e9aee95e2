"""Every Redis key jobq uses, in one place.

A deployment is split into partitions (layout.py). Every key of a partition starts with
``{<tag>}:`` where the braces are a Cluster hash tag: the whole partition lives in one slot, and
every script runs inside one partition, so every script is Cluster-safe. Partition 0's tag is
the prefix (``{jobq}:``): with one partition (the default on one server) the deployment is one
slot, as before partitions existed. The Lua scripts build per-job and per-queue keys from the key
base they are given (always their own partition's) and the suffixes below (`LUA_SUFFIXES` is
rendered into each script's preamble by `scripts.py`), so no key name is written anywhere else
and no script can reach outside its slot.

Every key below exists once per partition, except the control keys (``leader``, ``master``,
``periodic``, ``periodic:next``, ``layout``, ``tasks``, ``tasks:seen``), which only the control partition (partition 0)
holds and which plain commands or control scripts (``leader``) touch. Worker presence
(``worker:<name>``, ``workers``) is written into every partition, because each partition's
``orphans`` walk (with its own ``orphans:cursor``) reads it there.

| key (after the prefix)  | type   | written by                         | read by                      |
|-------------------------|--------|------------------------------------|------------------------------|
| ``job:<id>``            | hash   | enqueue, claim, complete, fail,    | store (status/result), claim |
|                         |        | reap, promote, cancel, rerun       |                              |
| ``q:<queue>``           | zset   | enqueue, promote, reap, requeue    | claim (ZPOPMIN), queues view |
|                         |        | score = -priority * 2^40 + seq     |                              |
| ``wake:<queue>``        | list   | enqueue, promote, reap, claim      | idle workers (BLPOP)         |
| ``stats:<queue>``       | hash   | every transition (counters/gauges) | queues view                  |
| ``tstats:<queue>``      | hash   | claim (wait), complete, fail:      | task stats (histograms.py)   |
|                         |        | per task outcome counts, runtime   |                              |
|                         |        | and wait histogram buckets, sums   |                              |
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
| ``xkids:<id>``          | set    | link (a child in another partition | settle (one hand-off record  |
|                         |        | waits on <id>; member: partition,  | per member, to ``outbox``)   |
|                         |        | pass flag and child id)            |                              |
| ``outbox``              | stream | settle (hand-offs to children in   | handoff.py (delivers each    |
|                         |        | other partitions: c, k, p, s, r)   | record, then XDELs it)       |
| ``handed``              | stream | handoff.py (outbox records         | handoff.py (delivers each    |
|                         |        | delivered once, to a partition not | again after a grace, then    |
|                         |        | confirming replicas: copied here)  | XDELs it)                    |
| ``dlv:<id>``            | hash   | deliver (a hand-off that came      | enqueue of <id> (applies and |
|                         |        | before job <id> existed; expires)  | deletes it)                  |
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
| ``layout``              | string | the first process of a deployment  | every process (layout.py)    |
|                         |        | (partition count and tags, JSON);  | (control partition only)     |
|                         |        | `jobq migrate` (cli_migrate.py)    |                              |
| ``tasks``               | hash   | declare (worker start, then every  | by-name submits (registry.py)|
|                         |        | heartbeat): task -> its declared   | `periodic add`, workers given|
|                         |        | settings (JSON)                    | a task they do not know      |
| ``tasks:seen``          | zset   | declare (task -> last seen ms by a | the same (is a live worker   |
|                         |        | worker that knows it, server clock)| knowing the task?)           |
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
    "TSTATS": "tstats:",
    "DONE": "done:",
    "FINISHED": "finished",
    "SEQ": "seq",
    "CHILDREN": "children:",
    "XKIDS": "xkids:",
    "OUTBOX": "outbox",
    "DLV": "dlv:",
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
    """Key names for one partition of one deployment (see layout.py).

    `tag` is the partition's hash tag; partition 0's is the prefix itself, so a deployment of
    one partition keeps the one-slot layout above byte for byte. Partition 0 is also the
    control partition: the leader lease, master and worker presence, periodic specs and the
    layout record are read and written there only.
    """

    prefix: str = DEFAULT_PREFIX
    tag: str = ""

    @property
    def base(self) -> str:
        """The common start of every key of this partition: ``{<tag>}:``, the hash tag that
        keeps the partition in one slot."""
        return "{" + (self.tag or self.prefix) + "}:"

    def partition(self, tag: str) -> Keys:
        """The keys of another partition of the same deployment."""
        return Keys(self.prefix, "" if tag == self.prefix else tag)

    @property
    def control(self) -> Keys:
        """The keys of the control partition (partition 0)."""
        return Keys(self.prefix)

    @property
    def layout(self) -> str:
        """The deployment's partition layout (JSON), in the control partition."""
        return self.control.base + "layout"

    def job(self, job_id: str) -> str:
        return self.base + LUA_SUFFIXES["JOB"] + job_id

    def queue(self, name: str) -> str:
        return self.base + LUA_SUFFIXES["QUEUE"] + name

    def wake(self, name: str) -> str:
        return self.base + LUA_SUFFIXES["WAKE"] + name

    def stats(self, name: str) -> str:
        return self.base + LUA_SUFFIXES["STATS"] + name

    def tstats(self, name: str) -> str:
        """Per-task figures of queue `name` (counts and histograms, histograms.py)."""
        return self.base + LUA_SUFFIXES["TSTATS"] + name

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

    def children(self, job_id: str) -> str:
        """Children of `job_id` in this partition, waiting on it (enqueue, settle)."""
        return self.base + LUA_SUFFIXES["CHILDREN"] + job_id

    def xkids(self, job_id: str) -> str:
        """Children of `job_id` that live in other partitions (handoff.py)."""
        return self.base + LUA_SUFFIXES["XKIDS"] + job_id

    @property
    def outbox(self) -> str:
        """Hand-off records to children in other partitions, awaiting delivery (handoff.py)."""
        return self.base + LUA_SUFFIXES["OUTBOX"]

    @property
    def handed(self) -> str:
        """Outbox records delivered once, delivered again after a grace (handoff.py)."""
        return self.base + "handed"

    def dlv(self, job_id: str) -> str:
        """Hand-offs delivered before job `job_id` was enqueued here (handoff.py)."""
        return self.base + LUA_SUFFIXES["DLV"] + job_id

    def unique(self, key: str) -> str:
        return self.base + LUA_SUFFIXES["UNIQUE"] + key

    def conc(self, key: str) -> str:
        return self.base + LUA_SUFFIXES["CONC"] + key

    @property
    def orphans_cursor(self) -> str:
        return self.base + "orphans:cursor"

    @property
    def tasks(self) -> str:
        """The task catalog (registry.py): task -> declared settings, in the control partition."""
        return self.control.base + "tasks"

    @property
    def tasks_seen(self) -> str:
        """Per task, when a live worker that knows it was last seen (ms, server clock)."""
        return self.control.base + "tasks:seen"

    @property
    def periodic(self) -> str:
        return self.base + "periodic"

    @property
    def periodic_next(self) -> str:
        return self.base + "periodic:next"
