"""uvicorn, hardened against slow clients: a deadline on request headers, a connection cap.

uvicorn has no header timeout: a connection that sends nothing, or its headers one byte a
second (slowloris), holds a slot until the client gives up, and its keep-alive timer restarts
on every byte. `HeaderDeadline` arms one deadline per request when the connection opens and
again after each response, and closes the connection (408) if the next request's headers are
not complete by then, however many bytes trickle in. Bodies have their own deadline
(`guards.BodyLimit`). `limit_concurrency` caps open connections: past it uvicorn answers 503
at once rather than queueing, so a flood fails fast and the deadline frees its slots.
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

HEADER_TIMEOUT_S = 10.0
MAX_CONNECTIONS = 500
_BODY_408 = b'{"error": "request headers not received in time"}'
TIMEOUT_408 = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
    b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(_BODY_408), _BODY_408)
)


def _deadline_protocol(header_timeout_s: float) -> type[H11Protocol]:
    class HeaderDeadline(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None
        _armed_for: object = None

        def _arm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            self._armed_for = self.cycle  # the request done when armed (None: a new connection)
            self._deadline = self.loop.call_later(header_timeout_s, self._expire)

        def _expire(self) -> None:
            self._deadline = None
            if self.cycle is self._armed_for and not self.transport.is_closing():
                # No request's headers completed since the deadline was armed.
                self.transport.write(TIMEOUT_408)
                self.transport.close()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            super().connection_lost(exc)

    return HeaderDeadline


def server_config(
    web: Any,
    *,
    header_timeout_s: float = HEADER_TIMEOUT_S,
    max_connections: int = MAX_CONNECTIONS,
    **kwargs: Any,
) -> uvicorn.Config:
    """The uvicorn configuration the master serves with (tests use the same one)."""
    options: dict[str, Any] = {
        "log_level": "warning",
        "access_log": False,
        "timeout_graceful_shutdown": 3,
        "lifespan": "on",
        "ws": "none",
        "timeout_keep_alive": 5,
        "h11_max_incomplete_event_size": 16 * 1024,  # request line + headers
        **kwargs,
    }
    return uvicorn.Config(
        web,
        http=_deadline_protocol(header_timeout_s),
        limit_concurrency=max_connections,
        **options,
    )
