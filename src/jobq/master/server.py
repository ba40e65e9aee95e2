"""Run the master: the maintenance loop in a thread, the HTTP API + dashboard on uvicorn."""

from __future__ import annotations

import ipaddress
import logging
import secrets
import socket
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError

if TYPE_CHECKING:
    from types import FrameType

    from ..client import App
    from ..maintenance import Maintainer

log = logging.getLogger("jobq.master")


def parse_hostport(text: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """'HOST:PORT', ':PORT', 'PORT' or '[v6]:PORT' -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "", text
    host = host.strip("[]") or default_host
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"--http {text!r}: expected HOST:PORT, e.g. 127.0.0.1:8000")
    return host, int(port)


def is_loopback(host: str) -> bool:
    """Whether `host` (a bind address) is reachable only from this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name that resolves elsewhere, or a wildcard spelled otherwise


def read_token_file(path: str) -> str:
    """The token in `path` (surrounding whitespace stripped); a clear error if unusable."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8").strip()
        mode = p.stat().st_mode
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--token-file {path}: cannot read it ({exc})") from exc
    if not text or any(c.isspace() for c in text):
        raise ConfigError(
            f"--token-file {path}: expected one token on one line, got {len(text)} chars"
        )
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("--token-file %s is readable by other users: chmod 600 %s", path, path)
    return text


def http_token(
    host: str, token: str | None, token_file: str | None = None
) -> tuple[str | None, bool]:
    """(token to serve with, whether it was generated here), from `token` or `token_file`.

    A master bound beyond loopback without a token would let anyone on the network submit
    and cancel jobs, so it gets a fresh random token (the caller prints it once).
    """
    if token_file:
        if token:
            raise ConfigError("give the HTTP token once: --token-file or --token/JOBQ_TOKEN")
        token = read_token_file(token_file)
    if token is not None and not token.strip():
        raise ConfigError("the HTTP token is empty: give a non-empty --token-file or JOBQ_TOKEN")
    if token or is_loopback(host):
        return (token.strip() if token else None), False
    return secrets.token_urlsafe(32), True


def serve(
    app: App,
    maintainer: Maintainer,
    host: str,
    port: int,
    token: str | None,
    required: bool,
    allowed_hosts: Iterable[str] = (),
) -> None:
    """Serve until SIGINT/SIGTERM, with `maintainer` running alongside; stops both cleanly.

    If the address is taken and HTTP was not asked for explicitly (`required`), the master
    still runs its maintenance loop and says so, so several masters can share a host.
    """
    import uvicorn

    from .app import create_app
    from .transport import server_config

    if token is None and not is_loopback(host):
        raise ConfigError(
            f"serving HTTP on {host} without a token would let anyone on the network in: "
            "give --token-file or JOBQ_TOKEN, or bind 127.0.0.1"
        )

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets whose proto says TCP;
    # without it every keep-alive response waits ~40 ms for the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        msg = f"cannot serve HTTP on {host}:{port} ({exc.strerror or exc})"
        if required:
            raise ConfigError(f"{msg}: pick another --http HOST:PORT, or --no-http") from exc
        log.warning("%s; running the maintenance loop without HTTP (set --http)", msg)
        maintainer.run_joined()  # (off the main thread, which the signal handler runs in)
        return
    web = create_app(app, token, maintainer=maintainer, allowed_hosts=allowed_hosts)
    config = server_config(web)
    thread = maintainer.start_thread()
    bound = sock.getsockname()
    log.info(
        "HTTP API and dashboard on http://%s:%d/ (%s)",
        host if ":" not in host else f"[{host}]",
        bound[1],
        "bearer token required" if token else "no auth: loopback only",
    )

    class Server(uvicorn.Server):
        """Ends the maintenance loop at the signal, not after the HTTP shutdown (which waits
        for open connections): the loop releases the leader lease as it ends, so another
        master takes over on its next tick."""

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            maintainer.stop_event.set()
            super().handle_exit(sig, frame)

    try:
        Server(config).run(sockets=[sock])
    finally:
        maintainer.stop_event.set()
        thread.join(5)
