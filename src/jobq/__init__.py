"""jobq: a distributed job queue on Valkey/Redis — durable, fenced, fast."""

from .client import App
from .context import current_job
from .errors import (
    BrokerError,
    BrokerFull,
    BrokerUnavailable,
    JobCancelled,
    JobFailed,
    JobNotFound,
    JobqError,
    ResultTimeout,
    Retry,
)
from .job import Job
from .names import InvalidName
from .states import JobState
from .tasks import Task

__all__ = [
    "App",
    "BrokerError",
    "BrokerFull",
    "BrokerUnavailable",
    "InvalidName",
    "Job",
    "JobCancelled",
    "JobFailed",
    "JobNotFound",
    "JobState",
    "JobqError",
    "ResultTimeout",
    "Retry",
    "Task",
    "current_job",
]
__version__ = "0.1.0"
