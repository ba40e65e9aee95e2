"""The asyncio API against a real private Valkey and a real in-process worker: submits, waits,
status and cancel inside `asyncio.run`, the sync API's errors, a thousand concurrent waits on
a handful of threads, an event loop that never stalls, cancelled waits that give their
registration back, and a FastAPI route served by uvicorn over real HTTP."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from conftest import free_port, jobq_cmd, on_every_layout, subprocess_env
from fastapi import FastAPI, HTTPException
from live_master import LiveWorker, register_tasks
from procs import JobqProcess
from shard_keys import job_shard

from jobq import (
    App,
    BrokerUnavailable,
    JobCancelled,
    JobFailed,
    JobNotFound,
    JobState,
    ResultTimeout,
    Task,
    aio,
)
from jobq.aio_wait import LANES

pytestmark = [pytest.mark.timeout(120), on_every_layout]

WAIT = 30.0


@pytest.fixture
def worker(url: str, prefix: str) -> Iterator[LiveWorker]:
    w = App(url, prefix=prefix, heartbeat_ms=200, tick_ms=50)
    live = LiveWorker(w, concurrency=4).start()
    yield live
    live.stop()
    w.close()


def spawn_worker(url: str, prefix: str, log: Any) -> JobqProcess:
    """A real `jobq worker` subprocess, serving once this returns: the test process then holds
    only the event loop and the App's own threads (an in-process worker's threads would
    compete for its GIL, and the ticker would measure them)."""
    argv = jobq_cmd("worker", "aio_tasks:app", "-c", "8")
    proc = JobqProcess.spawn("worker", argv, log, subprocess_env(url, prefix))
    try:
        proc.wait_log("serving", WAIT)
    except BaseException:
        proc.stop()
        raise
    return proc


@pytest.fixture
def worker_process(url: str, prefix: str, tmp_path: Any) -> Iterator[JobqProcess]:
    proc = spawn_worker(url, prefix, tmp_path / "worker.log")
    yield proc
    proc.stop()


@pytest.fixture
def tasks(app: App) -> dict[str, Task]:
    register_tasks(app)
    return app.tasks


async def until(check: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    """Await (without blocking the loop) until `check()` is truthy; bounded."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


def pending(app: App) -> int:
    """How many job ids the App's result listeners wait on."""
    waiter = aio._state(app).waiter
    if waiter is None:
        return 0
    return sum(lst.pending() for lst in waiter.listeners())


def waiters_field(app: App, job_id: str) -> bytes | None:
    """The job's registered-waiter count on the broker (None once nobody is registered)."""
    shard = job_shard(app, job_id)
    got: bytes | None = shard.r.hget(shard.keys.job(job_id), "waiters")
    return got


class Ticker:
    """A coroutine that wakes every 5 ms and records the gaps between its wake-ups: a blocked
    event loop shows as long gaps."""

    def __init__(self) -> None:
        self.gaps: list[float] = []
        self._stop = asyncio.Event()

    @property
    def ticks(self) -> int:
        return len(self.gaps)

    @property
    def max_gap(self) -> float:
        return max(self.gaps, default=0.0)

    def long(self, over: float) -> int:
        """How many gaps exceeded `over` seconds."""
        return sum(g > over for g in self.gaps)

    async def run(self) -> None:
        last = time.perf_counter()
        while not self._stop.is_set():
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            self.gaps.append(now - last)
            last = now

    def stop(self) -> None:
        self._stop.set()


async def ticking(work: Awaitable[Any]) -> tuple[Any, Ticker]:
    ticker = Ticker()
    t = asyncio.create_task(ticker.run())
    try:
        return await work, ticker
    finally:
        ticker.stop()
        await t


def test_submit_result_status_and_map(app: App, tasks: dict[str, Task], worker: Any) -> None:
    add = tasks["add"]

    async def main() -> str:
        job = await add.asubmit(2, 3)
        assert await job.aresult(timeout=WAIT) == 5
        assert await job.astatus() == JobState.SUCCEEDED
        assert (await job.ainfo()).state == JobState.SUCCEEDED
        jobs = await add.amap([(i, i) for i in range(20)])
        assert len(jobs) == 20
        got = await asyncio.gather(*(j.aresult(timeout=WAIT) for j in jobs))
        assert got == [2 * i for i in range(20)]
        # The same outcome awaited twice at once, and again once it is finished.
        slow = await tasks["nap"].asubmit(0.3)
        both = await asyncio.gather(slow.aresult(WAIT), slow.aresult(WAIT))
        assert both == [0.3, 0.3]
        assert await slow.aresult(WAIT) == 0.3
        # Options stay options, as in the sync submit.
        held = await add.asubmit(1, 1, delay=60, job_id=f"held-{job.id}")
        assert held.id == f"held-{job.id}"
        assert await held.astatus() == JobState.SCHEDULED
        await app.aclose()
        return held.id

    held_id = asyncio.run(main())
    assert app.job(held_id).status() == JobState.SCHEDULED  # the sync API after aclose()


def test_submit_by_name_and_async_with(url: str, prefix: str, worker: Any) -> None:
    async def main() -> None:
        async with App(url, prefix=prefix) as a:
            job = await a.asubmit("add", (4, 5))
            assert await job.aresult(timeout=WAIT) == 9
            jobs = await a.asubmit_many("add", [((1, 2), {}), ((3, 4), {})])
            assert [await j.aresult(WAIT) for j in jobs] == [3, 7]
            assert aio.waiting_threads(a) >= 1

    asyncio.run(main())

    def aio_threads() -> list[str]:
        return [t.name for t in threading.enumerate() if t.name.startswith("jobq-aio")]

    deadline = time.monotonic() + WAIT
    while aio_threads() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert aio_threads() == [], f"async with left the App's threads running: {aio_threads()}"


def test_errors_are_the_sync_ones(app: App, tasks: dict[str, Task], worker: Any) -> None:
    async def main() -> None:
        bad = await tasks["boom"].asubmit("kaput")
        with pytest.raises(JobFailed, match="kaput") as failed:
            await bad.aresult(timeout=WAIT)
        with pytest.raises(JobFailed) as sync_failed:
            await asyncio.to_thread(bad.result, WAIT)
        assert str(failed.value) == str(sync_failed.value)

        ghost = app.job("no-such-job")
        with pytest.raises(JobNotFound):
            await ghost.aresult(timeout=WAIT)
        assert await ghost.astatus() is None
        with pytest.raises(JobNotFound):
            await ghost.acancel()

        slow = await tasks["nap"].asubmit(3)
        with pytest.raises(ResultTimeout, match="still"):
            await slow.aresult(timeout=0.2)
        assert await slow.aresult(timeout=WAIT) == 3

        later = await tasks["add"].asubmit(1, 2, delay=60)
        waiting = asyncio.create_task(later.aresult(timeout=WAIT))
        await until(lambda: pending(app) == 1, "the wait to register")
        assert await later.acancel() is True
        with pytest.raises(JobCancelled):
            await waiting
        assert await later.astatus() == JobState.CANCELLED

        with pytest.raises(Exception, match="unknown submit option"):
            await app.asubmit("add", (1, 2), colour="red")
        await app.aclose()

    asyncio.run(main())


def test_a_thousand_waits_on_a_few_threads(
    app: App, tasks: dict[str, Task], url: str, tmp_path: Any
) -> None:
    """1000 coroutines await 1000 queued jobs at once (no worker yet): every wait registered,
    the process's thread count stays small, the loop keeps ticking; then a worker runs them
    and every wait gets its own result."""
    n = 1000
    before = threading.active_count()

    async def main() -> tuple[list[int], int, list[Ticker]]:
        jobs = await tasks["add"].amap([(i, 1) for i in range(n)])
        waits = [asyncio.create_task(j.aresult(timeout=90)) for j in jobs]
        sample = jobs[:: n // 10]

        def registered() -> bool:
            return all(waiters_field(app, j.id) == b"1" for j in sample)

        async def all_registered() -> None:
            await until(lambda: pending(app) == n, f"{n} waits to register")
            deadline = time.monotonic() + WAIT
            while not await asyncio.to_thread(registered):
                assert time.monotonic() < deadline, "the waits did not register on the broker"
                await asyncio.sleep(0.02)

        _, first = await ticking(all_registered())
        threads = threading.active_count()
        # (Not ticked: forking the worker process stalls this whole process for a moment.)
        log = tmp_path / "worker.log"
        live = await asyncio.to_thread(spawn_worker, url, app.settings.prefix, log)
        try:
            got, second = await ticking(asyncio.gather(*waits))
        finally:
            await asyncio.to_thread(live.stop)
        await app.aclose()
        return got, threads, [first, second]

    got, threads, tickers = asyncio.run(main())
    assert got == [i + 1 for i in range(n)]
    # The App's executor (aio.EXECUTOR_THREADS), its listeners (a few per partition) and the
    # thread of this test's own `to_thread` calls: not a thousand.
    bound = aio.EXECUTOR_THREADS + LANES * len(app.store.shards) + 1
    assert threads - before <= bound, (before, threads, bound)
    gaps = [t.max_gap for t in tickers]
    stalls = sum(t.long(0.1) for t in tickers)
    print(f"threads {before} -> {threads}, max gaps {[round(g * 1000, 1) for g in gaps]} ms")
    assert stalls <= 2, f"the event loop stalled {stalls} times over 100 ms"


def test_the_loop_never_blocks(app: App, tasks: dict[str, Task], worker_process: Any) -> None:
    """300 submits and waits in flight (50 at a time) and 8 waits on 0.3 s jobs, while a 5 ms
    ticker runs: at most 2 of its gaps exceed 50 ms (a busy shared machine may deschedule the
    process now and then; jobq never holds the loop). Blocking calls could not pass: each of
    the 8 waits would stall the loop for 0.3 s, and each turn of 50 blocking submits for 50
    round trips."""
    add, nap = tasks["add"], tasks["nap"]

    async def one(i: int) -> int:
        job = await add.asubmit(i, i)
        value: int = await job.aresult(timeout=WAIT)
        return value

    async def main() -> tuple[list[Any], Ticker]:
        await (await add.asubmit(0, 0)).aresult(WAIT)  # connections and listener made
        sem = asyncio.Semaphore(50)

        async def bounded(i: int) -> int:
            async with sem:
                return await one(i)

        async def slow() -> float:
            value: float = await (await nap.asubmit(0.3)).aresult(timeout=WAIT)
            return value

        work = [*(bounded(i) for i in range(300)), *(slow() for _ in range(8))]
        got, ticker = await ticking(asyncio.gather(*work))
        await app.aclose()
        return got, ticker

    got, ticker = asyncio.run(main())
    assert got == [2 * i for i in range(300)] + [0.3] * 8
    assert ticker.ticks > 10
    print(f"max gap {ticker.max_gap * 1000:.1f} ms, {ticker.long(0.05)} over 50 ms")
    assert ticker.long(0.05) <= 2, f"the event loop stalled {ticker.long(0.05)} times over 50 ms"


def test_a_cancelled_wait_gives_its_registration_back(app: App, tasks: dict[str, Task]) -> None:
    async def main() -> None:
        job = await tasks["add"].asubmit(1, 2)  # no worker: stays queued

        async def registered() -> bool:
            return await asyncio.to_thread(waiters_field, app, job.id) == b"1"

        async def released() -> bool:
            return await asyncio.to_thread(waiters_field, app, job.id) is None

        async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
            deadline = time.monotonic() + WAIT
            while not await check():
                assert time.monotonic() < deadline, f"timed out waiting for {what}"
                await asyncio.sleep(0.02)

        # A task cancelled while it awaits.
        t = asyncio.create_task(job.aresult())
        await eventually(registered, "the wait to register on the broker")
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        assert pending(app) == 0
        await eventually(released, "the registration to be given back")

        # An outer asyncio.wait_for that gives up.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(job.aresult(), 0.3)
        assert pending(app) == 0
        await eventually(released, "the registration to be given back (wait_for)")

        # Its own timeout: ResultTimeout, registration given back too.
        with pytest.raises(ResultTimeout):
            await job.aresult(timeout=0.3)
        assert pending(app) == 0
        await eventually(released, "the registration to be given back (timeout)")

        # Two waits on one job, one cancelled: the other still gets the outcome.
        keep = asyncio.create_task(job.aresult(timeout=WAIT))
        drop = asyncio.create_task(job.aresult(timeout=WAIT))
        await eventually(registered, "one registration for both")
        drop.cancel()
        await asyncio.sleep(0.1)
        assert await asyncio.to_thread(waiters_field, app, job.id) == b"1"
        assert await job.acancel() is True
        with pytest.raises(JobCancelled):
            await keep
        await app.aclose()

    asyncio.run(main())


def test_a_fastapi_route_over_real_http(app: App, tasks: dict[str, Task], worker: Any) -> None:
    add, boom = tasks["add"], tasks["boom"]
    web = FastAPI()

    @web.get("/add")
    async def add_route(x: int, y: int) -> dict[str, Any]:
        job = await add.asubmit(x, y)
        return {"id": job.id, "result": await job.aresult(timeout=WAIT)}

    @web.get("/boom")
    async def boom_route() -> dict[str, Any]:
        job = await boom.asubmit("from http")
        try:
            await job.aresult(timeout=WAIT)
        except JobFailed as exc:
            raise HTTPException(422, str(exc)) from exc
        return {}

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(web, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + WAIT
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)

        async def client() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=WAIT) as c:
                calls = [c.get("/add", params={"x": i, "y": 10}) for i in range(40)]
                return [*await asyncio.gather(*calls), await c.get("/boom")]

        replies = asyncio.run(client())
        for i, r in enumerate(replies[:-1]):
            assert r.status_code == 200, r.text
            assert r.json()["result"] == i + 10
            assert app.job(r.json()["id"]).status() == JobState.SUCCEEDED
        assert replies[-1].status_code == 422
        assert "from http" in replies[-1].json()["detail"]
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


def test_a_job_away_from_its_home_partition(
    app: App, tasks: dict[str, Task], url: str, worker: Any
) -> None:
    """A job placed by a routing key, submitted by another process (this App never saw where
    it went): the wait still finds it, like the sync wait, on every layout."""
    other = App(url, prefix=app.settings.prefix)
    register_tasks(other)
    try:
        placed = [
            other.tasks["nap"].submit(0.2, job_id=f"keyed-{i}", concurrency_key=f"k{i}")
            for i in range(6)
        ]
    finally:
        other.close()
    layout = app.store.layout
    if layout.count > 1:  # the case under test: some job lives outside its id's home
        assert any(layout.home(j.id) != layout.of_key(f"k{i}") for i, j in enumerate(placed))

    async def main() -> list[Any]:
        got = await asyncio.gather(*(app.job(j.id).aresult(timeout=WAIT) for j in placed))
        await app.aclose()
        return got

    assert asyncio.run(main()) == [0.2] * 6
    assert [app.job(j.id).result(WAIT) for j in placed] == [0.2] * 6


def test_an_unreachable_broker_raises_broker_unavailable(layout_kind: str, prefix: str) -> None:
    """Nothing listens on the port: the async calls raise the sync calls' BrokerUnavailable
    (within a bounded time), and the loop is free meanwhile."""
    if layout_kind != "one":
        pytest.skip("no server at all: the same on every layout")
    dead = App(f"redis://127.0.0.1:{free_port()}/0", prefix=prefix, failover_wait_s=0.5)

    @dead.task
    def add(x: int, y: int) -> int:
        return x + y

    async def main() -> Ticker:
        async def attempts() -> None:
            with pytest.raises(BrokerUnavailable):
                await add.asubmit(1, 2)
            with pytest.raises(BrokerUnavailable):
                await dead.job("some-job").astatus()
            with pytest.raises(BrokerUnavailable):
                await dead.job("some-job").aresult(timeout=5)

        _, ticker = await asyncio.wait_for(ticking(attempts()), 60)
        await dead.aclose()
        return ticker

    ticker = asyncio.run(main())
    assert ticker.long(0.05) <= 2
