"""A claim's reply (claim.lua) as jobs, and the warning for what it popped but could not run."""

from __future__ import annotations

import logging
from typing import Any

from .model import Claimed
from .names import escape_controls

log = logging.getLogger("jobq.store")


def _warn_unusable(queues: list[str], row: list[Any]) -> None:
    """Say loudly what the claim popped but could not run (claim.lua's notice row)."""
    n_missing, n_malformed, missing, malformed = int(row[1]), int(row[2]), row[3], row[4]
    where = escape_controls(",".join(queues))
    if n_missing:
        ids = escape_controls(", ".join(i.decode("utf-8", "replace") for i in missing))
        log.warning(
            "claim from %s: %d queued job id(s) had no job hash and were dropped (%s): the "
            "server lost or evicted them; is maxmemory-policy noeviction?",
            where,
            n_missing,
            ids,
        )
    if n_malformed:
        ids = escape_controls(", ".join(i.decode("utf-8", "replace") for i in malformed))
        log.warning(
            "claim from %s: dead-lettered %d malformed job(s) (%s): see their error "
            "(MalformedJob) with `jobq status <id>`",
            where,
            n_malformed,
            ids,
        )


def claimed_jobs(queues: list[str], rows: list[Any]) -> list[Claimed]:
    """A claim's reply as jobs (claim.lua), its notice row (if any) logged."""
    out = []
    for row in rows:
        if isinstance(row[0], int):  # the notice row: ids the claim could not run
            _warn_unusable(queues, row)
        else:
            out.append(Claimed.from_reply(row))
    return out
