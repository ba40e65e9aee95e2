"""The one name rule (jobq.names) in the Python API, the CLI and HTTP, and control characters
escaped in logs: hostile names get a clear error naming the field, never a hijacked periodic
tick, a forged log line, an unviewable job or a 500."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from live_master import LiveMaster

from jobq import App
from jobq.cli import main
from jobq.errors import JobqError
from jobq.logs import EscapeControls
from jobq.maintenance import fire_periodic
from jobq.model import JobSpec
from jobq.names import MAX_NAME_LEN, InvalidName, check_name, escape_controls
from jobq.periodic import PeriodicSpec

pytestmark = pytest.mark.timeout(60)

JSON = {"Content-Type": "application/json"}
BAD = [
    ("", "empty"),
    ("a/b", "'/'"),
    ("a,b", "','"),
    ("line\nforged", "U+000A"),
    ("esc\x1b[31m", "U+001B"),
    ("del\x7f", "U+007F"),
    ("c1\x85", "U+0085"),
    ("sep\u2028", "U+2028"),
    ("lone\ud800", "surrogate"),
    ("x" * (MAX_NAME_LEN + 1), "at most"),
]


@pytest.mark.parametrize(("value", "why"), BAD)
def test_rule_refuses_with_field_character_and_fix(value: str, why: str) -> None:
    with pytest.raises(InvalidName) as exc:
        check_name("queue", value)
    msg = str(exc.value)
    assert msg.startswith("queue") and why in msg
    assert "\n" not in msg and "\x1b" not in msg and escape_controls(msg) == msg
    assert isinstance(exc.value, ValueError) and isinstance(exc.value, JobqError)


@pytest.mark.parametrize("value", ["default", "emails-high", "a.b:c@d+e=f", "é-unicode", "x" * 200])
def test_rule_accepts_ordinary_names(value: str) -> None:
    assert check_name("queue", value) == value


def test_escape_controls() -> None:
    assert escape_controls("plain") == "plain"
    assert escape_controls("a\nb\r\x1b\ud800\u2028\tc") == "a\\nb\\r\\x1b\\ud800\\u2028\tc"


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"job_id": "periodic:nightly:1"}, "job_id"),
        ({"job_id": "x/cancel"}, "job_id"),
        ({"job_id": "bad\ud800"}, "job_id"),
        ({"queue": "@worker:w1"}, "queue"),
        ({"queue": "@group:g"}, "queue"),
        ({"queue": "a,b"}, "queue"),
        ({"worker": "w\n1"}, "worker"),
        ({"worker_group": "g/1"}, "worker_group"),
        ({"unique_key": "k\n"}, "unique_key"),
        ({"concurrency_key": ""}, "concurrency_key"),
        ({"depends_on": ["a,b"]}, "depends_on"),
        ({"worker": "w1", "fallback": "@group:x"}, "fallback"),
    ],
)
def test_submit_refuses_bad_names_before_writing(
    app: App, options: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidName, match=rf"^{field}"):
        app.submit("t", **options)
    written = app.store.r.keys(app.keys.base.replace("{", "\\{").replace("}", "\\}") + "*")
    # Connecting writes the token epoch (topology.py), before and apart from the submit.
    assert set(written) <= {app.keys.epoch.encode(), app.keys.token.encode()}


def test_task_names_are_checked_at_registration_and_submit(app: App) -> None:
    with pytest.raises(InvalidName, match=r"^task name"):
        app.task(name="evil\nINFO forged")(lambda: None)
    with pytest.raises(InvalidName, match=r"^queue"):
        app.task(queue="@worker:w")(lambda: None)
    with pytest.raises(InvalidName, match=r"^task"):
        app.submit("evil\ntask")
    with pytest.raises(InvalidName, match=r"^periodic name"):
        PeriodicSpec("a,b", "t", every_s=1)


def test_prepared_specs_are_checked(app: App) -> None:
    bad = JobSpec("periodic:x:1", "t", "default", b"[[],{}]")
    with pytest.raises(InvalidName, match="periodic"):
        app.submit_specs([bad])


def test_periodic_tick_cannot_be_hijacked(app: App) -> None:
    """Today an early submit of `periodic:<name>:<due>` made the tick a no-op (same id)."""
    spec = PeriodicSpec("nightly", "t", every_s=60)
    now = app.store.server_time_ms()
    app.store.upsert_periodic(spec, now)
    due = spec.next_after(now)
    with pytest.raises(InvalidName):
        app.submit("t", job_id=spec.job_id(due), args=["attacker"])
    assert fire_periodic(app.store, due) == 1
    rec = app.store.get_job(spec.job_id(due))
    assert rec is not None and rec.task == "t"


def test_lookups_of_impossible_ids_say_not_found(app: App) -> None:
    assert app.store.get_job("lone\ud800") is None
    assert app.store.get_state("lone\ud800") is None
    assert app.job("lone\ud800").status() is None


def test_log_lines_cannot_be_forged() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(EscapeControls())
    log = logging.getLogger("jobq.test-names")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("job %s failed", "x\nCRITICAL jobq: all good\x1b[2J")
    finally:
        log.removeHandler(handler)
    lines = out.getvalue().splitlines()
    assert lines == ["job x\\nCRITICAL jobq: all good\\x1b[2J failed"]


def test_cli_refuses_bad_names_with_usage_exit(url: str, prefix: str) -> None:
    runner = CliRunner()
    env = {"JOBQ_URL": url, "JOBQ_PREFIX": prefix}
    r = runner.invoke(main, ["submit", "t", "--job-id", "periodic:n:1"], env=env)
    assert r.exit_code == 2, r.output
    assert "job_id" in r.output and "periodic" in r.output
    r = runner.invoke(main, ["submit", "t", "--queue", "a/b"], env=env)
    assert r.exit_code == 2 and "queue 'a/b' has '/'" in r.output
    r = runner.invoke(main, ["worker", "nowhere:app", "--name", "w,1"], env=env)
    assert r.exit_code == 2 and "--name" in r.output


@pytest.fixture
def http(app: App) -> Iterator[httpx.Client]:
    master = LiveMaster(app).start()
    with httpx.Client(base_url=master.url, timeout=30) as c:
        yield c
    master.stop()


def test_http_refuses_bad_names_naming_the_field(http: httpx.Client) -> None:
    for body, field in [
        ({"task": "t", "job_id": "periodic:nightly:1"}, "job_id"),
        ({"task": "t\nforged"}, "task"),
        ({"task": "t", "unique_key": "a\u2028b"}, "unique_key"),
        ({"task": "t", "concurrency_key": "a/b"}, "concurrency_key"),
        ({"task": "t", "queue": "@group:g"}, "queue"),
        ({"task": "t", "depends_on": ["p\ud800"]}, "depends_on"),
    ]:
        # (ASCII-escaped JSON: a lone surrogate travels as the escape \ud800)
        r = http.post("/v1/jobs", content=json.dumps(body), headers=JSON)
        assert r.status_code == 422, (body, r.text)
        assert field in r.json()["error"], r.text
    r = http.post("/schedule", json={"task_id": "periodic:n:1", "task_type": "t"})
    assert r.status_code == 400 and "periodic" in r.json()["error"]
    # An impossible id in a path is simply not found (was a 500 on the encoding).
    r = http.get("/v1/jobs/%ED%A0%80")
    assert r.status_code in (400, 404), r.text
    r = http.get("/v1/jobs?queue=%ED%A0%80")
    assert r.status_code in (200, 400, 422), r.text


def test_http_names_refused_by_the_core_are_400(http: httpx.Client) -> None:
    body = {"task": "t\nforged", "every": 60}
    r = http.put("/v1/periodic/nightly", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"].startswith("task 't\\nforged' has U+000A")
