"""A full broker, for real (maxmemory on servers these tests own): producers get `BrokerFull`
(Python, HTTP 503 with Retry-After, CLI exit 3), workers and the master keep running, /healthz
says degraded, and once memory is freed every job completes on its own. Submits are refused
before the wall (back-pressure), checked without an INFO per submit."""

from __future__ import annotations

import contextlib
import logging
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from conftest import ValkeyProcess, jobq_cmd, subprocess_env
from live_master import LiveMaster
from procs import wait_until

from jobq import App, BrokerFull, JobState
from jobq.config import Settings
from jobq.embedded import ensure_server, stop_server
from jobq.errors import ConfigError
from jobq.maintenance import Maintainer
from jobq.memory import MemoryState, RoomCheck, check_policy, parse_budget
from jobq.worker import Worker
from jobq.worker.clock import ManualClock

pytestmark = pytest.mark.timeout(90)

WAIT = 40


@pytest.fixture
def server() -> Iterator[ValkeyProcess]:
    s = ValkeyProcess()
    s.start()
    yield s
    s.cleanup()


@pytest.fixture
def admin(server: ValkeyProcess) -> Iterator[redis.Redis]:
    r = redis.Redis(port=server.port)
    yield r
    r.close()


def make_app(url: str, prefix: str, **settings: object) -> App:
    app = App(url, prefix=prefix, tick_ms=100, heartbeat_ms=300, **settings)

    @app.task
    def echo(x: int) -> int:
        time.sleep(0.01)
        return x

    return app


@contextlib.contextmanager
def worker_and_master(app: App) -> Iterator[tuple[Worker, Maintainer, httpx.Client]]:
    """A worker thread, and a master (maintenance thread + HTTP app with its own loops)."""
    w = Worker(app, concurrency=4, maintenance=False, grace_s=5)
    wt = threading.Thread(target=w.run, name="test-worker", daemon=True)
    wt.start()
    m = Maintainer(app.store, tick_ms=100, leader_ms=3000, is_master=True, name="mem-master")
    m.start_thread()
    live = LiveMaster(app, maintainer=m).start()
    try:
        with httpx.Client(base_url=live.url, timeout=30) as http:
            yield w, m, http
        assert wt.is_alive(), "the worker's claim loop died"
        assert m.thread is not None and m.thread.is_alive(), "the maintenance loop died"
        assert all(t.is_alive() for t in w._threads), [t.name for t in w._threads]
    finally:
        live.stop()
        w.stop()
        wt.join(30)
        m.stop_event.set()
        if m.thread is not None:
            m.thread.join(10)
        m.stop()


def fill_to_the_wall(r: redis.Redis, tag: str) -> int:
    """Write ballast until the server refuses writes (OOM), then pull maxmemory just under
    the use, so the server stays full (memory use wobbles near the edge); returns how many
    keys."""
    for i in range(2000):
        try:
            r.set(f"{tag}:{i}", b"x" * 32_768)
        except redis.exceptions.OutOfMemoryError:
            used = int(r.info("memory")["used_memory"])
            r.config_set("maxmemory", str(used - (1 << 20)))
            return i
    raise AssertionError("the server never filled up")


def test_a_full_server_refuses_producers_and_wedges_nothing(
    server: ValkeyProcess, admin: redis.Redis, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="jobq")
    app = make_app(server.url, prefix)
    try:
        with worker_and_master(app) as (w, _m, http):
            assert http.get("/healthz").status_code == 200
            before = [app.submit("echo", [i]).id for i in range(100)]
            used = int(admin.info("memory")["used_memory"])
            admin.config_set("maxmemory", str(used + (4 << 20)))
            ballast = fill_to_the_wall(admin, f"{prefix}-ballast")

            # Producers: typed, with a hint, on every surface.
            with pytest.raises(BrokerFull, match="free memory"):
                app.submit("echo", [1])
            eager = App(server.url, prefix=prefix, memory_limit=1.0)  # the server's own OOM
            with eager, pytest.raises(BrokerFull, match="out of memory"):
                eager.submit("echo", [1])
            r = http.post("/v1/jobs", json={"task": "echo", "args": [1]})
            assert r.status_code == 503, r.text
            assert int(r.headers["Retry-After"]) >= 1
            assert "full" in r.json()["error"] or "memory" in r.json()["error"]
            r = http.post("/schedule", json={"task_id": "t1", "task_type": "echo", "x": 1})
            assert r.status_code == 503 and "Retry-After" in r.headers, r.text
            cli = subprocess.run(
                jobq_cmd("submit", "echo", "--args", "[1]"),
                env=subprocess_env(server.url, prefix),
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert cli.returncode == 3, cli.stderr
            assert len(cli.stderr.strip().splitlines()) == 1, cli.stderr
            assert "memory" in cli.stderr

            health = http.get("/healthz")
            assert health.status_code == 503
            assert health.json()["status"] == "degraded"
            assert health.json()["broker"] == "full"
            leases = dict(admin.zrange(app.keys.leases, 0, -1, withscores=True))
            time.sleep(1.0)  # the loops meet OOM replies for a while: none may die of it
            # Heartbeats still run on the full server, so no running job is taken for lost.
            later = dict(admin.zrange(app.keys.leases, 0, -1, withscores=True))
            assert leases and all(later[k] > v for k, v in leases.items()), (leases, later)

            # Free the memory: everything resumes on its own.
            pipe = admin.pipeline(transaction=False)
            for i in range(ballast):
                pipe.delete(f"{prefix}-ballast:{i}")
            pipe.execute()
            job = wait_until(lambda: _try_submit(app), 10, "submits to be accepted again")
            for i in [*before, job]:
                assert app.job(i).result(timeout=WAIT) is not None
            assert {app.job(i).status() for i in before} == {JobState.SUCCEEDED}
            assert app.store.r.zcard(app.keys.leases) == 0, "jobs stuck holding leases"
            wait_until(lambda: http.get("/healthz").status_code == 200, 10, "healthz ok")
            assert w.inflight == {}
    finally:
        app.close()


def _try_submit(app: App) -> str | None:
    try:
        return app.submit("echo", [7]).id
    except BrokerFull:
        return None


def test_back_pressure_refuses_submits_before_the_wall(
    server: ValkeyProcess, admin: redis.Redis, prefix: str
) -> None:
    app = make_app(server.url, prefix)  # default limit: 90% of maxmemory
    try:
        ids = [app.submit("echo", [i]).id for i in range(20)]
        pipe = admin.pipeline(transaction=False)
        for i in range(600):  # ~20 MB, so that the 10% left is room enough for the workers
            pipe.set(f"{prefix}-ballast:{i}", b"x" * 32_768)
        pipe.execute()
        used = int(admin.info("memory")["used_memory"])
        admin.config_set("maxmemory", str(int(used / 0.95)))
        time.sleep(1.1)  # the cached reading expires
        with pytest.raises(BrokerFull, match="JOBQ_MEMORY_LIMIT"):
            app.submit("echo", [1])
        # Not the server's wall: workers still claim and record outcomes.
        w = Worker(app, concurrency=2, maintenance=False, grace_s=5)
        t = threading.Thread(target=w.run, daemon=True)
        t.start()
        try:
            for i in ids:
                assert app.job(i).result(timeout=WAIT) is not None
        finally:
            w.stop()
            t.join(30)
        admin.config_set("maxmemory", str(used * 4))
        wait_until(lambda: _try_submit(app), 5, "submits to be accepted again")

        # The check is cached: a burst of submits costs a handful of INFO calls, not one each.
        def info_calls() -> int:
            stats = admin.info("commandstats").get("cmdstat_info", {})
            return int(stats.get("calls", 0)) if isinstance(stats, dict) else 0

        calls = info_calls()
        for i in range(300):
            app.submit("echo", [i])
        assert info_calls() - calls <= 5
    finally:
        app.close()


def test_the_eviction_policy_is_checked(
    server: ValkeyProcess, admin: redis.Redis, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    admin.config_set("maxmemory-policy", "allkeys-lru")
    state = MemoryState.from_info(admin.info("memory"))
    assert state.evicts
    with caplog.at_level(logging.WARNING, logger="jobq"):
        check_policy(state, server.url, False, "the worker")
    assert "allkeys-lru" in caplog.text and "noeviction" in caplog.text
    with pytest.raises(ConfigError, match="--strict"):
        check_policy(state, server.url, True, "the worker")
    cli = subprocess.run(
        jobq_cmd("worker", "cli_tasks:app", "--strict"),
        env=subprocess_env(server.url, prefix),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode != 0 and "maxmemory-policy allkeys-lru" in cli.stderr, cli.stderr
    master = subprocess.run(
        jobq_cmd("master", "--no-http", "--strict"),
        env=subprocess_env(server.url, prefix),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert master.returncode != 0 and "--strict" in master.stderr, master.stderr
    app = make_app(server.url, prefix)
    live = LiveMaster(app).start()
    try:
        health = httpx.get(live.url + "/healthz", timeout=30).json()
        assert "allkeys-lru" in " ".join(health["warnings"])
    finally:
        live.stop()
        app.close()


def test_the_embedded_server_runs_with_a_budget_and_noeviction(tmp_path: Path) -> None:
    d = tmp_path / "jq"
    url = ensure_server(d, memory="64mb")
    try:
        r = redis.Redis.from_url(url)
        try:
            assert r.config_get("maxmemory")["maxmemory"] == str(64 << 20)
            assert r.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
        finally:
            r.close()
    finally:
        stop_server(d)


def test_memory_settings() -> None:
    assert Settings.from_env({}).memory_limit == 0.9
    assert Settings.from_env({"JOBQ_MEMORY_LIMIT": "0.8"}).memory_limit == 0.8
    assert Settings.from_env({"JOBQ_MEMORY_LIMIT": "75%"}).memory_limit == 0.75
    with pytest.raises(ConfigError, match="JOBQ_MEMORY_LIMIT"):
        Settings.from_env({"JOBQ_MEMORY_LIMIT": "1.5"})
    assert parse_budget("512mb") == 512 << 20
    assert parse_budget("2gb") == 2 << 30
    assert parse_budget("0") == 0
    assert parse_budget("25%", total_ram=8 << 30) == 2 << 30
    with pytest.raises(ConfigError, match="512mb"):
        parse_budget("lots")


def frozen_room(app: App) -> None:
    """Give the app's store a back-pressure check whose clock never moves: its reading never
    goes stale, as for a producer filling the headroom faster than a reading is trusted."""
    app.store.room = RoomCheck(app.store.memory, app.store.url, 0.9, clock=lambda: 0.0)


def test_back_pressure_holds_against_a_burst_faster_than_its_readings(
    server: ValkeyProcess, admin: redis.Redis, prefix: str
) -> None:
    """A producer writing 4 KB jobs as fast as it can, all within the life of one cached
    reading: it is refused by the back-pressure before the server's wall (not by the server's
    OOM, after which no job could be claimed or finished), and every acked job completes."""
    app = make_app(server.url, prefix)

    @app.task
    def measure(text: str) -> int:
        return len(text)

    try:
        pipe = admin.pipeline(transaction=False)
        for i in range(128):  # 4 MB of other data, so the 10% left holds the jobs' outcomes
            pipe.set(f"{prefix}-ballast:{i}", b"x" * 32_768)
        pipe.execute()
        used = int(admin.info("memory")["used_memory"])
        admin.config_set("maxmemory", str(used + (4 << 20)))
        frozen_room(app)
        pad = "x" * 4000
        acked: list[str] = []
        refusal = None
        for _ in range(100):  # 2000 jobs at most: 8 MB, twice the headroom
            specs = [app.spec("measure", [pad], {}, {}) for _ in range(20)]
            try:
                app.submit_specs(specs)
            except BrokerFull as exc:
                refusal = str(exc)
                break
            acked += [s.id for s in specs]
        assert refusal is not None, "the server never filled"
        assert "JOBQ_MEMORY_LIMIT" in refusal, f"refused only at the wall: {refusal}"
        info = admin.info("memory")
        assert int(info["used_memory"]) < int(info["maxmemory"])
        w = Worker(app, concurrency=4, maintenance=False, grace_s=5)
        t = threading.Thread(target=w.run, daemon=True)
        t.start()
        try:
            # (read-only polling: a waiter registering for each result would write too)
            wait_until(
                lambda: set(app.store.get_states(acked)) == {JobState.SUCCEEDED} or None,
                WAIT,
                "every acked job to succeed",
            )
        finally:
            w.stop()
            t.join(30)
    finally:
        app.close()


def test_an_oom_reply_makes_the_next_submit_read_memory_again(
    server: ValkeyProcess, admin: redis.Redis, prefix: str
) -> None:
    """The server's own OOM means the cached reading was behind: the next submit reads again
    and is refused by the back-pressure (without a write the server would refuse anyway)."""
    app = make_app(server.url, prefix)
    try:
        frozen_room(app)
        app.submit("echo", [1])  # the one reading: plenty of room
        used = int(admin.info("memory")["used_memory"])
        admin.config_set("maxmemory", str(used - (1 << 20)))
        with pytest.raises(BrokerFull, match="out of memory"):
            app.submit("echo", [2])
        with pytest.raises(BrokerFull, match="JOBQ_MEMORY_LIMIT"):
            app.submit("echo", [3])
    finally:
        admin.config_set("maxmemory", "0")
        app.close()


def test_heartbeats_on_a_full_server_keep_the_worker_in_its_leases(
    server: ValkeyProcess, admin: redis.Redis, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """At maxmemory the heartbeat script still extends leases (allow-oom) while the worker
    list's plain HSET is refused: that refusal must not count as a failed heartbeat, or the
    worker takes its leases for gone and starts none of its prefetched jobs. The worker is
    stepped on a manual clock through two leases of heartbeats instead of sleeping them."""
    caplog.set_level(logging.INFO, logger="jobq")
    app = make_app(server.url, prefix, lease_ms=1000)
    release = threading.Event()

    @app.task
    def hold() -> str:
        release.wait(WAIT)
        return "held"

    clock = ManualClock()
    w = Worker(app, concurrency=1, prefetch=2, maintenance=False, grace_s=5, clock=clock)
    try:
        ids = [app.submit("hold").id for _ in range(3)]
        assert w.step().claimed == 3
        used = int(admin.info("memory")["used_memory"])
        admin.config_set("maxmemory", str(used - (1 << 20)))  # full: writes refused
        period = app.settings.heartbeat_ms / 1000
        for _ in range(round(2 * app.settings.lease_ms / 1000 / period) + 1):  # two leases
            clock.advance(period)
            assert w.step().heartbeats == 1, "a heartbeat on the full server failed"
        assert not w.leases.stale(), "the worker took its leases for gone"
        assert "longer than the lease" not in caplog.text
        assert caplog.text.count("worker list") == 1  # the refused refresh is logged, once
        admin.config_set("maxmemory", "0")
        release.set()
        deadline = time.monotonic() + WAIT
        while w.processed < len(ids):  # the pool's thread runs them (real time, bounded)
            assert time.monotonic() < deadline, "the jobs did not finish"
            clock.advance(period)
            w.step()
            time.sleep(0.01)
        for i in ids:
            assert app.job(i).result(timeout=WAIT) == "held"
        rec = app.store.get_job(ids[0])
        assert rec is not None and rec.attempt == 1
    finally:
        admin.config_set("maxmemory", "0")
        release.set()
        w.stop(immediate=True)
        w.step()
        app.close()
