"""The checker itself, on a log written by hand against a real Valkey: it must see every kind of
violation the chaos scenarios rely on it to find (so a green row means something)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from chaos.harness import Recorder, check, now, submit_batch
from jobq import App
from jobq.model import Claimed, Outcome


def start(rec: Recorder, c: Claimed, pid: int, token: str | None = None) -> str:
    x = uuid.uuid4().hex[:12]
    rec._append(
        {"k": "start", "x": x, "job": c.id, "att": c.attempt, "tok": token or str(c.token),
         "pid": pid, "ppid": 1, "t": now()}
    )  # fmt: skip
    return x


def end(rec: Recorder, c: Claimed, x: str) -> None:
    rec._append({"k": "end", "x": x, "job": c.id, "t": now()})


def result(c: Claimed, x: str, token: str | None = None) -> bytes:
    return json.dumps({"x": x, "tok": token or str(c.token), "pid": 1, "att": c.attempt}).encode()


def test_checker_finds_lost_failed_duplicates_and_reused_tokens(app: App, tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "chaos.log")
    ids = submit_batch(app, rec, "work", [[0]] * 4)
    rec.call("submit", ["never-written"], lambda: None)  # acked, yet the broker has no such job
    rec.call("submit", ["refused"], lambda: (_ for _ in ()).throw(RuntimeError("full")))
    claimed = {c.id: c for c in app.store.claim("w", ["default"], 4, 60_000)}
    ok, failed, dup, reused = (claimed[i] for i in ids)

    x = start(rec, ok, 100)
    end(rec, ok, x)
    x = start(rec, failed, 100)
    outcomes = [
        Outcome(ok, ok=True, result=result(ok, x)),
        Outcome(failed, ok=False, error={"type": "Boom", "message": "boom"}),
    ]
    first = start(rec, dup, 100, token="0")  # ran twice although nothing hit it
    end(rec, dup, first)
    x = start(rec, dup, 200)
    end(rec, dup, x)
    outcomes.append(Outcome(dup, ok=True, result=result(dup, x)))
    start(rec, reused, 100)  # one token, two executions (a rolled-back counter)
    x = start(rec, reused, 200)
    end(rec, reused, x)
    outcomes.append(Outcome(reused, ok=True, result=result(reused, x)))
    app.store.report(outcomes)

    v = check(app, rec, drain_s=5)
    assert (v.jobs, v.lost, v.failed, v.refused) == (5, 1, 1, 1)
    assert (v.duplicates, v.unexcused_duplicates, v.stale_rejected) == (2, 2, 1)
    assert any("one fencing token handed to two executions" in p for p in v.problems)

    # A fault of the server over the whole run explains the duplicates, not the reused token.
    rec.fault("server fault", 0.0, now())
    v = check(app, rec, drain_s=5)
    assert (v.duplicates, v.unexcused_duplicates) == (2, 0)
    assert any("one fencing token" in p for p in v.problems)
    # Poison pills may fail; nothing else changes.
    assert check(app, rec, should_fail=[failed.id], drain_s=5).failed == 0
