"""The embedded default: a private, password-protected Valkey with AOF in a data directory,
shared by every process on the machine; and `jobq demo`, which runs on it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis
from conftest import ValkeyProcess, jobq_cmd

from jobq import App, JobState
from jobq.embedded import STATE_FILE, ensure_server, server_url, stop_server

pytestmark = pytest.mark.timeout(120)

ATTACH = "import sys; from jobq.embedded import ensure_server; print(ensure_server(sys.argv[1]))"


@pytest.fixture
def data_dirs() -> Iterator[Callable[[Path], Path]]:
    """Register data directories; every server started in one is stopped afterwards."""
    dirs: list[Path] = []

    def register(d: Path) -> Path:
        dirs.append(d)
        return d

    yield register
    for d in dirs:
        with contextlib.suppress(Exception):
            stop_server(d)
        pid = _state(d).get("pid")
        if pid:
            with contextlib.suppress(OSError):
                os.kill(int(pid), signal.SIGKILL)


def _state(d: Path) -> dict[str, object]:
    try:
        data: dict[str, object] = json.loads((d / STATE_FILE).read_text())
        return data
    except (OSError, ValueError):
        return {}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False  # a zombie child of ours
    return True


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("JOBQ_")}


def _not_the_system_redis(url: str) -> None:
    parts = urlsplit(url)
    assert parts.scheme == "unix" or parts.port not in (None, 6379), url


def test_ensure_server_starts_a_private_password_protected_server_with_aof(
    tmp_path: Path, data_dirs: Callable[[Path], Path]
) -> None:
    d = data_dirs(tmp_path / "data")
    url = ensure_server(d)
    _not_the_system_redis(url)
    parts = urlsplit(url)
    assert parts.password
    client = redis.Redis.from_url(url)
    try:
        assert client.ping()
        cfg = client.config_get("*")
        assert cfg["appendonly"] == "yes" and cfg["appendfsync"] == "everysec"
        assert Path(cfg["dir"]).resolve() == d.resolve()
        client.set("probe", "1")
        assert any((d / "appendonlydir").iterdir())  # the AOF lives in the data dir
    finally:
        client.close()
    # Without the password the server refuses to talk.
    anon = redis.Redis.from_url(url.replace(f":{parts.password}@", ""), socket_timeout=5)
    with pytest.raises((redis.AuthenticationError, redis.ResponseError)):
        anon.ping()
    anon.close()
    # The password and socket are private to this user.
    assert stat.S_IMODE((d / STATE_FILE).stat().st_mode) == 0o600
    assert stat.S_IMODE(d.stat().st_mode) == 0o700


def test_second_call_and_second_process_attach_to_the_same_server(
    tmp_path: Path, data_dirs: Callable[[Path], Path]
) -> None:
    d = data_dirs(tmp_path / "data")
    url = ensure_server(d)
    pid = _state(d)["pid"]
    assert ensure_server(d) == url
    out = subprocess.run(
        [sys.executable, "-c", ATTACH, str(d)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == url
    assert _state(d)["pid"] == pid  # nobody started a second server


def test_processes_starting_at_once_share_one_server(
    tmp_path: Path, data_dirs: Callable[[Path], Path]
) -> None:
    d = data_dirs(tmp_path / "fresh")
    procs = [
        subprocess.Popen([sys.executable, "-c", ATTACH, str(d)], stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    urls = {p.communicate(timeout=60)[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert len(urls) == 1 and server_url(d) in urls


def test_a_server_that_is_not_ours_is_never_used(
    tmp_path: Path, data_dirs: Callable[[Path], Path], valkey: ValkeyProcess
) -> None:
    d = data_dirs(tmp_path / "data")
    d.mkdir(mode=0o700)
    # A state file pointing at some other server (here: the test server, which serves another
    # directory) is not trusted: the server must answer with our password for our directory.
    (d / STATE_FILE).write_text(json.dumps({"pid": 0, "url": valkey.url}))
    assert server_url(d) is None
    url = ensure_server(d)
    assert url != valkey.url
    _not_the_system_redis(url)
    assert _state(d)["url"] == url


def test_long_data_dir_falls_back_to_loopback_tcp(
    tmp_path: Path, data_dirs: Callable[[Path], Path]
) -> None:
    d = data_dirs(tmp_path / ("x" * 60) / ("y" * 60))  # too long for a unix socket path
    url = ensure_server(d)
    parts = urlsplit(url)
    assert parts.scheme == "redis" and parts.hostname == "127.0.0.1"
    _not_the_system_redis(url)
    client = redis.Redis.from_url(url)
    try:
        assert client.config_get("bind")["bind"] == "127.0.0.1"
    finally:
        client.close()


def test_stop_server_stops_it_and_the_aof_keeps_the_data(
    tmp_path: Path, data_dirs: Callable[[Path], Path]
) -> None:
    d = data_dirs(tmp_path / "data")
    url = ensure_server(d)
    pid = int(str(_state(d)["pid"]))
    client = redis.Redis.from_url(url)
    client.set("kept", "across restarts")
    client.close()
    assert stop_server(d) is True
    assert server_url(d) is None
    deadline = time.monotonic() + 10
    while _alive(pid):
        assert time.monotonic() < deadline, "the server process is still alive"
        time.sleep(0.05)
    assert stop_server(d) is False  # nothing left to stop
    url2 = ensure_server(d)  # starts again, replaying the AOF
    client = redis.Redis.from_url(url2)
    try:
        assert client.get("kept") == b"across restarts"
    finally:
        client.close()


def test_app_without_url_uses_the_embedded_server(
    tmp_path: Path, data_dirs: Callable[[Path], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    d = data_dirs(tmp_path / "data")
    monkeypatch.delenv("JOBQ_URL", raising=False)
    with App(data_dir=str(d), prefix="emb") as app:

        @app.task
        def hello() -> str:
            return "hi"

        job = hello.submit()
        assert app.url == server_url(d)
        assert job.status() is JobState.QUEUED


def test_demo_runs_to_completion(tmp_path: Path, data_dirs: Callable[[Path], Path]) -> None:
    """The README's `jobq demo`, on a fresh data directory."""
    d = data_dirs(tmp_path / "demo-data")
    proc = subprocess.run(
        jobq_cmd("demo", "--data-dir", str(d)),
        cwd=tmp_path,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "(started)" in out and "master and 2 workers" in out
    assert "dead-lettered: 5" in out
    assert "workers, master and server stopped" in out
    assert server_url(d) is None  # it cleaned up after itself
    assert not (tmp_path / ".jobq").exists()  # and used the directory it was given
