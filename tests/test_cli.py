"""The `jobq` command line, run as real subprocesses against the test server, with one
`jobq worker cli_tasks:app` subprocess serving the module's jobs."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
import redis
from click.testing import CliRunner
from conftest import ValkeyProcess, free_port, jobq_cmd, subprocess_env

from jobq.cli import main
from jobq.client import new_job_id

pytestmark = pytest.mark.timeout(120)

USER, PASSWORD = "jobq-cli-test", "pw-" + uuid.uuid4().hex[:12]
WAIT = "60"  # seconds a command may wait for a job: generous on a loaded machine


@dataclass
class Deployment:
    url: str
    prefix: str
    env: dict[str, str]
    log: Path
    worker: subprocess.Popen[bytes]


def jobq(dep: Deployment, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        jobq_cmd(*args), env=dep.env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def deployment(
    valkey: ValkeyProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    yield from start_deployment(valkey, tmp_path_factory)


def start_deployment(
    valkey: ValkeyProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    """A password-protected URL (an ACL user on the test server), a prefix, and a worker
    (the `deployment` of this module and of test_cli_errors.py)."""
    admin = redis.Redis(port=valkey.port)
    admin.acl_setuser(
        USER,
        enabled=True,
        passwords=["+" + PASSWORD],
        keys=["*"],
        channels=["*"],
        categories=["+@all"],
    )
    admin.close()
    url = f"redis://{USER}:{PASSWORD}@127.0.0.1:{valkey.port}/0"
    prefix = "tcli" + uuid.uuid4().hex[:8]
    env = subprocess_env(url, prefix)
    log = tmp_path_factory.mktemp("cli") / "worker.log"
    with open(log, "wb") as fh:
        worker = subprocess.Popen(
            jobq_cmd("worker", "cli_tasks:app", "-q", "default,cli-high", "-c", "2"),
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    dep = Deployment(url, prefix, env, log, worker)
    try:
        deadline = time.monotonic() + 60
        while "serving" not in log.read_text():
            assert worker.poll() is None, f"worker exited: {log.read_text()}"
            assert time.monotonic() < deadline, f"no start-up banner: {log.read_text()}"
            time.sleep(0.05)
        yield dep
    finally:
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(10)


# -- help --------------------------------------------------------------------------------------


def _command_paths(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for name, cmd in sorted(group.commands.items()):
        out.append((*path, name))
        if isinstance(cmd, click.Group):
            out.extend(_command_paths(cmd, (*path, name)))
    return out


COMMANDS = _command_paths(main)


def test_help_lists_every_command() -> None:
    proc = subprocess.run(jobq_cmd("--help"), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for name in main.commands:
        assert name in proc.stdout
    for name in ("worker", "master", "submit", "status", "result", "queues", "dead", "demo"):
        assert name in main.commands


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_every_subcommand_has_help(path: tuple[str, ...]) -> None:
    # --help is answered before any command runs, so this needs no server (and no subprocess).
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output and " ".join(path) in result.output


def test_commands_that_reach_the_broker_take_url_and_prefix() -> None:
    for path in COMMANDS:
        cmd = main
        for part in path:
            cmd = cmd.commands[part]  # type: ignore[attr-defined]
        if isinstance(cmd, click.Group) or path[0] in ("server", "demo", "acl"):
            # The embedded server's own commands and the demo pick their server; `acl` reads
            # the role users' file in the data directory.
            continue
        opts = {o for p in cmd.params for o in getattr(p, "opts", [])}
        assert {"--url", "--prefix"} <= opts, path


# -- worker ------------------------------------------------------------------------------------


def test_worker_banner_lists_url_without_password_queues_concurrency_tasks(
    deployment: Deployment, valkey: ValkeyProcess
) -> None:
    log = deployment.log.read_text()
    banner = next(line for line in log.splitlines() if "serving" in line)
    assert f"redis://{USER}:***@127.0.0.1:{valkey.port}/0" in banner
    assert "queues " in banner and "default,cli-high" in banner  # (after its own queue)
    assert "thread pool x2" in banner
    assert "tasks: add, explode, halfway, needs_file" in banner
    assert PASSWORD not in log


def test_worker_with_an_unimportable_app_says_so() -> None:
    proc = subprocess.run(
        jobq_cmd("worker", "no_such_module_xyz:app", "--url", "redis://127.0.0.1:1/0"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "cannot import 'no_such_module_xyz'" in proc.stderr


# -- submit, status, result --------------------------------------------------------------------


def test_submit_wait_prints_id_then_result(deployment: Deployment) -> None:
    proc = jobq(deployment, "submit", "add", "--args", "[2, 3]", "--wait", "--wait-timeout", WAIT)
    assert proc.returncode == 0, proc.stderr
    job_id, result = proc.stdout.splitlines()
    assert result == "5"
    assert json.loads(jobq(deployment, "status", job_id, "--json").stdout)["state"] == "succeeded"


def test_status_and_result(deployment: Deployment) -> None:
    proc = jobq(deployment, "submit", "add", "--args", "[20]", "--kwargs", '{"y": 22}')
    assert proc.returncode == 0, proc.stderr
    job_id = proc.stdout.strip()
    res = jobq(deployment, "result", job_id, "--timeout", WAIT)
    assert (res.returncode, res.stdout.strip()) == (0, "42")
    st = jobq(deployment, "status", job_id)
    assert st.returncode == 0
    assert "state: succeeded" in st.stdout and "task: add" in st.stdout
    view = json.loads(jobq(deployment, "status", job_id, "--json").stdout)
    assert (view["id"], view["task"], view["state"], view["attempt"]) == (
        job_id,
        "add",
        "succeeded",
        1,
    )


def test_same_job_id_twice_is_one_job(deployment: Deployment) -> None:
    job_id = "cli-once-" + uuid.uuid4().hex[:6]
    first = jobq(deployment, "submit", "add", "--args", "[1, 1]", "--job-id", job_id)
    second = jobq(deployment, "submit", "add", "--args", "[5, 5]", "--job-id", job_id)
    assert first.stdout.strip() == second.stdout.strip() == job_id
    assert jobq(deployment, "result", job_id, "--timeout", WAIT).stdout.strip() == "2"


def test_result_of_a_failed_job_exits_1_with_the_error(deployment: Deployment) -> None:
    job_id = jobq(deployment, "submit", "explode", "--args", '["kaput"]').stdout.strip()
    res = jobq(deployment, "result", job_id, "--timeout", WAIT)
    assert res.returncode == 1
    assert f"job {job_id} failed: ValueError: kaput" in res.stderr
    assert "Traceback" in res.stderr  # the remote traceback follows
    waited = jobq(deployment, "submit", "explode", "--args", '["again"]', "--wait")
    assert waited.returncode == 1 and "ValueError: again" in waited.stderr


def test_unknown_id_exits_4(deployment: Deployment) -> None:
    res = jobq(deployment, "result", "no-such-job", "--timeout", "5")
    assert res.returncode == 4
    assert "no job no-such-job" in res.stderr
    assert jobq(deployment, "status", "no-such-job").returncode == 4


def test_waiting_too_long_exits_5(deployment: Deployment) -> None:
    job_id = jobq(deployment, "submit", "add", "--args", "[1, 2]", "--queue", "cli-unserved")
    res = jobq(deployment, "result", job_id.stdout.strip(), "--timeout", "0.5")
    assert res.returncode == 5 and "still queued" in res.stderr


def test_broker_unreachable_exits_3_naming_the_url(deployment: Deployment) -> None:
    port = free_port()  # nothing listens here
    url = f"redis://:hunter2@127.0.0.1:{port}/0"
    for args in (("status", "some-id"), ("submit", "add", "--args", "[1, 2]"), ("queues",)):
        res = jobq(deployment, *args, "--url", url)
        assert res.returncode == 3, (args, res.stderr)
        assert f"redis://:***@127.0.0.1:{port}/0" in res.stderr
        assert "hunter2" not in res.stderr
        assert "JOBQ_URL" in res.stderr  # says what to check


def test_bad_arguments_are_usage_errors(deployment: Deployment) -> None:
    res = jobq(deployment, "submit", "add", "--args", "not json")
    assert res.returncode == 2 and "not valid JSON" in res.stderr
    res = jobq(deployment, "submit", "add", "--args", '{"x": 1}')
    assert res.returncode == 2 and "--args must be a JSON list" in res.stderr


def test_ids_never_look_like_options(deployment: Deployment) -> None:
    assert not any(new_job_id().startswith("-") for _ in range(20_000))
    # An id that does start with '-' (chosen by the caller) still works after `--`.
    job_id = "-dash-" + uuid.uuid4().hex[:6]
    jobq(deployment, "submit", "add", "--args", "[0, 1]", "--job-id", job_id)
    res = jobq(deployment, "result", "--timeout", WAIT, "--", job_id)
    assert (res.returncode, res.stdout.strip()) == (0, "1")


# -- queues, cancel, dead-letters --------------------------------------------------------------


def _queue_rows(stdout: str) -> dict[str, dict[str, str]]:
    lines = stdout.splitlines()
    header = lines[0].split()
    rows = {}
    for line in lines[1:]:
        cells = line.split()
        if len(cells) == len(header):
            rows[cells[0]] = dict(zip(header, cells, strict=True))
    return rows


def test_queues_shows_depths_per_state(deployment: Deployment) -> None:
    for _ in range(2):
        jobq(deployment, "submit", "add", "--args", "[1, 1]", "--queue", "cli-q", "--delay", "3600")
    jobq(deployment, "submit", "add", "--args", "[1, 1]", "--queue", "cli-q")
    res = jobq(deployment, "queues")
    assert res.returncode == 0, res.stderr
    rows = _queue_rows(res.stdout)
    assert rows["cli-q"]["queued"] == "1" and rows["cli-q"]["scheduled"] == "2"
    assert rows["cli-q"]["running"] == "0"
    assert "dead-lettered:" in res.stdout


def test_cancel(deployment: Deployment) -> None:
    job_id = jobq(deployment, "submit", "add", "--args", "[1, 1]", "--delay", "3600").stdout
    res = jobq(deployment, "cancel", job_id.strip())
    assert (res.returncode, res.stdout.strip()) == (0, "cancelled")
    assert "state: cancelled" in jobq(deployment, "status", job_id.strip()).stdout
    assert jobq(deployment, "cancel", "no-such-job").returncode == 4


def test_dead_lists_and_reruns(deployment: Deployment, tmp_path: Path) -> None:
    flag = tmp_path / "fixed"
    job_id = jobq(deployment, "submit", "needs_file", "--args", json.dumps([str(flag)])).stdout
    job_id = job_id.strip()
    assert jobq(deployment, "result", job_id, "--timeout", WAIT).returncode == 1
    listing = jobq(deployment, "dead")
    assert listing.returncode == 0
    (line,) = [ln for ln in listing.stdout.splitlines() if ln.startswith(job_id)]
    assert "needs_file" in line and "FileNotFoundError: no such file" in line

    flag.write_text("the fix")
    rerun = jobq(deployment, "dead", "--rerun", job_id)
    assert (rerun.returncode, rerun.stdout.strip()) == (0, f"queued again: {job_id}")
    res = jobq(deployment, "result", job_id, "--timeout", WAIT)
    assert (res.returncode, res.stdout.strip()) == (0, '"found"')
    assert job_id not in jobq(deployment, "dead").stdout
    # Re-running a job that is not dead-lettered is refused.
    again = jobq(deployment, "dead", "--rerun", job_id)
    assert again.returncode == 1 and "rerun refused" in again.stderr


@pytest.fixture(autouse=True)
def _no_jobq_env_leak() -> Iterator[None]:
    before = {k: v for k, v in os.environ.items() if k.startswith("JOBQ_")}
    yield
    assert {k: v for k, v in os.environ.items() if k.startswith("JOBQ_")} == before
