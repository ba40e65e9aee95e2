"""ASGI middleware in front of every route: bearer-token auth and a request body size limit."""

from __future__ import annotations

import hmac

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send


async def _reply(send: Send, status: int, error: str, headers: list[tuple[bytes, bytes]]) -> None:
    body = orjson.dumps({"error": error})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BearerAuth:
    """Every path needs ``Authorization: Bearer <token>`` except `open_paths` and those under
    `open_prefixes`: 401 without one, 403 with a wrong one; compared in constant time."""

    def __init__(
        self,
        app: ASGIApp,
        token: str,
        open_paths: tuple[str, ...] = (),
        open_prefixes: tuple[str, ...] = (),
    ) -> None:
        self.app = app
        self.token = token.encode()
        self.open_paths = frozenset(open_paths)
        self.open_prefixes = open_prefixes

    def _open(self, path: str) -> bool:
        return path in self.open_paths or path.startswith(self.open_prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._open(scope["path"]):
            await self.app(scope, receive, send)
            return
        header = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, given = header.partition(b" ")
        if scheme.lower() != b"bearer" or not given.strip():
            await _reply(
                send,
                401,
                "missing bearer token: send the header 'Authorization: Bearer <token>' "
                "(the token given to jobq master with --token or JOBQ_TOKEN)",
                [(b"www-authenticate", b'Bearer realm="jobq"')],
            )
            return
        if not hmac.compare_digest(given.strip(), self.token):
            await _reply(send, 403, "wrong bearer token", [])
            return
        await self.app(scope, receive, send)


class BodyLimit:
    """Refuse request bodies over `max_bytes` with 413 (declared or streamed, chunked too).

    The API takes JSON only, so a body sent without a JSON content type (curl's default is a
    form type) is read as JSON rather than refused for its header.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        too_big = f"request body over the limit of {self.max_bytes} bytes"
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _reply(send, 413, too_big, [(b"connection", b"close")])
            return
        # Read the (bounded) body here, then replay it: the app never sees more than the limit.
        chunks: list[bytes] = []
        size = 0
        while True:
            msg = await receive()
            if msg["type"] != "http.request":
                await self.app(scope, _replay([msg], receive), send)
                return
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await _reply(send, 413, too_big, [(b"connection", b"close")])
                return
            chunks.append(chunk)
            if not msg.get("more_body", False):
                break
        first: Message = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
        scope = {**scope, "headers": [*headers, (b"content-type", b"application/json")]}
        await self.app(scope, _replay([first], receive), send)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed
