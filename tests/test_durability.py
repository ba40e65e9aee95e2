"""Durability and fencing against real servers: a token is never reissued, even by a server
that lost its last writes (the AOF cut back as by a power cut); the durable mode acknowledges
a submit only once it is fsynced (WAITAOF), and says clearly when the server cannot."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ValkeyProcess

from jobq import App, JobState
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
