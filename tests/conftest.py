"""Test fixtures: a private Valkey per test session (the embedded binary, its own port), and a
unique key prefix per test instead of FLUSHALL."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from jobq import App
from jobq.embedded import find_binary

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A free loopback port outside the ephemeral range (see `ha.free_port`)."""
    return ha.free_port()


class ValkeyProcess:
    """A Valkey server we own: start, stop (kill or clean), restart on the same port/dir."""

    def __init__(self, appendonly: bool = False, extra_args: tuple[str, ...] = ()) -> None:
        self.extra_args = extra_args  # more server options; may change between restarts
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="jobq-test-valkey-"))
        self.appendonly = appendonly
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [
            find_binary(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.dir),
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            "always" if self.appendonly else "everysec",
            "--logfile",
            str(self.dir / "valkey.log"),
            *self.extra_args,
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            probe = redis.Redis(port=self.port, socket_connect_timeout=0.2)
            try:
                probe.ping()
                return
            except redis.RedisError:  # not up yet, or still LOADING its data
                time.sleep(0.02)
            finally:
                probe.close()
        raise RuntimeError(f"test Valkey did not start on port {self.port}")

    def stop(self, kill: bool = False) -> None:
        if self.proc is None:
            return
        if kill:
            self.proc.kill()
        else:
            self.proc.terminate()
        self.proc.wait(10)
        self.proc = None

    def cleanup(self) -> None:
        self.stop(kill=True)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def valkey() -> Iterator[ValkeyProcess]:
    server = ValkeyProcess()
    server.start()
    yield server
    server.cleanup()


@pytest.fixture
def url(valkey: ValkeyProcess) -> str:
    return valkey.url


@pytest.fixture
def prefix() -> str:
    return "t" + uuid.uuid4().hex[:10]


@pytest.fixture
def app(url: str, prefix: str) -> Iterator[App]:
    a = App(url, prefix=prefix)
    yield a
    a.close()


@pytest.fixture
def rclient(url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(url)
    yield c
    c.close()


def jobq_cmd(*args: str) -> list[str]:
    """The `jobq` CLI as a subprocess command line (this interpreter, this checkout)."""
    return [sys.executable, "-m", "jobq", *args]


def subprocess_env(url: str, prefix: str, **extra: str) -> dict[str, str]:
    """Environment for CLI/worker subprocesses: our server, our prefix, tests importable."""
    env = dict(os.environ)
    env.update(
        JOBQ_URL=url,
        JOBQ_PREFIX=prefix,
        PYTHONPATH=os.pathsep.join([str(ROOT / "tests"), env.get("PYTHONPATH", "")]),
        **extra,
    )
    return env


# -- High availability: real Sentinel groups (tests/ha.py) ------------------------------------
# Imported here, next to their fixtures, to keep this block self-contained.
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

import ha  # noqa: E402


def started_group(**kwargs: Any) -> ha.SentinelGroup:
    """A started SentinelGroup; a group whose Sentinels do not settle is replaced once (seen
    only with several test runs sharing one loaded machine), saying so, so a test fails only
    when the second start fails too."""
    group = ha.SentinelGroup(**kwargs)
    try:
        return group.start(timeout=20)
    except AssertionError as exc:  # start() cleaned the group up
        print(f"Sentinel group did not start, trying a new one: {str(exc)[:300]}")
    return ha.SentinelGroup(**kwargs).start()


@pytest.fixture
def sentinel_group() -> Iterator[ha.SentinelGroup]:
    """A started primary + 1 replica + 3 Sentinels (AOF everysec, down-after 1 s), killed and
    removed at teardown even when the test fails."""
    group = started_group()
    try:
        yield group
    finally:
        group.cleanup()


@pytest.fixture
def make_sentinel_group() -> Iterator[Callable[..., ha.SentinelGroup]]:
    """A factory for groups with other parameters (replicas=2, sentinel_password=...), each
    started on call and cleaned up at teardown."""
    groups: list[ha.SentinelGroup] = []

    def make(**kwargs: Any) -> ha.SentinelGroup:
        group = started_group(**kwargs)
        groups.append(group)
        return group

    try:
        yield make
    finally:
        for group in groups:
            group.cleanup()


# -- Valkey Cluster: a real cluster of the embedded binary (tests/cluster.py) -----------------
import cluster as cluster_harness  # noqa: E402


def started_cluster(**kwargs: Any) -> cluster_harness.ValkeyCluster:
    """A started ValkeyCluster; one that does not settle is replaced once, saying so (a loaded
    machine), so a test fails only when the second start fails too."""
    try:
        return cluster_harness.ValkeyCluster(**kwargs).start(timeout=30)
    except (AssertionError, RuntimeError) as exc:  # start() cleaned the cluster up
        print(f"Valkey Cluster did not start, trying a new one: {str(exc)[:300]}")
    return cluster_harness.ValkeyCluster(**kwargs).start()


@pytest.fixture(scope="session")
def valkey_cluster() -> Iterator[cluster_harness.ValkeyCluster]:
    """3 primaries + 3 replicas, built once per session. Tests must leave it as they found
    it (no kills, no migrations): those use `make_cluster`."""
    c = started_cluster()
    try:
        yield c
    finally:
        c.cleanup()


@pytest.fixture
def make_cluster() -> Iterator[Callable[..., cluster_harness.ValkeyCluster]]:
    """A factory for clusters a test may break (kill, migrate), each started on call and
    cleaned up at teardown."""
    made: list[cluster_harness.ValkeyCluster] = []

    def make(**kwargs: Any) -> cluster_harness.ValkeyCluster:
        c = started_cluster(**kwargs)
        made.append(c)
        return c

    try:
        yield make
    finally:
        for c in made:
            c.cleanup()
