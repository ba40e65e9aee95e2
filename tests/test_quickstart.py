"""The README's first example runs as written: its two files are shown in the README byte for
byte, and the commands beside them (a `jobq worker` in the example's directory, then the
submitting script) run against this test's server and print what the README says."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import jobq_cmd, on_every_layout, subprocess_env
from procs import JobqProcess, kill_all

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
FILES = ("examples/quickstart/tasks.py", "examples/quickstart/submit.py")


def fenced_after(text: str, marker: str, lang: str) -> str:
    """The body of the first ```lang block after the first occurrence of `marker`."""
    at = text.index(marker)
    m = re.compile(rf"^```{lang}\n(.*?)^```$", re.S | re.M).search(text, at)
    assert m, f"no ```{lang} block after {marker!r} in README.md"
    return m.group(1)


def readme_commands() -> tuple[Path, list[str], list[str]]:
    """(directory, worker argv, script argv) from the README's shell block after submit.py."""
    block = fenced_after(README.read_text(), f"({FILES[1]})", "sh")
    lines = [line.split("#", 1)[0].strip() for line in block.splitlines()]
    cd, worker, script = [line for line in lines if line]
    assert cd.startswith("cd "), cd
    directory = ROOT / cd[3:].strip()
    w, s = shlex.split(worker), shlex.split(script)
    assert w[:2] == ["jobq", "worker"], worker
    assert s[0] == "python", script
    return directory, jobq_cmd(*w[1:]), [sys.executable, *s[1:]]


@pytest.mark.parametrize("path", FILES)
def test_readme_shows_the_quickstart_files_as_they_are(path: str) -> None:
    shown = fenced_after(README.read_text(), f"]({path})", "python")
    assert shown == (ROOT / path).read_text(), f"README.md's copy of {path} drifted from the file"


def test_the_tasks_module_submits_nothing_at_import() -> None:
    """What a worker imports must not submit (or connect): no statement calls submit/map."""
    source = (ROOT / FILES[0]).read_text()
    assert ".submit(" not in source and ".map(" not in source


@on_every_layout
@pytest.mark.timeout(120)
def test_quickstart_runs_as_the_readme_says(url: str, prefix: str, tmp_path: Path) -> None:
    directory, worker_argv, script_argv = readme_commands()
    assert directory == ROOT / "examples" / "quickstart"
    # JOBQ_URL points both at this test's server; no bytecode is written into the checkout.
    env = subprocess_env(url, prefix, PYTHONDONTWRITEBYTECODE="1")
    worker = JobqProcess.spawn(
        "quickstart worker", worker_argv, tmp_path / "worker.log", env, cwd=directory
    )
    try:
        worker.wait_log(" serving ", timeout=60)
        out = subprocess.run(
            script_argv, cwd=directory, env=env, capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0, out.stderr
        first, result, results = out.stdout.splitlines()
        job_id, state = first.split(" ")
        assert job_id and state in {"queued", "running", "succeeded"}
        assert result == "5" and results == "[3, 7]"
        assert not (directory / ".jobq").exists(), "the example started its own server"
    finally:
        kill_all([worker])
