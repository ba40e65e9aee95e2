"""HA with nothing but jobq installed: `jobq server start --listen/--replica-of` and
`jobq server sentinel start`, run as real subprocesses on loopback ports of their own.

An embedded primary, an embedded replica of it (same acl.json, so the same role users) and
three embedded Sentinels; the primary's server is SIGKILLed and the Sentinels must promote the
replica, on which the role users keep working; the old primary, restarted, must come back as a
replica of the new one (asking the Sentinels first). Every client here is plain redis-py with an
explicit host and port. The failover and rejoin times are measured and printed, not asserted.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from conftest import free_port, jobq_cmd
from remote_support import child_env, stop_embedded

pytestmark = pytest.mark.timeout(150)

SERVICE = "jobq-test"


def wait_for(what: str, check: Callable[[], Any], timeout: float) -> Any:
    """Poll `check` until it returns something truthy (errors count as not yet); bounded."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            got = check()
            if got:
                return got
            last = got
        except (redis.RedisError, OSError) as exc:
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout}s (last: {last!r})")


@dataclass
class Layout:
    """Data directories and ports of one test deployment; stops everything on cleanup."""

    base: Path
    prefix: str
    env: dict[str, str]
    nodes: list[Path] = field(default_factory=list)
    sentinels: list[Path] = field(default_factory=list)

    def jobq(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        out = subprocess.run(
            jobq_cmd(*args), env=self.env, capture_output=True, text=True, timeout=60
        )
        if ok:
            assert out.returncode == 0, f"jobq {' '.join(args)}: {out.stdout}{out.stderr}"
        return out

    def passwords(self) -> dict[str, str]:
        raw: dict[str, Any] = json.loads((self.nodes[0] / "acl.json").read_text())
        return dict(raw["passwords"])

    def client(self, port: int, role: str) -> redis.Redis:
        user = f"{self.prefix}-{role}"
        pw = self.passwords()[role]
        return redis.Redis(port=port, username=user, password=pw, socket_timeout=5)

    def sentinel(self, port: int) -> redis.Redis:
        pw = self.passwords()["discovery"]
        return redis.Redis(port=port, password=pw, socket_timeout=5, decode_responses=True)

    def cleanup(self) -> None:
        for d in self.sentinels:
            with contextlib.suppress(Exception):
                self.jobq("server", "sentinel", "stop", "--data-dir", str(d), ok=False)
            with contextlib.suppress(OSError, ValueError):
                os.kill(int((d / "sentinel.pid").read_text().strip()), signal.SIGKILL)
        for d in self.nodes:
            stop_embedded(d)


@pytest.fixture
def layout(tmp_path: Path) -> Iterator[Layout]:
    prefix = "ha" + uuid.uuid4().hex[:8]
    got = Layout(tmp_path, prefix, child_env(JOBQ_PREFIX=prefix))
    try:
        yield got
    finally:
        got.cleanup()


def test_replica_and_sentinels_fail_over_with_the_role_users_intact(layout: Layout) -> None:
    p_port, r_port = free_port(), free_port()
    primary, replica = layout.base / "p", layout.base / "r"
    layout.nodes += [primary, replica]
    out = layout.jobq(
        "server", "start", "--data-dir", str(primary), "--listen", f"127.0.0.1:{p_port}"
    )
    assert f"primary listening on 127.0.0.1:{p_port}" in out.stdout
    acl = primary / "acl.json"
    assert oct(acl.stat().st_mode & 0o777) == "0o600"
    out = layout.jobq(
        "server", "start", "--data-dir", str(replica), "--listen", f"127.0.0.1:{r_port}",
        "--replica-of", f"127.0.0.1:{p_port}", "--acl-file", str(acl),
    )  # fmt: skip
    assert f"replica of 127.0.0.1:{p_port}" in out.stdout
    status = layout.jobq("server", "status", "--data-dir", str(replica)).stdout
    assert f"role: replica of 127.0.0.1:{p_port}" in status

    # Written on the primary by the worker user, read on the replica by the same user (created
    # there from the same acl.json); the replica refuses the write itself.
    key = "{" + layout.prefix + "}:probe"
    pw, rw = layout.client(p_port, "worker"), layout.client(r_port, "worker")
    pw.hset(key, "before", "1")
    wait_for("the key on the replica", lambda: rw.hget(key, "before") == b"1", 20)
    with pytest.raises(redis.ReadOnlyError):
        rw.hset(key, "x", "1")
    assert layout.client(r_port, "producer").exists(key) == 1
    libraries = layout.client(r_port, "admin").execute_command("FUNCTION", "LIST")
    assert libraries, "jobq's function library did not reach the replica"
    with pytest.raises(redis.AuthenticationError):  # the default user is off on the replica too
        redis.Redis(port=r_port, password=layout.passwords()["worker"]).ping()

    # Three Sentinels, one quorum of two.
    s_ports = [free_port() for _ in range(3)]
    for i, port in enumerate(s_ports):
        d = layout.base / f"s{i}"
        layout.sentinels.append(d)
        layout.jobq(
            "server", "sentinel", "start", "--data-dir", str(d), "--listen", f"127.0.0.1:{port}",
            "--monitor", f"127.0.0.1:{p_port}", "--service", SERVICE, "--quorum", "2",
            "--down-after-ms", "1000", "--failover-timeout-ms", "5000", "--acl-file", str(acl),
        )  # fmt: skip
    sentinels = [layout.sentinel(port) for port in s_ports]

    def settled() -> bool:
        views = [s.sentinel_master(SERVICE) for s in sentinels]
        return all(v["num-other-sentinels"] == 2 and v["num-slaves"] == 1 for v in views)

    wait_for("the Sentinels to find each other and the replica", settled, 30)
    status = layout.jobq("server", "sentinel", "status", "--data-dir", str(layout.sentinels[0]))
    assert f"primary at 127.0.0.1:{p_port}" in status.stdout

    # SIGKILL the primary's server: the Sentinels must name the replica.
    pid = int((primary / "valkey.pid").read_text().strip())
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()

    def promoted() -> bool:
        named = [
            s.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE) for s in sentinels
        ]
        return sum(1 for n in named if n and int(n[1]) == r_port) >= 2

    wait_for("the Sentinels to promote the replica", promoted, 45)
    gap = time.monotonic() - killed
    admin = layout.client(r_port, "admin")
    wait_for(
        "the replica to become the primary",
        lambda: admin.execute_command("ROLE")[0] == b"master",
        20,
    )
    wait_for("a worker write on the new primary", lambda: rw.hset(key, "after", "1") >= 0, 20)
    print(f"\nfailover: the Sentinels named the replica {gap:.2f} s after SIGKILL (down-after 1 s)")
    # Its unit file, run again (systemd restarting the service), must not demote the new
    # primary back into a replica of the dead one.
    again = layout.jobq(
        "server", "start", "--data-dir", str(replica), "--listen", f"127.0.0.1:{r_port}",
        "--replica-of", f"127.0.0.1:{p_port}", "--acl-file", str(acl),
    )  # fmt: skip
    assert "already runs" in again.stderr
    assert admin.execute_command("ROLE")[0] == b"master"

    # The old primary, started again and told where the Sentinels are, asks them first and
    # comes back as a replica of the new primary at once (no second primary, not even for the
    # ~10 s the Sentinels take to demote it), and gets what was written since.
    restarted = time.monotonic()
    ask = [a for port in s_ports for a in ("--sentinel", f"127.0.0.1:{port}")]
    layout.jobq(
        "server", "start", "--data-dir", str(primary), "--listen", f"127.0.0.1:{p_port}",
        *ask, "--service", SERVICE,
    )  # fmt: skip
    old = layout.client(p_port, "admin")
    assert old.execute_command("ROLE")[0] == b"slave"

    def demoted() -> bool:
        info = old.info("replication")
        return (
            info["role"] == "slave"
            and info["master_port"] == r_port
            and info["master_link_status"] == "up"
        )

    wait_for("the old primary to be turned into a replica", demoted, 45)
    window = time.monotonic() - restarted
    assert layout.client(p_port, "worker").hget(key, "after") == b"1"
    print(f"the restarted old primary was replicating the new one {window:.2f} s after start")

    # Neither the replication nor the Sentinel user was ever refused a command.
    for port in (p_port, r_port):
        log = layout.client(port, "admin").execute_command("ACL", "LOG")
        # (the default user's refusal provoked above aside)
        refused = [e for e in log if e[b"username"] != b"default"]
        assert refused == [], f"ACL refusals on port {port}: {refused}"
    for c in (pw, rw, admin, old, *sentinels):
        c.close()


def test_a_replica_without_the_primarys_acl_json_is_refused_before_starting(
    layout: Layout,
) -> None:
    d = layout.base / "lonely"
    layout.nodes.append(d)
    out = layout.jobq(
        "server", "start", "--data-dir", str(d), "--listen", f"127.0.0.1:{free_port()}",
        "--replica-of", f"127.0.0.1:{free_port()}", ok=False,
    )  # fmt: skip
    assert out.returncode == 1
    assert "copy it from the primary's data directory" in out.stderr
    assert not (d / "server.json").exists()  # nothing started
    out = layout.jobq(
        "server", "start", "--data-dir", str(d), "--replica-of", "127.0.0.1:1", ok=False
    )
    assert out.returncode == 2 and "needs --listen" in out.stderr  # a usage error
    out = layout.jobq(
        "server", "sentinel", "start", "--data-dir", str(d), "--listen", "127.0.0.1:1",
        "--monitor", "primary.example:6380", ok=False,
    )  # fmt: skip
    assert out.returncode == 2 and "--monitor" in out.stderr and "IP address" in out.stderr
    out = layout.jobq(
        "server", "sentinel", "start", "--data-dir", str(d), "--listen", "127.0.0.1:1",
        "--monitor", "127.0.0.1:2", ok=False,
    )  # fmt: skip
    assert out.returncode == 1 and "no acl.json" in out.stderr


def test_a_restarted_sentinel_keeps_what_it_learned_and_takes_new_settings(tmp_path: Path) -> None:
    """sentinel.conf after a failover names the new primary: a restart must keep that (and the
    Sentinel's id and epochs), whatever --monitor says, and replace only jobq's own lines."""
    from jobq.acl import prepare_roles
    from jobq.embedded_sentinel import SentinelSpec, _conf_lines

    roles, _, _ = prepare_roles(tmp_path, "jobq", "127.0.0.1", 1, False)
    learned = [
        "port 1111",
        'requirepass "old-password"',
        "user default on #abc ~* &* +@all",
        "sentinel monitor jobq 10.0.0.2 6380 2",
        "sentinel down-after-milliseconds jobq 9999",
        "sentinel myid 3b9e5b4d6aae19098ea98a2a035df705c367b68c",
        "sentinel known-replica jobq 10.0.0.1 6380",
        "sentinel current-epoch 7",
    ]
    (tmp_path / "sentinel.conf").write_text("\n".join(learned) + "\n")
    spec = SentinelSpec("10.0.0.3", 26380, ("10.0.0.1", 6380), "jobq", 2, 1500, 8000)
    lines = _conf_lines(tmp_path, spec, roles, "new-password")
    assert [x for x in lines if x.startswith("sentinel monitor")] == [
        "sentinel monitor jobq 10.0.0.2 6380 2"
    ]
    for kept in learned[4:]:
        assert kept in lines or kept.startswith("sentinel down-after")
    assert "sentinel down-after-milliseconds jobq 1500" in lines
    assert "sentinel down-after-milliseconds jobq 9999" not in lines
    assert "requirepass new-password" in lines and 'requirepass "old-password"' not in lines
    assert "port 26380" in lines and "port 1111" not in lines
    assert not any(x.startswith("user ") for x in lines)
    # auth-pass must follow the monitor line it names, or Sentinel refuses the file.
    monitor = lines.index("sentinel monitor jobq 10.0.0.2 6380 2")
    assert lines.index(f"sentinel auth-pass jobq {roles.passwords['sentinel']}") > monitor
    # A first start (no file) monitors --monitor.
    (tmp_path / "sentinel.conf").unlink()
    assert "sentinel monitor jobq 10.0.0.1 6380 2" in _conf_lines(tmp_path, spec, roles, "pw")
