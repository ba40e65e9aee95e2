"""One exception hierarchy for jobq, and the table from Lua error codes to exceptions.

Scripts return negative integers for refusals (stale token, wrong state, ...); `scripts.py`
turns them into the exceptions below through `from_code`, so no caller interprets raw codes.
"""

from __future__ import annotations


class JobqError(Exception):
    """Base of every error jobq raises on purpose."""


class BrokerUnavailable(JobqError):
    """The Valkey/Redis server cannot be reached (the message names the URL and what to check)."""


class ConfigError(JobqError):
    """A setting is invalid or contradicts another."""


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
    """The write was applied, but the server did not confirm its fsync (or enough replicas')
    in time: it may or may not survive a crash. Submitting the same job ids again is safe."""

    def __init__(self, message: str, job_ids: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.job_ids = job_ids


class Retry(Exception):
    """Raised by a task to ask for another attempt (after `delay` seconds if given)."""

    def __init__(self, delay: float | None = None) -> None:
        super().__init__(f"retry requested (delay={delay})")
        self.delay = delay


# Codes returned by the Lua scripts (see the header of each script in lua/).
NOT_FOUND = -1
STALE_TOKEN = -2
WRONG_STATE = -3

_BY_CODE: dict[int, type[JobqError]] = {
    NOT_FOUND: JobNotFound,
    STALE_TOKEN: StaleToken,
    WRONG_STATE: InvalidTransition,
}


def from_code(code: int, job_id: str, operation: str) -> JobqError:
    """Return the exception for a script's negative return `code`."""
    cls = _BY_CODE.get(code, JobqError)
    return cls(f"{operation} refused for job {job_id}: {cls.__doc__ or 'code ' + str(code)}")
