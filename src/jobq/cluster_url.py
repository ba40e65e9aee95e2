"""The Valkey Cluster URL: ``redis+cluster://[user:password@]h1:p1[,h2:p2...][/0][?ssl=1]``.

Also ``valkey+cluster://``, and ``rediss+cluster://`` / ``valkeys+cluster://`` or ``?ssl=1``
for TLS. The hosts are *seed* nodes: any nodes of the cluster, asked for the slot map
(cluster.py); they need not be primaries, and one is enough, but more keep a process starting
while some are down. The user and password are the data nodes'.

Kept apart from cluster.py (the slot map and the clients) so that topology.py can check and
describe every URL without importing what imports it.

Every seed must name its port: a Cluster has no well-known one, and a default would send a
typo'd URL to whatever listens on the machine's standard port.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote

from .errors import ConfigError

CLUSTER_SCHEMES = ("redis+cluster", "valkey+cluster", "rediss+cluster", "valkeys+cluster")
SSL_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs", "ssl_ca_path")
EXAMPLE = "redis+cluster://:PASSWORD@host1:7000,host2:7000,host3:7000"


@dataclass(frozen=True, slots=True)
class ClusterUrl:
    """A parsed ``redis+cluster://`` URL."""

    seeds: tuple[tuple[str, int], ...]
    username: str | None = None
    password: str | None = None
    ssl: bool = False
    ssl_options: dict[str, str] = field(default_factory=dict)


def is_cluster(url: str) -> bool:
    """Whether `url` names a Valkey Cluster (by its seed nodes)."""
    return url.split("://", 1)[0].lower() in CLUSTER_SCHEMES


def parse_cluster_url(url: str) -> ClusterUrl:
    """Parse a Cluster URL; `ConfigError` saying what to write instead for a bad one (the
    password never appears in the message)."""
    scheme, _, rest = url.partition("://")
    if scheme.lower() not in CLUSTER_SCHEMES:
        raise ConfigError(f"broker URL {shown(url)!r} is not a Cluster URL: write {EXAMPLE}")
    netloc, _, tail = rest.partition("/")
    path, _, query = tail.partition("?")
    if "?" in netloc:  # no path: the query follows the hosts directly
        netloc, _, query = netloc.partition("?")
    userinfo, at, hosts = netloc.rpartition("@")
    if not at:
        userinfo, hosts = "", netloc
    username, _, password = userinfo.partition(":")
    where = shown(url)
    seeds = tuple(_host_port(h, where) for h in hosts.split(",") if h.strip())
    if not seeds:
        raise ConfigError(f"broker URL {where!r} names no seed node: write {EXAMPLE}")
    if path.strip("/") not in ("", "0"):
        raise ConfigError(
            f"broker URL {where!r}: a Valkey Cluster has database 0 only; drop the "
            f"/{path.strip('/')} (write {EXAMPLE})"
        )
    opts = dict(parse_qsl(query, keep_blank_values=True))
    unknown = set(opts) - {"ssl", *SSL_OPTIONS}
    if unknown:
        raise ConfigError(
            f"broker URL {where!r}: unknown option(s) {', '.join(sorted(unknown))} for a "
            f"Cluster URL (known: ssl, {', '.join(SSL_OPTIONS)}, and jobq's own settings)"
        )
    ssl = scheme.lower().startswith(("rediss", "valkeys")) or opts.get("ssl", "").lower() in (
        "1",
        "true",
        "yes",
    )
    return ClusterUrl(
        seeds=seeds,
        username=unquote(username) or None,
        password=unquote(password) or None,
        ssl=ssl,
        ssl_options={k: v for k, v in opts.items() if k in SSL_OPTIONS},
    )


def _host_port(text: str, where: str) -> tuple[str, int]:
    text = text.strip()
    if text.startswith("["):  # [ipv6]:port
        host, _, port = text[1:].partition("]")
        port = port.removeprefix(":")
    else:
        host, _, port = text.rpartition(":") if ":" in text else (text, "", "")
    if not host:
        raise ConfigError(f"broker URL {where!r}: seed {text!r} has no host (write {EXAMPLE})")
    if not port:
        raise ConfigError(
            f"broker URL {where!r}: seed {text!r} has no port; a Cluster has no default "
            f"one, write host:port (e.g. {EXAMPLE})"
        )
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"broker URL {where!r}: seed {text!r} has a bad port")
    return host, int(port)


def ssl_kwargs(target: ClusterUrl) -> dict[str, Any]:
    """redis-py connection arguments for the URL's TLS options (none without TLS)."""
    if not target.ssl:
        return {}
    out: dict[str, Any] = dict(target.ssl_options)
    if str(out.get("ssl_cert_reqs", "")).lower() == "none":
        out["ssl_cert_reqs"] = None
    return out


def shown(url: str) -> str:
    """`url` with its password hidden."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, hosts = rest.rpartition("@")
    if at and ":" in userinfo:
        rest = userinfo.partition(":")[0] + ":***@" + hosts
    elif at:
        rest = "***@" + hosts  # a lone userinfo may be a password (redis-py reads it so)
    return scheme + sep + rest


def describe(url: str) -> str:
    """The Cluster in a few words, for logs (passwords hidden)."""
    target = parse_cluster_url(url)
    names = ",".join(f"{h}:{p}" for h, p in target.seeds)
    return f"Valkey Cluster (seeds {names}{', TLS' if target.ssl else ''})"
