"""The chaos suite's recorder and checker, and the workers it runs.

Recorder: the tasks (tests/chaos/chaos_tasks.py) append every execution to the scenario's log;
the scenario appends every client call (ok / failed with its error type / indeterminate) and
every fault it injects (a time window and the processes it hit, or all of them) to the same log.

Checker: reads the log and the broker's final state of every job and counts
- lost: an acknowledged submit with no committed outcome (the job vanished or never finished);
- failed: a job that ended failed or cancelled although it should have succeeded;
- duplicates: executions beyond the first, and those of jobs no fault touched (a violation);
- stale: executions that ran to their end under a token that is not the committed one (their
  write was refused), and violations of fencing: a (job, token) handed to two executions, or a
  committed outcome from an execution that was not the job's newest;
- recovery: from the end of each fault to the first execution that finished after it and
  committed (the worst over the faults; reported, never asserted).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ha
import redis
from procs import JobqProcess

from jobq import App, JobState
from jobq.embedded import find_binary
from jobq.model import JobSpec
from jobq.states import TERMINAL

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent
ROOT = TESTS.parent

#: Short leases so expiry-driven recovery happens within seconds; heartbeats well inside them.
SHORT_LEASES = {
    "JOBQ_LEASE_MS": "2000",
    "JOBQ_HEARTBEAT_MS": "250",
    "JOBQ_TICK_MS": "100",
    "JOBQ_LEADER_MS": "1000",
}
LEASE_S = 2.0
#: Every scenario must drain within this bound after its last fault, or it is wedged.
DRAIN_S = 90.0

#: Exceptions after which a client call may or may not have taken effect.
INDETERMINATE = ("ConnectionError", "TimeoutError", "BrokerUnavailable", "BusyLoadingError")
#: Exceptions that say the call was refused and did nothing (jobq.BrokerFull: memory is full).
REFUSALS = ("BrokerFull", "OutOfMemoryError")


def now() -> float:
    return time.monotonic()


class Recorder:
    """Appends client calls and faults to the scenario log the tasks write their executions to."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.touch()

    def _append(self, entry: dict[str, Any]) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (json.dumps(entry) + "\n").encode())
        finally:
            os.close(fd)

    def fault(
        self, what: str, t0: float, t1: float | None = None, pids: Iterable[int] | None = None
    ) -> None:
        """A fault from t0 to t1 that hit `pids` (their jobs may run twice), or every process."""
        self._append(
            {
                "k": "fault",
                "what": what,
                "t0": t0,
                "t1": now() if t1 is None else t1,
                "pids": None if pids is None else sorted(set(pids)),
            }
        )

    def call(self, op: str, job_ids: Sequence[str], fn: Callable[[], Any]) -> Any:
        """Run one client call for `job_ids`, record ok / failed / indeterminate; never raise."""
        t = now()
        try:
            out = fn()
        except Exception as exc:
            kind = type(exc).__name__
            names = {c.__name__ for c in type(exc).__mro__}
            # A refusal (the server is full) is definite, whatever BrokerFull derives from.
            status = "indeterminate" if names & set(INDETERMINATE) else "failed"
            if kind in REFUSALS:
                status = "failed"
            self._append(
                {"k": "call", "op": op, "ids": list(job_ids), "st": status, "err": kind,
                 "msg": str(exc)[:300], "t": t}
            )  # fmt: skip
            return None
        self._append({"k": "call", "op": op, "ids": list(job_ids), "st": "ok", "t": t})
        return out

    def entries(self) -> list[dict[str, Any]]:
        out = []
        for line in self.path.read_text().splitlines():
            with contextlib.suppress(ValueError):  # a line cut by a SIGKILL mid-write
                out.append(json.loads(line))
        return out


def submit_batch(
    app: App,
    rec: Recorder,
    task: str,
    args: list[list[Any]],
    op: str = "submit",
    ids: list[str] | None = None,
    **options: Any,
) -> list[str]:
    """Submit one job per args list with ids chosen here (so an indeterminate submit can be
    looked up afterwards), in one round trip; returns the ids tried."""
    ids = ids or [f"c{uuid.uuid4().hex[:16]}" for _ in args]
    specs: list[JobSpec] = [
        app.spec(task, a, {}, {**options, "job_id": i}) for a, i in zip(args, ids, strict=True)
    ]
    rec.call(op, ids, lambda: app.submit_specs(specs))
    return ids


def submit_work(
    app: App, rec: Recorder, n: int, seconds: float, task: str = "work", **opt: Any
) -> list[str]:
    """Submit `n` jobs of `task(seconds)` in batches of 100; returns the ids tried."""
    ids: list[str] = []
    for i in range(0, n, 100):
        ids += submit_batch(app, rec, task, [[seconds]] * min(100, n - i), **opt)
    return ids


def started_on(rec: Recorder, pid: int) -> bool:
    """Whether a job is running (started, not ended) in the worker `pid` or one of its slots."""
    entries = rec.entries()
    ended = {e["x"] for e in entries if e["k"] == "end"}
    return any(
        e["k"] == "start" and pid in (e["pid"], e["ppid"]) and e["x"] not in ended for e in entries
    )


def wait_for(check: Callable[[], bool], timeout: float) -> bool:
    deadline = now() + timeout
    while now() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


# -- servers -------------------------------------------------------------------------------


class Server:
    """A private Valkey (the embedded binary) the scenario may kill, pause, fill, roll back or
    run inside a network namespace. Never the machine's own Redis."""

    def __init__(self, tmp: Path, *extra: str, wrapper: Sequence[str] = (), bind: str = "127.0.0.1",
                 unix: bool = False) -> None:  # fmt: skip
        self.port = free_port()
        self.dir = tmp / f"valkey-{self.port}"
        self.dir.mkdir()
        self.extra, self.wrapper, self.bind = list(extra), list(wrapper), bind
        # A short path: a unix socket's name is limited to 107 bytes.
        self.sock = Path(tempfile.gettempdir()) / f"jqchaos-{self.port}.sock" if unix else None
        self.proc: subprocess.Popen[bytes] | None = None
        # Off loopback Valkey refuses clients without a password (protected mode): give it one.
        self.password = uuid.uuid4().hex if bind != "127.0.0.1" else None
        auth = f":{self.password}@" if self.password else ""
        self.tcp_url = f"redis://{auth}{bind}:{self.port}/0"
        self.url = f"unix://{auth}{self.sock}?db=0" if self.sock else self.tcp_url

    def start(self) -> None:
        args = [*self.wrapper, find_binary(), "--port", str(self.port), "--bind", self.bind,
                "--dir", str(self.dir), "--save", "", "--logfile", str(self.dir / "valkey.log"),
                "--appendonly", "yes", "--appendfsync", "everysec",
                "--auto-aof-rewrite-percentage", "0", *self.extra]  # fmt: skip
        if self.sock:
            args += ["--unixsocket", str(self.sock), "--unixsocketperm", "700"]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = now() + 20
        while now() < deadline:
            try:
                with self.client(socket_connect_timeout=0.5) as r:
                    r.ping()
                return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError(f"chaos Valkey did not start on {self.url}")

    def client(self, **kwargs: Any) -> redis.Redis:
        return redis.Redis.from_url(self.url, **kwargs)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None
        if self.sock:
            self.sock.unlink(missing_ok=True)

    def aof(self) -> Path:
        return self.dir / "appendonlydir"


def free_port() -> int:
    """A free loopback port outside the ephemeral range (see `ha.free_port`)."""
    return ha.free_port()


# -- workers ---------------------------------------------------------------------------------


class Workers:
    """`jobq worker chaos_tasks:app` subprocesses writing to one scenario log."""

    def __init__(self, tmp: Path, url: str, prefix: str, log: Path, env: dict[str, str]) -> None:
        self.tmp, self.url, self.prefix, self.log, self.env = tmp, url, prefix, log, env
        self.started: list[JobqProcess] = []

    def environ(self, url: str | None = None, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        path = [str(HERE), str(TESTS), env.get("PYTHONPATH", "")]
        if extra.get("CHAOS_SKEW_S") or extra.get("CHAOS_SKEW_FILE"):
            path.insert(0, str(HERE / "skew"))
        env.update(self.env)
        env.update(
            JOBQ_URL=url or self.url,
            JOBQ_PREFIX=self.prefix,
            CHAOS_LOG=str(self.log),
            PYTHONPATH=os.pathsep.join(path),
            **extra,
        )
        return env

    def start(
        self,
        *args: str,
        url: str | None = None,
        wrapper: Sequence[str] = (),
        new_session: bool = False,
        ready: bool = True,
        **env: str,
    ) -> JobqProcess:
        """Start one worker (`wrapper` e.g. `ip netns exec NS`); wait until it serves."""
        n = len(self.started)
        log_path = self.tmp / f"worker-{n}.log"
        argv = [*wrapper, sys.executable, "-m", "jobq", "worker", "chaos_tasks:app"]
        with open(log_path, "wb") as out:
            proc = subprocess.Popen(
                [*argv, *args],
                env=self.environ(url, **env),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=new_session,
                cwd=self.tmp,
            )
        w = JobqProcess(f"worker-{n}", proc, log_path, wait_s=60)
        self.started.append(w)
        if ready:
            w.wait_log(" serving ", timeout=60)
        return w

    def master(self, *args: str, ready: str = "master ", **env: str) -> JobqProcess:
        """Start `jobq master ARGS` with the workers' environment; wait for its log line."""
        n = len(self.started)
        argv = [sys.executable, "-m", "jobq", "master", *args]
        m = JobqProcess.spawn(f"master-{n}", argv, self.tmp / f"master-{n}.log",
                              self.environ(**env), cwd=self.tmp, wait_s=60)  # fmt: skip
        self.started.append(m)
        m.wait_log(ready)
        return m

    def alive(self) -> list[JobqProcess]:
        return [w for w in self.started if w.alive()]

    def close(self) -> None:
        for w in self.started:
            if w.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(w.pid, signal.SIGCONT)
                    w.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                w.proc.wait(30)
            print(f"--- {w.name} pid {w.pid} (exit {w.proc.returncode}) ---\n{w.log()[-2000:]}")


def children(pid: int) -> list[int]:
    """Direct children of `pid` (a process pool's slots)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


# -- the checker -----------------------------------------------------------------------------


@dataclass
class Verdict:
    """What the checker found; `problems` lists every violation in words."""

    jobs: int = 0
    lost: int = 0
    failed: int = 0
    duplicates: int = 0
    unexcused_duplicates: int = 0
    stale_rejected: int = 0
    recovery_s: float | None = None
    commit_times: list[float] = field(default_factory=list)
    """When each execution whose outcome committed ended (sorted): the scenarios' gaps."""
    wedged: int = 0
    indeterminate: int = 0
    refused: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    fencing: dict[str, list[str]] = field(default_factory=dict)
    """Fencing violations by kind: the jobs they hit, with an example each."""

    def flag(self, kind: str, example: str) -> None:
        self.fencing.setdefault(kind, []).append(example)

    def assert_ok(self) -> None:
        assert not self.problems, "; ".join(self.problems)


def drain(app: App, ids: Iterable[str], timeout: float = DRAIN_S) -> dict[str, Any]:
    """Wait (bounded) until every job that exists is terminal; return id -> record or None."""
    ids = list(dict.fromkeys(ids))
    deadline = now() + timeout
    pending = ids
    while pending and now() < deadline:
        try:
            states = app.store.get_states(pending)
        except redis.RedisError:
            time.sleep(0.5)
            continue
        pending = [
            i for i, s in zip(pending, states, strict=True) if s is not None and s not in TERMINAL
        ]
        if pending:
            time.sleep(0.25)
    return {i: app.store.get_job(i) for i in ids}


def check(
    app: App,
    rec: Recorder,
    *,
    should_fail: Iterable[str] = (),
    drain_s: float = DRAIN_S,
    exempt_lost: Iterable[str] = (),
) -> Verdict:
    """Drain, then check every job the scenario tried to submit (see the module docstring).

    `should_fail`: jobs expected to end failed (poison pills); every other acknowledged job must
    succeed. `exempt_lost`: acknowledged jobs whose loss the scenario documents (the AOF
    rollback's stated everysec window): counted in the notes, not as lost.
    """
    calls = [e for e in rec.entries() if e["k"] == "call"]
    acked: set[str] = set()
    maybe: set[str] = set()
    v = Verdict()
    for c in calls:
        if c["st"] == "ok":
            acked.update(c["ids"])
        elif c["st"] == "indeterminate":
            maybe.update(c["ids"])
        else:
            v.refused += len(c["ids"])
    maybe -= acked
    should_fail, exempt = set(should_fail), set(exempt_lost)
    final = drain(app, acked | maybe, drain_s)
    entries = rec.entries()  # after the drain: every execution the scenario caused
    faults = [e for e in entries if e["k"] == "fault"]
    starts = [e for e in entries if e["k"] == "start"]
    ends = {e["x"]: e for e in entries if e["k"] == "end"}
    v.jobs, v.indeterminate = len(acked), len(maybe)

    by_job: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for s in starts:
        by_job[s["job"]].append(s)

    lost_ex = 0
    committed_x: set[str | None] = set()
    for job_id in sorted(acked | maybe):
        r = final.get(job_id)
        if r is None:
            if job_id in acked:
                if job_id in exempt:
                    lost_ex += 1
                else:
                    v.lost += 1
            continue
        if r.state not in TERMINAL:
            v.wedged += 1
            if job_id in acked:
                v.lost += 1
            continue
        if job_id not in should_fail and r.state != JobState.SUCCEEDED:
            v.failed += 1
            if v.failed <= 3:
                err = (r.error or {}).get("type", r.state.value)
                v.notes.append(f"{job_id} ended {r.state.value} ({err})")
        if r.state == JobState.SUCCEEDED and r.result is not None:
            committed_x.add(_check_commit(app, r, by_job.get(job_id, []), v))
    if lost_ex:
        v.notes.insert(0, f"{lost_ex} acked submits inside the stated everysec loss window gone")

    for job_id, runs in by_job.items():
        _check_tokens(job_id, runs, v)
        if len(runs) > 1:
            v.duplicates += len(runs) - 1
            if not any(_touched(run, ends, faults) for run in runs[:-1]):
                v.unexcused_duplicates += len(runs) - 1
                if v.unexcused_duplicates <= 3:
                    v.notes.append(_explain(job_id, runs, faults))
    committed = {
        r.id: str(r.token) for r in final.values() if r is not None and r.token is not None
    }
    v.stale_rejected = sum(
        1 for s in starts if s["x"] in ends and committed.get(s["job"]) not in (None, s["tok"])
    )
    v.commit_times = sorted(ends[x]["t"] for x in committed_x if x in ends)
    v.recovery_s = _recovery(faults, [ends[x] for x in committed_x if x in ends])

    if v.lost:
        v.problems.append(f"{v.lost} acknowledged jobs lost ({v.wedged} stuck, not terminal)")
    if v.failed:
        v.problems.append(f"{v.failed} jobs failed that should have succeeded")
    if v.unexcused_duplicates:
        v.problems.append(f"{v.unexcused_duplicates} duplicate executions no fault explains")
    if v.wedged and not v.lost:
        v.problems.append(f"{v.wedged} jobs never drained (wedge)")
    for kind, hits in v.fencing.items():
        v.problems.append(f"{len(hits)} jobs: {kind} (e.g. {hits[0]})")
    v.notes = v.notes[:8]
    return v


def _check_commit(app: App, r: Any, runs: list[dict[str, Any]], v: Verdict) -> str | None:
    """The committed outcome must come from the job's newest execution, under its token;
    returns the committed execution's name."""
    try:
        out = app.serializer.decode_result(r.result)
    except Exception:
        return None
    if not isinstance(out, dict) or "x" not in out:
        return None
    if str(r.token) != str(out["tok"]):
        v.flag("committed token is not its result's", f"{r.id} {r.token} vs {out['tok']}")
    newest = max(runs, key=_token_order, default=None)
    if newest is not None and out["x"] != newest["x"]:
        v.flag("a stale execution's result committed, not the newest's", r.id)
    return str(out["x"])


def _token_order(run: dict[str, Any]) -> tuple[int, float]:
    """Tokens increase per attempt (an epoch may lead them: compare digit runs in order)."""
    digits = "".join(c if c.isdigit() else " " for c in run["tok"]).split()
    return (int("".join(d.zfill(20) for d in digits) or 0), run["t"])


def _check_tokens(job_id: str, runs: list[dict[str, Any]], v: Verdict) -> None:
    toks = [s["tok"] for s in runs]
    if len(set(toks)) != len(toks):
        v.flag("one fencing token handed to two executions", f"{job_id} tokens {toks}")
    ordered = sorted(runs, key=lambda s: s["t"])
    for i, s in enumerate(ordered):
        if any(_token_order(o) > _token_order(s) for o in ordered[:i]):
            v.flag("an attempt started after a newer one (a job its worker no longer owned)",
                   f"{job_id} attempt {s['att']} on pid {s['pid']}")  # fmt: skip
            break


def _touched(run: dict[str, Any], ends: dict[str, Any], faults: list[dict[str, Any]]) -> bool:
    """Whether a fault hit this execution: it overlapped the fault's window, on a process the
    fault hit (or any process, for faults of the server or the network)."""
    # A body that ended shortly before the fault may still have had its outcome in flight
    # (the reporter batches): it counts as hit if it ended within a lease of the fault.
    end = ends.get(run["x"], {}).get("t", float("inf")) + LEASE_S
    for f in faults:
        if f["pids"] is None:  # the server or the network: whatever overlapped the window
            if run["t"] <= f["t1"] and end >= f["t0"]:
                return True
        elif (run["pid"] in f["pids"] or run["ppid"] in f["pids"]) and (
            # A process that was hit: what it was running then (or started within a lease of
            # the hit, while its lease still held). Starting later is a job it no longer owned.
            run["t"] <= min(f["t1"], f["t0"] + LEASE_S) and end >= f["t0"]
        ):
            return True
    return False


def _explain(job_id: str, runs: list[dict[str, Any]], faults: list[dict[str, Any]]) -> str:
    """Words for an unexcused duplicate; names a process that started the job after a fault
    had cost it the lease (a prefetched job it no longer owned)."""
    for r in runs[:-1]:
        for f in faults:
            hit = f["pids"] is not None and (r["pid"] in f["pids"] or r["ppid"] in f["pids"])
            if hit and r["t"] > min(f["t1"], f["t0"] + LEASE_S):
                return (
                    f"{job_id}: attempt {r['att']} started by pid {r['pid']} "
                    f"{r['t'] - f['t0']:.1f} s after the {f['what']} (lease gone), then ran again"
                )
    return (
        f"{job_id} ran {len(runs)}x untouched by a fault: attempts "
        f"{[r['att'] for r in runs]} on pids {[r['pid'] for r in runs]}"
    )


def _recovery(faults: list[dict[str, Any]], ends: list[dict[str, Any]]) -> float | None:
    """Longest wait, over the faults, from a fault's end to the next execution that finished
    and committed (a zombie finishing a job it lost is not throughput)."""
    times = sorted(e["t"] for e in ends)
    worst = None
    for f in faults:
        after = next((t for t in times if t >= f["t1"]), None)
        if after is None:
            continue
        gap = after - f["t1"]
        worst = gap if worst is None else max(worst, gap)
    return worst
