"""`jobq master --listen` (remote workers: role users, password, TLS) and `jobq acl`."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

import click

from .acl import DISCOVERY, ROLES, Roles, load_roles, read_password_file, user_name
from .errors import ConfigError, UsageProblem


def listen_options(fn: Any) -> Any:
    """The --listen options of `jobq master`."""
    options = [
        click.option(
            "--listen",
            help="Open the embedded server to other hosts on HOST:PORT (an explicit host: "
            "0.0.0.0:6380 for every interface), with an ACL user per role.",
        ),
        click.option(
            "--password",
            envvar="JOBQ_PASSWORD",
            help="The workers' password for --listen (default: a generated one, kept in the "
            "data directory). Prefer --password-file or JOBQ_PASSWORD: arguments show in ps.",
        ),
        click.option(
            "--password-file",
            type=click.Path(dir_okay=False),
            help="Read the workers' password from the first line of this file.",
        ),
        click.option("--tls-cert", type=click.Path(dir_okay=False), help="Serve TLS on --listen."),
        click.option("--tls-key", type=click.Path(dir_okay=False), help="Key of --tls-cert."),
        click.option(
            "--tls-client-ca",
            type=click.Path(dir_okay=False),
            help="Require client certificates signed by this CA (mutual TLS).",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def open_listen(
    app: Any,
    listen: str,
    password: str | None,
    password_file: str | None,
    tls_cert: str | None,
    tls_key: str | None,
    tls_client_ca: str | None,
) -> None:
    """Expose the embedded server and print how workers and producers join."""
    from .acl import parse_listen
    from .embedded import TlsFiles, expose

    if app.settings.url:
        raise UsageProblem(
            "--listen exposes the embedded server; it cannot be used with --url (on a server "
            "of your own, `jobq acl --apply ADMIN_URL` creates the role users)"
        )
    host, port = parse_listen(listen)
    if password_file:
        if password:
            raise UsageProblem("give --password or --password-file, not both")
        password = read_password_file(password_file)
    elif password:
        source = click.get_current_context().get_parameter_source("password")
        if source is click.core.ParameterSource.COMMANDLINE:
            click.echo(
                "warning: a password given as an argument shows in `ps` to every user of this "
                "machine; prefer --password-file or JOBQ_PASSWORD",
                err=True,
            )
    if bool(tls_cert) != bool(tls_key):
        raise UsageProblem("--tls-cert and --tls-key go together")
    tls = TlsFiles(tls_cert, tls_key, tls_client_ca) if tls_cert and tls_key else None
    if tls is None and tls_client_ca:
        raise UsageProblem("--tls-client-ca needs --tls-cert and --tls-key")
    roles, generated = expose(app.settings.data_dir, host, port, password, app.settings.prefix, tls)
    where = "TLS" if tls else "plaintext (add --tls-cert/--tls-key to encrypt)"
    click.echo(f"embedded Valkey listening on {host}:{port}, {where}")
    if generated:
        # The only time the secret is printed without asking; `jobq acl --show-secrets` again.
        # In the environment, not an argument: the worker's command line shows in `ps`.
        click.echo("a worker password was generated; workers join with:")
        click.echo(f"  JOBQ_URL='{roles.url('worker', show_secret=True)}' jobq worker APP")
    else:
        click.echo(f"workers join with --url {roles.url('worker')}")
    click.echo(f"producers use {roles.url('producer')}; `jobq acl --show-secrets` prints them")


@click.command("acl")
@click.option("--show-secrets", is_flag=True, help="Print the passwords (redacted otherwise).")
@click.option(
    "--data-dir",
    envvar="JOBQ_DATA_DIR",
    default=".jobq",
    show_default=True,
    help="Where the role passwords are kept (acl.json, mode 0600).",
)
@click.option(
    "--apply",
    "admin_url",
    metavar="ADMIN_URL",
    help="Create (or update) the role users on the server of your own at ADMIN_URL (a user "
    "allowed ACL and FUNCTION), and load jobq's library there.",
)
@click.option("--prefix", envvar="JOBQ_PREFIX", default="jobq", show_default=True)
@click.option(
    "--public",
    metavar="HOST:PORT",
    help="With --apply: the address other hosts reach the server at (default: ADMIN_URL's).",
)
@click.option(
    "--disable-default",
    is_flag=True,
    help="With --apply: also disable the server's `default` user (log in as a role after).",
)
def acl_command(
    show_secrets: bool,
    data_dir: str,
    admin_url: str | None,
    prefix: str,
    public: str | None,
    disable_default: bool,
) -> None:
    """Print the URL of each role (admin, worker, producer) made by `jobq master --listen`, or
    create the role users on a server of your own (--apply)."""
    if admin_url:
        _apply(admin_url, data_dir, prefix, public, disable_default)
        return
    roles = load_roles(data_dir)
    if roles is None:
        raise click.ClickException(
            f"no role users in {os.path.abspath(data_dir)}: run `jobq master --listen HOST:PORT` "
            "first (or `jobq acl --apply ADMIN_URL` for a server of your own)"
        )
    _print_roles(roles, show_secrets)


def _print_roles(roles: Roles, show_secrets: bool) -> None:
    for role in ROLES:
        name = user_name(roles.prefix, role)
        click.echo(f"{role:>9} ({name}): {roles.url(role, show_secret=show_secrets)}")
    if DISCOVERY in roles.passwords:
        # The Sentinels' own password: `?sentinel_password=` of a redis+sentinel:// URL.
        shown = roles.passwords[DISCOVERY] if show_secrets else "***"
        click.echo(f"sentinels (sentinel_password): {shown}")


def _apply(admin_url: str, data_dir: str, prefix: str, public: str | None, off: bool) -> None:
    import redis

    from .acl import apply_roles, parse_listen, prepare_roles, save_roles
    from .scripts import library
    from .store import connect, redact

    parts = urlsplit(admin_url)
    if public:
        host, port = parse_listen(public)
    else:
        host, port = parts.hostname or "", parts.port or 6379
    if not host or parts.scheme == "unix":
        raise UsageProblem("--apply needs --public HOST:PORT for a server reached over a socket")
    os.makedirs(data_dir, mode=0o700, exist_ok=True)
    roles, generated, _old = prepare_roles(data_dir, prefix, host, port, parts.scheme == "rediss")
    client: Any = connect(admin_url)
    try:
        client.execute_command("FUNCTION", "LOAD", "REPLACE", library()[1])
        save_roles(data_dir, roles)
        apply_roles(client, roles, disable_default=off)
    except redis.RedisError as exc:
        raise ConfigError(f"could not create the role users at {redact(admin_url)}: {exc}") from exc
    finally:
        client.close()
    click.echo(f"role users for prefix {prefix!r} on {redact(admin_url)}; passwords in {data_dir}")
    _print_roles(roles, show_secrets=generated)
