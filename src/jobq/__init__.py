"""jobq: a distributed job queue on Valkey/Redis — durable, fenced, fast."""

from .client import App, Job
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
from .names import InvalidName
from .states import JobState
from .tasks import Task, current_job

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
