"""Remote workers: `jobq master --listen` opens the embedded server with an ACL user per role.

Proved for real on a server the test starts: the listen address needs a host, weak passwords are
refused, a generated one is stored 0600 and printed once; the worker and producer users are
refused what they must not do (CONFIG, ACL, REPLICAOF, FLUSHALL, KEYS, another prefix's keys...)
and run every path they need end to end, with nothing refused in the server's ACL log. TLS is
in test_remote_tls.py.
"""

from __future__ import annotations

import socket
import stat
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner
from conftest import free_port, jobq_cmd
from procs import JobqProcess, kill_all, wait_until
from remote_support import TESTS, child_env, cli_env, pings, start_master, stop_embedded

from jobq import App, JobState
from jobq.acl import (
    ROLES,
    Roles,
    check_password,
    load_roles,
    parse_listen,
    role_rules,
    script_commands,
    user_name,
)
from jobq.cli import main
from jobq.embedded import server_url
from jobq.errors import ConfigError, JobqError
from jobq.scripts import function_name, library
from jobq.states import TERMINAL

pytestmark = pytest.mark.timeout(90)


@dataclass
class Deployment:
    data_dir: Path
    prefix: str
    port: int
    roles: Roles
    first_output: str

    def url(self, role: str) -> str:
        return self.roles.url(role, show_secret=True).replace(f"@{self.roles.host}:", "@127.0.0.1:")

    def client(self, role: str) -> redis.Redis:
        return redis.Redis.from_url(self.url(role), socket_timeout=10)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """An embedded server opened by `jobq master --listen 127.0.0.1:<port>` (no password
    given); the master is stopped again, so workers also run the maintenance ticks."""
    base = tmp_path_factory.mktemp("remote")
    d = base / "data"
    prefix = "r" + uuid.uuid4().hex[:8]
    port = free_port()
    master = start_master(d, prefix, ["--listen", f"127.0.0.1:{port}"], base / "master.log")
    try:
        assert master.stop() == 0
        roles = load_roles(d)
        assert roles is not None
        yield Deployment(d, prefix, port, roles, master.log())
    finally:
        kill_all([master])
        stop_embedded(d)


# -- the listen address and the password ----------------------------------------------------


def test_listen_needs_an_explicit_host() -> None:
    with pytest.raises(ConfigError, match=r"write 0\.0\.0\.0:6380"):
        parse_listen(":6380")
    with pytest.raises(ConfigError, match="port"):
        parse_listen("10.0.0.5:http")
    assert parse_listen("0.0.0.0:6380") == ("0.0.0.0", 6380)
    assert parse_listen("[::1]:7000") == ("::1", 7000)
    with pytest.raises(ConfigError, match="IP address"):
        parse_listen("master.example:6380")
    # The CLI refuses before anything starts or binds.
    out = CliRunner().invoke(main, ["master", "--listen", ":6380", "--no-http"], env=cli_env())
    assert out.exit_code == 1, out.output
    assert "0.0.0.0:6380" in out.output


@pytest.mark.parametrize(
    "weak", ["hunter2", "password12345678", "correcthorsebatterystaple", "short-but-ok", "a" * 30]
)
def test_weak_passwords_are_refused_with_a_hint(weak: str) -> None:
    with pytest.raises(ConfigError, match="omit --password to have a strong one generated"):
        check_password(weak)


def test_a_weak_password_is_refused_by_the_cli_before_the_server_opens(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("hunter2\n")
    args = ["master", "--listen", "127.0.0.1:1", "--password-file", str(tmp_path / "pw")]
    out = CliRunner().invoke(main, [*args, "--no-http"], env=cli_env(JOBQ_DATA_DIR=str(tmp_path)))
    assert out.exit_code == 1
    assert "refusing a well-known password" in out.output
    assert not (tmp_path / "server.json").exists()  # nothing was started


def test_a_generated_password_is_stored_0600_and_printed_once(
    deployment: Deployment, tmp_path: Path
) -> None:
    secret = deployment.roles.passwords["worker"]
    assert len(secret) >= 32
    assert secret in deployment.first_output
    join = f"JOBQ_URL='redis://{deployment.prefix}-worker:{secret}@127.0.0.1:{deployment.port}/0'"
    assert f"{join} jobq worker APP" in deployment.first_output
    mode = stat.S_IMODE((deployment.data_dir / "acl.json").stat().st_mode)
    assert mode == 0o600
    # Started again, the master keeps the passwords and prints none of them.
    again = start_master(
        deployment.data_dir,
        deployment.prefix,
        ["--listen", f"127.0.0.1:{deployment.port}"],
        tmp_path / "again.log",
    )
    try:
        again.stop()
        out = again.log()
        assert "jobq-" not in out or "***" in out
        for pw in deployment.roles.passwords.values():
            assert pw not in out
        assert load_roles(deployment.data_dir) == deployment.roles
    finally:
        kill_all([again])
    # `jobq acl` prints every role's URL, redacted unless asked.
    env = child_env(JOBQ_DATA_DIR=str(deployment.data_dir))
    shown = subprocess.run(jobq_cmd("acl"), env=env, capture_output=True, text=True, timeout=30)
    assert shown.returncode == 0, shown.stderr
    for role in ROLES:
        assert f"redis://{user_name(deployment.prefix, role)}:***@" in shown.stdout
    assert secret not in shown.stdout
    full = subprocess.run(
        jobq_cmd("acl", "--show-secrets"), env=env, capture_output=True, text=True, timeout=30
    )
    assert secret in full.stdout


# -- what the roles may not do --------------------------------------------------------------

REFUSED = [
    ("CONFIG", "SET", "maxmemory", "1"),
    ("CONFIG", "GET", "requirepass"),
    ("ACL", "SETUSER", "intruder", "on", ">intruder-password", "+@all", "~*"),
    ("ACL", "LIST"),
    ("REPLICAOF", "127.0.0.1", "1"),
    ("SLAVEOF", "NO", "ONE"),
    ("FLUSHALL",),
    ("FLUSHDB",),
    ("KEYS", "*"),
    ("SCAN", "0"),
    ("DEBUG", "SLEEP", "0"),
    ("MODULE", "LIST"),
    ("SHUTDOWN", "NOSAVE"),
    ("EVAL", "return 1", "0"),
    ("FUNCTION", "DELETE", "anything"),
    ("FUNCTION", "LOAD", "REPLACE", "#!lua name=evil\nredis.register_function('x', tostring)"),
    ("SELECT", "1"),
    ("GET", "{someone-else}:job:1"),
    ("SET", "{someone-else}:x", "1"),
    ("HGETALL", "unprefixed"),
]


@pytest.mark.parametrize("role", ["worker", "producer"])
@pytest.mark.parametrize("command", REFUSED, ids=lambda c: " ".join(c[:2]))
def test_roles_are_refused_server_and_foreign_key_commands(
    deployment: Deployment, role: str, command: tuple[str, ...]
) -> None:
    client = deployment.client(role)
    try:
        with pytest.raises(redis.ResponseError) as refused:
            client.execute_command(*command)
        # NOPERM from the ACL; DEBUG is also off server-wide (refused before the ACL check).
        assert isinstance(refused.value, redis.exceptions.NoPermissionError) or (
            command[0] == "DEBUG" and "not allowed" in str(refused.value)
        ), refused.value
    finally:
        client.close()


@pytest.mark.parametrize("role", ["worker", "producer"])
def test_roles_cannot_run_jobq_functions_on_another_prefix(
    deployment: Deployment, role: str
) -> None:
    client = deployment.client(role)
    try:
        with pytest.raises(redis.exceptions.NoPermissionError):
            # The enqueue function with the events key of another deployment.
            client.execute_command("FCALL", function_name("enqueue"), 1, "{someone-else}:events")
    finally:
        client.close()


def test_a_producer_cannot_claim_and_the_default_user_is_disabled(
    deployment: Deployment,
) -> None:
    producer = deployment.client("producer")
    try:
        with pytest.raises(redis.exceptions.NoPermissionError):
            producer.execute_command("FCALL", function_name("claim"), 0)
    finally:
        producer.close()
    anonymous = redis.Redis(port=deployment.port, socket_timeout=5)
    try:
        with pytest.raises((redis.AuthenticationError, redis.ResponseError)):
            anonymous.ping()
    finally:
        anonymous.close()
    # Nor does the `default` user's password from the server's start-up config open it now.
    conf = (deployment.data_dir / "valkey.conf").read_text().splitlines()
    old_password = next(line.split()[1] for line in conf if line.startswith("requirepass "))
    as_default = redis.Redis(port=deployment.port, password=old_password, socket_timeout=5)
    try:
        with pytest.raises(redis.AuthenticationError):
            as_default.ping()
    finally:
        as_default.close()
    # The rules the server holds are the ones acl.py computes (no +@all slipped in).
    admin = deployment.client("admin")
    try:
        info = admin.acl_getuser(user_name(deployment.prefix, "worker"))
        assert "+@all" not in str(info["commands"])
        assert "+fcall|" in str(info["commands"])
        # The control partition's keys and those of the deployment's other partitions only.
        want = ["~{" + deployment.prefix + "}:*", "~{" + deployment.prefix + "/*"]
        assert [str(k) for k in info["keys"]] == want, info
    finally:
        admin.close()


def test_forbidden_commands_are_never_granted() -> None:
    for role in ("worker", "producer"):
        granted = {r[1:].split("|")[0] for r in role_rules("p", role) if r.startswith("+")}
        assert granted.isdisjoint({"config", "acl", "replicaof", "flushall", "keys", "eval"})
    assert {"hset", "zadd", "xadd"} <= script_commands()  # read from the library source


# -- what the roles must do: everything, end to end -------------------------------------------


def test_worker_and_producer_users_run_every_path_end_to_end(
    deployment: Deployment, tmp_path: Path
) -> None:
    admin = deployment.client("admin")
    admin.execute_command("ACL", "LOG", "RESET")
    worker = JobqProcess.spawn(
        "worker",
        jobq_cmd("worker", "remote_tasks:app", "-c", "3", "--url", deployment.url("worker")),
        tmp_path / "worker.log",
        child_env(JOBQ_PREFIX=deployment.prefix),
        cwd=TESTS,
    )
    producer = App(deployment.url("producer"), prefix=deployment.prefix)
    try:
        worker.wait_log("serving", timeout=30)
        assert producer.submit("add", [2, 3]).result(timeout=30) == 5
        # A retry after a failed attempt (back-off through `scheduled`, promoted by the worker).
        retried = producer.submit("fails_once", [str(tmp_path / "marker")], retries=2)
        assert retried.result(timeout=30) == "retried"
        assert retried.info().attempt == 2
        # Cancel a scheduled job, and a running one (the worker reads the flag).
        later = producer.submit("add", [1, 1], delay=60)
        assert later.cancel() is True
        assert later.info().state == JobState.CANCELLED
        running = producer.submit("until_cancelled", [str(tmp_path / "started")])
        wait_until(lambda: (tmp_path / "started").exists(), 30, "the job to start")
        running.cancel()
        wait_until(lambda: running.info().state in TERMINAL, 30, "the cancel to land")
        # A task that submits a child job and waits for it, as the worker user.
        assert producer.submit("fan_out", [4]).result(timeout=30) == 8
        # The periodic job the worker registered fires (the worker leads maintenance).
        specs = dict((s.name, due) for s, due in producer.store.list_periodic())
        assert "beat" in specs
        due = specs["beat"]
        assert due is not None
        tick = producer.job(f"periodic:beat:{due}")
        wait_until(lambda: producer.store.get_state(tick.id) is not None, 30, "the tick")
        assert tick.result(timeout=30) == "beat"
        # Reads a producer makes: status, queues, dead letters.
        assert any(q.name == "default" for q in producer.queue_info())
        producer.dead_letters(10)
        assert worker.stop() == 0
        # Nothing was refused on any path (an error a loop swallowed would show here).
        log = admin.execute_command("ACL", "LOG")
        assert log == [], log
        assert "NOPERM" not in worker.log()
    finally:
        producer.close()
        admin.close()
        kill_all([worker])


def test_a_missing_library_says_the_master_must_load_it(deployment: Deployment) -> None:
    admin = deployment.client("admin")
    producer = App(deployment.url("producer"), prefix=deployment.prefix)
    try:
        admin.execute_command("FUNCTION", "DELETE", library()[0])
        with pytest.raises((redis.RedisError, JobqError), match="the master loads it"):
            producer.submit("add", [1, 2])
    finally:
        admin.execute_command("FUNCTION", "LOAD", "REPLACE", library()[1])
        producer.close()
        admin.close()


def test_a_worker_of_another_jobq_version_is_told_the_master_must_load_its_library(
    deployment: Deployment,
) -> None:
    worker = App(deployment.url("worker"), prefix=deployment.prefix)
    try:
        # The library name is a hash of the source: another version calls other functions,
        # which the master neither loaded nor granted.
        other = {
            n: f.replace(library()[0], "jobq_0123456789ab")
            for n, f in worker.store.scripts._fn.items()
        }
        worker.store.scripts._fn = other
        with pytest.raises((redis.RedisError, JobqError), match="the master must load it"):
            worker.submit("add", [1, 2])
    finally:
        worker.close()


def test_a_port_in_use_is_one_clear_error(tmp_path: Path) -> None:
    d = tmp_path / "data"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        try:
            out = subprocess.run(
                jobq_cmd("master", "--listen", f"127.0.0.1:{port}", "--no-http"),
                env=child_env(JOBQ_DATA_DIR=str(d)),
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert out.returncode == 1, out.stdout + out.stderr
            assert f"cannot listen on 127.0.0.1:{port}" in out.stderr
            assert "Traceback" not in out.stderr
            # Local processes still reach the server, as the admin now.
            assert server_url(d) is not None
        finally:
            stop_embedded(d)


def test_a_password_from_a_file_or_the_environment_is_the_workers(tmp_path: Path) -> None:
    d = tmp_path / "data"
    prefix = "pf" + uuid.uuid4().hex[:6]
    port = free_port()
    mine = "a-long-and-random-9f3Kq2Lx7"
    (tmp_path / "pw").write_text(mine + "\n")
    args = ["--listen", f"127.0.0.1:{port}", "--password-file", str(tmp_path / "pw")]
    master = start_master(d, prefix, args, tmp_path / "m1.log")
    try:
        master.stop()
        assert mine not in master.log()  # given, not generated: never printed
        roles = load_roles(d)
        assert roles is not None and roles.passwords["worker"] == mine
        assert pings(f"redis://{prefix}-worker:{mine}@127.0.0.1:{port}/0")
        # Rotated through JOBQ_PASSWORD: the old one stops working, the others stay.
        newer = "another-long-random-Zp81wQ"
        args = ["--listen", f"127.0.0.1:{port}"]
        master = start_master(d, prefix, args, tmp_path / "m2.log", JOBQ_PASSWORD=newer)
        master.stop()
        assert newer not in master.log()
        assert not pings(f"redis://{prefix}-worker:{mine}@127.0.0.1:{port}/0")
        assert pings(f"redis://{prefix}-worker:{newer}@127.0.0.1:{port}/0")
        after = load_roles(d)
        assert after is not None and after.passwords["producer"] == roles.passwords["producer"]
    finally:
        kill_all([master])
        stop_embedded(d)
