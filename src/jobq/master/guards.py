"""ASGI middleware in front of every route, outermost first:

- `SecurityHeaders`: CSP, X-Frame-Options, nosniff, Referrer-Policy on every response.
- `RequestGuard`: only allowed `Host`s (DNS rebinding); state-changing requests must be
  same-origin (`Origin`, `Sec-Fetch-Site`) and carry JSON (415 otherwise), so a web page in the
  user's browser cannot drive the API with a "simple" no-cors form or `text/plain` POST.
- `BearerAuth`: the token, compared in constant time.
- `BodyLimit`: at most `max_bytes`, read within `timeout_s` (a slow body holds no slot forever).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
from collections.abc import Iterable
from urllib.parse import urlsplit

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SAFE_METHODS = frozenset(("GET", "HEAD", "OPTIONS"))
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
JSON_TYPES = ("application/json",)

# The dashboard loads only its own script and stylesheet (no inline code), talks only to this
# origin, and may not be framed; the same policy is harmless on JSON responses.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-resource-policy", b"same-origin"),
]


async def _reply(
    send: Send, status: int, error: str, headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
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


class SecurityHeaders:
    """Adds `SECURITY_HEADERS` to every HTTP response (errors from the other guards too)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in SECURITY_HEADERS if k not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, with_headers)


def split_host(text: str) -> tuple[str, int | None]:
    """'Host'-style 'name', 'name:port', '[v6]', '[v6]:port' -> (lowercase name, port or None).

    Raises ValueError for anything else (a bad port, stray brackets, spaces).
    """
    text = text.strip().lower()
    if text.startswith("["):
        name, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"malformed host {text!r}")
        port_text = rest[1:] if rest else None
    elif text.count(":") > 1:  # a bare IPv6 literal (an --allowed-host entry, not a Host)
        name, port_text = text, None
    else:
        name, sep, port_text_ = text.partition(":")
        port_text = port_text_ if sep else None
    name = name.rstrip(".")
    if not name or any(c in name for c in " /\\@[]"):
        raise ValueError(f"malformed host {text!r}")
    if port_text is None:
        return name, None
    if not port_text.isdigit() or not 0 < int(port_text) <= 65535:
        raise ValueError(f"malformed port in {text!r}")
    return name, int(port_text)


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class HostPolicy:
    """Which `Host`s this server answers, and which `Origin`s may change things.

    Answered without configuration: the IP address the client connected to, and localhost /
    127.0.0.1 / [::1], on any port (behind a port mapping the Host names the outside port).
    DNS rebinding needs the victim's browser to send the attacker's own name, which is none of
    these. `extra` adds names: 'name' (any port) or 'name:port'; '*' answers every Host.
    """

    def __init__(self, extra: Iterable[str] = ()) -> None:
        self.any = False
        self.names: set[str] = set()
        self.pairs: set[tuple[str, int]] = set()
        for entry in extra:
            entry = entry.strip()
            if not entry:
                continue
            if entry == "*":
                self.any = True
                continue
            name, port = split_host(entry)
            if port is None:
                self.names.add(name)
            else:
                self.pairs.add((name, port))

    def configured(self, host: str, port: int) -> bool:
        """Named by `extra` (or everything, with '*')."""
        return self.any or host in self.names or (host, port) in self.pairs

    def allows(self, host: str, port: int, server: tuple[str, int | None] | None) -> bool:
        if self.configured(host, port) or host in LOOPBACK_NAMES:
            return True
        return server is not None and host == server[0].lower() and _is_ip(host)


def _name_port(text: str, scheme: str | None) -> tuple[str, int] | None:
    try:
        name, port = split_host(text)
    except ValueError:
        return None
    return name, port if port is not None else (443 if scheme in ("https", "wss") else 80)


class RequestGuard:
    """Host, cross-site and content-type checks (see the module docstring).

    A state-changing request's `Origin`, when the browser sends one, must be the very origin
    the request goes to (its Host) or one configured with --allowed-host: a page from another
    site, or from another port of localhost, is another origin.
    """

    def __init__(self, app: ASGIApp, policy: HostPolicy) -> None:
        self.app = app
        self.policy = policy

    def _host(self, text: str, scope: Scope) -> tuple[str, int] | None:
        """(name, port) of an allowed Host header, else None."""
        got = _name_port(text, scope.get("scheme"))
        server = scope.get("server")
        if got is None or not self.policy.allows(*got, tuple(server) if server else None):
            return None
        return got

    def _origin_ok(self, origin: str, host: tuple[str, int]) -> bool:
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return False
        got = _name_port(parts.netloc, parts.scheme)
        return got is not None and (got == host or self.policy.configured(*got))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        host_text = headers.get(b"host", b"").decode("latin-1")
        host = self._host(host_text, scope)
        if host is None:
            await _reply(
                send,
                400,
                f"Host {host_text!r} is not served here (a guard against DNS rebinding): open "
                "the master by its IP address or localhost, or start jobq master with "
                f"--allowed-host {host_text.rsplit(':', 1)[0] or 'NAME'} (or JOBQ_ALLOWED_HOSTS)",
            )
            return
        if scope["type"] != "http" or scope["method"] in SAFE_METHODS:
            await self.app(scope, receive, send)
            return
        site = headers.get(b"sec-fetch-site", b"").decode("latin-1").lower()
        origin = headers.get(b"origin")
        if site not in ("", "same-origin", "none"):
            await _reply(send, 403, f"cross-site request refused (Sec-Fetch-Site: {site})")
            return
        if origin is not None and not self._origin_ok(origin.decode("latin-1"), host):
            await _reply(
                send,
                403,
                f"cross-site request refused (Origin {origin.decode('latin-1')!r} is not this "
                "master; allow its host with --allowed-host)",
            )
            return
        ctype = headers.get(b"content-type")
        has_body = headers.get(b"content-length", b"0") not in (b"0", b"") or (
            b"transfer-encoding" in headers
        )
        if ctype is not None or has_body:
            media = (ctype or b"").split(b";", 1)[0].strip().lower().decode("latin-1")
            if media not in JSON_TYPES and not (
                media.startswith("application/") and media.endswith("+json")
            ):
                shown = f"Content-Type {media!r}" if media else "no Content-Type"
                await _reply(
                    send,
                    415,
                    f"request body must be JSON, got {shown}: send "
                    "'Content-Type: application/json'",
                )
                return
        await self.app(scope, receive, send)


class BearerAuth:
    """Every path needs ``Authorization: Bearer <token>`` except `open_paths` and those under
    `open_prefixes`: 401 without one, 403 with a wrong one; compared in constant time (of
    digests, so not even the token's length shows in the timing)."""

    def __init__(
        self,
        app: ASGIApp,
        token: str,
        open_paths: tuple[str, ...] = (),
        open_prefixes: tuple[str, ...] = (),
    ) -> None:
        self.app = app
        self.digest = hashlib.sha256(token.encode()).digest()
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
                "(the token given to jobq master with --token-file or JOBQ_TOKEN)",
                [(b"www-authenticate", b'Bearer realm="jobq"')],
            )
            return
        if not hmac.compare_digest(hashlib.sha256(given.strip()).digest(), self.digest):
            await _reply(send, 403, "wrong bearer token")
            return
        await self.app(scope, receive, send)


class BodyLimit:
    """Refuse request bodies over `max_bytes` with 413 (declared or streamed, chunked too), and
    bodies that take longer than `timeout_s` to arrive with 408 (a client trickling its body
    would otherwise hold a connection and a task for ever)."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float = 30.0) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in SAFE_METHODS:
            await self.app(scope, receive, send)
            return
        too_big = f"request body over the limit of {self.max_bytes} bytes"
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _reply(send, 413, too_big, [(b"connection", b"close")])
            return
        # Read the (bounded) body here, then replay it: the app never sees more than the limit.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        chunks: list[bytes] = []
        size = 0
        while True:
            try:
                msg = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                await _reply(
                    send,
                    408,
                    f"request body not received within {self.timeout_s:g} s",
                    [(b"connection", b"close")],
                )
                return
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
        await self.app(scope, _replay([first], receive), send)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed
