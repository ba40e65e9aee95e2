"""Run the master: the maintenance loop in a thread, the HTTP API + dashboard on uvicorn."""

from __future__ import annotations

import logging
import socket
from typing import TYPE_CHECKING

from ..errors import ConfigError

if TYPE_CHECKING:
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


def serve(
    app: App, maintainer: Maintainer, host: str, port: int, token: str | None, required: bool
) -> None:
    """Serve until SIGINT/SIGTERM, with `maintainer` running alongside; stops both cleanly.

    If the address is taken and HTTP was not asked for explicitly (`required`), the master
    still runs its maintenance loop and says so, so several masters can share a host.
    """
    import uvicorn

    from .app import create_app

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
        maintainer.run()
        return
    web = create_app(app, token, maintainer=maintainer)
    config = uvicorn.Config(
        web,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=3,
        lifespan="on",
        ws="none",
    )
    thread = maintainer.start_thread()
    bound = sock.getsockname()
    log.info(
        "HTTP API and dashboard on http://%s:%d/ (%s)",
        host if ":" not in host else f"[{host}]",
        bound[1],
        "bearer token required" if token else "no auth: use --token on shared networks",
    )
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        maintainer.stop_event.set()
        thread.join(5)
