"""`jobq server ...`: the embedded Valkey of a data directory, as a lone server, a primary
other hosts reach (--listen), a replica of another host's (--replica-of), or a Sentinel
(`jobq server sentinel start`), so a three-host deployment with automatic failover needs
nothing but jobq installed. docs/deploy.md walks through the layouts."""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import click

from .errors import UsageProblem

_DATA_DIR = click.option(
    "--data-dir",
    envvar="JOBQ_DATA_DIR",
    default=".jobq",
    show_default=True,
    help="The server's data directory (AOF, config, acl.json).",
)
_ACL_FILE = click.option(
    "--acl-file",
    type=click.Path(dir_okay=False),
    help="The deployment's passwords (the primary's acl.json): copied into the data directory "
    "if it exists; on a primary, written there if it does not. Every node and Sentinel needs "
    "the same file.",
)


def _address(text: str, flag: str) -> tuple[str, int]:
    """HOST:PORT with an IP host (see `parse_listen`), the message naming `flag`."""
    from .acl import parse_listen
    from .errors import ConfigError

    try:
        return parse_listen(text)
    except ConfigError as exc:
        raise UsageProblem(str(exc).replace("--listen", flag)) from None


def _take_acl_file(data_dir: Path, acl_file: str | None, needed: bool) -> bool:
    """Copy `acl_file` into `data_dir` (0600); True if it existed. `needed`: it must."""
    from .acl import ACL_FILE
    from .errors import ConfigError

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


def _prefix(data_dir: Path, given: str | None) -> str:
    """--prefix if given, else the one of the acl.json in `data_dir`, else ``jobq``."""
    from .acl import load_roles

    if given:
        return given
    roles = load_roles(data_dir)
    return roles.prefix if roles else "jobq"


@click.group()
def server() -> None:
    """Manage the embedded Valkey server in ./.jobq (a primary, a replica, or a Sentinel)."""


@server.command("start")
@_DATA_DIR
@click.option(
    "--durable",
    is_flag=True,
    envvar="JOBQ_DURABLE",
    help="fsync every write before replying (appendfsync always), switching a running server.",
)
@click.option(
    "--listen",
    metavar="HOST:PORT",
    help="Open the server to other hosts on HOST:PORT (an IP; 0.0.0.0 for every interface), "
    "with an ACL user per role, a replication user and a Sentinel user.",
)
@click.option(
    "--replica-of",
    metavar="HOST:PORT",
    help="Replicate the primary at HOST:PORT (needs --listen, and the primary's acl.json).",
)
@_ACL_FILE
@click.option(
    "--password-file",
    type=click.Path(dir_okay=False),
    help="On a primary: the workers' password, first line of this file (default: generated).",
)
@click.option(
    "--min-replicas",
    type=click.IntRange(0, 16),
    help="Refuse writes unless this many replicas are attached and at most 10 s behind "
    "(min-replicas-to-write); 1 is advised with two replicas, see docs/deploy.md.",
)
@click.option(
    "--sentinel",
    "sentinels",
    metavar="HOST:PORT",
    multiple=True,
    help="Ask these Sentinels (repeatable) who the primary is, and replicate it unless it is "
    "this node: a restarted old primary then rejoins as a replica at once. Overrides "
    "--replica-of when they answer.",
)
@click.option("--service", default="jobq", show_default=True, help="The Sentinels' name for it.")
@click.option("--prefix", envvar="JOBQ_PREFIX", help="Key prefix: names the role users.")
def server_start(
    data_dir: str,
    durable: bool,
    listen: str | None,
    replica_of: str | None,
    acl_file: str | None,
    password_file: str | None,
    min_replicas: int | None,
    sentinels: tuple[str, ...],
    service: str,
    prefix: str | None,
) -> None:
    """Start the embedded server in the data directory (or attach to the running one) and
    print its URL; with --listen, open it to other hosts, as a replica with --replica-of."""
    from .config import Settings
    from .embedded import ensure_server, server_url
    from .store import redact

    if not listen:
        for flag, value in (
            ("--replica-of", replica_of),
            ("--acl-file", acl_file),
            ("--password-file", password_file),
            ("--min-replicas", min_replicas),
            ("--sentinel", sentinels or None),
        ):
            if value is not None:
                raise UsageProblem(f"{flag} needs --listen HOST:PORT (the address other hosts use)")
    host, port = _address(listen, "--listen") if listen else ("", 0)
    primary = _address(replica_of, "--replica-of") if replica_of else None
    d = Path(data_dir).absolute()
    had_acl = _take_acl_file(d, acl_file, needed=primary is not None)
    running = server_url(d) is not None
    named = _ask_sentinels(d, sentinels, service, (host, port)) if sentinels else None
    if named is not None:
        primary = named if named != (host, port) else None  # the Sentinels' word is final
    elif running and primary is not None:
        # A running node's role is the Sentinels' to change: it may have been promoted since
        # the unit file was written, and REPLICAOF now would demote the live primary.
        click.echo(
            "note: the server already runs; --replica-of applies when it starts (stop it "
            "first to change what it replicates)",
            err=True,
        )
        primary = None
    if primary is not None:
        from .embedded import replica_roles

        replica_roles(d, _prefix(d, prefix))  # refused before a server starts, with the fix
    memory = Settings.from_env().embedded_memory
    url = ensure_server(d, durable=durable, memory=memory)
    if not listen:
        click.echo(redact(url))
        return
    from .acl import read_password_file
    from .embedded import expose

    password = read_password_file(password_file) if password_file else None
    roles, generated = expose(
        d, host, port, password, _prefix(d, prefix), replica_of=primary, min_replicas=min_replicas
    )
    if acl_file and not had_acl:
        _write_copy(d, Path(acl_file))
    if primary is not None:
        click.echo(f"replica of {primary[0]}:{primary[1]} listening on {host}:{port}")
        click.echo(_link_status(d))
    elif _is_replica(d):
        click.echo(f"replica listening on {host}:{port} (its primary is the Sentinels' choice)")
    else:
        click.echo(f"primary listening on {host}:{port} (data in {d})")
    if generated:  # acl.json was made just now
        click.echo(
            f"copy {d / 'acl.json'} (mode 0600) to every other node and Sentinel: ACL users "
            "are not replicated, each node creates the same ones from it"
        )
        click.echo(f"workers join with JOBQ_URL='{roles.url('worker', show_secret=True)}'")
    elif primary is not None or _is_replica(d):
        click.echo(
            "workers connect through the Sentinels (a replica refuses writes): see `jobq "
            "server sentinel start` and docs/deploy.md"
        )
    else:
        click.echo(f"workers join with {roles.url('worker')} (`jobq acl --show-secrets`)")


def _is_replica(d: Path) -> bool:
    import redis

    from .embedded import server_url

    url = server_url(d)
    if not url:
        return False
    client: Any = redis.Redis.from_url(url)
    try:
        return bool(client.execute_command("ROLE")[0] == b"slave")
    finally:
        client.close()


def _ask_sentinels(
    d: Path,
    sentinels: tuple[str, ...],
    service: str,
    me: tuple[str, int],
) -> tuple[str, int] | None:
    """The primary the Sentinels name (`me` if it is this node), or None if none answers."""
    from .acl import DISCOVERY, load_roles
    from .embedded_sentinel import primary_from_sentinels

    roles = load_roles(d)
    if roles is None or DISCOVERY not in roles.passwords:
        return None  # first start of the first primary: no Sentinel can know it yet
    addrs = [_address(s, "--sentinel") for s in sentinels]
    named = primary_from_sentinels(addrs, service, roles.passwords[DISCOVERY])
    if named is None:
        click.echo("note: no Sentinel answered; starting as --replica-of says", err=True)
        return None
    if named == me or (me[0] in ("0.0.0.0", "::") and named[1] == me[1] and _is_local(named[0])):
        return me
    click.echo(f"note: the Sentinels name {named[0]}:{named[1]} as the primary", err=True)
    return named


def _is_local(ip: str) -> bool:
    """True if `ip` is an address of this machine (it can be bound)."""
    import socket

    try:
        with socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET) as s:
            s.bind((ip, 0))
        return True
    except OSError:
        return False


def _write_copy(d: Path, dest: Path) -> None:
    """Write the data directory's acl.json to `dest` too (0600), for the other hosts."""
    from .acl import ACL_FILE

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".copy")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write((d / ACL_FILE).read_bytes())
    os.replace(tmp, dest)


def _link_status(d: Path, wait_s: float = 10.0) -> str:
    """Wait (bounded) for the replica's link to its primary; say how it stands."""
    import redis

    from .embedded import server_url

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


@server.command("stop")
@_DATA_DIR
def server_stop(data_dir: str) -> None:
    """Shut the embedded server down (flushing its AOF)."""
    from .embedded import stop_server

    click.echo("stopped" if stop_server(data_dir) else "not running")


@server.command("status")
@_DATA_DIR
def server_status(data_dir: str) -> None:
    """Say whether the server runs, where, and whether it is a primary or a replica; exit 1
    if it does not run."""
    import redis

    from .embedded import server_url
    from .store import redact

    url = server_url(data_dir)
    click.echo(f"running at {redact(url)}" if url else "not running")
    if url:
        client: Any = redis.Redis.from_url(url, decode_responses=True)
        try:
            info = client.info("replication")
        except redis.RedisError:
            info = {}
        finally:
            client.close()
        if info.get("role") == "master":
            click.echo(f"role: primary, {info.get('connected_slaves', 0)} replica(s) attached")
        elif info.get("role") == "slave":
            click.echo(
                f"role: replica of {info.get('master_host')}:{info.get('master_port')}, "
                f"link {info.get('master_link_status')}"
            )
    sys.exit(0 if url else 1)


@server.group("sentinel")
def sentinel() -> None:
    """An embedded Sentinel (the same binary, run with --sentinel): watches the primary and
    promotes a replica when it fails. Run three, on three hosts."""


@sentinel.command("start")
@_DATA_DIR
@click.option("--listen", metavar="HOST:PORT", required=True, help="Where the Sentinel listens.")
@click.option(
    "--monitor",
    metavar="HOST:PORT",
    required=True,
    help="The primary's address (first start only: later the Sentinel follows failovers).",
)
@click.option("--service", default="jobq", show_default=True, help="The monitored name.")
@click.option(
    "--quorum",
    type=int,
    default=2,
    show_default=True,
    help="Sentinels that must agree the primary is down (a majority: 2 of 3).",
)
@click.option(
    "--down-after-ms",
    type=click.IntRange(100),
    default=5000,
    show_default=True,
    help="Silence after which a node counts as down: the lower, the faster (and touchier).",
)
@click.option(
    "--failover-timeout-ms",
    type=click.IntRange(1000),
    default=60000,
    show_default=True,
    help="How long a failover may take before another Sentinel retries it.",
)
@_ACL_FILE
@click.option(
    "--password-file",
    type=click.Path(dir_okay=False),
    help="The Sentinels' own password (clients' sentinel_password), first line of this file; "
    "default: the discovery password of acl.json. Every Sentinel needs the same.",
)
def sentinel_start(
    data_dir: str,
    listen: str,
    monitor: str,
    service: str,
    quorum: int,
    down_after_ms: int,
    failover_timeout_ms: int,
    acl_file: str | None,
    password_file: str | None,
) -> None:
    """Start the Sentinel of the data directory, daemonized (or attach to the running one)."""
    from .acl import read_password_file
    from .embedded_sentinel import SentinelSpec, start_sentinel

    host, port = _address(listen, "--listen")
    spec = SentinelSpec(
        host,
        port,
        _address(monitor, "--monitor"),
        service,
        quorum,
        down_after_ms,
        failover_timeout_ms,
    )
    d = Path(data_dir).absolute()
    _take_acl_file(d, acl_file, needed=True)
    password = read_password_file(password_file) if password_file else None
    notes, started = start_sentinel(d, spec, password)
    for note in notes:
        click.echo(f"note: {note}", err=True)
    if started:
        click.echo(f"sentinel listening on {host}:{port}, monitoring {service} (quorum {quorum})")
    prefix = _prefix(d, None)
    click.echo(
        "workers, producers and masters use (list every Sentinel; `jobq acl --show-secrets` "
        f"prints the passwords):\n  JOBQ_URL='redis+sentinel://{prefix}-worker:***@"
        f"{host}:{port},.../{service}?sentinel_password=***'"
    )


@sentinel.command("stop")
@_DATA_DIR
def sentinel_stop(data_dir: str) -> None:
    """Shut the Sentinel of the data directory down."""
    from .embedded_sentinel import stop_sentinel

    click.echo("stopped" if stop_sentinel(data_dir) else "not running")


@sentinel.command("status")
@_DATA_DIR
def sentinel_status(data_dir: str) -> None:
    """What the Sentinel knows: the current primary, its replicas, the other Sentinels; exit 1
    if it does not run."""
    from .embedded_sentinel import sentinel_status as status

    got = status(data_dir)
    if got is None:
        click.echo("not running")
        sys.exit(1)
    if "error" in got:
        click.echo(f"running on {got.get('listen')}, but: {got['error']}")
        sys.exit(1)
    click.echo(
        f"sentinel on {got['listen']}: {got['name']} primary at {got['ip']}:{got['port']} "
        f"({got.get('num-slaves', 0)} replica(s), {got.get('num-other-sentinels', 0)} other "
        f"sentinel(s), quorum {got.get('quorum')}, flags {got.get('flags')})"
    )
