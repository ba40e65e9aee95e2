"""`jobq master --listen` (remote workers: role users, password, TLS) and `jobq acl`."""

from __future__ import annotations

import os
from typing import Any

import click

from .acl import ROLES, load_roles, read_password_file, user_name
from .errors import ConfigError


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
        raise ConfigError(
            "--listen exposes the embedded server; it cannot be used with --url (on a server "
            "of your own, create users per role yourself: see README, Several machines)"
        )
    host, port = parse_listen(listen)
    if password_file:
        if password:
            raise ConfigError("give --password or --password-file, not both")
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
        raise ConfigError("--tls-cert and --tls-key go together")
    tls = TlsFiles(tls_cert, tls_key, tls_client_ca) if tls_cert and tls_key else None
    if tls is None and tls_client_ca:
        raise ConfigError("--tls-client-ca needs --tls-cert and --tls-key")
    roles, generated = expose(app.settings.data_dir, host, port, password, app.settings.prefix, tls)
    where = "TLS" if tls else "plaintext (add --tls-cert/--tls-key to encrypt)"
    click.echo(f"embedded Valkey listening on {host}:{port}, {where}")
    if generated:
        # The only time the secret is printed without asking; `jobq acl --show-secrets` again.
        click.echo("a worker password was generated; workers join with:")
        click.echo(f"  jobq worker APP --url '{roles.url('worker', show_secret=True)}'")
    else:
        click.echo(f"workers join with --url {roles.url('worker')}")
    click.echo(f"producers use {roles.url('producer')}; `jobq acl --show-secrets` prints them")


@click.command("acl")
@click.option("--show-secrets", is_flag=True, help="Print the passwords (redacted otherwise).")
@click.option("--data-dir", envvar="JOBQ_DATA_DIR", default=".jobq", show_default=True)
def acl_command(show_secrets: bool, data_dir: str) -> None:
    """Print the URL of each role (admin, worker, producer) made by `jobq master --listen`."""
    roles = load_roles(data_dir)
    if roles is None:
        raise click.ClickException(
            f"no role users in {os.path.abspath(data_dir)}: run `jobq master --listen HOST:PORT` "
            "first"
        )
    for role in ROLES:
        name = user_name(roles.prefix, role)
        click.echo(f"{role:>9} ({name}): {roles.url(role, show_secret=show_secrets)}")
