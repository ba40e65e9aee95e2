"""What a redis-py exception means for jobq: one translation into the typed errors of `errors.py`.

Every call to the broker goes through `Store.broker`, which raises what `translate` returns, so
callers (and the loops' ``except BrokerUnavailable`` handlers) never see a raw redis-py exception:
connection loss and timeouts, "not now" replies (LOADING, BUSY, READONLY, MASTERDOWN, cluster
redirects) and OOM are retriable `BrokerUnavailable` (OOM as `BrokerFull`); any other error
reply is a `BrokerError` quoting the server.
"""

from __future__ import annotations

import redis

from .cluster_url import is_cluster
from .errors import (
    BrokerError,
    BrokerUnavailable,
    DependencyCycle,
    JobIdConflict,
    JobNotFound,
    JobqError,
    auth_failed,
    reply_error,
)
from .topology import NoPrimary, NotPrimary, SlotMoved, is_sentinel


def reply_code(exc: BaseException) -> str:
    """The error code of a server reply ("OOM", "BUSY", ...): redis-py strips the codes it
    knows into ``status_code`` and leaves the others as the message's first word."""
    code = getattr(exc, "status_code", None)
    if code:
        return str(code)
    first = str(exc).split(" ", 1)[0]
    return first if first.isupper() else "ERR"


def _message(exc: BaseException) -> str:
    msg = str(exc).strip()
    code = getattr(exc, "status_code", None)
    if not code and msg.split(" ", 1)[0] == reply_code(exc):
        msg = msg.split(" ", 1)[1] if " " in msg else ""
    return msg


def translate(exc: BaseException, url: str, doing: str) -> JobqError:
    """The jobq error for `exc`, raised while `doing` against the server at `url` (redacted)."""
    if isinstance(exc, JobqError):
        return exc
    msg = str(exc)
    if msg.startswith("JOBQ_CYCLE"):  # refusals our scripts raise on purpose
        return DependencyCycle(msg.removeprefix("JOBQ_CYCLE ").strip())
    if msg.startswith("JOBQ_PARENT"):
        return JobNotFound("depends_on: " + msg.removeprefix("JOBQ_PARENT ").strip())
    if msg.startswith("JOBQ_IDCONFLICT "):  # "<id>\t<existing task>\t<task>"
        job_id, _, rest = msg.removeprefix("JOBQ_IDCONFLICT ").partition("\t")
        existing, _, task = rest.partition("\t")
        return JobIdConflict(job_id, existing, task)
    if isinstance(exc, redis.BusyLoadingError):  # a ConnectionError subclass in redis-py
        return reply_error("LOADING", _message(exc), url, doing)
    if isinstance(exc, redis.AuthenticationError):  # wrong password: retrying will not help
        code = reply_code(exc)
        return auth_failed("NOAUTH" if code == "NOAUTH" else "WRONGPASS", url, _message(exc))
    if is_sentinel(url) and isinstance(exc, redis.ConnectionError | redis.TimeoutError | OSError):
        return _no_primary(exc, url, doing)
    if is_cluster(url) and isinstance(exc, redis.ConnectionError | redis.TimeoutError | OSError):
        return _cluster_unavailable(exc, url, doing)
    if isinstance(exc, NotPrimary):
        return BrokerUnavailable(
            f"Valkey at {url} is a read-only replica now, not the primary, while {doing} "
            f"({msg}): jobq writes only to a primary and waits for one; a redis+sentinel:// URL "
            "follows failovers, a one-server URL must name the primary",
            "not the primary",
        )
    # Before error replies: "max number of clients reached" is a ConnectionError with a code.
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError | OSError):
        reason = "timed out" if isinstance(exc, redis.TimeoutError | TimeoutError) else msg
        return BrokerUnavailable(
            f"cannot reach Valkey at {url} while {doing} ({msg or type(exc).__name__}): is the "
            "server (or `jobq master`) running? set JOBQ_URL or --url to point elsewhere",
            reason or type(exc).__name__,
        )
    if isinstance(exc, redis.ResponseError) or getattr(exc, "status_code", None):
        return reply_error(reply_code(exc), _message(exc), url, doing)
    return BrokerError(f"Valkey at {url} failed while {doing}: {type(exc).__name__}: {msg}")


def _no_primary(exc: BaseException, url: str, doing: str) -> BrokerUnavailable:
    """A connection failure on a Sentinel URL: no primary now, most likely a failover under
    way (the Sentinels' own answer is quoted). Pointing the user at JOBQ_URL would mislead:
    the URL names the Sentinels, and they are what to ask."""
    msg = str(exc) or type(exc).__name__
    if isinstance(exc, NoPrimary):  # the resolver asked every Sentinel: no primary up
        return BrokerUnavailable(
            f"no primary for {url} while {doing}: {msg}", "no primary named by the Sentinels"
        )
    if isinstance(exc, NotPrimary):  # the Sentinels still name a node that was demoted
        what, reason = "a replica now, not the primary", "not the primary"
    elif isinstance(exc, redis.TimeoutError | TimeoutError):
        what, reason = "not answering", "timed out"
    else:
        what, reason = "unreachable", "primary unreachable"
    return BrokerUnavailable(
        f"the primary the Sentinels of {url} name is {what} while {doing} ({msg}): a failover "
        "may be under way (it starts once the Sentinels agree the primary is down, after "
        "their down-after-milliseconds); jobq retries on the primary they name next. If it "
        "lasts, ask a Sentinel: SENTINEL MASTER <service>, SENTINEL REPLICAS <service>",
        reason,
    )


def _cluster_unavailable(exc: BaseException, url: str, doing: str) -> BrokerUnavailable:
    """A connection failure on a Cluster URL: the slot moved (`SlotMoved`), or the primary
    serving it is down or being replaced. Pointing the user at JOBQ_URL would mislead: the
    URL names seed nodes, and the cluster's own view is what to check."""
    msg = str(exc) or type(exc).__name__
    if isinstance(exc, SlotMoved):
        return BrokerUnavailable(
            f"the Valkey Cluster {url} moved the slot of this partition while {doing} ({msg}): "
            "a resharding or failover is under way; jobq retries on the node that serves it now",
            "slot moved",
        )
    if isinstance(exc, NoPrimary):  # cluster.NoSlotOwner: no node answered, or no owner
        return BrokerUnavailable(f"no node serves {url} while {doing}: {msg}", "no slot owner")
    reason = "timed out" if isinstance(exc, redis.TimeoutError | TimeoutError) else msg
    return BrokerUnavailable(
        f"the Valkey Cluster node serving this partition of {url} is unreachable while {doing} "
        f"({msg}): a failover may be under way (a replica takes over once the other primaries "
        "count this one down, after cluster-node-timeout); jobq retries on the node the cluster "
        "names next. If it lasts, ask a node: CLUSTER INFO, CLUSTER SHARDS",
        reason or type(exc).__name__,
    )


#: What `Store.broker` translates: everything redis-py raises, and socket errors under it.
RAISED = (redis.RedisError, OSError)
