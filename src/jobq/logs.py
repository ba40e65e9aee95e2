"""Logging set-up shared by every jobq entry point: untrusted text cannot forge a log line.

Job ids, task and queue names, worker names and error messages reach log records from users
and tasks. `EscapeControls` rewrites each record's message with its control characters escaped
(``\\n`` becomes the two characters ``\\`` ``n``), so one record is always one line; tracebacks
(``exc_info``) keep their own line breaks, which come from Python, not from the input.
"""

from __future__ import annotations

import logging

from .names import escape_controls


class EscapeControls(logging.Filter):
    """A handler filter that escapes control characters in the formatted message."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        safe = escape_controls(message)
        if safe is not message:
            record.msg, record.args = safe, None
        return True


def install_escaping(logger: logging.Logger | None = None) -> None:
    """Add `EscapeControls` to every handler of `logger` (default: the root logger) that lacks
    it. Call after configuring handlers (e.g. after ``logging.basicConfig``)."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, EscapeControls) for f in handler.filters):
            handler.addFilter(EscapeControls())


def configure(level: int, fmt: str | None = None, datefmt: str | None = None) -> None:
    """`logging.basicConfig` with control characters escaped in every message."""
    if fmt is None:
        logging.basicConfig(level=level)
    else:
        logging.basicConfig(level=level, format=fmt, datefmt=datefmt)
    install_escaping()
