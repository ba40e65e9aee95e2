"""`create_app`: the master's HTTP application (API + dashboard) for one jobq App."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import BrokerError, BrokerFull, BrokerUnavailable, JobqError
from ..names import InvalidName
from . import api, compat, dashboard, events, ops, schedules, stats_api
from .context import Context
from .guards import BearerAuth, BodyLimit, HostPolicy, RequestGuard, SecurityHeaders
from .hub import EventHub
from .rates import RateTracker

if TYPE_CHECKING:
    from ..client import App
    from ..maintenance import Maintainer

MAX_BODY = 1 << 20
OPEN_PATHS = ("/healthz", "/", "/favicon.ico")
OPEN_PREFIXES = ("/static/",)


def create_app(
    app: App,
    token: str | None = None,
    *,
    maintainer: Maintainer | None = None,
    max_body: int = MAX_BODY,
    body_timeout_s: float = 30.0,
    rate_interval_s: float = 2.0,
    allowed_hosts: Iterable[str] = (),
    max_streams: int = 100,
    stream_queue: int = 1000,
) -> FastAPI:
    """The HTTP API and dashboard serving `app`'s deployment.

    With `token`, every route but /healthz (and the data-free dashboard page) needs
    ``Authorization: Bearer <token>``. `maintainer`, when given, is reported by /healthz and
    /metrics (the master passes its own). Requests must name an allowed Host (the address
    connected to, localhost, or one of `allowed_hosts`; see `guards.HostPolicy`); at most
    `max_streams` event streams are open at once, each buffering at most `stream_queue`
    events before it is dropped as too slow.
    """
    hub = EventHub(app.store, max_streams=max_streams, queue_size=stream_queue)
    jobq = Context(app, maintainer, hub, RateTracker(app.store, rate_interval_s), bool(token))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        jobq.hub.start(asyncio.get_running_loop())
        jobq.rates.start()
        try:
            yield
        finally:
            jobq.hub.stop()
            jobq.rates.stop()
            jobq.close()

    web = FastAPI(
        title="jobq",
        version="1",
        summary="Submit, follow and steer jobq jobs over HTTP.",
        docs_url=None,  # Swagger UI loads from a CDN; the dashboard needs no internet
        redoc_url=None,
        lifespan=lifespan,
    )
    web.state.jobq = jobq
    for module in (compat, api, stats_api, schedules, events, ops, dashboard):
        web.include_router(module.router)
    _error_handlers(web)
    # add_middleware wraps from the inside out: the last added runs first.
    web.add_middleware(BodyLimit, max_bytes=max_body, timeout_s=body_timeout_s)
    if token:
        web.add_middleware(
            BearerAuth, token=token, open_paths=OPEN_PATHS, open_prefixes=OPEN_PREFIXES
        )
    web.add_middleware(RequestGuard, policy=HostPolicy(allowed_hosts))
    web.add_middleware(SecurityHeaders)
    return web


def _error_handlers(web: FastAPI) -> None:
    """Every error is JSON ``{"error": "..."}``; invalid input names the field."""

    @web.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, exc.status_code, headers=exc.headers)

    @web.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        fields: list[dict[str, Any]] = []
        for e in exc.errors():
            loc = [str(x) for x in e.get("loc", ())]
            if loc and loc[0] in ("body", "query", "path", "header"):
                where = loc[0]
                name = ".".join(loc[1:]) or where
            else:
                where, name = "body", ".".join(loc) or "body"
            fields.append({"field": name, "in": where, "message": e.get("msg", "invalid")})
        text = "; ".join(f"{f['field']}: {f['message']}" for f in fields) or "invalid request"
        return JSONResponse({"error": f"invalid request: {text}", "fields": fields}, 422)

    @web.exception_handler(BrokerUnavailable)
    async def broker_down(_: Request, exc: BrokerUnavailable) -> JSONResponse:
        # BrokerFull too (a subclass): the server has no room for new jobs yet.
        body = {"error": str(exc), "retry_after_s": exc.retry_after_s}
        if isinstance(exc, BrokerFull):
            body["hint"] = "the broker is full: retry later; running jobs still finish"
        return JSONResponse(body, 503, headers={"Retry-After": str(exc.retry_after_s)})

    @web.exception_handler(BrokerError)
    async def broker_refused(_: Request, exc: BrokerError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, 502)

    @web.exception_handler(InvalidName)
    async def bad_name(_: Request, exc: InvalidName) -> JSONResponse:
        # A name breaking the name rule (the message names the field, character and fix).
        return JSONResponse({"error": str(exc)}, 400)

    @web.exception_handler(JobqError)
    async def refused(_: Request, exc: JobqError) -> JSONResponse:
        # Options the core refuses (priority range, unserialisable argument, ...).
        return JSONResponse({"error": str(exc)}, 422)
