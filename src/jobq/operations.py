"""What the `jobq` commands do, without click: open the deployment a command names, read and
steer jobs, follow them to their outcome. The command functions (cli*.py) parse their options,
call one of these, and hand what it returns to `presenters.py`; the mapping of errors to exit
codes lives in `cli_base.py`. Nothing here prints or exits, so each piece can be called (and
tested) from Python."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from .client import App, Job
from .codes import Cancel
from .embedded import server_url
from .errors import (
    ConfigError,
    JobCancelled,
    JobFailed,
    JobNotFound,
    NoServer,
    ResultTimeout,
    UsageProblem,
)
from .model import JobRecord, QueueInfo
from .periodic import PeriodicSpec
from .registry import gone_ms, require_live
from .shard import redact
from .topology import PLAIN_SCHEMES, check_url

#: Exit codes of the README's table (one definition; cli_base maps errors onto them).
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_BROKER, EXIT_NOT_FOUND, EXIT_TIMEOUT = 0, 1, 2, 3, 4, 5


# -- which deployment ---------------------------------------------------------------------------


def check_broker_url(url: str) -> None:
    """Raise `UsageProblem` (one line, the URL redacted) unless `url` is a broker URL jobq can
    use: a malformed --url / JOBQ_URL is the user's to fix, not a broker outage."""
    try:
        check_url(url)
        scheme = url.split("://", 1)[0].lower()
        if scheme in PLAIN_SCHEMES and not scheme.startswith("unix"):
            parts = urlsplit(url)
            parts.port  # noqa: B018 (raises ValueError on a port that is not a number)
            if not parts.hostname:
                raise ConfigError(f"broker URL {redact(url)!r} names no host")
    except ValueError as exc:
        raise UsageProblem(f"broker URL {redact(url)!r}: {exc}") from None
    except ConfigError as exc:
        raise UsageProblem(str(exc)) from None


def open_app(url: str | None, prefix: str | None, *, start: bool = False) -> App:
    """The App a command works on. Without a URL (no --url, no JOBQ_URL) it is the embedded
    server of the data directory: one that produces or serves (`start`: submit, worker,
    master) may start it, and then says so on stderr; any other command refuses with
    `NoServer` rather than start a new, empty server that knows none of the user's jobs."""
    if url:
        check_broker_url(url)
    app = App(url, prefix=prefix)
    if not app.settings.url and not start:
        data_dir = app.settings.data_dir
        if server_url(data_dir) is None:
            shown = data_dir if data_dir.startswith(("/", "./")) else "./" + data_dir
            raise NoServer(
                f"no jobq server here (no --url / JOBQ_URL, and no embedded server in {shown}): "
                "start one with `jobq server start` or point at one with --url",
                "no server",
            )
    return app


# -- jobs ----------------------------------------------------------------------------------------


def job_records(app: App, ids: Iterable[str]) -> tuple[list[JobRecord], list[str]]:
    """The records of `ids` that exist (in order), and the ids that do not."""
    found: list[JobRecord] = []
    missing: list[str] = []
    for job_id in ids:
        rec = app.store.get_job(job_id)
        if rec is None:
            missing.append(job_id)
        else:
            found.append(rec)
    return found, missing


@dataclass(frozen=True)
class CancelResult:
    """What `jobq cancel` did: ``cancelled`` (it was queued or scheduled), ``requested`` (it
    is running: its task is told, and the worker stops it after the cancel grace) or
    ``finished`` (nothing to cancel; `state` says how it ended)."""

    job_id: str
    outcome: str
    state: str = ""


def cancel_job(app: App, job_id: str) -> CancelResult:
    """Cancel one job (raises `JobNotFound` for an unknown id)."""
    code = app.store.cancel(job_id)
    if code == Cancel.NOT_FOUND:
        raise JobNotFound(f"no job {job_id} (never submitted, or its result expired)")
    if code == Cancel.CANCELLED:
        return CancelResult(job_id, "cancelled")
    if code == Cancel.REQUESTED:
        return CancelResult(job_id, "requested")
    state = app.store.get_state(job_id)
    return CancelResult(job_id, "finished", state.value if state else "")


def rerun_dead(app: App, ids: list[str], all_listed: bool, limit: int) -> list[str]:
    """Queue dead-lettered jobs again: `ids`, or with `all_listed` the first `limit` of them."""
    todo = list(ids) or (app.dead_letters(limit) if all_listed else [])
    for job_id in todo:
        app.job(job_id).rerun()
    return todo


def dead_jobs(app: App, limit: int) -> list[tuple[str, JobRecord | None]]:
    """The dead-lettered jobs (id, record; None if it expired meanwhile), newest first."""
    return [(i, app.store.get_job(i)) for i in app.dead_letters(limit)]


def queue_table(app: App) -> tuple[list[QueueInfo], int]:
    """Every queue's depths and counters, and how many jobs are dead-lettered."""
    return app.queue_info(), app.store.dead_count()


def purge_queue(app: App, queue: str, confirm: Callable[[int], None]) -> int:
    """Cancel every queued job of `queue`; `confirm(depth)` may abort first (it raises)."""
    depth = next((q.queued for q in app.queue_info() if q.name == queue), 0)
    confirm(depth)
    return int(app.store.purge(queue))


# -- following jobs ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """How one followed job ended (or did not, within the wait)."""

    job_id: str
    state: str  # succeeded, failed, cancelled, unfinished, not found
    result: Any = None
    error: dict[str, str] | None = None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.job_id, "state": self.state}
        if self.state == "succeeded":
            out["result"] = self.result
        if self.error:
            out["error"] = self.error
        return out


@dataclass
class Followed:
    """Every outcome of a `follow`, in the order the ids were given."""

    outcomes: list[Outcome] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for o in self.outcomes:
            out[o.state] = out.get(o.state, 0) + 1
        return out

    def exit_code(self) -> int:
        """0 if all succeeded; else 1 if any failed or was cancelled, 4 if any id was unknown,
        5 if any was still unfinished when the wait ran out (in that order of precedence)."""
        states = {o.state for o in self.outcomes}
        if states <= {"succeeded"}:
            return EXIT_OK
        if states & {"failed", "cancelled"}:
            return EXIT_FAILED
        if "not found" in states:
            return EXIT_NOT_FOUND
        return EXIT_TIMEOUT


def outcome(job: Job[Any], timeout: float | None) -> Outcome:
    """Wait for one job (at most `timeout` s) and say how it ended."""
    try:
        return Outcome(job.id, "succeeded", job.result(timeout=timeout))
    except JobFailed as exc:
        err = {"type": exc.exc_type, "message": exc.message}
        if exc.remote_traceback:
            err["traceback"] = exc.remote_traceback
        return Outcome(job.id, "failed", error=err)
    except JobCancelled:
        return Outcome(job.id, "cancelled")
    except ResultTimeout:
        return Outcome(job.id, "unfinished")
    except JobNotFound:
        return Outcome(job.id, "not found")


def follow(
    app: App,
    ids: Iterable[str],
    timeout: float | None,
    on_outcome: Callable[[Outcome], None] | None = None,
) -> Followed:
    """Wait for every job of `ids` within `timeout` seconds in all (None: forever)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    done = Followed()
    for job_id in ids:
        left = None if deadline is None else max(deadline - time.monotonic(), 0.001)
        o = outcome(app.job(job_id), left)
        done.outcomes.append(o)
        if on_outcome is not None:
            on_outcome(o)
    return done


def ids_from(args: Iterable[str], stdin: Iterable[str]) -> list[str]:
    """Job ids from the command line, where ``-`` stands for every id read from `stdin`
    (whitespace-separated: one per line, or several on a line)."""
    out: list[str] = []
    for a in args:
        if a == "-":
            out.extend(word for line in stdin for word in line.split())
        else:
            out.append(a)
    return out


# -- submitting and periodic jobs ---------------------------------------------------------------


def json_args(args_json: str, kwargs_json: str) -> tuple[list[Any], dict[str, Any]]:
    """--args / --kwargs parsed: a JSON list and a JSON object, or a `UsageProblem`."""
    try:
        args, kwargs = json.loads(args_json), json.loads(kwargs_json)
    except json.JSONDecodeError as exc:
        raise UsageProblem(f"--args/--kwargs: not valid JSON: {exc}") from exc
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise UsageProblem("--args must be a JSON list and --kwargs a JSON object")
    return args, kwargs


def batch_calls(lines: Iterable[str]) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    """The calls of a --batch file: one per non-blank line, a JSON list of arguments (or one
    value, the only argument)."""
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageProblem(f"--batch line {n}: not valid JSON: {exc}") from exc
        calls.append((tuple(item), {}) if isinstance(item, list) else ((item,), {}))
    return calls


def submit_batch(
    app: App, task: str, lines: Iterable[str], options: dict[str, Any]
) -> list[Job[Any]]:
    """`jobq submit TASK --batch FILE`: every line a job, all in one round trip."""
    return list(app.submit_many(task, batch_calls(lines), **options))


def add_periodic(app: App, spec: PeriodicSpec, *, queue_given: bool, force: bool) -> None:
    """Add or replace a periodic job at run time. Its fired jobs take the retries and priority
    the task's live workers declared, and their queue unless one was given; a task no live
    worker has registered is refused (naming the known ones) unless `force`."""
    declared = require_live(app.store, spec.task, gone_ms(app.settings), force)
    queue = spec.queue if queue_given else declared.queue
    app.store.upsert_periodic(
        replace(spec, queue=queue, retries=declared.retries, priority=declared.priority)
    )


def remove_periodic(app: App, name: str, *, force: bool) -> bool:
    """Remove a periodic job (`JobNotFound` if there is none of that name). One defined in code
    (`@app.periodic`) comes back when the next worker starts, so it is refused (ConfigError
    saying so) unless `force`; returns whether such a one was removed."""
    spec = next((s for s, _due in app.store.list_periodic() if s.name == name), None)
    why = spec.removal_refused() if spec is not None else None
    if why and not force:
        raise ConfigError(why)
    if not app.store.remove_periodic(name):
        raise JobNotFound(f"no periodic job named {name!r}")
    return why is not None


def periodic_list(app: App) -> list[tuple[PeriodicSpec, int | None]]:
    """Every periodic job and when it next fires (ms; None if not yet known)."""
    return list(app.store.list_periodic())
