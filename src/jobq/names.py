"""The one rule for every name a user gives jobq, and how untrusted text is shown.

Job ids, queues, tasks, workers, groups, unique and concurrency keys all end up inside key
names, comma-separated fields (parents), URL paths (``/v1/jobs/<id>/cancel``) and log lines.
So each must be a non-empty string of at most `MAX_NAME_LEN` characters with:

- no control characters (C0, DEL, C1) and no line/paragraph separators: a ``\\n`` in a task
  name would forge a log line;
- no ``/`` (a job ``x/cancel`` could never be viewed or cancelled over HTTP) and no ``,``
  (parents travel as one comma-separated field);
- no lone surrogates (they cannot be encoded as UTF-8: the broker call would fail later, as a
  500 or a crash, instead of here with a clear message).

A job id a user gives (``job_id=``, ``--job-id``, ``task_id`` of ``/schedule``) keeps to a
narrower alphabet, `JOB_ID_CHARS`: ASCII letters, digits and ``- _ . : @ + =``. An id is typed
on command lines and pasted into URLs (``/v1/jobs/<id>``): a space, ``?``, ``#``, ``%``, a
quote or a look-alike letter would make the job unreadable from one of them (one starting
with ``-`` is read after ``--``: ``jobq status -- -x``). Lookups still take any name (ids
jobq made before this rule stay readable).

Some prefixes are jobq's own and refused from users: job ids ``periodic:...`` (the id of a
periodic tick; submitting ``periodic:nightly:<due>`` early would hijack that tick) and queues
``@worker:...``/``@group:...`` (targeted dispatch: use ``worker=``/``worker_group=``).
References to existing jobs (parents, lookups) may name a periodic job.
"""

from __future__ import annotations

import string
import unicodedata

from .errors import JobqError
from .keys import GROUP_QUEUE, WORKER_QUEUE
from .model import JobSpec

#: Longest name accepted, in characters (the HTTP schemas use the same bound).
MAX_NAME_LEN = 200
#: Job ids jobq makes itself (periodic ticks: ``periodic:<name>:<due ms>``).
RESERVED_JOB_PREFIXES = ("periodic:",)
#: Queue names jobq makes itself (targeted dispatch).
RESERVED_QUEUE_PREFIXES = (WORKER_QUEUE, GROUP_QUEUE)

#: Every character a user-given job id may hold (the HTTP schemas' pattern says the same).
JOB_ID_CHARS = frozenset(string.ascii_letters + string.digits + "-_.:@+=")
#: The same, as a regular expression (for the HTTP schemas).
JOB_ID_PATTERN = r"^[A-Za-z0-9_.:@+=-]+$"
_JOB_ID_FIX = (
    "a job id may use only ASCII letters, digits and - _ . : @ + = (it travels in URLs and on "
    "command lines)"
)

_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})
_FIX = "use letters, digits and punctuation such as - _ . : @ (no '/', ',' or control characters)"


class InvalidName(JobqError, ValueError):
    """A name (job id, queue, task, worker, group, key) breaks the name rule; the message names
    the field, the offending character and the fix."""


def _describe(ch: str) -> str:
    """A printable description of one character: ``'/'``, ``U+000A (a control character)``."""
    cat = unicodedata.category(ch)
    if cat == "Cs":
        return f"U+{ord(ch):04X} (a lone surrogate, not valid Unicode text)"
    if cat in _FORBIDDEN_CATEGORIES:
        return f"U+{ord(ch):04X} (a control character)"
    return repr(ch)


def shown(value: str, limit: int = 60) -> str:
    """`value` quoted for an error message, long values cut. `repr` escapes every character
    the rule refuses (none of them is printable), so the message stays on one line."""
    return repr(value if len(value) <= limit else value[:limit] + "...")


def check_name(field: str, value: object, *, reserved: tuple[str, ...] = ()) -> str:
    """`value` if it is a valid name for `field`; else raise InvalidName saying why and how to
    fix it. `reserved` lists prefixes refused for this field."""
    if not isinstance(value, str):
        raise InvalidName(f"{field} must be a string, not {type(value).__name__}")
    if not value:
        raise InvalidName(f"{field} is empty: give a name of 1 to {MAX_NAME_LEN} characters")
    if len(value) > MAX_NAME_LEN:
        raise InvalidName(
            f"{field} {shown(value)} is {len(value)} characters long: at most {MAX_NAME_LEN}"
        )
    for i, ch in enumerate(value):
        if ch in "/," or unicodedata.category(ch) in _FORBIDDEN_CATEGORIES:
            raise InvalidName(f"{field} {shown(value)} has {_describe(ch)} at position {i}: {_FIX}")
    for p in reserved:
        if value.startswith(p):
            raise InvalidName(f"{field} {shown(value)} starts with {p!r}, {_reserved_why(p)}")
    return value


def _reserved_why(prefix: str) -> str:
    if prefix in RESERVED_JOB_PREFIXES:
        return "which jobq keeps for periodic ticks: choose an id without it"
    return "which jobq keeps for targeted jobs: pass worker= or worker_group= instead"


def check_job_id(value: object, field: str = "job_id") -> str:
    """A job id a user submits under: the name rule, the job id alphabet (`JOB_ID_CHARS`),
    reserved prefixes refused."""
    if isinstance(value, str):
        for i, ch in enumerate(value):
            if ch not in JOB_ID_CHARS:
                raise InvalidName(
                    f"{field} {shown(value)} has {_describe(ch)} at position {i}: {_JOB_ID_FIX}"
                )
    return check_name(field, value, reserved=RESERVED_JOB_PREFIXES)


def check_ref(value: object, field: str = "job id") -> str:
    """The id of an existing job (a lookup or a parent): periodic ids allowed."""
    return check_name(field, value)


def check_queue(value: object, field: str = "queue") -> str:
    """A queue a user names (the targeted-dispatch forms refused)."""
    return check_name(field, value, reserved=RESERVED_QUEUE_PREFIXES)


def check_spec(spec: JobSpec) -> JobSpec:
    """A prepared JobSpec whose every name passes the rule (its queue may be a targeted form:
    `App.spec` builds those from worker=/worker_group=)."""
    check_job_id(spec.id)
    check_name("task", spec.task)
    check_name("queue", spec.queue)
    for p in spec.parents:
        check_ref(p, "depends_on")
    if spec.unique_key is not None:
        check_name("unique_key", spec.unique_key)
    if spec.concurrency_key is not None:
        check_name("concurrency_key", spec.concurrency_key)
    if spec.fallback_queue is not None:
        check_queue(spec.fallback_queue, "fallback")
    return spec


def encodable(value: str) -> bool:
    """Whether `value` can travel to the broker at all (UTF-8: no lone surrogates). An id that
    cannot is no job's id: lookups answer "not found" instead of failing on the encoding."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def escape_controls(text: str) -> str:
    """`text` with every control character, line separator and lone surrogate escaped
    (``\\n``, ``\\x1b``, ``\\ud800``), so it stays on one line and cannot forge another."""
    if text.isprintable() and text.isascii():
        return text  # the common case, without a per-character walk
    out = []
    for ch in text:
        if ch == "\t" or unicodedata.category(ch) not in _FORBIDDEN_CATEGORIES:
            out.append(ch)
        elif ch in "\n\r":
            out.append("\\n" if ch == "\n" else "\\r")
        elif ord(ch) < 0x100:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(f"\\u{ord(ch):04x}")
    return "".join(out)
