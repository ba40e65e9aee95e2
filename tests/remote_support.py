"""Helpers for the remote-access tests (test_remote.py, test_remote_tls.py): environments for
`jobq` subprocesses, a `jobq master --listen` run, and stopping the embedded server it opened."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import redis
from conftest import jobq_cmd
from procs import JobqProcess

from jobq.embedded import stop_server

TESTS = Path(__file__).resolve().parent


def child_env(**extra: str) -> dict[str, str]:
    """A subprocess's environment: none of this process's JOBQ_*, tests/ importable, `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBQ_")}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


def cli_env(**extra: str) -> dict[str, str | None]:
    """For an in-process CLI run: no JOBQ_* from this process (an earlier CLI test may have
    exported JOBQ_URL), then `extra`."""
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("JOBQ_")}
    env.update(extra)
    return env


def stop_embedded(d: Path) -> None:
    """Stop the embedded server of data directory `d`, killing it if it does not answer."""
    with contextlib.suppress(Exception):
        stop_server(d)
    with contextlib.suppress(OSError, ValueError):
        os.kill(int((d / "valkey.pid").read_text().strip()), signal.SIGKILL)


def start_master(d: Path, prefix: str, args: list[str], log: Path, **env: str) -> JobqProcess:
    """`jobq master --listen ...` until it leads maintenance; the caller stops it."""
    master = JobqProcess.spawn(
        "master",
        jobq_cmd("master", *args, "--no-http"),
        log,
        child_env(JOBQ_DATA_DIR=str(d), JOBQ_PREFIX=prefix, **env),
        cwd=d.parent,
    )
    master.wait_log("took the maintenance lease", timeout=30)
    return master


def pings(url: str) -> bool:
    """True if a server answers PING at `url` (False for refused, TLS or auth failures)."""
    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False
    finally:
        client.close()
