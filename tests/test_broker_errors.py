"""Broker faults for real, on Valkey servers these tests own (never the shared session server):
every error class reaches callers typed, an error reply inside a batch raises, and every loop
(worker claim/report/heartbeat, maintenance) rides out BUSY, READONLY, LOADING, a server kill
and CLIENT PAUSE: it backs off, logs once per episode, and resumes."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from conftest import ValkeyProcess
from inprocess import deployment
from live_master import LiveMaster
from procs import wait_until
from redis._parsers.base import BaseParser

from jobq import App, BrokerFull, BrokerUnavailable, JobState
from jobq.errors import BrokerError
from jobq.faults import translate
from jobq.maintenance import Maintainer
from jobq.model import Outcome
from jobq.outage import Outage

pytestmark = pytest.mark.timeout(90)

WAIT = 40  # generous: the machine is shared


@pytest.fixture
def server() -> Iterator[ValkeyProcess]:
    s = ValkeyProcess()
    s.start()
    yield s
    s.cleanup()


def admin(server: ValkeyProcess) -> redis.Redis:
    return redis.Redis(port=server.port, socket_timeout=20)


def make_app(url: str, prefix: str, **settings: Any) -> App:
    settings.setdefault("tick_ms", 100)
    settings.setdefault("heartbeat_ms", 300)
    settings.setdefault("lease_ms", 5000)
    app = App(url, prefix=prefix, **settings)

    @app.task
    def echo(x: int) -> int:
        time.sleep(0.02)
        return x

    return app


def all_succeed(app: App, ids: list[str], timeout: float = WAIT) -> None:
    for i in ids:
        assert app.job(i).result(timeout=timeout) is not None
    assert {app.job(i).status() for i in ids} == {JobState.SUCCEEDED}
    r = app.store.r
    assert r.zcard(app.keys.leases) == 0, "jobs left holding leases"


def episodes(caplog: pytest.LogCaptureFixture, what: str) -> tuple[int, int]:
    """(episodes started, episodes ended) logged by the loop named `what`."""
    msgs = [r.getMessage() for r in caplog.records if r.getMessage().startswith(what)]
    return sum("lost Valkey" in m for m in msgs), sum("Valkey back after" in m for m in msgs)


# -- every error class, typed -----------------------------------------------------------------

REPLIES = [
    ("LOADING Valkey is loading the dataset in memory", BrokerUnavailable, "loading"),
    ("BUSY Valkey is busy running a script.", BrokerUnavailable, "long script"),
    ("READONLY You can't write against a read only replica.", BrokerUnavailable, "replica"),
    ("MASTERDOWN Link with MASTER is down", BrokerUnavailable, "primary"),
    ("MOVED 3999 127.0.0.1:6381", BrokerUnavailable, "redis+cluster://"),
    ("ASK 3999 127.0.0.1:6381", BrokerUnavailable, "migrating"),
    ("TRYAGAIN Multiple keys request during rehashing", BrokerUnavailable, "resharding"),
    ("CLUSTERDOWN The cluster is down", BrokerUnavailable, "cluster is down"),
    ("OOM command not allowed when used memory > 'maxmemory'.", BrokerFull, "raise maxmemory"),
    ("NOPERM User w has no permissions to run the 'fcall' command", BrokerError, "permission"),
    ("WRONGTYPE Operation against a key holding the wrong kind", BrokerError, "WRONGTYPE"),
    ("ERR something new", BrokerError, "ERR something new"),
]


@pytest.mark.parametrize(("reply", "cls", "says"), REPLIES)
def test_every_error_reply_becomes_a_typed_error(reply: str, cls: type, says: str) -> None:
    # The exception redis-py's own parser makes of the reply, as a live server would send it.
    exc = BaseParser.parse_error(reply)
    err = translate(exc, "redis://h:1/0", "claiming jobs")
    assert type(err) is cls
    assert "redis://h:1/0" in str(err) and "claiming jobs" in str(err)
    assert says in str(err)
    assert isinstance(err, BrokerError) and err.reason == reply.split(" ")[0]


def test_connection_errors_are_retriable() -> None:
    too_many = BaseParser.parse_error("ERR max number of clients reached")
    assert isinstance(too_many, redis.ConnectionError)
    for exc in (
        redis.ConnectionError("refused"),
        redis.TimeoutError("slow"),
        OSError("x"),
        too_many,
    ):
        err = translate(exc, "redis://h:1/0", "reporting")
        assert type(err) is BrokerUnavailable and "cannot reach Valkey at redis://h:1/0" in str(err)


def test_an_outage_is_logged_once_per_episode(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    outage = Outage(logging.getLogger("jobq.test"), "loop", clock=lambda: now[0])
    refused = translate(redis.ConnectionError("refused"), "redis://h:1/0", "claiming")
    loading = BaseParser.parse_error("LOADING Valkey is loading the dataset in memory")
    with caplog.at_level(logging.INFO, logger="jobq"):
        pauses = [outage.failed(refused) for _ in range(10)]
        outage.failed(translate(loading, "redis://h:1/0", "claiming"))  # a new reason
        now[0] = 4.2
        outage.ok()
        outage.ok()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3, lines
    assert "loop: lost Valkey: cannot reach Valkey at redis://h:1/0" in lines[0]
    assert "loop: still failing, now" in lines[1] and "LOADING" in lines[1]
    assert lines[2].startswith("loop: Valkey back after 4.2 s")
    assert pauses[0] < 0.2 and 4 <= max(pauses) <= 6  # exponential, capped (with jitter)


# -- error replies inside a batch raise ------------------------------------------------------


def test_an_error_reply_inside_a_batch_raises_typed(server: ValkeyProcess, prefix: str) -> None:
    app = make_app(server.url, prefix, memory_limit=1.0)  # only the server's own OOM refuses
    r = admin(server)
    try:
        jobs = [app.submit("echo", [i]) for i in range(3)]
        claimed = app.store.claim("w1", ["default"], 3, 60_000)
        assert len(claimed) == 3
        outcomes = [Outcome(c, True, b"[1]") for c in claimed]
        r.config_set("maxmemory", "1")  # every write refused from now on
        with pytest.raises(BrokerFull, match="out of memory while reporting results"):
            app.store.report(outcomes)
        with pytest.raises(BrokerFull, match="raise maxmemory"):
            app.submit("echo", [9])
        r.config_set("maxmemory", "0")
        assert app.store.report(outcomes) == {c.id: 1 for c in claimed}
        assert {j.status() for j in jobs} == {JobState.SUCCEEDED}

        # A reply the server will keep giving (no permission): a BrokerError, not retriable.
        r.acl_setuser("nofcall", enabled=True, passwords=["+pw"], keys=["*"], channels=["*"])
        r.execute_command("ACL", "SETUSER", "nofcall", "+@all", "-fcall", "-fcall_ro")
        url = f"redis://nofcall:pw@127.0.0.1:{server.port}/0"
        with App(url, prefix=prefix) as limited:
            with pytest.raises(BrokerError, match="no permissions") as err:
                limited.store.report(outcomes)
            assert not isinstance(err.value, BrokerUnavailable)
    finally:
        r.close()
        app.close()


# -- episodes: every loop survives, logs once, resumes --------------------------------------

BUSY_SCRIPT = """
local t0 = redis.call('TIME')
local start = t0[1] * 1e6 + t0[2]
for _ = 1, 1e9 do
  local t = redis.call('TIME')
  if t[1] * 1e6 + t[2] - start > tonumber(ARGV[1]) then return 1 end
end
return 0
"""


def test_loops_ride_out_a_busy_server(
    server: ValkeyProcess, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="jobq")
    r = admin(server)
    r.config_set("busy-reply-threshold", "100")  # BUSY replies after 100 ms of a script
    app = make_app(server.url, prefix)
    try:
        with deployment(app) as (_, m):
            ids = [app.submit("echo", [i]).id for i in range(10)]
            all_succeed(app, ids)
            busy = threading.Thread(target=r.eval, args=(BUSY_SCRIPT, 0, 2_500_000))
            busy.start()
            wait_until(lambda: m.outage.down, 10, "the maintenance loop to see BUSY")
            with pytest.raises(BrokerUnavailable, match="busy running a long script"):
                app.submit("echo", [99])
            busy.join(30)
            more = [app.submit("echo", [i]).id for i in range(10)]
            all_succeed(app, ids + more)
            wait_until(lambda: not m.outage.down, 10, "maintenance to resume")
        started, ended = episodes(caplog, "maintenance (test-master)")
        assert (started, ended) == (1, 1), caplog.text
    finally:
        r.close()
        app.close()


def test_loops_ride_out_a_read_only_server(
    server: ValkeyProcess, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The URL's server is demoted to a replica (as in a failover) and promoted back."""
    caplog.set_level(logging.INFO, logger="jobq")
    other = ValkeyProcess()
    other.start()
    r, o = admin(server), admin(other)
    app = make_app(server.url, prefix)
    try:
        with deployment(app) as (w, m):
            ids = [app.submit("echo", [i]).id for i in range(10)]
            all_succeed(app, ids)
            # `other` takes a copy of our data and becomes the primary; ours follows it.
            o.replicaof("127.0.0.1", server.port)
            wait_until(lambda: o.info("replication")["master_link_status"] == "up", 20, "sync")
            o.replicaof("no", "one")
            r.replicaof("127.0.0.1", other.port)
            wait_until(lambda: m.outage.down, 10, "maintenance to see READONLY")
            with pytest.raises(BrokerUnavailable, match="read-only replica"):
                app.submit("echo", [99])
            time.sleep(0.5)  # several ticks and claims refused: still one log line each
            r.replicaof("no", "one")
            more = [app.submit("echo", [i]).id for i in range(10)]
            all_succeed(app, ids + more)
            wait_until(lambda: not m.outage.down, 10, "maintenance to resume")
        assert episodes(caplog, "maintenance (test-master)") == (1, 1), caplog.text
        assert episodes(caplog, f"worker {w.name}: claiming")[0] <= 1, caplog.text
    finally:
        r.close()
        o.close()
        other.cleanup()
        app.close()


def test_loops_ride_out_a_server_kill_and_loading(
    prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """SIGKILL the server, restart it on its RDB with a slow load: refused connections, then
    LOADING replies, then service. Nothing dies, and the loops serve again. (Jobs in flight
    at the snapshot would be the lost-writes case, tested by the delivery suite.)"""
    caplog.set_level(logging.INFO, logger="jobq")
    server = ValkeyProcess()
    server.start()
    app = make_app(server.url, prefix, lease_ms=20_000)
    try:
        with deployment(app, concurrency=2) as (w, m):
            ids = [app.submit("echo", [i]).id for i in range(20)]
            all_succeed(app, ids)
            r = admin(server)
            pipe = r.pipeline(transaction=False)
            for i in range(3000):  # ballast, so that loading takes a while
                pipe.set(f"{prefix}-ballast:{i}", "x" * 1000)
            pipe.execute()
            r.save()
            r.close()
            server.stop(kill=True)
            time.sleep(1.0)  # refused connections
            server.extra_args = (
                "--key-load-delay",
                "500",
                "--loading-process-events-interval-bytes",
                "1024",
                "--rdbcompression",
                "no",
            )
            restart = threading.Thread(target=server.start)  # returns once loaded
            restart.start()
            wait_until(lambda: "LOADING" in caplog.text, 20, "a loop to see LOADING")
            restart.join(60)
            more = [app.submit("echo", [i]).id for i in range(20)]
            all_succeed(app, ids + more)
            wait_until(lambda: not m.outage.down, 10, "maintenance to resume")
            assert "LOADING" in caplog.text, caplog.text
        started, ended = episodes(caplog, "maintenance (test-master)")
        assert started == ended == 1, caplog.text
        assert episodes(caplog, f"worker {w.name}: claiming")[0] <= 1, caplog.text
    finally:
        app.close()
        server.cleanup()


def test_a_lost_function_library_is_loaded_again(
    server: ValkeyProcess, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="jobq")
    r = admin(server)
    app = make_app(server.url, prefix)
    try:
        with deployment(app):
            ids = [app.submit("echo", [i]).id for i in range(10)]
            all_succeed(app, ids)
            for _ in range(3):  # as after a restart without persistence, or a FUNCTION FLUSH
                r.function_flush()
                ids += [app.submit("echo", [i]).id for i in range(10)]
                time.sleep(0.3)
            all_succeed(app, ids)
        assert "lost Valkey" not in caplog.text, caplog.text
    finally:
        r.close()
        app.close()


def test_loops_ride_out_client_pause(server: ValkeyProcess, prefix: str) -> None:
    r = admin(server)
    app = make_app(server.url, prefix)
    try:
        with deployment(app):
            ids = [app.submit("echo", [i]).id for i in range(20)]
            r.execute_command("CLIENT", "PAUSE", "1500", "ALL")
            time.sleep(1.6)
            ids += [app.submit("echo", [i]).id for i in range(10)]
            all_succeed(app, ids)
    finally:
        r.close()
        app.close()


def test_an_unexpected_error_does_not_kill_the_maintenance_loop(
    server: ValkeyProcess, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A reply the server keeps giving (a key of the wrong type where jobq expects its own):
    the loop logs it once with what to check, keeps trying, and resumes once it is fixed."""
    caplog.set_level(logging.INFO, logger="jobq")
    r = admin(server)
    app = make_app(server.url, prefix)
    m = Maintainer(app.store, tick_ms=50, leader_ms=3000, is_master=True, name="m-wrongtype")
    r.set(app.keys.periodic_next, "not a zset")  # the periodic tick reads it: WRONGTYPE
    t = m.start_thread()
    try:
        wait_until(lambda: m.outage.failures >= 3, 10, "several failed ticks")
        assert t.is_alive()
        r.delete(app.keys.periodic_next)
        wait_until(lambda: not m.outage.down, 10, "maintenance to resume")
        assert episodes(caplog, "maintenance (m-wrongtype)") == (1, 1), caplog.text
        assert "WRONGTYPE" in caplog.text
    finally:
        m.stop_event.set()
        t.join(10)
        r.close()
        app.close()


def test_healthz_reports_a_failing_or_dead_loop(server: ValkeyProcess, prefix: str) -> None:
    r = admin(server)
    app = make_app(server.url, prefix)
    m = Maintainer(app.store, tick_ms=50, leader_ms=3000, is_master=True, name="m-health")
    mt = m.start_thread()
    live = LiveMaster(app, maintainer=m).start()
    try:
        health = lambda: httpx.get(live.url + "/healthz", timeout=30)  # noqa: E731
        wait_until(lambda: health().status_code == 200, 10, "healthz ok")
        r.set(app.keys.periodic_next, "not a zset")  # every tick fails from now on
        wait_until(lambda: health().status_code == 503, 10, "healthz to report the failure")
        body = health().json()
        assert body["status"] == "degraded" and body["broker"] == "ok"
        assert body["threads"]["maintenance"]["ok"] is False
        assert any("maintenance loop failing" in p for p in body["problems"]), body
        r.delete(app.keys.periodic_next)
        wait_until(lambda: health().status_code == 200, 10, "healthz ok again")
        m.stop_event.set()  # the loop's thread ends: /healthz must notice
        mt.join(10)
        body = health().json()
        assert health().status_code == 503
        assert body["threads"]["maintenance"]["thread_alive"] is False, body
        assert any("maintenance thread" in p for p in body["problems"]), body
    finally:
        live.stop()
        m.stop_event.set()
        mt.join(10)
        r.close()
        app.close()
