"""The master's HTTP side: the JSON API, Server-Sent Events and the dashboard.

Needs the `master` extra (``pip install 'jobq[master]'``); workers never import this package.
"""

from .app import create_app

__all__ = ["create_app"]
