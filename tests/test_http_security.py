"""Hostile HTTP against a real master (uvicorn on a free loopback port, raw sockets where the
client must misbehave): cross-site requests, foreign Hosts, slow clients, many and slow event
streams, keep-forever results, an outage on /schedule, tokens off loopback."""

from __future__ import annotations

import re
import selectors
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from conftest import free_port, jobq_cmd, subprocess_env
from live_master import LiveMaster

from jobq import App
from jobq.errors import ConfigError
from jobq.master.guards import CSP, HostPolicy, split_host
from jobq.master.server import http_token, is_loopback, read_token_file
from jobq.store import redact

TOKEN = "t0ken-for-tests"
JSON = {"Content-Type": "application/json"}


def wait_for(check: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def live(app: App) -> Iterator[LiveMaster]:
    master = LiveMaster(app, allowed_hosts=["jobq.internal"]).start()
    yield master
    master.stop()


@pytest.fixture
def http(live: LiveMaster) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live.url, timeout=30) as c:
        yield c


def job_count(app: App) -> int:
    return sum(q.queued + q.scheduled for q in app.store.queues())


# -- cross-site requests and content types --------------------------------------------------


STATE_CHANGING = [
    ("POST", "/v1/jobs", b'{"task": "add", "args": [1, 2]}'),
    ("POST", "/v1/jobs/batch", b'{"task": "add", "calls": [{"args": [1, 2]}]}'),
    ("POST", "/schedule", b'{"task_id": "csrf", "task_type": "add"}'),
    ("POST", "/v1/jobs/x/cancel", b""),
    ("POST", "/v1/jobs/x/retry", b""),
    ("POST", "/v1/dead/rerun", b""),
    ("POST", "/v1/queues/default/purge", b""),
    ("PUT", "/v1/periodic/p", b'{"task": "add", "every": 60}'),
    ("DELETE", "/v1/periodic/p", b""),
]


@pytest.mark.parametrize(("method", "path", "body"), STATE_CHANGING)
def test_cross_site_requests_are_refused(
    http: httpx.Client, app: App, method: str, path: str, body: bytes
) -> None:
    # What a page on another site can send from the user's browser without a CORS preflight:
    # a "simple" request, text/plain or a form, with the browser's Origin/Sec-Fetch-Site.
    attacks = [
        {"Origin": "http://evil.example", "Content-Type": "text/plain"},
        {"Origin": "http://evil.example", **JSON},
        {"Origin": "null", **JSON},
        {"Origin": f"http://127.0.0.1:{free_port()}", **JSON},  # another local app's page
        {"Sec-Fetch-Site": "cross-site", **JSON},
        {"Sec-Fetch-Site": "same-site", **JSON},  # another port of localhost is same-site
    ]
    for headers in attacks:
        r = http.request(method, path, content=body, headers=headers)
        assert r.status_code == 403, (headers, r.text)
        assert "cross-site" in r.json()["error"]
    # No Origin at all, but not JSON: still refused, never read as JSON.
    if body:
        for ctype in ("text/plain", "application/x-www-form-urlencoded"):
            r = http.request(method, path, content=body, headers={"Content-Type": ctype})
            assert r.status_code == 415, r.text
    assert job_count(app) == 0
    assert app.store.list_periodic() == []


def test_same_origin_requests_pass(http: httpx.Client, live: LiveMaster) -> None:
    body = {"task": "add", "args": [1, 2]}
    for origin, host in (
        (live.url, None),
        (f"http://localhost:{live.port}", f"localhost:{live.port}"),
        ("http://localhost:8080", "localhost:8080"),  # the page came through a port mapping
        ("http://jobq.internal", None),  # configured with --allowed-host
    ):
        headers = {"Origin": origin, "Sec-Fetch-Site": "same-origin"}
        if host:
            headers["Host"] = host
        r = http.post("/v1/jobs", json=body, headers=headers)
        assert r.status_code == 201, (origin, r.text)
    # Same host, another port: another origin (another app's page on this machine).
    headers = {"Origin": f"http://localhost:{live.port + 1}", "Host": f"localhost:{live.port}"}
    assert http.post("/v1/jobs", json=body, headers=headers).status_code == 403
    assert http.post("/v1/jobs/x/cancel").status_code == 404  # bodiless, no type: fine (curl)


# -- Host (DNS rebinding) -------------------------------------------------------------------


def test_only_allowed_hosts(http: httpx.Client, live: LiveMaster) -> None:
    port = live.port
    for host in (f"evil.example:{port}", "evil.example", "10.9.9.9", "", "a b", "[::1"):
        r = http.get("/v1/queues", headers={"Host": host})
        assert r.status_code == 400, host
        assert "--allowed-host" in r.json()["error"]
    assert http.get("/", headers={"Host": f"rebound.example:{port}"}).status_code == 400
    for host in (
        f"127.0.0.1:{port}",
        f"localhost:{port}",
        f"[::1]:{port}",
        "jobq.internal",
        f"JOBQ.internal:{port}",
        "localhost:8080",
    ):  # fmt: skip  (a port mapping)
        assert http.get("/v1/queues", headers={"Host": host}).status_code == 200, host


def test_host_policy_unit() -> None:
    assert split_host("[::1]:80") == ("::1", 80)
    assert split_host("Example.COM.") == ("example.com", None)
    for bad in ("", "[::1", "a:b", "a:99999", "x/y"):
        with pytest.raises(ValueError):
            split_host(bad)
    p = HostPolicy(["api.example:8443", "jobq"])
    server = ("10.0.0.5", 8000)
    assert p.allows("10.0.0.5", 8000, server)  # the address connected to
    assert p.allows("localhost", 8000, server) and p.allows("127.0.0.1", 9000, server)
    assert p.allows("api.example", 8443, server) and not p.allows("api.example", 8000, server)
    assert not p.allows("10.0.0.6", 8000, server)  # an IP, but not ours
    assert p.allows("jobq", 1, server)
    assert not p.allows("attacker.example", 8000, server)
    assert HostPolicy(["*"]).allows("anything", 1, server)


# -- security headers -------------------------------------------------------------------------


def test_security_headers(http: httpx.Client) -> None:
    for path in ("/", "/static/app.js", "/v1/queues", "/healthz", "/v1/nothing"):
        r = http.get(path)
        assert r.headers["x-content-type-options"] == "nosniff", path
        assert r.headers["x-frame-options"] == "DENY", path
        assert r.headers["content-security-policy"] == CSP, path
        assert r.headers["referrer-policy"] == "no-referrer", path
    page = http.get("/").text
    assert "<script>" not in page and "<style" not in page and " style=" not in page
    assert "script-src 'self'" in CSP and "unsafe-inline" not in CSP


# -- keep-forever results, /schedule in an outage, redaction ---------------------------------


def test_keep_forever_only_with_a_token(http: httpx.Client, app: App) -> None:
    r = http.post("/v1/jobs", json={"task": "add", "result_ttl": 0})
    assert r.status_code == 403 and "result_ttl" in r.json()["error"]
    r = http.post("/v1/jobs/batch", json={"task": "add", "calls": [{}], "result_ttl": 0})
    assert r.status_code == 403
    assert http.post("/v1/jobs", json={"task": "add", "result_ttl": 60}).status_code == 201
    secured = LiveMaster(app, TOKEN).start()
    try:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        r = httpx.post(
            secured.url + "/v1/jobs", json={"task": "add", "result_ttl": 0}, headers=auth
        )
        assert r.status_code == 201, r.text
    finally:
        secured.stop()


def test_schedule_answers_503_when_the_broker_is_down() -> None:
    down = App(f"redis://127.0.0.1:{free_port()}/0", prefix="down")  # nothing listens there
    master = LiveMaster(down).start()
    try:
        with httpx.Client(base_url=master.url, timeout=60) as c:
            r = c.post("/schedule", json={"task_id": "1", "task_type": "add"})
            assert r.status_code == 503, r.text
            assert "cannot reach" in r.json()["error"]
            assert c.get("/status/1").status_code == 503
            assert c.post("/v1/jobs", json={"task": "add"}).status_code == 503
    finally:
        master.stop()
        down.close()


@pytest.mark.parametrize(
    "url",
    [
        "redis://:hunter2@h:6390/0",
        "redis://user:hunter2@h:6390/0",
        "redis://h:6390/0?password=hunter2",
        "rediss://h:6390/0?username=u&Password=hunter2&db=1",
        "unix:///tmp/v.sock?password=hunter2&db=0",
    ],
)
def test_redact_hides_every_password(url: str) -> None:
    shown = redact(url)
    assert "hunter2" not in shown and "***" in shown
    assert shown.split("://")[0] == url.split("://")[0]


# -- tokens -----------------------------------------------------------------------------------


def test_token_rules(tmp_path: Path) -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("10.1.2.3")
    assert http_token("127.0.0.1", None) == (None, False)
    token, generated = http_token("0.0.0.0", None)
    assert generated and token and len(token) >= 40
    assert http_token("0.0.0.0", "given") == ("given", False)
    with pytest.raises(ConfigError):
        http_token("0.0.0.0", "  ")
    f = tmp_path / "token"
    f.write_text("abc123\n")
    f.chmod(0o600)
    assert read_token_file(str(f)) == "abc123"
    f.write_text("")
    with pytest.raises(ConfigError, match="token-file"):
        read_token_file(str(f))
    with pytest.raises(ConfigError, match="cannot read"):
        read_token_file(str(tmp_path / "missing"))
    f.write_text("from-file")
    assert http_token("0.0.0.0", None, str(f)) == ("from-file", False)
    with pytest.raises(ConfigError, match="once"):
        http_token("0.0.0.0", "given", str(f))


def test_jobq_master_reads_its_token_from_a_file(url: str, prefix: str, tmp_path: Path) -> None:
    f = tmp_path / "token"
    f.write_text(TOKEN + "\n")
    f.chmod(0o600)
    port = free_port()
    env = subprocess_env(url, prefix)
    env.pop("JOBQ_TOKEN", None)
    proc = subprocess.Popen(
        jobq_cmd("master", "--http", f"127.0.0.1:{port}", "--token-file", str(f)),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return httpx.get(base + "/healthz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(up, 60, "jobq master to serve HTTP")
        assert TOKEN not in " ".join(proc.args)  # type: ignore[arg-type]
        assert httpx.get(base + "/v1/queues").status_code == 401
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert httpx.get(base + "/v1/queues", headers=auth).status_code == 200
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out.decode()


def test_jobq_master_off_loopback_generates_a_token(url: str, prefix: str) -> None:
    # Bound to every interface for a few seconds, token-protected: the behaviour under test.
    port = free_port()
    env = subprocess_env(url, prefix)
    env.pop("JOBQ_TOKEN", None)
    env.pop("JOBQ_TOKEN_FILE", None)
    proc = subprocess.Popen(
        jobq_cmd("master", "--http", f"0.0.0.0:{port}"),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        lines: list[bytes] = []
        deadline = time.monotonic() + 60
        while not (lines and lines[-1].startswith(b"keep it in a file")):
            assert time.monotonic() < deadline and proc.poll() is None, b"".join(lines)
            lines.append(proc.stderr.readline())
        token = next(ln.strip() for ln in lines if ln.startswith(b"  ")).decode()
        assert len(token) >= 40
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: _get(base + "/healthz") == 200, 60, "jobq master to serve HTTP")
        assert _get(base + "/v1/queues") == 401
        assert _get(base + "/v1/queues", {"Authorization": f"Bearer {token}"}) == 200
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    assert proc.returncode == 0


def _get(url: str, headers: dict[str, str] | None = None) -> int:
    try:
        return httpx.get(url, headers=headers, timeout=5).status_code
    except httpx.TransportError:
        return 0


# -- slow clients -----------------------------------------------------------------------------


def connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    return s


def trickle_until_closed(s: socket.socket, data: bytes, limit_s: float) -> tuple[float, bytes]:
    """Send `data` a byte every 0.1 s until the server closes; (seconds it took, reply)."""
    t0 = time.monotonic()
    s.setblocking(False)
    got = b""
    i = 0
    while time.monotonic() - t0 < limit_s:
        try:
            chunk = s.recv(4096)
            if not chunk:
                return time.monotonic() - t0, got
            got += chunk
        except BlockingIOError:
            pass
        except ConnectionResetError:
            return time.monotonic() - t0, got
        try:
            s.send(data[i % len(data) : i % len(data) + 1])
        except (BrokenPipeError, ConnectionResetError):
            return time.monotonic() - t0, got
        i += 1
        time.sleep(0.1)
    raise AssertionError(f"the server kept a trickling connection open for {limit_s} s")


@pytest.fixture
def strict(app: App) -> Iterator[LiveMaster]:
    master = LiveMaster(
        app,
        body_timeout_s=1.0,
        server={"header_timeout_s": 1.0, "max_connections": 8},
    ).start()
    yield master
    master.stop()


def test_slowloris_headers_do_not_hold_a_slot(strict: LiveMaster) -> None:
    port = strict.port
    # Headers one byte at a time (an endless header line): closed at the deadline with 408.
    with connect(port) as s:
        s.sendall(f"GET /v1/queues HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n".encode())
        took, reply = trickle_until_closed(s, b"X-Slow: aaaaaaaa\r\n", 12.0)
    assert reply.startswith(b"HTTP/1.1 408"), reply
    print(f"slowloris connection closed after {took:.1f} s (header deadline 1 s)")
    # After a complete request on a keep-alive connection, the next one gets a fresh deadline.
    with connect(port) as s:
        s.sendall(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        first = s.recv(65536)
        assert first.startswith(b"HTTP/1.1 200"), first
        took, reply = trickle_until_closed(s, b"GET /v1/queues HTTP/1.1\r\nX: y\r\n", 12.0)
    assert b"408" in reply


def test_idle_connections_cannot_exhaust_the_server(strict: LiveMaster) -> None:
    port = strict.port
    idle = [connect(port) for _ in range(8)]  # the cap, each sending nothing
    try:
        time.sleep(0.2)
        # Over the cap: an immediate 503, not a hang.
        r = httpx.get(strict.url + "/healthz", timeout=10)
        assert r.status_code == 503
        # The header deadline frees the slots; the server answers again.
        wait_for(lambda: httpx.get(strict.url + "/healthz", timeout=10).status_code == 200, 15)
        for s in idle:
            s.settimeout(5)
            assert s.recv(4096).startswith(b"HTTP/1.1 408")
    finally:
        for s in idle:
            s.close()


def test_slow_body_gets_408(strict: LiveMaster, app: App) -> None:
    port = strict.port
    body = b'{"task": "add", "args": [1, 2]}'
    with connect(port) as s:
        s.sendall(
            f"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json"
            f"\r\nContent-Length: {len(body) + 100}\r\n\r\n".encode()
        )
        _, reply = trickle_until_closed(s, body, 12.0)
    assert reply.startswith(b"HTTP/1.1 408") and b"not received within" in reply, reply
    assert job_count(app) == 0


# -- event streams ----------------------------------------------------------------------------


def open_stream(port: int, rcvbuf: int | None = None, path: str = "/v1/events") -> socket.socket:
    s = socket.socket()
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.connect(("127.0.0.1", port))
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    s.setblocking(False)
    return s


def pump(socks: list[socket.socket], bufs: list[bytearray], until: Callable[[], bool]) -> None:
    sel = selectors.DefaultSelector()
    for i, s in enumerate(socks):
        sel.register(s, selectors.EVENT_READ, i)
    deadline = time.monotonic() + 30
    try:
        while not until():
            assert time.monotonic() < deadline, "event streams did not deliver in 30 s"
            for key, _ in sel.select(0.2):
                try:
                    chunk = key.fileobj.recv(1 << 16)  # type: ignore[union-attr]
                except BlockingIOError:
                    continue
                bufs[key.data] += chunk
    finally:
        sel.close()


def frames(buf: bytes) -> int:
    return buf.count(b"event: job\n")


def add_events(r: redis.Redis, app: App, n: int, info: str = "") -> None:
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        pipe.xadd(app.store.keys.events, {"job": f"j{i}", "state": "queued", "queue": "q",
                                          "info": info})  # fmt: skip
    pipe.execute()


def xread_calls(r: redis.Redis) -> int:
    stats = r.info("commandstats")
    return int(stats.get("cmdstat_xread", {}).get("calls", 0))


def test_many_streams_share_one_reader(live: LiveMaster, app: App, rclient: redis.Redis) -> None:
    clients, burst = 40, 300
    hub = live.web.state.jobq.hub
    socks = [open_stream(live.port) for _ in range(clients)]
    bufs = [bytearray() for _ in socks]
    try:
        pump(socks, bufs, lambda: all(b": connected" in b for b in bufs))
        add_events(rclient, app, 1)  # every client sees it, so every client is live
        pump(socks, bufs, lambda: all(frames(b) == 1 for b in bufs))
        reads0, hub0 = xread_calls(rclient), hub.reads
        add_events(rclient, app, burst)
        pump(socks, bufs, lambda: all(frames(b) == 1 + burst for b in bufs))
        reads, hub_reads = xread_calls(rclient) - reads0, hub.reads - hub0
        # The API stays answerable with the streams open.
        assert httpx.get(live.url + "/v1/queues", timeout=30).status_code == 200
    finally:
        for s in socks:
            s.close()
    print(f"{clients} streams x {burst} events: {reads} XREADs, hub {hub_reads}")
    # Every read was the hub's own: none per client (a per-client reader does >= 40).
    assert reads <= hub_reads + 2
    assert reads < clients // 2
    for b in bufs:  # in order, nothing lost or doubled
        assert re.findall(rb'"job":"(j\d+)"', bytes(b)) == [b"j0"] + [
            f"j{i}".encode() for i in range(burst)
        ]
    wait_for(lambda: not hub.subscribers, what="streams to unsubscribe")


def test_stream_cap(app: App) -> None:
    master = LiveMaster(app, max_streams=3).start()
    socks = [open_stream(master.port) for _ in range(3)]
    bufs = [bytearray() for _ in socks]
    try:
        pump(socks, bufs, lambda: all(b": connected" in b for b in bufs))
        r = httpx.get(master.url + "/v1/events", timeout=10)
        assert r.status_code == 503 and r.headers["retry-after"]
        assert "event streams" in r.json()["error"]
    finally:
        for s in socks:
            s.close()
    wait_for(lambda: not master.web.state.jobq.hub.subscribers, what="streams to close")
    with httpx.stream("GET", master.url + "/v1/events", timeout=10) as r:
        assert r.status_code == 200
    master.stop()


def test_slow_stream_is_dropped_not_buffered(app: App, rclient: redis.Redis) -> None:
    master = LiveMaster(app, stream_queue=50).start()
    hub = master.web.state.jobq.hub
    s = open_stream(master.port, rcvbuf=4096)  # connects, then reads nothing for a while
    buf = bytearray()
    try:
        pump([s], [buf], lambda: b": connected" in buf)
        wait_for(lambda: hub.subscribers, what="the stream to subscribe")
        (sub,) = hub.subscribers
        big = "x" * 2000
        for _ in range(20):  # ~8 MB of events, far past every socket buffer
            add_events(rclient, app, 200, big)
            if sub.overflowed:
                break
        wait_for(lambda: sub.overflowed, what="the slow stream to overflow its queue")
        assert sub.items.qsize() <= 50  # bounded, however much more arrives
        assert not hub.subscribers and hub.dropped == 1  # its slot is free already
        add_events(rclient, app, 200, big)
        assert sub.items.qsize() <= 50
        # Once the client reads, it is told to reconnect (and resume) and the stream ends.
        pump([s], [buf], lambda: b"too slow" in buf)
        wait_for(lambda: not hub.subscribers and hub.dropped == 1, what="the drop")
        metrics = httpx.get(master.url + "/metrics", timeout=30).text
        assert "jobq_event_clients_dropped_total 1" in metrics
        assert "jobq_event_clients 0" in metrics
    finally:
        s.close()
        master.stop()


# -- many queue names -------------------------------------------------------------------------


def test_queue_listing_is_paged(http: httpx.Client, app: App, rclient: redis.Redis) -> None:
    names = {f"q{i}" for i in range(1500)}
    rclient.sadd(app.store.keys.queues, *names)
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, str | int] = {"limit": 200, **({"cursor": cursor} if cursor else {})}
        r = http.get("/v1/queues", params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["queues"]) <= 400  # SSCAN's COUNT is a hint: about one page
        seen += [q["name"] for q in body["queues"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
        assert pages < 100
    assert pages > 3 and set(seen) == names
    assert http.get("/v1/queues", params={"cursor": "x"}).status_code == 422
    # Past SSCAN's 64-bit cursor space: a 400 saying what to pass, not the server's refusal.
    assert http.get("/v1/queues", params={"cursor": str(2**64)}).status_code == 400
    assert http.post("/v1/queues/q7/purge").json() == {"queue": "q7", "cancelled": 0}
    assert http.post("/v1/queues/nope/purge").status_code == 404
    assert "jobq_queues_truncated 0" in http.get("/metrics").text
