"""The short paths of submit and claim give what the general ones give.

`JobSpec.for_call` is `dataclasses.replace` of id and payload; ids drawn in blocks are still
distinct, well-formed and never inherited by a forked child; one submit (`submit_one`) answers
what `submit_ids` answers; a claim pipelined behind a wait (`claim_woken`) wakes with the job a
submit queues meanwhile, and after a quiet timeout claims nothing.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import fields, replace

from jobq import App
from jobq.client import IDS_PER_DRAW, new_job_id
from jobq.model import JobSpec, RemoteParent


def test_for_call_is_replace_of_id_and_payload() -> None:
    spec = JobSpec(
        "a",
        "t",
        "q",
        b"[]",
        priority=3,
        max_attempts=4,
        timeout_ms=5,
        backoff_ms=6,
        result_ttl_s=7,
        delay_ms=8,
        parents=("p",),
        pass_results="one",
        unique_key="u",
        concurrency_key="c",
        concurrency_limit=2,
        fallback_queue="f",
        remote_parents=(RemoteParent("p", "pending"),),
    )
    fast, slow = spec.for_call("b", b"[1]"), replace(spec, id="b", payload=b"[1]")
    assert fast == slow
    assert [getattr(fast, f.name) for f in fields(JobSpec)] == [
        getattr(slow, f.name) for f in fields(JobSpec)
    ]


def test_ids_drawn_in_blocks_are_distinct_and_well_formed() -> None:
    ids = [new_job_id() for _ in range(IDS_PER_DRAW * 8 + 3)]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 16 and not i.startswith("-") for i in ids)
    assert all(
        set(i) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
        for i in ids
    )


def test_a_forked_child_never_hands_out_its_parents_ids() -> None:
    new_job_id()  # the block is drawn: what is left of it stays with the parent
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its first ids, sent to the parent
        os.close(read)
        os.write(write, "".join(new_job_id() for _ in range(10)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        theirs = f.read()
    os.waitpid(pid, 0)
    mine = "".join(new_job_id() for _ in range(10))
    child = {theirs[i : i + 16] for i in range(0, len(theirs), 16)}
    assert len(child) == 10
    assert not child & {mine[i : i + 16] for i in range(0, len(mine), 16)}


def test_one_submit_answers_what_a_batch_does(app: App) -> None:
    @app.task()
    def one() -> None: ...

    first = one.with_options(unique_key="k").submit()
    again = one.with_options(unique_key="k").submit()  # the pending job holding the key
    assert again.id == first.id
    spec = app.spec("one", (), {}, {"job_id": "fixed"})
    assert app.store.submit_one(spec) == "fixed"
    assert app.store.submit_one(spec) == "fixed"  # idempotent per id
    assert app.store.submit_ids([spec]) == ["fixed"]


def test_a_claim_behind_a_wait_wakes_with_the_job_queued_meanwhile(app: App) -> None:
    @app.task()
    def later() -> None: ...

    store = app.store
    assert store.claim_woken("w", ["default"], 1, 30_000, 0.05) == []  # a quiet timeout
    got: list[list[str]] = []

    def claim() -> None:
        got.append([c.id for c in store.claim_woken("w", ["default"], 5, 30_000, 5.0, 1)])

    t = threading.Thread(target=claim)
    t.start()
    time.sleep(0.2)  # (blocked on the wake list by now)
    job = later.submit()
    t.join(10)
    assert got == [[job.id]]
