"""What a user sees when a `jobq` command goes wrong, or has nothing to show: one line and the
README's exit code (0 ok, 1 failed, 2 usage, 3 broker/auth/no server, 4 no such job, 5 timed
out), never a traceback unless -v; wrong and missing passwords end every process at once; a
read-only command never starts a server. Real `jobq` subprocesses against private servers."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from conftest import ValkeyProcess, jobq_cmd, subprocess_env
from test_cli import WAIT, Deployment, jobq, start_deployment

from jobq import App
from jobq.cli_base import exit_code
from jobq.errors import (
    BrokerUnavailable,
    ConfigError,
    DurabilityUnsupported,
    JobFailed,
    JobNotFound,
    NoServer,
    ResultTimeout,
    UsageProblem,
    auth_failed,
)
from jobq.names import InvalidName
from jobq.operations import Followed, Outcome, ids_from
from jobq.states import TERMINAL, JobState

pytestmark = pytest.mark.timeout(120)

AUTH_PASSWORD = "pw-" + uuid.uuid4().hex


def run(
    *args: str, env: dict[str, str], cwd: Path | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        jobq_cmd(*args), env=env, cwd=cwd, input=stdin, capture_output=True, text=True, timeout=60
    )


def error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("error:")]


def no_url_env() -> dict[str, str]:
    """The environment of a user who set neither JOBQ_URL nor a data directory."""
    env = subprocess_env("", "")
    for k in ("JOBQ_URL", "JOBQ_PREFIX", "JOBQ_DATA_DIR"):
        env.pop(k, None)
    return env


@pytest.fixture(scope="module")
def deployment(
    valkey: ValkeyProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    """test_cli.py's deployment: an ACL user's URL, a prefix, a `jobq worker cli_tasks:app`."""
    yield from start_deployment(valkey, tmp_path_factory)


# -- passwords -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def locked() -> Iterator[ValkeyProcess]:
    """A private server whose default user needs a password (requirepass)."""
    server = ValkeyProcess()
    server.start()
    admin = redis.Redis(port=server.port)
    admin.config_set("requirepass", AUTH_PASSWORD)
    admin.close()
    yield server
    server.cleanup()


def _urls(server: ValkeyProcess) -> dict[str, str]:
    return {
        "wrong": f"redis://:not-the-password@127.0.0.1:{server.port}/0",
        "missing": f"redis://127.0.0.1:{server.port}/0",
    }


@pytest.mark.parametrize("case", ["wrong", "missing"])
@pytest.mark.parametrize(
    "command",
    [
        ("worker", "cli_tasks:app"),
        ("master", "--no-http"),
        ("status", "some-id"),
        ("submit", "add", "--args", "[1, 2]"),
        ("wait", "some-id", "--timeout", "30"),
    ],
    ids=lambda c: c[0],
)
def test_a_wrong_or_missing_password_ends_every_process_with_one_line(
    locked: ValkeyProcess, case: str, command: tuple[str, ...]
) -> None:
    url = _urls(locked)[case]
    env = subprocess_env(url, "tauth" + uuid.uuid4().hex[:6])
    began = time.monotonic()
    res = run(*command, env=env)
    took = time.monotonic() - began
    assert res.returncode == 3, res.stderr
    assert took < 15, f"took {took:.1f} s: {res.stderr}"  # (interpreter start-up included)
    (line,) = error_lines(res.stderr)
    shown = url.replace(":not-the-password@", ":***@")
    lead = "wrong password for" if case == "wrong" else "password required by"
    assert line.startswith(f"error: {lead} {shown} ("), line
    assert "USER:PASSWORD" in line  # how to fix it
    assert "not-the-password" not in res.stderr and "Traceback" not in res.stderr
    assert "retrying" not in res.stderr and "serving" not in res.stderr
    assert "HELLO must be called" not in res.stderr


@pytest.mark.parametrize("case", ["wrong", "missing"])
def test_a_cluster_url_with_a_wrong_password_is_not_waited_out(
    valkey_cluster: Any, case: str
) -> None:
    """On a Cluster every seed refuses the password: that is not "no node serves the slot",
    which submits would wait out for a failover (45 s)."""
    good = f":{valkey_cluster.password}@"
    url = valkey_cluster.url.replace(good, ":not-the-password@" if case == "wrong" else "")
    began = time.monotonic()
    res = run("submit", "add", "--args", "[1, 2]", env=subprocess_env(url, "tauthc"))
    assert res.returncode == 3, res.stderr
    assert time.monotonic() - began < 15
    lead = "wrong password for" if case == "wrong" else "password required by"
    (line,) = error_lines(res.stderr)
    assert line.startswith(f"error: {lead} redis+cluster://"), line
    assert valkey_cluster.password not in res.stderr


def test_the_right_password_still_works(locked: ValkeyProcess) -> None:
    url = f"redis://:{AUTH_PASSWORD}@127.0.0.1:{locked.port}/0"
    res = run("queues", env=subprocess_env(url, "tauth" + uuid.uuid4().hex[:6]))
    assert res.returncode == 0, res.stderr


def test_a_disabled_acl_user_is_a_wrong_password(deployment: Deployment) -> None:
    port = int(re.sub(r".*:(\d+)/0$", r"\1", deployment.url))
    admin = redis.Redis(port=port)
    user = "tcli-off-" + uuid.uuid4().hex[:6]
    admin.acl_setuser(user, enabled=False, passwords=["+secret-of-a-disabled-user"])
    admin.close()
    url = f"redis://{user}:secret-of-a-disabled-user@127.0.0.1:{port}/0"
    res = run("status", "x", env=subprocess_env(url, deployment.prefix))
    assert res.returncode == 3
    assert error_lines(res.stderr)[0].startswith(f"error: wrong password for redis://{user}:***@")


# -- no URL: read-only commands never start a server; producers say where ----------------------

READ_ONLY = [
    ("status", "123"),
    ("result", "123"),
    ("wait", "123", "--timeout", "1"),
    ("cancel", "123"),
    ("queues",),
    ("dead",),
    ("workers",),
    ("periodic", "list"),
    ("purge", "default", "--yes"),
]


@pytest.mark.parametrize("command", READ_ONLY, ids=" ".join)
def test_a_read_only_command_without_a_server_starts_none(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    res = run(*command, env=no_url_env(), cwd=tmp_path)
    assert res.returncode == 3, res.stderr
    assert error_lines(res.stderr) == [
        "error: no jobq server here (no --url / JOBQ_URL, and no embedded server in ./.jobq): "
        "start one with `jobq server start` or point at one with --url"
    ]
    assert list(tmp_path.iterdir()) == []  # no .jobq: no server was started, none runs


def test_a_producer_that_starts_the_embedded_server_says_where(tmp_path: Path) -> None:
    env = no_url_env()
    try:
        first = run("submit", "add", "--args", "[1, 2]", env=env, cwd=tmp_path)
        assert first.returncode == 0, first.stderr
        (line,) = [ln for ln in first.stderr.splitlines() if ln.startswith("jobq:")]
        assert line.startswith("jobq: started an embedded Valkey at unix://:***@")
        assert "(data in ./.jobq); other machines need its URL" in line
        again = run("submit", "add", "--args", "[1, 2]", env=env, cwd=tmp_path)
        assert again.returncode == 0 and "started" not in again.stderr  # attached, silently
        # Now a server runs here: read-only commands use it.
        status = run("status", again.stdout.strip(), env=env, cwd=tmp_path)
        assert status.returncode == 0 and "state: queued" in status.stdout
        # A Python producer's App() without a URL says the same when it starts one.
        other = tmp_path / "other"
        other.mkdir()
        code = "from jobq import App; App().url"
        py = subprocess.run(
            [sys.executable, "-c", code], env=env, cwd=other, capture_output=True, text=True
        )
        assert py.returncode == 0, py.stderr
        assert "jobq: started an embedded Valkey at" in py.stderr
        run("server", "stop", env=env, cwd=other)
    finally:
        run("server", "stop", env=env, cwd=tmp_path)


# -- usage errors: exit 2, one line, traceback only with -v -------------------------------------


@pytest.mark.parametrize(
    "args, env_url",
    [
        (("status", "x", "--url", "redis//x"), None),
        (("queues",), "foo"),
        (("submit", "add", "--url", "redis://127.0.0.1:notaport/0"), None),
        (("worker", "cli_tasks:app", "--url", "http://example.com"), None),
    ],
)
def test_a_malformed_url_is_a_usage_error(args: tuple[str, ...], env_url: str | None) -> None:
    env = no_url_env()
    if env_url:
        env["JOBQ_URL"] = env_url
    res = run(*args, env=env)
    assert res.returncode == 2, res.stderr
    (line,) = error_lines(res.stderr)
    assert "broker URL" in line and "Traceback" not in res.stderr
    verbose = run("-v", *args, env=env)
    assert verbose.returncode == 2 and "Traceback" in verbose.stderr


def test_our_own_option_checks_are_usage_errors(tmp_path: Path, deployment: Deployment) -> None:
    res = run("server", "start", "--replica-of", "10.0.0.9:6380", env=no_url_env(), cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert error_lines(res.stderr) == [
        "error: --replica-of needs --listen HOST:PORT (the address other hosts use)"
    ]
    batch = tmp_path / "bad.jsonl"
    batch.write_text("[1, 2]\nnot json\n")
    res = jobq(deployment, "submit", "add", "--batch", str(batch))
    assert res.returncode == 2 and "--batch line 2: not valid JSON" in res.stderr
    res = jobq(deployment, "submit", "add", "--job-id", "a/b")
    assert res.returncode == 2 and "'/'" in res.stderr and "Traceback" not in res.stderr
    res = jobq(deployment, "wait", "--timeout", "soon", "x")  # click's own: also 2
    assert res.returncode == 2
    res = jobq(deployment, "worker", "cli_tasks:app", "-q", " , ")  # not silently `default`
    assert res.returncode == 2 and "names no queue" in res.stderr, res.stderr


# -- status, wait, batch, cancel, empty lists ----------------------------------------------------

ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
ISO_AGE = ISO + r" \(\d+ (s|min) ago\)"
ISO_IN = ISO + r" \(in \d+ (s|min)\)"


def _wait_state(app: App, job_id: str, state: JobState) -> None:
    deadline = time.monotonic() + float(WAIT)
    while app.job(job_id).status() != state:
        assert time.monotonic() < deadline, f"{job_id} never {state}"
        time.sleep(0.02)


@pytest.fixture
def dep_app(deployment: Deployment) -> Iterator[App]:
    app = App(deployment.url, prefix=deployment.prefix)
    yield app
    app.close()


def test_status_reads_like_a_page_and_json_for_machines(deployment: Deployment) -> None:
    job_id = jobq(deployment, "submit", "explode", "--args", '["kaput"]').stdout.strip()
    assert jobq(deployment, "result", job_id, "--timeout", WAIT).returncode == 1
    res = jobq(deployment, "status", job_id)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    keys = [ln.split(":", 1)[0] for ln in lines if not ln.startswith("    ")]
    assert len({len(k) for k in keys}) == 1  # right-aligned keys: one column of colons
    fields = {k.strip(): v.strip() for k, _, v in (ln.partition(":") for ln in lines)}
    assert fields["state"] == "failed" and fields["attempt"] == "1 of 1"
    assert fields["error"] == "ValueError: kaput"
    assert re.fullmatch(ISO_AGE, fields["created"]), fields["created"]
    assert re.fullmatch(ISO_AGE, fields["finished"]), fields["finished"]
    assert "\\n" not in res.stdout  # the traceback as real lines, not a repr
    tb = lines.index(next(ln for ln in lines if ln.strip() == "traceback:"))
    assert lines[tb + 1].strip() == "Traceback (most recent call last):"
    assert lines[-1].strip() == "ValueError: kaput"
    view = json.loads(jobq(deployment, "status", job_id, "--json").stdout)
    assert (view["id"], view["state"], view["error"]["type"]) == (job_id, "failed", "ValueError")


def test_status_of_several_ids_shows_the_known_and_exits_4_for_the_unknown(
    deployment: Deployment,
) -> None:
    a = jobq(deployment, "submit", "add", "--args", "[1, 2]", "--delay", "3600").stdout.strip()
    b = jobq(deployment, "submit", "add", "--args", "[3, 4]", "--delay", "3600").stdout.strip()
    res = jobq(deployment, "status", a, "no-such-job", b, "--json")
    assert res.returncode == 4
    assert [json.loads(ln)["id"] for ln in res.stdout.splitlines()] == [a, b]
    assert error_lines(res.stderr) == [
        "error: no job no-such-job (never submitted, or its result expired)"
    ]
    both = jobq(deployment, "status", a, b)
    assert both.returncode == 0 and both.stdout.count("state: scheduled") == 2
    assert re.search(r"eta: " + ISO_IN, both.stdout), both.stdout


def test_status_shows_progress(deployment: Deployment, dep_app: App, tmp_path: Path) -> None:
    flag = tmp_path / "go"
    job_id = jobq(deployment, "submit", "halfway", "--args", json.dumps([str(flag)])).stdout
    job_id = job_id.strip()
    try:
        deadline = time.monotonic() + float(WAIT)
        while dep_app.job(job_id).info().progress is None:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        res = jobq(deployment, "status", job_id)
        assert "state: running" in res.stdout and "progress: 50% halfway there" in res.stdout
        assert re.search(r"started: " + ISO_AGE, res.stdout)
    finally:
        flag.write_text("go")
    assert jobq(deployment, "result", job_id, "--timeout", WAIT).stdout.strip() == '"done"'


def test_wait_reads_ids_from_stdin_and_exits_per_the_table(deployment: Deployment) -> None:
    ids = [jobq(deployment, "submit", "add", "--args", f"[{i}, 1]").stdout.strip() for i in (1, 2)]
    res = jobq_stdin(deployment, f"{ids[0]}\n  {ids[1]} \n", "wait", "-", "--timeout", WAIT)
    assert (res.returncode, res.stdout.strip()) == (0, "2 succeeded"), res.stderr
    slow = jobq(deployment, "submit", "add", "--args", "[1, 2]", "--queue", "cli-unserved")
    res = jobq(deployment, "wait", slow.stdout.strip(), "--timeout", "0.5")
    assert (res.returncode, res.stdout.strip()) == (5, "1 unfinished")
    res = jobq(deployment, "wait", ids[0], "no-such-job", "--timeout", WAIT)
    assert (res.returncode, res.stdout.strip()) == (4, "1 not found, 1 succeeded")
    assert "error: no job no-such-job" in res.stderr
    res = jobq_stdin(deployment, "\n", "wait", "-")
    assert res.returncode == 2 and "no job ids" in res.stderr


def jobq_stdin(dep: Deployment, stdin: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run(*args, env=dep.env, stdin=stdin)


def test_submit_batch_wait_prints_a_json_line_per_job(
    deployment: Deployment, tmp_path: Path
) -> None:
    batch = tmp_path / "batch.jsonl"
    batch.write_text("[1, 2]\n\n[3, 4]\n")
    res = jobq(deployment, "submit", "add", "--batch", str(batch), "--wait", "--wait-timeout", WAIT)
    assert res.returncode == 0, res.stderr
    rows = [json.loads(ln) for ln in res.stdout.splitlines()]
    assert [(r["state"], r["result"]) for r in rows] == [("succeeded", 3), ("succeeded", 7)]
    assert res.stderr.splitlines()[-1] == "2 succeeded"
    batch.write_text('"bad"\n')
    res = jobq(deployment, "submit", "explode", "--batch", str(batch), "--wait")
    assert res.returncode == 1
    (row,) = [json.loads(ln) for ln in res.stdout.splitlines()]
    assert row["state"] == "failed" and row["error"]["message"] == "bad"
    assert "Traceback" in row["error"]["traceback"]


def test_cancel_says_what_happened(deployment: Deployment, dep_app: App, tmp_path: Path) -> None:
    flag = tmp_path / "never"
    job_id = jobq(deployment, "submit", "halfway", "--args", json.dumps([str(flag)])).stdout
    job_id = job_id.strip()
    _wait_state(dep_app, job_id, JobState.RUNNING)
    res = jobq(deployment, "cancel", job_id)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == (
        "cancel requested (job is running; it stops at its next check or after the cancel grace)"
    )
    assert jobq(deployment, "result", job_id, "--timeout", WAIT).returncode in (0, 1)
    assert dep_app.job(job_id).status() in TERMINAL
    finished = jobq(deployment, "cancel", job_id)
    assert finished.returncode == 1
    assert finished.stdout.startswith("not cancelled: the job already finished (")
    assert jobq(deployment, "cancel", "no-such-job").returncode == 4


@pytest.mark.parametrize(
    "command, message",
    [
        (("dead",), "no dead-lettered jobs"),
        (("workers",), "no workers seen in the last 15 minutes"),
        (("queues",), "no queues yet"),
        (("periodic", "list"), "no periodic jobs"),
    ],
)
def test_empty_lists_say_so(deployment: Deployment, command: tuple[str, ...], message: str) -> None:
    env = {**deployment.env, "JOBQ_PREFIX": "tempty" + uuid.uuid4().hex[:6]}
    res = run(*command, env=env)
    assert res.returncode == 0, res.stderr
    assert res.stderr.startswith(message)
    assert message not in res.stdout


def test_workers_lists_the_live_worker(deployment: Deployment) -> None:
    res = jobq(deployment, "workers")
    assert res.returncode == 0, res.stderr
    assert any(" alive " in ln and "default,cli-high" in ln for ln in res.stdout.splitlines())


# -- the pieces, without a server ----------------------------------------------------------------


def test_exit_codes_of_errors_follow_the_readme_table() -> None:
    cases = {
        JobFailed("j", "ValueError", "x"): 1,
        ConfigError("x"): 1,
        DurabilityUnsupported("x"): 1,
        UsageProblem("x"): 2,
        InvalidName("x"): 2,
        BrokerUnavailable("x"): 3,
        NoServer("x"): 3,
        auth_failed("WRONGPASS", "redis://:***@h:1/0"): 3,
        JobNotFound("x"): 4,
        ResultTimeout("x"): 5,
    }
    assert {type(e).__name__: exit_code(e) for e in cases} == {
        type(e).__name__: c for e, c in cases.items()
    }


def test_followed_exit_code_precedence() -> None:
    def code(*states: str) -> int:
        return Followed([Outcome(str(i), s) for i, s in enumerate(states)]).exit_code()

    assert code() == code("succeeded", "succeeded") == 0
    assert code("succeeded", "failed", "not found", "unfinished") == 1
    assert code("cancelled") == 1
    assert code("not found", "unfinished") == 4
    assert code("succeeded", "unfinished") == 5


def test_ids_from_stdin_split_on_any_whitespace() -> None:
    assert ids_from(["a", "-", "d"], ["b  c\n", "\n", "\te\n"]) == ["a", "b", "c", "e", "d"]
