"""The benchmarks' private Valkey: the embedded binary on a free loopback port, no persistence.

Shared by throughput.py, scale.py, compare.py and profile_paths.py (each run as a script from
this folder, so this module is importable by name).
"""

from __future__ import annotations

import socket
import subprocess
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
