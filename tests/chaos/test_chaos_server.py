"""Chaos scenarios that hit the broker: Valkey SIGKILL + restart, an AOF rolled back as after a
power cut, CLIENT PAUSE longer than the lease, memory full, and a worker cut off from Valkey in
its own network namespace.

Each scenario runs a Valkey of its own (harness.Server: the embedded binary, a free port, AOF
everysec as jobq's embedded default), bounded in jobs and time.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from chaos.harness import LEASE_S, Server, check, drain, now, submit_batch, submit_work, wait_for
from chaos.scenario import Scenario
from jobq import App

pytestmark = pytest.mark.timeout(240)


@contextlib.contextmanager
def server(sc: Scenario, *extra: str, **kw: object) -> Iterator[Server]:
    s = Server(sc.tmp, *extra, **kw)  # type: ignore[arg-type]
    s.start()
    sc.use(s.url)
    try:
        yield s
    finally:
        s.kill()


def ended(sc: Scenario) -> int:
    return sum(e["k"] == "end" for e in sc.rec.entries())


class Producer(threading.Thread):
    """Submits batches of `work` until stopped or `limit` jobs were tried, recording each call
    (during an outage they fail or are indeterminate, which is what the checker expects)."""

    def __init__(self, app: App, sc: Scenario, limit: int, batch: int = 20, **opt: object):
        super().__init__(daemon=True)
        self.app, self.sc, self.limit, self.batch, self.opt = app, sc, limit, batch, opt
        self.stop = threading.Event()
        self.tried = 0

    def run(self) -> None:
        while not self.stop.is_set() and self.tried < self.limit:
            submit_batch(self.app, self.sc.rec, "work", [[0.05]] * self.batch, **self.opt)
            self.tried += self.batch
            time.sleep(0.05)


@pytest.mark.parametrize(
    "leases",
    [pytest.param(0.5, marks=pytest.mark.chaos_ci), pytest.param(1.5, marks=pytest.mark.chaos)],
)
def test_valkey_sigkill_restart(scenario: Scenario, leases: float) -> None:
    """Valkey SIGKILLed mid-run and restarted from its AOF after half a lease, or after longer
    than a lease: no acked job lost, none failed (default options; a job that finished is not
    recorded expired), workers reconnect by themselves."""
    sc = scenario
    sc.faults = f"Valkey SIGKILL, down {leases * LEASE_S:g} s ({leases:g} lease), AOF restart"
    with server(sc) as s:
        ws = [sc.workers.start("-c", "4") for _ in range(2)]
        with App(s.url, prefix=sc.prefix) as app:
            producer = Producer(app, sc, limit=1200)
            producer.start()
            assert wait_for(lambda: ended(sc) >= 100, 60), "no progress before the fault"
            t = now()
            s.kill()
            time.sleep(leases * LEASE_S)
            s.start()
            sc.rec.fault("Valkey SIGKILL + restart", t, now())
            time.sleep(2)
            producer.stop.set()
            producer.join(30)
            sc.verdict = v = check(app, sc.rec)
    v.assert_ok()
    assert all(w.alive() for w in ws)


@pytest.mark.chaos
def test_aof_rollback_power_cut(scenario: Scenario) -> None:
    """The AOF cut back to an earlier point (what a power cut leaves under appendfsync
    everysec), then a restart: jobs acked before the cut point are not lost, and no fencing
    token is handed out twice (an epoch changes when the server may have lost writes)."""
    sc = scenario
    sc.faults = "AOF copied mid-run, 2 s more work, Valkey SIGKILL, AOF restored to the copy"
    with server(sc) as s:
        ws = [sc.workers.start("-c", "4") for _ in range(2)]
        with App(s.url, prefix=sc.prefix) as app:
            producer = Producer(app, sc, limit=1500)
            producer.start()
            assert wait_for(lambda: ended(sc) >= 150, 60), "no progress before the fault"
            snap = sc.tmp / "aof-snapshot"
            t_snap = now()
            with app.store.r.pipeline() as p:  # what was acked by now is in the OS page cache
                p.ping().execute()
            shutil.copytree(s.aof(), snap)
            time.sleep(2)
            s.kill()
            producer.stop.set()
            producer.join(30)
            shutil.rmtree(s.aof())
            shutil.copytree(snap, s.aof())
            s.start()
            sc.rec.fault("AOF rollback", t_snap, now())
            after = {
                i
                for c in sc.rec.entries()
                if c["k"] == "call" and c["t"] >= t_snap - 0.5  # acked within the window
                for i in c["ids"]
            }
            sc.verdict = v = check(app, sc.rec, exempt_lost=after)
    v.assert_ok()
    assert all(w.alive() for w in ws)


@pytest.mark.chaos
def test_client_pause_longer_than_the_lease(scenario: Scenario) -> None:
    """CLIENT PAUSE ALL for three leases: no job that finished is recorded as expired."""
    sc = scenario
    sc.faults = f"CLIENT PAUSE ALL {3 * LEASE_S:g} s (3 leases)"
    with server(sc) as s:
        ws = [sc.workers.start("-c", "4") for _ in range(2)]
        with App(s.url, prefix=sc.prefix) as app:
            submit_work(app, sc.rec, 400, 0.2)
            assert wait_for(lambda: ended(sc) >= 40, 60), "no progress before the fault"
            t = now()
            with s.client() as r:
                r.execute_command("CLIENT", "PAUSE", int(3 * LEASE_S * 1000), "ALL")
            time.sleep(3 * LEASE_S)
            sc.rec.fault("CLIENT PAUSE", t, now())
            sc.verdict = v = check(app, sc.rec)
    v.assert_ok()
    assert all(w.alive() for w in ws)


@pytest.mark.chaos
def test_memory_full_noeviction(scenario: Scenario) -> None:
    """maxmemory with noeviction: submits are refused with a typed BrokerFull before the wall,
    every acked job still completes (completions have room), nothing wedges, and submits
    resume once memory is freed."""
    sc = scenario
    sc.faults = "maxmemory (used + 6 MB, noeviction) filled by 4 KB jobs; then memory freed"
    with server(sc, "--maxmemory-policy", "noeviction") as s:
        with s.client() as r:
            used = int(r.info("memory")["used_memory"])
            r.config_set("maxmemory", used + 6 * 1024 * 1024)
        ws = [sc.workers.start("-c", "4") for _ in range(2)]
        pad = "x" * 4000
        with App(s.url, prefix=sc.prefix) as app:
            t, refused_in_a_row, tried = now(), 0, 0
            while refused_in_a_row < 20 and tried < 6000:
                before = len(sc.rec.entries())
                submit_batch(app, sc.rec, "work", [[0.01, pad]] * 20)
                tried += 20
                last = sc.rec.entries()[before:]
                bad = [c for c in last if c["k"] == "call" and c["st"] != "ok"]
                refused_in_a_row = refused_in_a_row + 1 if bad else 0
            sc.rec.fault("memory full", t, now())
            calls = [c for c in sc.rec.entries() if c["k"] == "call"]
            errors = sorted({c.get("err", "") for c in calls if c["st"] != "ok"})
            sc.verdict = v = check(app, sc.rec)
            v.notes.insert(0, f"submit errors: {', '.join(errors) or 'none'}")
            assert errors, f"memory never filled ({tried} jobs tried)"
            with s.client() as r:
                r.config_set("maxmemory", 0)  # the operator frees memory
            ids = submit_batch(app, sc.rec, "work", [[0.01]] * 10, op="after")
            states = [r.state.value if r else None for r in drain(app, ids, 60).values()]
            assert states == ["succeeded"] * 10, f"after memory was freed: {states}"
    v.assert_ok()
    assert errors == ["BrokerFull"], f"a full server gave {errors}, not a typed BrokerFull"
    assert all(w.alive() for w in ws), "a worker died of a full server"


# -- a worker cut off in its own network namespace --------------------------------------------


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@contextlib.contextmanager
def namespaces() -> Iterator[tuple[str, str, str]]:
    """Two namespaces joined by a veth pair: (server ns, worker ns, worker-side link). The
    addresses exist only inside them; both are deleted (with the link) whatever happens."""
    tag = uuid.uuid4().hex[:6]
    srv, wrk, link_s, link_w = f"jqs{tag}", f"jqw{tag}", f"vs{tag}", f"vw{tag}"
    try:
        ip("netns", "add", srv)
    except (subprocess.CalledProcessError, OSError) as exc:
        err = getattr(exc, "stderr", b"") or b""
        pytest.skip(f"needs root for `ip netns add` ({err.decode().strip() or exc})")
    try:
        ip("netns", "add", wrk)
        ip(
            "link",
            "add",
            link_s,
            "netns",
            srv,
            "type",
            "veth",
            "peer",
            "name",
            link_w,
            "netns",
            wrk,
        )
        ip("-n", srv, "addr", "add", "10.213.7.1/24", "dev", link_s)
        ip("-n", wrk, "addr", "add", "10.213.7.2/24", "dev", link_w)
        for ns, link in ((srv, link_s), (wrk, link_w)):
            ip("-n", ns, "link", "set", "lo", "up")
            ip("-n", ns, "link", "set", link, "up")
        yield srv, wrk, link_w
    finally:
        for ns in (wrk, srv):
            with contextlib.suppress(subprocess.CalledProcessError, OSError):
                ip("netns", "del", ns)


@pytest.mark.chaos
def test_worker_partitioned_in_a_network_namespace(scenario: Scenario) -> None:
    """Valkey and one worker in two namespaces joined by a veth; the link goes down for three
    leases. The cut-off worker notices and logs it within a lease, starts nothing it no longer
    owns; its jobs run elsewhere; nothing is lost or failed."""
    sc = scenario
    sc.faults = f"veth link down {3 * LEASE_S:g} s between Valkey and one worker (netns)"
    with namespaces() as (srv, wrk, link_w):
        s = Server(sc.tmp, wrapper=["ip", "netns", "exec", srv], bind="10.213.7.1", unix=True)
        s.start()
        sc.use(s.url)  # the test and the healthy worker: Valkey's unix socket
        try:
            cut = sc.workers.start("-c", "4", url=s.tcp_url, wrapper=["ip", "netns", "exec", wrk])
            healthy = sc.workers.start("-c", "4")
            with App(s.url, prefix=sc.prefix) as app:
                submit_work(app, sc.rec, 300, 0.2)
                assert wait_for(lambda: ended(sc) >= 30, 60), "no progress before the fault"
                before = len(cut.log())
                t = now()
                ip("-n", wrk, "link", "set", link_w, "down")
                time.sleep(3 * LEASE_S)
                noticed = cut.log()[before:]
                ip("-n", wrk, "link", "set", link_w, "up")
                sc.rec.fault("partition", t, now(), [cut.pid])
                sc.verdict = v = check(app, sc.rec)
        finally:
            s.kill()
    v.assert_ok()
    assert "WARNING" in noticed or "ERROR" in noticed, "the cut-off worker logged nothing"
    assert cut.alive() and healthy.alive()
