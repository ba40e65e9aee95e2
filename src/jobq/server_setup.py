"""What `jobq server ...` does to a data directory besides starting the server (embedded.py):
take the deployment's acl.json, find its prefix, ask the Sentinels who the primary is, check a
replica's link. No click here: cli_server.py parses, calls these and prints."""

from __future__ import annotations

import os
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from .acl import ACL_FILE, DISCOVERY, load_roles, parse_listen
from .embedded import server_url
from .embedded_sentinel import primary_from_sentinels
from .errors import ConfigError, UsageProblem


def address(text: str, flag: str) -> tuple[str, int]:
    """HOST:PORT with an IP host (see `parse_listen`), the message naming `flag`."""
    try:
        return parse_listen(text)
    except ConfigError as exc:
        raise UsageProblem(str(exc).replace("--listen", flag)) from None


def take_acl_file(data_dir: Path, acl_file: str | None, needed: bool) -> bool:
    """Copy `acl_file` into `data_dir` (0600); True if it existed. `needed`: it must."""
    if not acl_file:
        return False
    src = Path(acl_file)
    if not src.exists():
        if needed:
            raise ConfigError(
                f"--acl-file {acl_file} does not exist: copy the primary's acl.json (from its "
                "data directory) to this host first"
            )
        return False
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    dest = data_dir / ACL_FILE
    if src.resolve() != dest.resolve():
        tmp = dest.with_suffix(".copy")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out, open(src, "rb") as inp:
            shutil.copyfileobj(inp, out)
        os.replace(tmp, dest)
    return True


def deployment_prefix(data_dir: Path, given: str | None) -> str:
    """--prefix if given, else the one of the acl.json in `data_dir`, else ``jobq``."""
    if given:
        return given
    roles = load_roles(data_dir)
    return roles.prefix if roles else "jobq"


def is_replica(d: Path) -> bool:
    """True if the embedded server of `d` runs as a replica now (the Sentinels may have
    turned it into one)."""
    url = server_url(d)
    if not url:
        return False
    client: Any = redis.Redis.from_url(url)
    try:
        return bool(client.execute_command("ROLE")[0] == b"slave")
    finally:
        client.close()


def ask_sentinels(
    d: Path,
    sentinels: tuple[str, ...],
    service: str,
    me: tuple[str, int],
    note: Callable[[str], None],
) -> tuple[str, int] | None:
    """The primary the Sentinels name (`me` if it is this node), or None if none answers."""
    roles = load_roles(d)
    if roles is None or DISCOVERY not in roles.passwords:
        return None  # first start of the first primary: no Sentinel can know it yet
    addrs = [address(s, "--sentinel") for s in sentinels]
    named = primary_from_sentinels(addrs, service, roles.passwords[DISCOVERY])
    if named is None:
        note("no Sentinel answered; starting as --replica-of says")
        return None
    if named == me or (me[0] in ("0.0.0.0", "::") and named[1] == me[1] and is_local(named[0])):
        return me
    note(f"the Sentinels name {named[0]}:{named[1]} as the primary")
    return named


def is_local(ip: str) -> bool:
    """True if `ip` is an address of this machine (it can be bound)."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET) as s:
            s.bind((ip, 0))
        return True
    except OSError:
        return False


def write_copy(d: Path, dest: Path) -> None:
    """Write the data directory's acl.json to `dest` too (0600), for the other hosts."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".copy")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write((d / ACL_FILE).read_bytes())
    os.replace(tmp, dest)


def link_status(d: Path, wait_s: float = 10.0) -> str:
    """Wait (bounded) for the replica's link to its primary; say how it stands."""
    url = server_url(d)
    if not url:
        return "warning: the server stopped answering; see valkey.log in the data directory"
    client: Any = redis.Redis.from_url(url, decode_responses=True)
    try:
        deadline = time.monotonic() + wait_s
        info: dict[str, Any] = {}
        while time.monotonic() < deadline:
            info = client.info("replication")
            if info.get("master_link_status") == "up":
                return "replication link up (initial sync done)"
            time.sleep(0.1)
        return (
            f"warning: replication link still {info.get('master_link_status', '?')} after "
            f"{wait_s:.0f} s; see {d / 'valkey.log'} (it keeps retrying)"
        )
    finally:
        client.close()


def replication(url: str) -> dict[str, Any]:
    """The server's INFO replication (role, replicas, link), empty if it does not answer."""
    client: Any = redis.Redis.from_url(url, decode_responses=True)
    try:
        return dict(client.info("replication"))
    except redis.RedisError:
        return {}
    finally:
        client.close()
