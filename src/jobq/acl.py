"""Valkey ACL users per role, for a deployment that other hosts reach over the network.

`jobq master --listen` creates three users on the server, named after the key prefix:

| role     | user                  | may run                                                   |
|----------|-----------------------|-----------------------------------------------------------|
| admin    | ``<prefix>-admin``    | everything (the master: loads the function library)       |
| worker   | ``<prefix>-worker``   | the worker's functions of jobq's library and the plain    |
|          |                       | commands a worker sends, on keys ``{<prefix>}:*`` only    |
| producer | ``<prefix>-producer`` | submit, read status/results, wait, cancel; same keys      |

Neither worker nor producer may run CONFIG, ACL, REPLICAOF/SLAVEOF, FLUSH*, KEYS, SCAN, DEBUG,
MODULE, SHUTDOWN, FUNCTION, SCRIPT/EVAL, MONITOR, or touch keys of another prefix. FCALL is
granted per function (``+fcall|<library>_<script>``), so a worker user cannot call a function
of another library; a worker of another jobq version (another library name) is told the master
must load its library. Commands a script runs are checked against the caller's ACL too, so each
role also gets the commands jobq's scripts use, read from the library source itself (a script
that starts using a command is covered without editing a list here, unless it is forbidden, which
fails loudly). ACL cannot tell a command sent inside a script from the same command sent
directly, so within its own prefix a role is trusted not to bypass the scripts; what the roles
bound is what a stolen credential can do to the server and to other deployments.

Passwords live in ``<data_dir>/acl.json`` (mode 0600); the server gets only their SHA-256
(``#<hash>``), so ACL LIST/GETUSER never show a secret.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import redis

from .errors import ConfigError
from .layout import TAG_SEPARATOR
from .scripts import SCRIPT_NAMES, function_name, library

ACL_FILE = "acl.json"
ROLES = ("admin", "worker", "producer")
#: The users a replicated deployment's own parts log in as, on every data node: a replica
#: pulling the primary's stream, and the Sentinels monitoring and reconfiguring the nodes. ACL
#: users are not replicated, so every node creates them (and the roles) from the same acl.json.
SERVICE_USERS = ("replication", "sentinel")
#: The key in acl.json of the Sentinels' own password (their ``requirepass``): clients give it
#: to ask where the primary is, and the Sentinels use it with each other. No data-node user.
DISCOVERY = "discovery"
#: Least privilege, from the Valkey/Redis "ACL rules for Sentinel and replicas": a replica only
#: syncs (PSYNC, REPLCONF, PING); a Sentinel reads INFO/ROLE, talks on the hello channel, and
#: turns nodes into replicas or a primary (MULTI, SLAVEOF/REPLICAOF, CONFIG REWRITE, CLIENT
#: KILL of the old links, EXEC). Neither may read or write a key.
SERVICE_RULES: Mapping[str, tuple[str, ...]] = {
    "replication": ("resetchannels", "-@all", "+psync", "+replconf", "+ping"),
    "sentinel": (
        "allchannels", "-@all", "+ping", "+info", "+role", "+multi", "+exec", "+slaveof",
        "+replicaof", "+config|rewrite", "+client|setname", "+client|kill", "+script|kill",
        "+publish", "+subscribe",
    ),
}  # fmt: skip

#: Scripts each role calls (FCALL). Workers also run the maintenance ticks while no master is
#: alive, and may submit jobs from inside a task (workflows), so they get enqueue and await too.
#: `declare` publishes the worker's tasks in the catalog (registry.py); `handback` gives a job
#: of a task the worker does not know back for one that does.
WORKER_SCRIPTS = (
    "claim", "complete", "fail", "heartbeat", "requeue", "progress", "enqueue", "await",
    "leader", "reap", "promote", "orphans", "trim_dead", "epoch", "link", "deliver",
    "declare", "handback",
)  # fmt: skip
#: Every role runs `epoch` first on each connection (topology.py: primary check, token epoch).
#: `link` and `deliver` serve dependencies across partitions (handoff.py): a submit links, and
#: whoever settles a job (a worker, a producer's cancel) delivers its hand-offs.
PRODUCER_SCRIPTS = ("enqueue", "await", "cancel", "epoch", "link", "deliver")

#: Commands every non-admin role sends outside scripts: connection set-up (redis-py sends
#: CLIENT SETINFO, and HELLO for RESP3), reads of jobs, queues, periodic specs and events, the
#: result wait (BLPOP on ``done:<id>``), transactions. INFO, WAIT and WAITAOF are read-only or
#: only wait; they serve memory back-pressure and the durable mode. CLUSTER SLOTS (read-only)
#: is how a client on a Cluster finds each partition's node (cluster.py).
BASE_COMMANDS = (
    "ping", "hello", "auth", "client|setinfo", "client|setname", "client|getname", "time",
    "info", "wait", "waitaof", "multi", "exec", "discard",
    "exists", "get", "hget", "hgetall", "hmget", "hexists", "smembers",
    "zrange", "zrangebyscore", "zrevrange", "zrevrangebyscore", "zscore", "zrank", "zrevrank",
    "zcard", "xread", "xrevrange", "xlen", "blpop", "cluster|slots", "xrange",
)  # fmt: skip
#: What a worker writes directly: its registry entry (HSET/PEXPIRE, DEL/ZREM on exit), rate
#: limits and periodic specs it declares (HSET/ZADD), its own wake-up (RPUSH), and the finished
#: index trim of the maintenance tick (ZREMRANGEBYSCORE); the tick's periodic fire is a
#: transaction fenced on the leader lease (WATCH/UNWATCH).
WORKER_COMMANDS = (
    "hset", "pexpire", "del", "zrem", "zadd", "rpush", "zremrangebyscore", "watch", "unwatch",
    "xdel",
)  # fmt: skip
#: Both delete the hand-off records they delivered from the outbox (XDEL, handoff.py).
PRODUCER_COMMANDS: tuple[str, ...] = ("xdel",)

#: Never granted to a worker or producer, whatever a script or a list above says.
FORBIDDEN = frozenset(
    {
        "acl", "config", "replicaof", "slaveof", "flushall", "flushdb", "keys", "scan",
        "debug", "module", "shutdown", "function", "script", "eval", "evalsha", "eval_ro",
        "evalsha_ro", "monitor", "save", "bgsave", "bgrewriteaof", "migrate", "restore",
        "failover", "cluster", "sync", "psync", "select", "swapdb", "move", "copy", "sort",
        "sort_ro", "client", "lastsave", "latency", "memory", "object", "slowlog", "pubsub",
        "publish", "subscribe", "psubscribe", "randomkey",
    }
)  # fmt: skip

_UNKNOWN_RULE = re.compile(r"modifier '([^']+)': Unknown command")
#: A command the library runs: redis.call/pcall, or the preamble's try() wrapper for side writes.
_CALL = re.compile(r"(?:redis\.p?call|\btry)\(\s*['\"]([A-Za-z_]+)['\"]")


def script_commands() -> frozenset[str]:
    """The commands jobq's function library runs (lower case), read from its source."""
    return frozenset(m.lower() for m in _CALL.findall(library()[1]))


def user_name(prefix: str, role: str) -> str:
    return f"{prefix}-{role}"


def role_rules(prefix: str, role: str) -> list[str]:
    """The ACL SETUSER rules (after the password) granting `role` on `prefix`."""
    if role == "admin":
        return ["~*", "&*", "+@all"]
    if role not in ROLES:
        raise ConfigError(f"unknown role {role!r}: one of {', '.join(ROLES)}")
    scripts = WORKER_SCRIPTS if role == "worker" else PRODUCER_SCRIPTS
    extra = WORKER_COMMANDS if role == "worker" else PRODUCER_COMMANDS
    commands = sorted(set(BASE_COMMANDS) | set(extra) | script_commands())
    bad = sorted(c for c in commands if c.split("|")[0] in FORBIDDEN and "|" not in c)
    if bad:
        raise ConfigError(f"the {role} role would be granted forbidden commands: {bad}")
    unknown = sorted(set(scripts) - set(SCRIPT_NAMES))
    if unknown:
        raise ConfigError(f"the {role} role names unknown scripts: {unknown}")
    fcalls = [f"+{c}|{function_name(s)}" for s in sorted(scripts) for c in ("fcall", "fcall_ro")]
    # `{` and `}` are literal in ACL glob patterns; `*?[]\` in a prefix must be escaped.
    # The control partition's keys, then every other partition's (`{<prefix>/<n>...}:`).
    patterns = [
        re.sub(r"([*?\[\]\\])", r"\\\1", "{" + prefix + end) + "*" for end in ("}:", TAG_SEPARATOR)
    ]
    keys = [f"~{p}" for p in patterns]
    return ["resetchannels", *keys, "-@all", *(f"+{c}" for c in commands), *fcalls]


# -- secrets -------------------------------------------------------------------------------

#: Too common to be a secret, whatever their length; compared in lower case.
COMMON_PASSWORDS = frozenset(
    {
        "password", "hunter2", "123456", "12345678", "123456789", "qwerty", "letmein",
        "admin", "changeme", "secret", "redis", "valkey", "jobq", "default", "welcome",
        "iloveyou", "monkey", "dragon", "trustno1", "passw0rd", "password1", "abc123",
        "correcthorsebatterystaple", "qwertyuiop", "1q2w3e4r", "master", "worker",
    }
)  # fmt: skip
MIN_PASSWORD_LEN = 16
_WEAK_HINT = (
    "omit --password to have a strong one generated (stored 0600 in the data directory and "
    "shown by `jobq acl --show-secrets`), or use at least 16 random characters, e.g. "
    '`python3 -c "import secrets; print(secrets.token_urlsafe(24))"`'
)


def check_password(password: str) -> None:
    """Raise ConfigError (with a hint) for a password that is short, common or repetitive."""
    low = password.lower()
    if low in COMMON_PASSWORDS or low.rstrip("0123456789!") in COMMON_PASSWORDS:
        raise ConfigError(f"refusing a well-known password for --listen: {_WEAK_HINT}")
    if len(password) < MIN_PASSWORD_LEN:
        raise ConfigError(
            f"refusing a {len(password)}-character password for --listen (the server is "
            f"reachable from the network and guessable offline): {_WEAK_HINT}"
        )
    if len(set(password)) < 6:
        raise ConfigError(f"refusing a repetitive password for --listen: {_WEAK_HINT}")
    if any(ch.isspace() or ord(ch) < 32 for ch in password):
        raise ConfigError("a --listen password may not contain spaces or control characters")


def generate_password() -> str:
    """A fresh secret: 192 random bits, URL-safe."""
    return secrets.token_urlsafe(24)


def read_password_file(path: str) -> str:
    """The first line of `path`, stripped (so a trailing newline is not part of it)."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read the password file {path}: {exc.strerror}") from exc
    line = text.splitlines()[0].strip() if text.strip() else ""
    if not line:
        raise ConfigError(f"the password file {path} is empty")
    return line


@dataclass(frozen=True, slots=True)
class Roles:
    """The role users of one deployment: prefix, passwords per role, where workers connect."""

    prefix: str
    passwords: Mapping[str, str]
    host: str = ""
    port: int = 0
    tls: bool = False

    def url(self, role: str, show_secret: bool = False) -> str:
        """The URL `role` connects with (password shown as *** unless `show_secret`)."""
        pw = quote(self.passwords[role], safe="") if show_secret else "***"
        scheme = "rediss" if self.tls else "redis"
        host = self.host
        if host in ("", "0.0.0.0", "::"):
            host = socket.getfqdn()  # every interface: name this machine, not "0.0.0.0"
        if ":" in host:
            host = f"[{host}]"
        return f"{scheme}://{user_name(self.prefix, role)}:{pw}@{host}:{self.port}/0"

    def to_json(self) -> dict[str, Any]:
        return {
            "prefix": self.prefix,
            "passwords": dict(self.passwords),
            "host": self.host,
            "port": self.port,
            "tls": self.tls,
        }


def load_roles(data_dir: str | os.PathLike[str]) -> Roles | None:
    """The roles stored in `data_dir`, or None if `jobq master --listen` never ran there."""
    path = Path(data_dir) / ACL_FILE
    try:
        raw = json.loads(path.read_text())
        extra = [k for k in (*SERVICE_USERS, DISCOVERY) if k in raw["passwords"]]
        return Roles(
            str(raw["prefix"]),
            {r: str(raw["passwords"][r]) for r in (*ROLES, *extra)},
            str(raw.get("host", "")),
            int(raw.get("port", 0)),
            bool(raw.get("tls", False)),
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"{path} is unreadable or malformed ({exc}): remove it to start over"
        ) from exc


def save_roles(data_dir: str | os.PathLike[str], roles: Roles) -> None:
    """Write the roles file with mode 0600 (created so, never widened)."""
    path = Path(data_dir) / ACL_FILE
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(roles.to_json(), fh)
    os.replace(tmp, path)


def prepare_roles(
    data_dir: str | os.PathLike[str],
    prefix: str,
    host: str,
    port: int,
    tls: bool,
    worker_password: str | None = None,
) -> tuple[Roles, bool, Roles | None]:
    """The roles to apply: passwords kept from `data_dir` for the same prefix (so URLs handed
    out stay valid), the worker's replaced by `worker_password` if given, the rest generated.
    Returns them, whether the worker password was generated now, and the roles stored before."""
    if worker_password is not None:
        check_password(worker_password)
    old = load_roles(data_dir)
    kept = dict(old.passwords) if old and old.prefix == prefix else {}
    generated = False
    if worker_password is not None:
        kept["worker"] = worker_password
    for role in (*ROLES, *SERVICE_USERS, DISCOVERY):
        if role not in kept:
            kept[role] = generate_password()
            generated = generated or role == "worker"
    return Roles(prefix, kept, host, port, tls), generated, old


def password_hash(password: str) -> str:
    return "#" + hashlib.sha256(password.encode()).hexdigest()


def apply_roles(client: Any, roles: Roles, disable_default: bool = True) -> None:
    """Create or update the three users on the server behind `client` (an admin connection),
    then disable the `default` user. Idempotent: each user is reset and rebuilt in one
    ACL SETUSER, so a rule removed from a role is removed from the server too."""
    for role in ROLES:
        rules = role_rules(roles.prefix, role)
        pw = password_hash(roles.passwords[role])
        name = user_name(roles.prefix, role)
        for _ in range(len(rules)):  # bounded: each pass drops one rule
            try:
                client.execute_command("ACL", "SETUSER", name, "reset", "on", pw, *rules)
                break
            except redis.ResponseError as exc:
                # An older server lacks a command we grant (CLIENT SETINFO and WAITAOF are
                # Redis 7.2): drop that rule, since nothing can send what the server lacks.
                got = _UNKNOWN_RULE.search(str(exc))
                if not got or got.group(1) not in rules:
                    raise
                rules.remove(got.group(1))
    if disable_default:
        # Everyone logs in as a role from now on; `reset` also drops default's password and
        # permissions, so re-enabling it by mistake grants nothing.
        client.execute_command("ACL", "SETUSER", "default", "reset")


def require_service_passwords(roles: Roles) -> None:
    """Raise ConfigError if `roles` (an acl.json) lacks the replication, Sentinel or
    discovery password (a file written by an older jobq)."""
    for name in (*SERVICE_USERS, DISCOVERY):
        if name not in roles.passwords:
            raise ConfigError(
                f"acl.json of prefix {roles.prefix!r} has no {name!r} password (written by an "
                "older jobq): start the primary once with `jobq server start --listen` to add "
                "it, then copy the file to the other hosts again"
            )


def apply_service_users(client: Any, roles: Roles) -> None:
    """Create or update the replication and Sentinel users (see `SERVICE_RULES`) on the data
    node behind `client` (an admin connection); idempotent like `apply_roles`."""
    require_service_passwords(roles)
    for name in SERVICE_USERS:
        pw = password_hash(roles.passwords[name])
        rules = SERVICE_RULES[name]
        client.execute_command(
            "ACL", "SETUSER", user_name(roles.prefix, name), "reset", "on", pw, *rules
        )


def parse_listen(text: str) -> tuple[str, int]:
    """HOST:PORT for --listen, with an explicit host: ``:6380`` (every interface, by accident)
    is refused; ``[::1]:6380`` is IPv6."""
    host, sep, port_s = text.rpartition(":")
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host:
        raise ConfigError(
            f"--listen {text!r} needs an explicit host: write 0.0.0.0:{port_s or 6380} if every "
            f"interface is really meant, or name one address, e.g. 10.0.0.5:{port_s or 6380}"
        )
    try:
        port = int(port_s)
    except ValueError:
        port = -1
    if not 0 < port < 65536:
        raise ConfigError(f"--listen {text!r}: the port must be a number from 1 to 65535")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(
            f"--listen {text!r}: the host must be an IP address of this machine (the server "
            "binds addresses, not names), e.g. 10.0.0.5:6380, or 0.0.0.0:6380 for every one"
        ) from None
    return host, port
