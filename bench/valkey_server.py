"""The benchmarks' private Valkey: the embedded binary on a free loopback port, no persistence.

Shared by the scripts of this folder (each run as a script from here, so this module is
importable by name), with the two other pieces they all repeated: pointing this process and
its worker subprocesses at the server (`use_server`), and stopping those workers
(`stop_workers`).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import redis


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_valkey(
    data: Path, extra: tuple[str, ...] = (), log: IO[bytes] | int = subprocess.DEVNULL
) -> tuple[subprocess.Popen[bytes], str]:
    """Start a server with its files in `data`; returns it and its URL once it answers."""
    from jobq.embedded import find_binary

    port = free_port()
    args = [find_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data)]
    args += ["--save", "", "--appendonly", "no", *extra]
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    try:
        for _ in range(500):
            try:
                client.ping()
                return proc, url
            except redis.ConnectionError:
                time.sleep(0.01)
    finally:
        client.close()
    proc.kill()
    proc.wait()
    raise RuntimeError("benchmark Valkey did not start")


def use_server(url: str, prefix: str, here: Path) -> dict[str, str]:
    """Point this process (its Apps read JOBQ_URL/JOBQ_PREFIX) at `url` under `prefix`, make
    the task modules of `here` importable, and return the environment for worker
    subprocesses that do the same."""
    env = {
        **os.environ,
        "JOBQ_URL": url,
        "JOBQ_PREFIX": prefix,
        "PYTHONPATH": os.pathsep.join([str(here), os.environ.get("PYTHONPATH", "")]),
    }
    sys.path.insert(0, str(here))
    os.environ.update(JOBQ_URL=url, JOBQ_PREFIX=prefix)
    return env


def stop_workers(workers: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM every worker subprocess (a clean shutdown), then kill those still up at 30 s."""
    for w in workers:
        w.terminate()
    for w in workers:
        try:
            w.wait(30)
        except subprocess.TimeoutExpired:
            w.kill()
            w.wait()
