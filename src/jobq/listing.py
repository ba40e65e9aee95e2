"""What the job listings share beyond one partition: the filters, the newest-first order of the
"any" listing and its cursor, and how a bounded scan is shared between indexes.

The "any" listing (no state given) is ordered newest first by `created`, which no index is
sorted by: each partition reads a bounded sample of its indexes (every entry while they hold at
most `scan` in all, else a fair share of each, newest end first), the rows are sorted by
`order_key`, and a page is the rows after the cursor's key. A page therefore costs O(scan)
whatever the number of jobs, and `truncated` says when jobs were left out of the sample.
Ties (jobs of one submit batch share their `created` ms) keep their index order, so a batch
still lists in the order it was submitted (FIFO within a queue).

A leaf of the broker boundary: it reads nothing itself (`reads.py` and `spread_reads.py` do).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from .model import JobRecord
from .states import JobState

#: (-created, partition, index number, index score, id): ascending = newest first.
OrderKey = tuple[int, int, int, float, str]

#: The longest `q` a search takes (a longer needle is refused by the API before it gets here).
MAX_NEEDLE = 200


@dataclass(frozen=True)
class JobListing:
    """One page of a job listing: the rows, the cursor of the next page (None after the last),
    how many index entries were examined, and whether the scan bound left some out."""

    jobs: list[JobRecord]
    next_cursor: str | None
    scanned: int
    truncated: bool


@dataclass(frozen=True)
class Filter:
    """What a listing keeps; None = any. `q` is matched case-insensitively as a substring of
    the id, task, queue, worker and the stored arguments text."""

    state: JobState | None = None
    queue: str | None = None
    task: str | None = None
    worker: str | None = None
    q: str | None = None

    def keeps(self, rec: JobRecord, payload: bytes | None = None) -> bool:
        if self.state is not None and rec.state != self.state:
            return False
        if self.queue is not None and rec.queue != self.queue:
            return False
        if self.task is not None and rec.task != self.task:
            return False
        if self.worker is not None and rec.worker != self.worker:
            return False
        if self.q:
            needle = self.q.casefold()
            text = (payload or b"").decode("utf-8", "replace")
            hay = (rec.id, rec.task, rec.queue, rec.worker or "", text)
            if not any(needle in h.casefold() for h in hay):
                return False
        return True


def fair_shares(sizes: Sequence[int], budget: int) -> list[int]:
    """How many entries to read of each index so they add up to at most `budget`: every entry
    of the small ones, an equal share of the rest (water-filling)."""
    shares = [0] * len(sizes)
    left = max(budget, 0)
    open_ = [i for i, n in enumerate(sizes) if n > 0]
    while open_ and left > 0:
        each = max(left // len(open_), 1)
        still = []
        for i in open_:
            take = min(each, sizes[i] - shares[i], left)
            shares[i] += take
            left -= take
            if shares[i] < sizes[i]:
                still.append(i)
            if left <= 0:
                break
        open_ = still
    return shares


def order_key(rec: JobRecord, part: int, source: int, score: float) -> OrderKey:
    return (-rec.created_ms, part, source, score, rec.id)


def page_after(
    rows: list[tuple[OrderKey, JobRecord]], after: OrderKey | None, limit: int
) -> tuple[list[JobRecord], str | None]:
    """The `limit` rows following `after` in newest-first order, and the cursor of the next
    page (None when no row follows)."""
    rows = sorted(rows, key=lambda r: r[0])
    if after is not None:
        rows = [r for r in rows if r[0] > after]
    page = rows[:limit]
    nxt = encode_recent_cursor(page[-1][0]) if len(rows) > limit else None
    return [r for _, r in page], nxt


_PREFIX = "n."


def encode_recent_cursor(key: OrderKey) -> str:
    raw = orjson.dumps(list(key))
    return _PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_recent_cursor(cursor: str | None) -> OrderKey | None:
    """The key a cursor of the newest-first listing resumes after; ValueError for any other."""
    if not cursor:
        return None
    try:
        if not cursor.startswith(_PREFIX):
            raise ValueError
        body = cursor[len(_PREFIX) :]
        v: Any = orjson.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        if not isinstance(v, list) or len(v) != 5 or not isinstance(v[4], str):
            raise ValueError
        return (int(v[0]), int(v[1]), int(v[2]), float(v[3]), v[4])
    except (ValueError, TypeError, orjson.JSONDecodeError) as exc:
        raise ValueError("cursor is not one returned by this listing") from exc


@dataclass(frozen=True)
class JobLinks:
    """What the workflow graph reads of one job: its fields for a node, its parents (the job
    hash's `parents`) and the children its sets still list (`children:<id>`, `xkids:<id>`:
    only while it has not settled; settling deletes them)."""

    id: str
    task: str
    state: str | None
    queue: str
    created_ms: int
    parents: tuple[str, ...]
    has_kids: bool
    children: tuple[str, ...]


def _text(v: Any) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else ""


def links_of(job_id: str, row: Any, kids: Any, xkids: Any) -> JobLinks | None:
    """A `JobLinks` from the replies of HMGET task state queue created parents kids and the two
    SMEMBERS (None when there is no job hash there)."""
    if not isinstance(row, list) or not any(row):
        return None
    try:
        created = int(row[3] or 0)
    except ValueError:
        created = 0
    children = [_text(k) for k in kids] if isinstance(kids, (set, list)) else []
    for m in xkids if isinstance(xkids, (set, list)) else []:
        part, _, rest = _text(m).partition("|")
        _, _, kid = rest.partition("|")  # `<part>|<pass>|<kid>` (link.lua)
        if part.isdigit() and kid:
            children.append(kid)
    return JobLinks(
        id=job_id,
        task=_text(row[0]),
        state=_text(row[1]) or None,
        queue=_text(row[2]),
        created_ms=created,
        parents=tuple(p for p in _text(row[4]).split(",") if p),
        has_kids=bool(row[5]),
        children=tuple(sorted(set(children))),
    )
