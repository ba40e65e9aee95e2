"""Inputs jobq used to take silently each get a clear error (or their documented behaviour),
through the Python API, HTTP and the CLI, against a real server: NaN and infinities, a
timeout of 0, fractional priorities, empty names, job ids a URL or a shell cannot carry, a job
id reused for another task, and removing a periodic job defined in code."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from conftest import on_every_layout
from live_master import LiveMaster

from jobq import App
from jobq.cli import main
from jobq.errors import InvalidOption, JobIdConflict
from jobq.names import InvalidName
from jobq.periodic import PeriodicSpec
from jobq.tasks import JobContext

pytestmark = pytest.mark.timeout(120)

NAN, INF = float("nan"), float("inf")
JSON = {"Content-Type": "application/json"}

#: (options, the field the error names, a piece of its message)
REFUSED: list[tuple[dict[str, Any], str, str]] = [
    ({"timeout": 0}, "timeout", "must be > 0 seconds, or None for no limit"),
    ({"timeout": -1}, "timeout", "must be > 0 seconds, or None for no limit"),
    ({"timeout": NAN}, "timeout", "finite"),
    ({"timeout": INF}, "timeout", "finite"),
    ({"delay": NAN}, "delay", "finite"),
    ({"delay": INF}, "delay", "finite"),
    ({"delay": 1e12}, "delay", "10 years"),
    ({"backoff": NAN}, "backoff", "finite"),
    ({"backoff": -1}, "backoff", "outside"),
    ({"priority": NAN}, "priority", "finite"),
    ({"priority": 1.5}, "priority", "whole number"),
    ({"priority": 5000}, "priority", "outside"),
    ({"retries": INF}, "retries", "finite"),
    ({"retries": True}, "retries", "number, not bool"),
    ({"result_ttl": NAN}, "result_ttl", "finite"),
    ({"result_ttl": -5}, "result_ttl", "outside"),
    ({"eta": NAN}, "eta", "finite"),
    ({"eta": -INF}, "eta", "finite"),
    ({"concurrency_key": "k", "concurrency_limit": NAN}, "concurrency_limit", "finite"),
    ({"queue": ""}, "queue", "empty"),
    ({"worker": ""}, "worker", "empty"),
    ({"worker_group": ""}, "worker_group", "empty"),
    ({"job_id": "a/b"}, "job_id", "ASCII letters, digits and - _ . : @ + ="),
    ({"job_id": "a b"}, "job_id", "ASCII letters, digits and - _ . : @ + ="),
    ({"job_id": "what?x=1"}, "job_id", "'?'"),
    ({"job_id": "50%"}, "job_id", "'%'"),
    ({"job_id": "caf\u00e9"}, "job_id", "ASCII letters"),
]


@on_every_layout
@pytest.mark.parametrize(("options", "field", "why"), REFUSED)
def test_python_api_refuses_with_the_field_named(
    app: App, options: dict[str, Any], field: str, why: str
) -> None:
    with pytest.raises((InvalidOption, InvalidName)) as exc:
        app.submit("anything", [1], **options)
    msg = str(exc.value)
    assert msg.startswith(field) and why in msg, msg
    assert isinstance(exc.value, ValueError)  # both are ValueErrors as well as JobqErrors
    assert app.queue_info() == [] or all(q.queued == 0 for q in app.queue_info())


@on_every_layout
def test_documented_edge_values_are_accepted(app: App) -> None:
    """None = no limit; result_ttl 0 = kept forever; a delay <= 0 or an eta in the past = now;
    a whole float is a whole number."""
    assert app.submit("t", timeout=None).info().state == "queued"
    assert app.submit("t", result_ttl=0).info().state == "queued"
    assert app.submit("t", delay=-5).info().state == "queued"
    assert app.submit("t", eta=0).info().state == "queued"
    assert app.submit("t", priority=3.0).info().priority == 3
    assert app.submit("t", timeout=0.5).info().timeout_ms == 500


@on_every_layout
def test_task_defaults_are_held_to_the_same_rule(app: App) -> None:
    @app.task(timeout=0)
    def instant() -> None: ...

    @app.task(priority=NAN)  # type: ignore[arg-type]
    def unordered() -> None: ...

    with pytest.raises(InvalidOption, match="timeout must be > 0"):
        instant.submit()
    with pytest.raises(InvalidOption, match="priority must be a finite number"):
        unordered.submit()
    # An explicit, valid option overrides the bad default.
    assert instant.submit(timeout=1).info().timeout_ms == 1000


def test_progress_and_periodic_intervals_refuse_nan() -> None:
    ctx = JobContext("j", 1, "1", "default")
    for bad in (NAN, INF, -0.1, 1.5):
        with pytest.raises(InvalidOption, match="progress"):
            ctx.progress(bad)
    assert ctx.progress(0.5) is False  # (no app: nothing to record)
    for bad in (NAN, INF, 0, True):
        with pytest.raises(InvalidOption, match="every must be"):
            PeriodicSpec("p", "t", every_s=bad)


@on_every_layout
def test_job_id_reused_for_another_task_is_refused(app: App) -> None:
    first = app.submit("resize", [1], job_id="order-7")
    # The same task again: that job (the idempotent submit), whatever the arguments.
    again = app.submit("resize", [2], job_id="order-7")
    assert again.id == first.id == "order-7"
    with pytest.raises(JobIdConflict) as exc:
        app.submit("delete_account", [1], job_id="order-7")
    assert "'resize'" in str(exc.value) and "'delete_account'" in str(exc.value)
    assert (exc.value.existing_task, exc.value.task) == ("resize", "delete_account")
    rec = app.job("order-7").info()
    assert (rec.task, rec.state) == ("resize", "queued")  # nothing changed


@on_every_layout
def test_job_id_conflict_refuses_the_whole_batch(app: App) -> None:
    app.submit("a", job_id="taken")
    specs = [
        app.spec("b", (), {}, {"job_id": "fresh"}),
        app.spec("b", (), {}, {"job_id": "taken"}),
    ]
    if app.store.partitions == 1:  # one script call: nothing of the batch is written
        with pytest.raises(JobIdConflict):
            app.submit_specs(specs)
        assert app.job("fresh").status() is None
    # Within one batch too: the second use of an id for another task.
    twice = [app.spec("b", (), {}, {"job_id": "dup"}), app.spec("c", (), {}, {"job_id": "dup"})]
    with pytest.raises(JobIdConflict, match="'b', not 'c'"):
        app.submit_specs(twice)


# -- HTTP ---------------------------------------------------------------------------------------


@pytest.fixture
def http(app: App) -> Iterator[httpx.Client]:
    master = LiveMaster(app).start()
    with httpx.Client(base_url=master.url, timeout=30) as c:
        yield c
    master.stop()


@on_every_layout
def test_http_refuses_bad_numbers_and_ids_naming_the_field(http: httpx.Client) -> None:
    for fields, field in [
        ('"timeout": 0', "timeout"),
        ('"timeout": NaN', "timeout"),
        ('"delay": Infinity', "delay"),
        ('"backoff": NaN', "backoff"),
        ('"priority": NaN', "priority"),
        ('"priority": 1.5', "priority"),
        ('"result_ttl": NaN', "result_ttl"),
        ('"queue": ""', "queue"),
        ('"worker": ""', "worker"),
        ('"job_id": "a b"', "job_id"),
        ('"job_id": "a?b"', "job_id"),
    ]:
        body = '{"task": "t", ' + fields + "}"
        r = http.post("/v1/jobs", content=body, headers=JSON)
        assert r.status_code == 422, (body, r.text)
        named = [f["field"] for f in r.json().get("fields", [])] or [r.json()["error"]]
        assert any(field in f for f in named), (body, r.text)


@on_every_layout
def test_http_job_id_conflict_is_409_naming_both_tasks(http: httpx.Client) -> None:
    r = http.post("/v1/jobs", json={"task": "resize", "job_id": "h-1"})
    assert r.status_code == 201, r.text
    r = http.post("/v1/jobs", json={"task": "resize", "args": [9], "job_id": "h-1"})
    assert (r.status_code, r.json()["id"]) == (201, "h-1")  # idempotent
    r = http.post("/v1/jobs", json={"task": "wipe", "job_id": "h-1"})
    assert r.status_code == 409, r.text
    assert "job_id" in r.json()["error"] and "'resize'" in r.json()["error"]
    assert "'wipe'" in r.json()["error"]
    # The classic endpoint: a clear 400, and the same task again is still fine.
    r = http.post("/schedule", json={"task_id": "s-1", "task_type": "resize"})
    assert r.status_code == 200, r.text
    r = http.post("/schedule", json={"task_id": "s-1", "task_type": "resize", "x": 2})
    assert r.status_code == 200, r.text
    r = http.post("/schedule", json={"task_id": "s-1", "task_type": "wipe"})
    assert r.status_code == 400 and "'resize'" in r.json()["error"], r.text
    r = http.post("/schedule", json={"task_id": "a/b", "task_type": "resize"})
    assert r.status_code == 400 and "job id may use only" in r.json()["error"], r.text


# -- CLI ----------------------------------------------------------------------------------------


@on_every_layout
def test_cli_refuses_with_usage_exit(url: str, prefix: str) -> None:
    runner = CliRunner()
    env = {"JOBQ_URL": url, "JOBQ_PREFIX": prefix}
    for args, why in [
        (["--timeout", "0"], "timeout must be > 0 seconds"),
        (["--timeout", "nan"], "timeout must be a finite number"),
        (["--delay", "inf"], "delay must be a finite number"),
        (["--job-id", "a b"], "job id may use only"),
    ]:
        r = runner.invoke(main, ["submit", "t", *args], env=env)
        assert r.exit_code == 2, (args, r.output)
        assert why in r.output and "Traceback" not in r.output, r.output
    r = runner.invoke(main, ["submit", "t", "--job-id", "c-1"], env=env)
    assert r.exit_code == 0 and r.output.strip() == "c-1", r.output
    r = runner.invoke(main, ["submit", "other", "--job-id", "c-1"], env=env)
    assert r.exit_code == 2 and "'t', not 'other'" in r.output, r.output


@on_every_layout
def test_periodic_remove_refuses_one_defined_in_code(app: App, url: str, prefix: str) -> None:
    @app.periodic(every=3600)
    def nightly() -> None: ...

    app.store.upsert_periodic(app.periodics["nightly"])  # what a starting worker does
    runner = CliRunner()
    env = {"JOBQ_URL": url, "JOBQ_PREFIX": prefix}
    r = runner.invoke(main, ["periodic", "remove", "nightly"], env=env)
    assert r.exit_code != 0 and "defined in code" in r.output, r.output
    assert "@app.periodic" in r.output and "--force" in r.output
    assert [s.name for s, _ in app.store.list_periodic()] == ["nightly"]  # still there
    r = runner.invoke(main, ["periodic", "remove", "nightly", "--force"], env=env)
    assert r.exit_code == 0 and "returns when the next worker starts" in r.output, r.output
    assert app.store.list_periodic() == []
    # One added at run time is removed without --force.
    r = runner.invoke(main, ["periodic", "add", "adhoc", "t", "--every", "60", "--force"], env=env)
    assert r.exit_code == 0, r.output
    (spec, _due), *_ = app.store.list_periodic()
    assert spec.origin == "cli"
    r = runner.invoke(main, ["periodic", "remove", "adhoc"], env=env)
    assert r.exit_code == 0 and "warning" not in r.output, r.output
    assert app.store.list_periodic() == []


@on_every_layout
def test_nan_never_reaches_the_wire_as_null(app: App) -> None:
    """What used to happen: orjson writes NaN as null, so a NaN option vanished into the
    default. Every number in a spec that reaches the broker is finite."""
    spec = app.spec("t", (), {}, {"timeout": 1.5, "backoff": 0.25, "delay": 2})
    row = json.loads(spec.as_row()[4])
    assert all(isinstance(v, int) and math.isfinite(v) for v in row.values()), row


@on_every_layout
def test_http_delete_of_a_periodic_from_code_needs_force(app: App, http: httpx.Client) -> None:
    @app.periodic(every=3600)
    def hourly() -> None: ...

    app.store.upsert_periodic(app.periodics["hourly"])
    r = http.delete("/v1/periodic/hourly")
    assert r.status_code == 409 and "defined in code" in r.json()["error"], r.text
    assert [s.name for s, _ in app.store.list_periodic()] == ["hourly"]
    r = http.delete("/v1/periodic/hourly", params={"force": "true"})
    assert r.status_code == 200, r.text
    assert app.store.list_periodic() == []
