"""The dashboard: static HTML/JS/CSS shipped inside the package, a client of the JSON API.

The page and its assets hold no data, so they are served without auth; the page asks for the
bearer token when the API answers 401 and keeps it in the browser's localStorage.
"""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

router = APIRouter(include_in_schema=False)

ASSETS = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "views.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}


def _asset(name: str) -> bytes:
    return (resources.files("jobq.master") / "static" / name).read_bytes()


@router.get("/")
def index() -> HTMLResponse:
    return HTMLResponse(_asset("index.html"), headers={"Cache-Control": "no-cache"})


@router.get("/static/{name}")
def asset(name: str) -> Response:
    if name not in ASSETS:
        return Response(b'{"error": "no such asset"}', 404, media_type="application/json")
    return Response(_asset(name), media_type=ASSETS[name], headers={"Cache-Control": "no-cache"})


@router.get("/favicon.ico")
def favicon() -> Response:
    """The icon browsers ask for on their own (an SVG: every current browser draws one)."""
    return Response(
        _asset("favicon.svg"),
        media_type="image/svg+xml",
        headers={"Cache-Control": "public, max-age=86400"},
    )
