"""Test fixtures: a private Valkey per test session (the embedded binary, its own port), and a
unique key prefix per test instead of FLUSHALL."""

from __future__ import annotations

import contextlib
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
from leaks import pytest_runtest_protocol, pytest_sessionfinish  # noqa: F401 (hooks, leaks.py)

from jobq import App
from jobq.config import url_options
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


# -- The deployments the core and scheduling suites run on -------------------------------------
#: "one": one partition on the session's server (the layout jobq always had); "three": a new
#: deployment split into `PARTITIONED` partitions on that same server (every partition its own
#: slot, so the code paths a Cluster takes); "cluster": the session's real Valkey Cluster
#: (`valkey_cluster` below: 3 primaries + 3 replicas; one partition per primary, jobq's
#: default there).
ALL_LAYOUT_KINDS = ("one", "three", "cluster")
#: The layouts `on_every_layout` runs; JOBQ_TEST_LAYOUTS=one,three (say) runs fewer.
LAYOUT_KINDS = tuple(
    k for k in os.environ.get("JOBQ_TEST_LAYOUTS", ",".join(ALL_LAYOUT_KINDS)).split(",") if k
)
#: How many partitions the "three" layout asks for.
PARTITIONED = 3

#: Parametrizes a module over every layout (``pytestmark = on_every_layout``): each of its tests
#: runs once per layout, grouped by layout, so module fixtures (a worker fleet) start once each.
on_every_layout = pytest.mark.parametrize(
    "layout_kind", LAYOUT_KINDS, indirect=True, scope="module"
)


@pytest.fixture(scope="module")
def layout_kind(request: pytest.FixtureRequest) -> str:
    """The layout this module's tests run on: `on_every_layout` sets it; others run on 'one'."""
    return str(getattr(request, "param", "one"))


def cluster_refusal(url: str) -> str | None:
    """Why jobq cannot serve a deployment at the Cluster `url` (None: it can): a store is
    opened there and every partition pinged, under a throwaway prefix."""
    from jobq.keys import Keys
    from jobq.store import open_store

    try:
        store = open_store(url, Keys("probe" + uuid.uuid4().hex[:8]))
    except Exception as exc:  # the URL itself refused
        return f"jobq.store.open_store cannot open a Cluster URL yet: {type(exc).__name__}: {exc}"
    try:
        store.ping()
    except Exception as exc:
        return f"a store on the Cluster does not answer yet: {type(exc).__name__}: {exc}"
    finally:
        with contextlib.suppress(Exception):
            store.close()
    return None


def cluster_urls_refused() -> str | None:
    """Why jobq refuses every Cluster URL (None: it takes them), asked before a Cluster is
    started for nothing: building a store talks to no server, so a URL naming no server is
    enough to see the refusal (only a `ConfigError` counts; anything else is for
    `cluster_refusal` to judge on the real Cluster)."""
    from jobq.errors import ConfigError
    from jobq.keys import Keys
    from jobq.store import open_store

    try:
        store = open_store("redis+cluster://127.0.0.1:1", Keys("probe"))
    except ConfigError as exc:
        return f"jobq.store.open_store cannot open a Cluster URL yet: ConfigError: {exc}"
    except Exception:
        return None
    with contextlib.suppress(Exception):
        store.close()
    return None


@pytest.fixture(scope="module")
def deployment_url(layout_kind: str, request: pytest.FixtureRequest) -> str:
    """The broker URL of the layout: jobq's own ``?partitions=`` query carries the partition
    count, so every process given the URL (an App, a `jobq worker` or `jobq master`
    subprocess, the CLI, an example) creates or follows the same layout whichever comes
    first. Plain redis-py clients take `server_url` instead (not on a Cluster)."""
    if layout_kind == "one":
        return str(request.getfixturevalue("valkey").url)
    if layout_kind == "three":
        return f"{request.getfixturevalue('valkey').url}?partitions={PARTITIONED}"
    if layout_kind == "cluster":
        refused = cluster_urls_refused()
        if refused:
            pytest.skip(refused)
        url = str(request.getfixturevalue("valkey_cluster").url)
        refused = cluster_refusal(url)
        if refused:
            pytest.skip(refused)
        return url
    raise ValueError(f"unknown layout kind {layout_kind!r}")


@pytest.fixture
def url(deployment_url: str) -> str:
    return deployment_url


@pytest.fixture
def server_url(url: str, layout_kind: str) -> str:
    """`url` without jobq's own query parameters (what redis-py accepts); none on a Cluster,
    where a test reaches keys through the shards (tests/shard_keys.py)."""
    if layout_kind == "cluster":
        pytest.skip("a plain redis-py client does not follow a Cluster's slots")
    return url_options(url)[0]


@pytest.fixture
def prefix() -> str:
    return "t" + uuid.uuid4().hex[:10]


@pytest.fixture
def app(url: str, prefix: str) -> Iterator[App]:
    a = App(url, prefix=prefix)
    yield a
    a.close()


@pytest.fixture
def rclient(server_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(server_url)
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
