"""A workflow as a graph, from any job of it, and the parent results a job was handed.

Parents are in every job hash (`parents`), so walking up is exact. Walking down is not: the
`children:<id>` / `xkids:<id>` sets list a job's dependents only until it settles (settling
deletes them), so the children of a settled job are found among the jobs of a bounded
newest-first sample (`Store.list_jobs_page`, every row with its parents), read once per graph
when a settled job is met: a child older than the sample is missed. The walk is breadth first
from the job asked for and stops at `MAX_NODES`; `truncated` says so. A parent whose hash
expired is a node without task or state.

Above the broker boundary (it reads through `Store`), below the master (which serves it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import DecodeError
from .listing import JobLinks
from .serde import Serializer
from .states import TERMINAL

if TYPE_CHECKING:
    from .store import Store

#: The most nodes one graph holds.
MAX_NODES = 500
#: Index entries sampled to find the children of settled jobs.
CHILD_SCAN = 5000
TERMINAL_STATES = frozenset(s.value for s in TERMINAL)
#: The most parents whose results a job detail shows.
MAX_RECEIVED = 100


@dataclass
class Graph:
    root: str
    nodes: list[dict[str, Any]] = field(default_factory=list)
    edges: list[tuple[str, str]] = field(default_factory=list)
    truncated: bool = False


def _settled_children(store: Store) -> dict[str, list[str]]:
    """parent id -> the ids of sampled jobs naming it as a parent."""
    page = store.list_jobs_page(limit=CHILD_SCAN, scan=CHILD_SCAN)
    out: dict[str, list[str]] = {}
    for rec in page.jobs:
        for p in rec.parents:
            out.setdefault(p, []).append(rec.id)
    return out


def workflow_graph(store: Store, job_id: str, max_nodes: int = MAX_NODES) -> Graph | None:
    """The workflow `job_id` belongs to (None when there is no such job)."""
    first = store.job_links([job_id]).get(job_id)
    if first is None:
        return None
    links: dict[str, JobLinks | None] = {job_id: first}
    order = [job_id]
    edges: set[tuple[str, str]] = set()
    reverse: dict[str, list[str]] | None = None
    truncated = False
    frontier = [job_id]
    while frontier:
        found: list[str] = []
        for node in frontier:
            lk = links.get(node)
            if lk is None:
                continue
            kids = list(lk.children)
            # (a parent that had ended when its child was submitted never listed it either)
            if lk.state in TERMINAL_STATES:
                if reverse is None:
                    reverse = _settled_children(store)
                kids += reverse.get(node, [])
            for p in lk.parents:
                edges.add((p, node))
                found.append(p)
            for c in kids:
                edges.add((node, c))
                found.append(c)
        new = [i for i in dict.fromkeys(found) if i not in links]
        room = max_nodes - len(links)
        if len(new) > room:
            new, truncated = new[:room], True
        got = store.job_links(new) if new else {}
        for i in new:
            links[i] = got.get(i)
            order.append(i)
        frontier = new
    nodes = [
        {
            "id": i,
            "task": (lk := links[i]) and lk.task,
            "state": lk and lk.state,
            "queue": lk and lk.queue,
        }
        for i in order
    ]
    kept = [(a, b) for a, b in sorted(edges) if a in links and b in links]
    return Graph(_root(links, order), nodes, kept, truncated)


def _root(links: dict[str, JobLinks | None], order: list[str]) -> str:
    """The workflow's first job found: the oldest node without parents (else the first)."""
    tops = [lk for i in order if (lk := links[i]) is not None and not lk.parents]
    if not tops:
        return order[0]
    return min(tops, key=lambda lk: (lk.created_ms, lk.id)).id


def received(
    store: Store, job_id: str, parents: tuple[str, ...], serializer: Serializer
) -> list[dict[str, Any]] | None:
    """The parent results a job takes (pass_results), in parent order: from the `x:<parent>`
    field of a parent in another partition, else the parent's own hash; None when it takes
    none. A parent that did not succeed handed nothing (result null)."""
    got = store.inputs_of(job_id)
    if got is None or not got[0] or not parents:
        return None
    _, xs = got
    out = []
    for pid in parents[:MAX_RECEIVED]:
        state: str | None
        blob: bytes | None
        if pid in xs:
            st, _, res = xs[pid].partition(b"|")
            state, blob = st.decode("utf-8", "replace"), res
        else:
            rec = store.get_job(pid)
            state, blob = (rec.state.value, rec.result) if rec else (None, None)
        out.append(
            {
                "parent": pid,
                "state": state,
                "result": _decode(blob, serializer) if state == "succeeded" else None,
            }
        )
    return out


def _decode(blob: bytes | None, serializer: Serializer) -> Any:
    if not blob:
        return None
    try:
        return serializer.decode_result(blob)
    except DecodeError:
        return blob.decode("utf-8", "replace")
