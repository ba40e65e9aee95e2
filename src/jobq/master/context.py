"""What every route shares: the jobq App, the master's maintainer, the event hub, the rates."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import Request

if TYPE_CHECKING:
    from ..client import App
    from ..maintenance import Maintainer
    from .events import EventHub
    from .rates import RateTracker


@dataclass(slots=True)
class Context:
    app: App
    maintainer: Maintainer | None
    hub: EventHub
    rates: RateTracker
    trusted: bool = False
    """Every request was authenticated (the master has a token): callers may keep results
    forever (result_ttl <= 0); anonymous ones may not fill the server for good."""


def ctx(request: Request) -> Context:
    """FastAPI dependency: the Context of the app serving this request."""
    c: Context = request.app.state.jobq
    return c
