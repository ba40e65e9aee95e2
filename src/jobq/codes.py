"""Every integer code a Lua script returns, in one table: the replies of `lua/*.lua` by name.

A script answers with small integers (a job's outcome, a refusal, a flag); each script's header
says which under `Returns:` ("1 = created, 0 = ..."). Callers (store, client, HTTP API, worker,
maintenance) compare replies with these names, never with literals, so a code's meaning is
written once; tests/test_codes.py checks this table against the headers both ways. Negative
codes are refusals shared by several scripts; `errors.from_code` turns them into exceptions.
A leaf module (imports nothing of jobq), so any module may use it without an import cycle.
"""

from __future__ import annotations

from enum import IntEnum


class Refusal(IntEnum):
    """The negative codes, shared by every script that refuses a job this way."""

    NOT_FOUND = -1
    """No job hash with this id (never submitted, expired, or evicted)."""
    STALE_TOKEN = -2
    """The attempt token no longer owns the job: not running, or a newer attempt took it."""
    WRONG_STATE = -3
    """The job is not in the state the operation needs (rerun of a job that is not failed)."""


class Enqueue(IntEnum):
    """enqueue.lua, per job (a string reply instead = the id of the pending job holding the
    same unique key, which then stands for this one)."""

    EXISTS = 0
    """A job with this id exists already: left unchanged (enqueue is idempotent per id)."""
    CREATED = 1
    """Created: queued, scheduled, or failed at once (a parent had already failed)."""


class Complete(IntEnum):
    """complete.lua, per job."""

    STALE_TOKEN = Refusal.STALE_TOKEN.value
    NOT_FOUND = Refusal.NOT_FOUND.value
    RECORDED = 1
    """The success is recorded (the job is `succeeded`)."""
    CANCELLED = 3
    """Its cancel had been requested before the outcome came: it ends `cancelled`, the result
    discarded, its dependents settled as a cancelled job's (the same code as `Fail`'s)."""


class Fail(IntEnum):
    """fail.lua, per job."""

    STALE_TOKEN = Refusal.STALE_TOKEN.value
    NOT_FOUND = Refusal.NOT_FOUND.value
    RETRY_SCHEDULED = 1
    """Attempts remain: the job is `scheduled` again after its back-off."""
    DEAD_LETTERED = 2
    """No attempt left (or no retry asked): `failed`, in the dead-letter set."""
    CANCELLED = 3
    """Its cancel had been requested: it ends `cancelled`, not failed."""


class Cancel(IntEnum):
    """cancel.lua."""

    NOT_FOUND = Refusal.NOT_FOUND.value
    FINISHED = 0
    """Already terminal: nothing to cancel."""
    CANCELLED = 1
    """Was queued or scheduled: cancelled at once."""
    REQUESTED = 2
    """Is running: flagged, the task sees the request (and the worker stops it)."""


class Rerun(IntEnum):
    """rerun.lua."""

    WRONG_STATE = Refusal.WRONG_STATE.value
    NOT_FOUND = Refusal.NOT_FOUND.value
    QUEUED = 1
    """The dead-lettered job is queued again, its attempts reset."""


class Delete(IntEnum):
    """delete.lua."""

    WRONG_STATE = Refusal.WRONG_STATE.value
    """Queued, scheduled or running: only a finished job is deleted (cancel it first)."""
    NOT_FOUND = Refusal.NOT_FOUND.value
    DELETED = 1
    """The job's hash, result list and index entries are gone."""


class Await(IntEnum):
    """await.lua."""

    NOT_FOUND = Refusal.NOT_FOUND.value
    REGISTERED = 0
    """Registered as a waiter: the outcome will be pushed to done:<id>."""
    FINISHED = 1
    """Already terminal: read it now (with push, its outcome was pushed already)."""


class Progress(IntEnum):
    """progress.lua."""

    STALE_TOKEN = Refusal.STALE_TOKEN.value
    RECORDED = 1


class Leader(IntEnum):
    """leader.lua."""

    OTHER = 0
    """Another candidate holds the lease (or this one just released it)."""
    LEADS = 1
    """This candidate holds the lease (taken or extended)."""


class Role(IntEnum):
    """epoch.lua, first field of its reply: what the node a connection reached is."""

    REPLICA = 0
    """A replica (the second field names its primary): nothing was written."""
    PRIMARY = 1


class EpochMoved(IntEnum):
    """epoch.lua, second field of a primary's reply."""

    SAME = 0
    """The token issuer is the one that issued the last token."""
    MOVED = 1
    """A new primary (restart or promotion): the token counter was rebased past the old one."""


class OrphansPass(IntEnum):
    """orphans.lua, third field of its reply: where the walk over the queue registry is."""

    MORE = 0
    """The pass over the registry goes on at the next call."""
    DONE = 1
    """This call ended a pass over the registry (the next starts from the beginning)."""


class ClaimRow(IntEnum):
    """claim.lua: the first field of a row that is not a job (a job row starts with its id)."""

    NOTICE = 0
    """Ids popped that could not be run (missing or malformed), reported for a warning."""


class Deliver(IntEnum):
    """deliver.lua, per hand-off (handoff.py deletes the outbox record after any of these)."""

    DUPLICATE = 0
    """Delivered before (the record was sent again): nothing done."""
    APPLIED = 1
    """Recorded in the child's hash: the child was queued (its last pending parent), failed
    (the parent failed or was cancelled), or only noted (it waits on other parents, or is
    cancelled or finished already)."""
    KEPT = 2
    """The child is not enqueued yet: kept in dlv:<child> for its enqueue (with an expiry)."""
    IGNORED = 3
    """The child does not depend on that parent, or its key is not a job hash."""


class Handback(IntEnum):
    """handback.lua, per job."""

    STALE_TOKEN = Refusal.STALE_TOKEN.value
    NOT_FOUND = Refusal.NOT_FOUND.value
    GRACE_OVER = 0
    """No live worker has known its task for the grace: nothing written, the job is still
    running under the caller's token, for the caller to fail (`UnknownTask`)."""
    HANDED_BACK = 1
    """`scheduled` again after the delay, for a worker that knows the task; the attempt is
    not counted, and the job's `unk` field keeps when it was first found unknown."""
    CANCEL_REQUESTED = 2
    """Its cancel was requested: nothing written; the caller reports the attempt as failed,
    which ends the job `cancelled` (fail.lua)."""


#: Which codes each script returns (scripts that return counts or lists only are absent).
BY_SCRIPT: dict[str, tuple[type[IntEnum], ...]] = {
    "enqueue": (Enqueue,),
    "complete": (Complete,),
    "fail": (Fail,),
    "cancel": (Cancel,),
    "rerun": (Rerun,),
    "delete": (Delete,),
    "await": (Await,),
    "progress": (Progress,),
    "leader": (Leader,),
    "epoch": (Role, EpochMoved),
    "orphans": (OrphansPass,),
    "claim": (ClaimRow,),
    "deliver": (Deliver,),
    "handback": (Handback,),
}
