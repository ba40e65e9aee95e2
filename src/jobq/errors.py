"""One exception hierarchy for jobq, and the table from Lua error codes to exceptions.

Scripts return negative integers for refusals (`codes.Refusal`: stale token, wrong state,
...); `from_code` turns them into the exceptions below.
"""

from __future__ import annotations

from .codes import Refusal


class JobqError(Exception):
    """Base of every error jobq raises on purpose."""


class BrokerError(JobqError):
    """The broker refused a command for a reason retrying will not fix by itself (NOPERM, a
    wrong type, an unknown reply); the message quotes the server and says what to check."""

    #: Short cause for logs ("NOPERM", "connection refused"), so a loop can tell episodes apart.
    reason: str = ""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or type(self).__name__


class BrokerUnavailable(BrokerError):
    """The Valkey/Redis server cannot serve now: unreachable, timing out, restarting (LOADING),
    busy with a script, read-only after a failover, ...; the same call later may succeed."""

    #: Seconds a caller (an HTTP client through ``Retry-After``) should wait before retrying.
    retry_after_s: int = 1


class BrokerFull(BrokerUnavailable):
    """The server is out of memory, or past the share of ``maxmemory`` jobq submits into
    (``JOBQ_MEMORY_LIMIT``): new jobs are refused so running ones can finish; retry later."""

    retry_after_s = 5


class AuthFailed(BrokerError):
    """The server refused the URL's credentials (WRONGPASS, a disabled ACL user) or wants some
    the URL lacks (NOAUTH): retrying cannot fix it, so no loop waits it out and every process
    ends with one line saying which (the CLI exits 3)."""

    #: True if the URL has no password but the server requires one.
    missing: bool = False


def auth_failed(code: str, url: str, detail: str = "") -> AuthFailed:
    """The one-line error for an authentication refusal `code` by the server at `url`
    (redacted): "wrong password for ..." or "password required by ...", and the fix."""
    fix = (
        "set JOBQ_URL (or --url, or App(url=...)) to redis://USER:PASSWORD@host:port/0 "
        "with the deployment's user and password (`jobq acl --show-secrets` on the server "
        "host prints them)"
    )
    missing = code == "NOAUTH"
    lead = f"password required by {url}" if missing else f"wrong password for {url}"
    why = code if missing or not detail else f"{code}: {detail.strip().rstrip('.')}"
    err = AuthFailed(f"{lead} ({why}): {fix}", "password required" if missing else "wrong password")
    err.missing = missing
    return err


class ConfigError(JobqError):
    """A setting is invalid or contradicts another."""


class InvalidOption(ConfigError, ValueError):
    """A submit option (or a task's default for it) is out of range or not a number jobq can
    keep: NaN, an infinity, a timeout of 0, a fractional priority... The message names the
    option, the value and what is accepted; the CLI exits 2, HTTP answers 400/422."""


class JobIdConflict(JobqError, ValueError):
    """A job with this id already exists for another task: the id is an idempotency key for
    one task's job, so reusing it for another would silently hand back the wrong result."""

    def __init__(self, job_id: str, existing_task: str, task: str) -> None:
        super().__init__(
            f"job id {job_id!r} is taken by a job of task {existing_task!r}, not {task!r}: "
            "give this job another id (the same id again for the same task returns that job)"
        )
        self.job_id = job_id
        self.existing_task = existing_task
        self.task = task


class UsageProblem(ConfigError):
    """A command line (or a URL given to one) is malformed or its options contradict each
    other: the CLI exits 2 like for click's own usage errors, naming the option and the fix."""


class NoServer(BrokerError):
    """No broker to talk to: no URL was given and no embedded server runs in the data
    directory. Read-only commands say so instead of starting a new, empty server."""


class SerializationError(JobqError):
    """A value could not be encoded for the wire (the message names the argument)."""


class DecodeError(JobqError):
    """A payload read from the broker could not be decoded."""


class UnknownTask(JobqError):
    """No task is registered under this name."""


class JobNotFound(JobqError):
    """No job with this id exists (never submitted, or its result expired)."""


class StaleToken(JobqError):
    """The attempt token no longer owns the job: a newer attempt (or the reaper) took it over."""


class InvalidTransition(JobqError):
    """The job is not in a state that allows this operation."""


class DependencyCycle(JobqError):
    """A job would depend on itself through its parents."""


class JobFailed(JobqError):
    """The job ended in `failed`; carries the remote exception's type, message and traceback."""

    def __init__(self, job_id: str, exc_type: str, message: str, traceback: str = "") -> None:
        super().__init__(f"job {job_id} failed: {exc_type}: {message}")
        self.job_id = job_id
        self.exc_type = exc_type
        self.message = message
        self.remote_traceback = traceback


class JobCancelled(JobqError):
    """The job was cancelled before it produced a result."""


class ResultTimeout(JobqError, TimeoutError):
    """The job did not finish within the time the caller was willing to wait."""


class DurabilityUnsupported(ConfigError):
    """Durable mode was asked for but this server cannot confirm an fsync (no WAITAOF before
    Valkey 8 / Redis 7.2, AOF off, or no permission); nothing was written."""


class DurabilityTimeout(JobqError, TimeoutError):
    """The write was applied (the jobs are queued), but the server did not confirm its fsync
    or enough replicas in time: it may or may not survive a crash or a failover. Submitting the
    same job ids again is safe."""

    def __init__(self, message: str, job_ids: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.job_ids = job_ids


class Retry(Exception):
    """Raised by a task to ask for another attempt (after `delay` seconds if given)."""

    def __init__(self, delay: float | None = None) -> None:
        super().__init__(f"retry requested (delay={delay})")
        self.delay = delay


# Error replies that mean "not now" (the server, or the cluster, will serve again on its own),
# with what each means for a reader of the log.
TRANSIENT_REPLIES = {
    "LOADING": "the server is loading its data set after a restart",
    "BUSY": "the server is busy running a long script (see busy-reply-threshold)",
    "READONLY": "the server is a read-only replica (a failover in progress, or a replica's URL)",
    "MASTERDOWN": "the replica lost its link to the primary",
    "NOREPLICAS": "not enough replicas are connected to accept writes (min-replicas-to-write)",
    "TRYAGAIN": "the cluster is moving the keys' slot (resharding)",
    "CLUSTERDOWN": "the cluster is down (a slot is not served)",
    "MOVED": "the key's slot lives on another cluster node: use a redis+cluster:// URL",
    "ASK": "the key's slot is migrating to another cluster node",
    "UNBLOCKED": "a blocking call was interrupted (CLIENT UNBLOCK, or the server turned replica)",
}

_OOM_HINT = (
    "free memory (finished jobs expire after result_ttl_s; purge queues you do not need) or raise "
    "maxmemory; submits resume on their own once memory is freed"
)


def reply_error(code: str, message: str, url: str, doing: str) -> BrokerError:
    """The typed error for a server's error reply `code` (its first word) while `doing`."""
    where = f"Valkey at {url}"
    if code == "OOM":
        return BrokerFull(
            f"{where} is out of memory while {doing} (OOM {message}): {_OOM_HINT}", "OOM"
        )
    if code in TRANSIENT_REPLIES:
        return BrokerUnavailable(
            f"{where} cannot serve while {doing}: {TRANSIENT_REPLIES[code]} ({code} {message}); "
            "jobq retries",
            code,
        )
    if code in ("NOAUTH", "WRONGPASS"):  # retrying will not help: the URL must change
        return auth_failed(code, url, message)
    hint = ""
    if code == "NOPERM":
        hint = ": the URL's user lacks a permission jobq needs; check its ACL (ACL GETUSER)"
    return BrokerError(f"{where} refused a command while {doing}: {code} {message}{hint}", code)


def memory_full(url: str, used: int, maxmemory: int, limit: float) -> BrokerFull:
    """The error a submit gets once used memory passes `limit` of `maxmemory` (back-pressure)."""
    return BrokerFull(
        f"Valkey at {url} uses {used / maxmemory:.0%} of its maxmemory ({maxmemory >> 20} MiB); "
        f"jobq refuses new jobs past {limit:.0%} (JOBQ_MEMORY_LIMIT) so running jobs can finish: "
        f"{_OOM_HINT}",
        "memory limit",
    )


def gave_up_waiting(
    last: BrokerUnavailable, waited_s: float, doing: str, sentinel: bool
) -> BrokerUnavailable:
    """The error a caller gets once it waited `waited_s` for the broker in vain while `doing`:
    the last failure, how long it waited, what to check and how to wait longer."""
    if sentinel:
        check = (
            "Check that a majority of the Sentinels are up and agree on a primary "
            "(SENTINEL MASTER <service> on each: flags 'master', not s_down/o_down) and that "
            "a replica was healthy enough to be promoted (SENTINEL REPLICAS <service>)"
        )
    else:
        check = "Check that the server is running and reachable at the URL"
    err = BrokerUnavailable(
        f"waited {waited_s:.1f} s for a primary while {doing}, in vain: {last}. {check}; "
        "JOBQ_FAILOVER_WAIT_S (or ?failover_wait_s= on the URL) sets how long jobq waits",
        last.reason,
    )
    err.retry_after_s = max(last.retry_after_s, 2)
    return err


# The refusals scripts return (codes.py has every script code), under their old names here.
NOT_FOUND = Refusal.NOT_FOUND
STALE_TOKEN = Refusal.STALE_TOKEN
WRONG_STATE = Refusal.WRONG_STATE

_BY_CODE: dict[int, type[JobqError]] = {
    NOT_FOUND: JobNotFound,
    STALE_TOKEN: StaleToken,
    WRONG_STATE: InvalidTransition,
}


def from_code(code: int, job_id: str, operation: str) -> JobqError:
    """Return the exception for a script's negative return `code`."""
    cls = _BY_CODE.get(code, JobqError)
    return cls(f"{operation} refused for job {job_id}: {cls.__doc__ or 'code ' + str(code)}")
