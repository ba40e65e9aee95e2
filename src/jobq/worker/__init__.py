"""The worker: claim -> run -> report, with thread, process and asyncio pools."""

from .core import Worker

__all__ = ["Worker"]
