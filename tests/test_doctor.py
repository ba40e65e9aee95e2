"""`jobq doctor` against real servers: a one-server deployment (warnings, a failing eviction
policy, an unreachable server) and a Sentinel group with and without min-replicas-to-write, a
dead Sentinel and a replica named as the primary; the lines, --json and the exit codes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import ha
import pytest
from click.testing import CliRunner
from conftest import ValkeyProcess, free_port

from jobq import App
from jobq.cli import main


def doctor(url: str, *extra: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["doctor", "--url", url, *extra])
    return result.exit_code, result.output


def report(url: str, *extra: str) -> tuple[int, dict[str, dict[str, Any]]]:
    code, out = doctor(url, "--json", *extra)
    doc = json.loads(out)
    assert doc["exit_code"] == code
    return code, {c["name"]: c for c in doc["checks"]}


def status(checks: dict[str, dict[str, Any]], name: str) -> str:
    assert name in checks, f"no check {name!r} in {sorted(checks)}"
    return str(checks[name]["status"])


@pytest.fixture
def group(sentinel_group: ha.SentinelGroup) -> ha.SentinelGroup:
    """The shared group fixture (conftest: a group that fails to settle is replaced once)."""
    return sentinel_group


@pytest.fixture
def evicting() -> Iterator[ValkeyProcess]:
    server = ValkeyProcess(extra_args=("--maxmemory-policy", "allkeys-lru"))
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


def test_one_server_with_warnings(url: str) -> None:
    code, out = doctor(url)
    assert code == 0, out  # warnings only: the CLI's 0
    lines = out.strip().splitlines()
    assert lines[0].startswith("ok    topology: one server at redis://127.0.0.1:")
    assert any(line.startswith("warn  aof: appendonly is no") and "fix: " in line for line in lines)
    assert any(line.startswith("ok    maxmemory-policy: noeviction") for line in lines)
    assert lines[-1].endswith("failure(s)") and " 0 failure(s)" in lines[-1]
    assert doctor(url, "--strict")[0] == 1  # --strict: a warning fails
    code, checks = report(url)
    assert code == 0
    assert status(checks, "primary") == "ok" and status(checks, "aof") == "warn"
    assert status(checks, "min-replicas-to-write") == "ok"  # no replicas to require
    assert status(checks, "waitaof") == "ok"
    # Asking for durable submits on a server without AOF is a failure, with the fix.
    code, checks = report(url + "?durable=1")
    assert code == 1 and status(checks, "waitaof") == "fail"
    assert "appendonly" in checks["waitaof"]["fix"]


def test_evicting_server_fails_and_unreachable_is_3(evicting: ValkeyProcess) -> None:
    code, checks = report(evicting.url)
    assert code == 1
    assert status(checks, "maxmemory-policy") == "fail"
    assert "noeviction" in checks["maxmemory-policy"]["fix"]
    code, out = doctor(f"redis://127.0.0.1:{free_port()}/0")
    assert code == 3 and "fail  primary: unreachable" in out
    assert doctor("ftp://nowhere/0")[0] == 2


def test_sentinel_group_min_replicas_and_faults(group: ha.SentinelGroup) -> None:
    primary, replica = group.current_primary(), group.replicas()[0]
    code, checks = report(group.url)
    assert code == 0, checks
    for s in group.sentinels:
        assert status(checks, f"sentinel {ha.HOST}:{s.port}") == "ok"
    assert status(checks, "sentinels agree") == "ok" and status(checks, "quorum") == "ok"
    assert status(checks, f"replica {ha.HOST}:{replica.port}") == "ok"
    assert status(checks, "aof") == "ok"
    # A primary with a replica but without min-replicas-to-write: warned, with the fix.
    assert status(checks, "min-replicas-to-write") == "warn"
    assert "CONFIG SET min-replicas-to-write 1" in checks["min-replicas-to-write"]["fix"]
    assert status(checks, "function library") == "warn"  # nothing loaded it yet
    assert doctor(group.url, "--strict")[0] == 1

    app = App(group.url, prefix="doc")
    try:
        app.store.ping()  # the admin connection loads this version's library
    finally:
        app.close()
    primary.call("CONFIG", "SET", "min-replicas-to-write", "1", "min-replicas-max-lag", "10")
    code, out = doctor(group.url)
    assert code == 0, out
    assert "ok    min-replicas-to-write: 1 (max lag 10 s); 1 replica(s) qualify" in out
    assert "ok    function library: jobq_" in out
    # More replicas required than exist: every write is refused now, a failure.
    primary.call("CONFIG", "SET", "min-replicas-to-write", "2")
    code, checks = report(group.url)
    assert code == 1 and status(checks, "min-replicas-to-write") == "fail"
    code, checks = report(group.url + "?wait_replicas=3")
    assert status(checks, "waitaof") == "fail"
    primary.call("CONFIG", "SET", "min-replicas-to-write", "1")

    # The replica named as if it were the primary.
    code, checks = report(f"redis://:{group.password}@{ha.HOST}:{replica.port}/0")
    assert code == 1 and status(checks, "primary") == "fail"
    assert "is a replica of" in checks["primary"]["message"]

    # One Sentinel dead: its line fails (the other two still agree and reach quorum).
    dead = group.sentinels[2]
    group.kill(dead)
    code, checks = report(group.url)
    assert code == 1
    assert status(checks, f"sentinel {ha.HOST}:{dead.port}") == "fail"
    assert status(checks, "sentinels agree") == "ok"
    # Every Sentinel dead: the broker is unreachable, exit 3.
    for s in group.sentinels[:2]:
        group.kill(s)
    code, out = doctor(group.url)
    assert code == 3, out
