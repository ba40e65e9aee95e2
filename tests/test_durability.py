"""Durability and fencing against real servers: a token is never reissued, even by a server
that lost its last writes (the AOF cut back as by a power cut); the durable mode acknowledges
a submit only once it is fsynced (WAITAOF), and says clearly when the server cannot."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from conftest import ValkeyProcess, free_port, jobq_cmd
from procs import wait_until

from jobq import App, JobState
from jobq.config import Settings
from jobq.embedded import ensure_server, find_binary, server_url, stop_server
from jobq.errors import ConfigError, DurabilityTimeout, DurabilityUnsupported
from jobq.model import JobSpec, Outcome
from jobq.store import Store

pytestmark = pytest.mark.timeout(60)

LEASE = 30_000
EMPTY = b"[[],{}]"
TOKEN_SCALE = 1024  # tokens are never below server-time-ms * 1024 (see _preamble.lua)


def spec(job_id: str, queue: str = "default") -> JobSpec:
    return JobSpec(job_id, "t", queue, EMPTY)


@pytest.fixture
def aof_server() -> Iterator[ValkeyProcess]:
    """A private server with AOF (appendfsync always), so a copy of its AOF directory taken
    after a reply holds everything acknowledged so far."""
    server = ValkeyProcess(appendonly=True)
    server.start()
    yield server
    server.cleanup()


def fresh_app(url: str) -> App:
    return App(url, prefix="d" + uuid.uuid4().hex[:10])


# -- fencing tokens ----------------------------------------------------------------------------


def test_a_token_is_never_reissued_after_the_server_loses_its_last_writes(
    aof_server: ValkeyProcess, tmp_path: Path
) -> None:
    app = fresh_app(aof_server.url)
    store = app.store
    try:
        store.submit([spec("j")])
        aof = aof_server.dir / "appendonlydir"
        saved = tmp_path / "aof-before-claim"
        shutil.copytree(aof, saved)  # what was fsynced before the claim

        first = store.claim("w1", ["default"], 1, LEASE)[0]

        # Power cut: the server dies and its AOF is cut back to before the claim.
        aof_server.stop(kill=True)
        shutil.rmtree(aof)
        shutil.copytree(saved, aof)
        aof_server.start()
        assert store.get_state("j") == JobState.QUEUED  # the claim was lost with the cut

        second = store.claim("w2", ["default"], 1, LEASE)[0]
        assert second.id == "j"
        # The counter rolled back with the cut; the token did not.
        assert second.token != first.token
        assert int(second.token) > int(first.token)

        # The rolled-back attempt is fenced off everywhere; the real owner's outcome commits.
        assert store.heartbeat([("j", first.token)], LEASE) == ({"j"}, set())
        assert not store.progress("j", first.token, 0.5)
        assert store.report([Outcome(first, ok=True, result=b'["stale"]')]) == {"j": -2}
        assert store.report([Outcome(second, ok=True, result=b'["real"]')]) == {"j": 1}
        rec = store.get_job("j")
        assert rec is not None and rec.state == JobState.SUCCEEDED
        assert rec.result == b'["real"]' and rec.token == int(second.token)
    finally:
        app.close()


def test_tokens_are_exact_increasing_integers_above_the_server_clock(app: App) -> None:
    store: Store = app.store
    n = 3000  # more claims in one call (one ms) than the 1024 tokens of a millisecond
    store.submit([spec(f"j{i}") for i in range(n)])
    before_ms = store.server_time_ms()
    claimed = store.claim("w1", ["default"], n, LEASE)
    tokens = [int(c.token) for c in claimed]
    assert len(tokens) == n
    assert tokens == sorted(set(tokens))  # strictly increasing, none repeated
    assert tokens[0] > before_ms * TOKEN_SCALE  # the epoch is the server clock
    assert tokens[-1] < 2**53  # exact in Lua (a double) and in any JSON reader
    # Handed out as plain digit strings, equal to what the job hash holds (no '1.8e+15').
    assert all(c.token.isdigit() for c in claimed)
    raw = [store.r.hget(store.keys.job(c.id), "token") for c in claimed[:50]]
    assert raw == [c.token.encode() for c in claimed[:50]]
    assert store.heartbeat([(c.id, c.token) for c in claimed[:50]], LEASE) == (set(), set())

    # A later claim of the same job (after a requeue) gets a larger token.
    again = claimed[0]
    assert store.requeue([(again.id, again.token)]) == 1
    (later,) = store.claim("w2", ["default"], 1, LEASE)
    assert later.id == again.id and int(later.token) > tokens[-1]


# -- durable mode: settings --------------------------------------------------------------------


def test_the_url_carries_the_durable_settings_below_explicit_arguments() -> None:
    env = {"JOBQ_URL": "redis://:pw@h:1/0?durable=1&wait_replicas=2&protocol=3"}
    s = Settings.from_env(env=env)
    assert (s.durable, s.wait_replicas, s.durable_timeout_ms) == (True, 2, 5_000)
    assert s.url == "redis://:pw@h:1/0?protocol=3"  # redis-py's own parameters stay
    # The URL beats the environment; an explicit argument beats the URL.
    s = Settings.from_env(env={"JOBQ_DURABLE": "0"}, url="redis://h:1/0?durable=yes")
    assert s.durable and s.url == "redis://h:1/0"
    assert not Settings.from_env(env={}, url="redis://h:1/0?durable=1", durable=False).durable
    assert Settings.from_env(env={"JOBQ_DURABLE": "1"}).durable
    with pytest.raises(ConfigError, match=r"\?wait_replicas='two' in the broker URL"):
        Settings.from_env(env={}, url="redis://h:1/0?wait_replicas=two")
    with pytest.raises(ConfigError, match="durable_timeout_ms"):
        Settings.from_env(env={}, durable_timeout_ms=0)


# -- durable mode: WAITAOF on submits and outcomes ---------------------------------------------


def waitaof_calls(store: Store) -> int:
    stats = store.r.info("commandstats").get("cmdstat_waitaof", {})
    return int(stats.get("calls", 0))


def test_durable_submits_and_outcomes_wait_for_the_fsync(aof_server: ValkeyProcess) -> None:
    app = App(aof_server.url + "?durable=1", prefix="d" + uuid.uuid4().hex[:10])
    store = app.store
    try:
        assert app.settings.durable and store.durability is not None
        store.scripts.load()  # (else the first submit loads it and waits again after)
        before = waitaof_calls(store)
        store.submit([spec("a")])  # the probe, then the submit's own WAITAOF
        assert waitaof_calls(store) == before + 2
        store.submit([spec(f"b{i}") for i in range(1200)])  # streamed in chunks: one wait
        assert waitaof_calls(store) == before + 3
        assert store.get_states(["a", "b0", "b1199"]) == [JobState.QUEUED] * 3

        claimed = store.claim("w1", ["default"], 2, LEASE)
        assert store.report([Outcome(c, ok=True, result=b"[1]") for c in claimed]) == {
            c.id: 1 for c in claimed
        }
        assert waitaof_calls(store) == before + 4

        # A server that lost the function library: the submit is run again after loading it,
        # and so is its wait (the first WAITAOF only covered the failed call).
        store.r.function_flush()
        store.submit([spec("c")])
        assert waitaof_calls(store) == before + 6
        assert store.get_state("c") == JobState.QUEUED
    finally:
        app.close()


def test_a_durable_submit_is_not_acknowledged_before_its_fsync(aof_server: ValkeyProcess) -> None:
    # With `appendfsync no` the server never fsyncs on its own: the submit must not pass.
    url = aof_server.url + "?durable=1&durable_timeout_ms=200"
    app = App(url, prefix="d" + uuid.uuid4().hex[:10])
    admin = redis.Redis.from_url(aof_server.url)
    try:
        admin.config_set("appendfsync", "no")
        with pytest.raises(DurabilityTimeout, match="0/1 local AOF fsync"):
            app.submit("t")
        admin.config_set("appendfsync", "always")
        assert app.submit("t").status() == JobState.QUEUED
    finally:
        admin.close()
        app.close()


def test_durable_mode_is_refused_before_anything_is_written_without_aof(url: str) -> None:
    app = App(url, prefix="d" + uuid.uuid4().hex[:10], durable=True)  # the session server: no AOF
    try:
        with pytest.raises(DurabilityUnsupported, match=r"AOF off.*nothing was written"):
            app.store.submit([spec("a")])
        assert app.store.get_state("a") is None
    finally:
        app.close()


def test_durable_mode_says_when_the_server_lacks_waitaof(tmp_path: Path) -> None:
    # A current server with WAITAOF renamed away answers as Redis < 7.2 / Valkey < 8 would.
    port = free_port()
    args = [find_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path)]
    args += ["--save", "", "--appendonly", "yes", "--rename-command", "WAITAOF", ""]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    app = App(url, prefix="d" + uuid.uuid4().hex[:10], durable=True)
    try:
        wait_until(lambda: _answers(url), 10, "the server")
        with pytest.raises(DurabilityUnsupported, match=r"does not know WAITAOF.*Valkey >= 8"):
            app.store.submit([spec("a")])
        assert app.store.get_state("a") is None
    finally:
        app.close()
        proc.kill()
        proc.wait()


def _answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=0.2)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def test_a_submit_whose_replicas_do_not_confirm_raises_a_typed_error(
    aof_server: ValkeyProcess, caplog: pytest.LogCaptureFixture
) -> None:
    url = aof_server.url + "?durable=1&wait_replicas=1&durable_timeout_ms=100"
    app = App(url, prefix="d" + uuid.uuid4().hex[:10])  # no replica will ever answer
    store = app.store
    try:
        with pytest.raises(DurabilityTimeout, match="may or may not be durable") as err:
            store.submit([spec("a")])
        assert err.value.job_ids == ("a",)
        assert "0/1 replica" in str(err.value) and "1/1 local" in str(err.value)
        assert store.get_state("a") == JobState.QUEUED  # written, only not confirmed
        with pytest.raises(DurabilityTimeout):  # re-submitting the same id is safe
            store.submit([spec("a")])
        assert store.r.zcard(store.keys.queue("default")) == 1

        # An outcome is recorded all the same (a worker cannot take it back): logged once.
        (c,) = store.claim("w1", ["default"], 1, LEASE)
        with caplog.at_level(logging.WARNING, logger="jobq.durability"):
            assert store.report([Outcome(c, ok=True, result=b"[1]")]) == {"a": 1}
        assert "not confirmed durable" in caplog.text
        assert store.get_state("a") == JobState.SUCCEEDED
    finally:
        app.close()


# -- the embedded server -----------------------------------------------------------------------


def _appendfsync(url: str) -> str:
    client = redis.Redis.from_url(url)
    try:
        return str(client.config_get("appendfsync")["appendfsync"])
    finally:
        client.close()


def test_the_embedded_server_fsyncs_every_write_in_durable_mode(tmp_path: Path) -> None:
    plain, durable = tmp_path / "plain", tmp_path / "durable"
    try:
        url = ensure_server(plain)
        assert _appendfsync(url) == "everysec"  # the default: up to ~1 s lost on a power cut
        app = App(settings=Settings(data_dir=str(plain), prefix="d1", durable=True))
        assert app.url == url  # attaching in durable mode switches the running server over
        app.store.submit([spec("a")])
        app.close()
        assert _appendfsync(url) == "always"
        assert ensure_server(plain) == url and _appendfsync(url) == "always"  # kept

        env = {k: v for k, v in os.environ.items() if not k.startswith("JOBQ_")}
        cmd = jobq_cmd("server", "start", "--durable", "--data-dir", str(durable))
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30, check=True)
        started = server_url(durable)
        assert started is not None and "***" in out.stdout
        assert _appendfsync(started) == "always"
    finally:
        stop_server(plain)
        stop_server(durable)
