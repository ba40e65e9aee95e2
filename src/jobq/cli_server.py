"""`jobq server ...`: the embedded Valkey of a data directory, as a lone server, a primary
other hosts reach (--listen), a replica of another host's (--replica-of), or a Sentinel
(`jobq server sentinel start`), so a three-host deployment with automatic failover needs
nothing but jobq installed. docs/deploy.md walks through the layouts."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from . import server_setup as setup
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


def _note(text: str) -> None:
    click.echo(f"note: {text}", err=True)


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
    host, port = setup.address(listen, "--listen") if listen else ("", 0)
    primary = setup.address(replica_of, "--replica-of") if replica_of else None
    d = Path(data_dir).absolute()
    had_acl = setup.take_acl_file(d, acl_file, needed=primary is not None)
    running = server_url(d) is not None
    named = setup.ask_sentinels(d, sentinels, service, (host, port), _note) if sentinels else None
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

        replica_roles(
            d, setup.deployment_prefix(d, prefix)
        )  # refused before a server starts, with the fix
    memory = Settings.from_env().embedded_memory
    url = ensure_server(d, durable=durable, memory=memory)
    if not listen:
        click.echo(redact(url))
        return
    from .acl import read_password_file
    from .embedded import expose

    password = read_password_file(password_file) if password_file else None
    roles, generated = expose(
        d,
        host,
        port,
        password,
        setup.deployment_prefix(d, prefix),
        replica_of=primary,
        min_replicas=min_replicas,
    )
    if acl_file and not had_acl:
        setup.write_copy(d, Path(acl_file))
    if primary is not None:
        click.echo(f"replica of {primary[0]}:{primary[1]} listening on {host}:{port}")
        click.echo(setup.link_status(d))
    elif setup.is_replica(d):
        click.echo(f"replica listening on {host}:{port} (its primary is the Sentinels' choice)")
    else:
        click.echo(f"primary listening on {host}:{port} (data in {d})")
    if generated:  # acl.json was made just now
        click.echo(
            f"copy {d / 'acl.json'} (mode 0600) to every other node and Sentinel: ACL users "
            "are not replicated, each node creates the same ones from it"
        )
        click.echo(f"workers join with JOBQ_URL='{roles.url('worker', show_secret=True)}'")
    elif primary is not None or setup.is_replica(d):
        click.echo(
            "workers connect through the Sentinels (a replica refuses writes): see `jobq "
            "server sentinel start` and docs/deploy.md"
        )
    else:
        click.echo(f"workers join with {roles.url('worker')} (`jobq acl --show-secrets`)")


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
    from .embedded import server_url
    from .store import redact

    url = server_url(data_dir)
    click.echo(f"running at {redact(url)}" if url else "not running")
    if url:
        info = setup.replication(url)
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

    host, port = setup.address(listen, "--listen")
    spec = SentinelSpec(
        host,
        port,
        setup.address(monitor, "--monitor"),
        service,
        quorum,
        down_after_ms,
        failover_timeout_ms,
    )
    d = Path(data_dir).absolute()
    setup.take_acl_file(d, acl_file, needed=True)
    password = read_password_file(password_file) if password_file else None
    notes, started = start_sentinel(d, spec, password)
    for note in notes:
        click.echo(f"note: {note}", err=True)
    if started:
        click.echo(f"sentinel listening on {host}:{port}, monitoring {service} (quorum {quorum})")
    prefix = setup.deployment_prefix(d, None)
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
