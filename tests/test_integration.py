"""Client + an in-process Worker (in a thread) + maintenance ticks, against the real server."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import on_every_layout
from shard_keys import job_events, job_shard

from jobq import App, JobCancelled, JobFailed, JobState, Retry, current_job
from jobq.maintenance import Maintainer, tick
from jobq.model import JobSpec
from jobq.serde import Serializer
from jobq.worker import Worker

# Every test runs on each layout (conftest `on_every_layout`): one partition, and several.
pytestmark = [pytest.mark.timeout(90), on_every_layout]

WAIT = 30  # generous: other suites may be loading the machine


@contextlib.contextmanager
def running(app: App, **kw: Any) -> Iterator[Worker]:
    """A Worker serving `app` in a background thread, stopped cleanly on exit."""
    kw.setdefault("grace_s", 5.0)
    w = Worker(app, **kw)
    t = threading.Thread(target=w.run, name="test-worker", daemon=True)
    t.start()
    try:
        yield w
    finally:
        w.stop()
        t.join(60)
        assert not t.is_alive(), "worker did not stop"


def wait_until(cond: Any, timeout: float = WAIT, every: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(every)


# -- the basics --------------------------------------------------------------------------------


def test_readme_example(app: App) -> None:
    @app.task(retries=3, timeout=30)
    def add(x: int, y: int) -> int:
        return x + y

    with running(app):
        job = add.submit(2, 3, priority=5, delay=0, job_id=None)
        assert job.result(timeout=WAIT) == 5
        assert job.status() is JobState.SUCCEEDED
        rec = job.info()
        assert rec.task == "add" and rec.attempt == 1 and rec.max_attempts == 4
        assert rec.priority == 5 and rec.worker is not None


def test_map_submits_a_batch(app: App) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="math.square")
    def square(x: int) -> int:
        return x * x

    with running(app, concurrency=2):
        jobs = add.map([(1, 2), (3, 4)])
        squares = square.map(range(20))
        assert [j.result(timeout=WAIT) for j in jobs] == [3, 7]
        assert [j.result(timeout=WAIT) for j in squares] == [i * i for i in range(20)]
        assert squares[0].info().task == "math.square"


def test_same_job_id_runs_once(app: App) -> None:
    runs: list[int] = []

    @app.task
    def record(x: int) -> int:
        runs.append(x)
        return x

    a = record.submit(1, job_id="order-42")
    b = record.submit(2, job_id="order-42")  # a retried request: the same job
    assert a.id == b.id == "order-42"
    with running(app):
        assert b.result(timeout=WAIT) == 1
    assert runs == [1]


def test_unknown_job_and_cancelled_job(app: App) -> None:
    @app.task
    def noop() -> None: ...

    assert app.job("nope").status() is None
    job = noop.submit(delay=3600)
    assert job.cancel() is True
    with pytest.raises(JobCancelled):
        job.result(timeout=WAIT)


# -- time: delays and retries ------------------------------------------------------------------


def test_delayed_jobs_run_after_their_delay(app: App) -> None:
    @app.task
    def now() -> str:
        return "ran"

    with running(app):
        job = now.submit(delay=0.4)
        at = now.submit(eta=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=0.4))
        assert job.status() is JobState.SCHEDULED
        assert job.result(timeout=WAIT) == "ran" and at.result(timeout=WAIT) == "ran"
        rec = job.info()
        assert rec.started_ms is not None and rec.started_ms - rec.created_ms >= 400


def test_retries_with_backoff(app: App) -> None:
    starts: list[tuple[int, str, float]] = []

    @app.task(retries=2, backoff=0.2)
    def flaky() -> str:
        ctx = current_job()
        assert ctx is not None
        starts.append((ctx.attempt, ctx.token, time.monotonic()))
        if ctx.attempt < 3:
            raise ConnectionError(f"transient failure on attempt {ctx.attempt}")
        return "ok"

    with running(app):
        job = flaky.submit()
        assert job.result(timeout=WAIT) == "ok"
    assert [a for a, _, _ in starts] == [1, 2, 3]
    tokens = [int(t) for _, t, _ in starts]
    assert tokens == sorted(tokens) and len(set(tokens)) == 3  # fencing tokens increase
    # Back-off 0.2 s * 2^(attempt-1), jittered by 0.5-1.5: at least 0.1 s, then 0.2 s.
    assert starts[1][2] - starts[0][2] >= 0.1
    assert starts[2][2] - starts[1][2] >= 0.2
    assert job.info().attempt == 3
    (q,) = app.queue_info()
    assert (q.retried, q.succeeded, q.failed) == (2, 1, 0)


def test_retries_run_out_into_the_dead_letter_set(app: App) -> None:
    @app.task(retries=1, backoff=0.05)
    def always_fails(n: int) -> None:
        raise ValueError(f"bad input {n}")

    @app.task(retries=1)
    def asks_for_retry() -> int:
        ctx = current_job()
        assert ctx is not None
        if ctx.attempt == 1:
            raise Retry(delay=0.05)
        return ctx.attempt

    with running(app):
        job = always_fails.submit(7)
        with pytest.raises(JobFailed, match="bad input 7"):
            job.result(timeout=WAIT)
        assert asks_for_retry.submit().result(timeout=WAIT) == 2
    assert job.info().attempt == 2
    assert app.dead_letters() == [job.id]


# -- bad input: clear errors, the worker keeps running -----------------------------------------


def test_unknown_task_fails_and_the_worker_keeps_running(app: App) -> None:
    @app.task
    def known() -> str:
        return "still here"

    app.configure(unknown_task_ms=200)  # handed back until no live worker had it this long
    with running(app):
        job = app.submit("x", retries=3)
        with pytest.raises(JobFailed, match="unknown task 'x'") as exc:
            job.result(timeout=WAIT)
        assert exc.value.exc_type == "UnknownTask"
        assert "for 0.2s (known tasks: known)" in exc.value.message
        assert job.info().attempt == 1  # not retried: no attempt could ever succeed
        assert known.submit().result(timeout=WAIT) == "still here"


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"\x00not a payload", "unrecognised payload format"),
        (b"[[1, 2], {", "cannot decode payload"),
        (b'{"args": [1]}', "not an [args, kwargs] pair"),
        (Serializer("pickle").encode_args((1,), {}), "pickle payload refused"),
    ],
)
def test_malformed_payload_is_dead_lettered_with_the_decode_error(
    app: App, payload: bytes, message: str
) -> None:
    @app.task(retries=3)
    def add(x: int, y: int) -> int:
        return x + y

    # Written with a raw script call, as a foreign or buggy producer would.
    app.store.submit([JobSpec("bad-payload", "add", "default", payload, max_attempts=4)])
    with running(app):
        job = app.job("bad-payload")
        with pytest.raises(JobFailed) as exc:
            job.result(timeout=WAIT)
        assert exc.value.exc_type == "DecodeError"
        assert message in exc.value.message
        assert job.info().attempt == 1
        assert "bad-payload" in app.dead_letters()
        assert add.submit(1, 2).result(timeout=WAIT) == 3


def test_payload_corrupted_after_submit(app: App) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    job = add.submit(1, 2)
    shard = job_shard(app, job.id)
    shard.r.hset(shard.keys.job(job.id), "payload", b"\xff\xfe")
    with running(app), pytest.raises(JobFailed, match="unrecognised payload format"):
        job.result(timeout=WAIT)


def test_unserialisable_result_fails_naming_the_type(app: App) -> None:
    class Gadget:
        pass

    @app.task(retries=2)
    def make() -> Gadget:
        return Gadget()

    with running(app):
        job = make.submit()
        with pytest.raises(JobFailed) as exc:
            job.result(timeout=WAIT)
    assert exc.value.exc_type == "SerializationError"
    assert "Gadget" in exc.value.message
    assert job.info().attempt == 1  # the same code would fail the same way: no retry


def test_exceptions_are_stored_with_type_message_and_traceback(app: App) -> None:
    @app.task
    def explode(n: int) -> None:
        raise KeyError(f"missing {n}")

    with running(app):
        job = explode.submit(9)
        with pytest.raises(JobFailed) as exc:
            job.result(timeout=WAIT)
    err = exc.value
    assert isinstance(err, JobFailed) and err.job_id == job.id
    assert err.exc_type == "KeyError" and "missing 9" in err.message
    assert "Traceback (most recent call last)" in err.remote_traceback
    assert "in explode" in err.remote_traceback
    assert "KeyError: 'missing 9'" in err.remote_traceback
    assert str(err).startswith(f"job {job.id} failed: KeyError:")
    stored = job.info().error
    assert stored is not None and set(stored) >= {"type", "message", "traceback"}


# -- what a task sees --------------------------------------------------------------------------


def test_current_job_inside_a_task(app: App) -> None:
    @app.task(queue="ctx")
    def whoami() -> dict[str, Any]:
        ctx = current_job()
        assert ctx is not None
        return {"id": ctx.id, "attempt": ctx.attempt, "token": ctx.token, "queue": ctx.queue}

    assert current_job() is None  # outside a worker
    with running(app, queues=["ctx"]):
        job = whoami.submit()
        seen = job.result(timeout=WAIT)
    rec = job.info()
    assert seen == {"id": job.id, "attempt": 1, "token": str(rec.token), "queue": "ctx"}


# -- pools -------------------------------------------------------------------------------------


def test_async_tasks_run_concurrently_on_the_async_pool(app: App) -> None:
    started: list[str] = []

    @app.task
    async def gather_up(n: int) -> dict[str, Any]:
        ctx = current_job()
        assert ctx is not None
        started.append(ctx.id)
        # Each task waits until all four have started: only a concurrent pool gets past this.
        deadline = time.monotonic() + WAIT
        while len(started) < 4:
            assert time.monotonic() < deadline, "tasks did not run concurrently"
            await asyncio.sleep(0.01)
        return {"n": n, "id": ctx.id}

    @app.task
    def plain(x: int) -> int:
        return x + 1  # a sync task on the async pool runs in a thread

    with running(app, pool="async", concurrency=4):
        jobs = gather_up.map(range(4))
        results = [j.result(timeout=WAIT) for j in jobs]
        assert plain.submit(1).result(timeout=WAIT) == 2
    assert results == [{"n": i, "id": j.id} for i, j in enumerate(jobs)]


def test_thread_pool_runs_jobs_concurrently(app: App) -> None:
    barrier = threading.Barrier(4, timeout=WAIT)

    @app.task
    def meet(i: int) -> int:
        barrier.wait()  # breaks (and the job fails) unless 4 run at once
        return i

    with running(app, pool="thread", concurrency=4):
        jobs = meet.map(range(4))
        assert [j.result(timeout=WAIT) for j in jobs] == [0, 1, 2, 3]


def test_async_task_on_the_thread_pool(app: App) -> None:
    @app.task
    async def double(x: int) -> int:
        await asyncio.sleep(0)
        return 2 * x

    with running(app):
        assert double.submit(21).result(timeout=WAIT) == 42


# -- results -----------------------------------------------------------------------------------


def test_result_ttl(url: str, prefix: str) -> None:
    with App(url, prefix=prefix, result_ttl_s=500) as app:

        @app.task
        def default_ttl() -> int:
            return 1

        @app.task(result_ttl=100)
        def task_ttl() -> int:
            return 2

        @app.task
        def fails() -> None:
            raise RuntimeError("kept for inspection")

        with running(app):
            a, b, c = default_ttl.submit(), task_ttl.submit(), default_ttl.submit(result_ttl=7)
            d = fails.submit()
            assert [j.result(timeout=WAIT) for j in (a, b, c)] == [1, 2, 1]
            with pytest.raises(JobFailed):
                d.result(timeout=WAIT)
        shards = {j: job_shard(app, j.id) for j in (a, b, c, d)}
        ttl = {j: s.r.ttl(s.keys.job(j.id)) for j, s in shards.items()}
        assert 400 < ttl[a] <= 500  # the App's default
        assert 0 < ttl[b] <= 100  # the task's
        assert 0 < ttl[c] <= 7  # the submit call's
        assert ttl[d] == -1  # dead-lettered jobs stay until re-run or removed


def test_heartbeats_keep_a_long_job_alive(url: str, prefix: str) -> None:
    with App(url, prefix=prefix, lease_ms=2000, heartbeat_ms=200, tick_ms=100) as app:

        @app.task(retries=2)
        def long_job() -> int:
            time.sleep(3.0)  # longer than the lease: only heartbeats keep it
            ctx = current_job()
            return ctx.attempt if ctx else -1

        with running(app):
            job = long_job.submit()
            assert job.result(timeout=WAIT) == 1
        infos = [f.get(b"info") for f in job_events(app, job.id)]
        assert not any(i and i.startswith(b"lease expired") for i in infos)


# -- maintenance: ticks and the leader lease ---------------------------------------------------


def test_master_ticks_drive_a_worker_without_maintenance(app: App) -> None:
    @app.task
    def hello() -> str:
        return "hi"

    with running(app, maintenance=False):
        job = hello.submit(delay=0.2)
        # Without a tick nothing promotes it.
        with pytest.raises(TimeoutError):
            job.result(timeout=0.6)
        assert job.status() is JobState.SCHEDULED
        assert tick(app.store).promoted == 1
        assert job.result(timeout=WAIT) == "hi"

        # A job whose worker vanished (claimed, never reported) is requeued by the reaper.
        stuck = hello.submit_with(retries=1, queue="orphans")
        (c,) = app.store.claim("ghost-worker", ["orphans"], 1, lease_ms=50)
        assert c.id == stuck.id
        now = app.store.server_time_ms() + 1000
        assert tick(app.store, now=now).requeued == 1
    with running(app, queues=["orphans"], maintenance=False):
        assert stuck.result(timeout=WAIT) == "hi"
    assert stuck.info().attempt == 1  # the ghost never started it: released, not counted


def test_worker_takes_the_maintenance_lease_and_a_master_takes_it_over(
    url: str, prefix: str
) -> None:
    with App(url, prefix=prefix, leader_ms=1000, tick_ms=100) as app:

        @app.task
        def hello() -> str:
            return "hi"

        r = app.store.r
        with running(app, name="w-lease") as w:
            # No master: the worker leads, so delayed jobs still run.
            wait_until(lambda: r.get(app.keys.leader) == b"worker:w-lease")
            assert hello.submit(delay=0.1).result(timeout=WAIT) == "hi"

            master = Maintainer(
                app.store, tick_ms=100, leader_ms=1000, is_master=True, name="master-1"
            )

            def master_leads() -> bool:
                master.step()
                return master.leading

            wait_until(master_leads, every=0.1)
            assert r.get(app.keys.leader) == b"master-1"
            assert w.maintainer is not None
            wait_until(lambda: not w.maintainer.leading)  # type: ignore[union-attr]
            # The master now promotes delayed jobs.
            job = hello.submit(delay=0.1)
            deadline = time.monotonic() + WAIT
            while job.status() is not JobState.SUCCEEDED:
                assert time.monotonic() < deadline
                master.step()
                time.sleep(0.05)
            assert r.get(app.keys.leader) == b"master-1"

            # The master goes away: its presence key expires and the worker leads again.
            master.stop()
            wait_until(lambda: r.get(app.keys.leader) == b"worker:w-lease")
