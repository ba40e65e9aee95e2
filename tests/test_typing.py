"""Typed submit: a type checker sees a task's parameters and return type through `submit`,
`with_options`, `submit_with`, `map`, `s` and the workflows (mypy runs on snippets written
here), and at run time a keyword the function declares goes to the function, never to the
job's options."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from inprocess import deployment

from jobq import App
from jobq.errors import ConfigError
from jobq.options import SUBMIT_OPTIONS, SubmitOptions

GOOD = """
from __future__ import annotations

from jobq import App, Job
from jobq.canvas import chain, chord, group

app = App("redis://127.0.0.1:1/0")  # never connects: mypy only reads this file


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task(queue="io", retries=2)
async def fetch(url: str, *, tries: int = 1) -> bytes:
    return url.encode() * tries


@app.task()
def total(xs: list[int]) -> int:
    return sum(xs)


@app.periodic(every=30)
def cleanup() -> None: ...


def producer() -> None:
    job: Job[int] = add.submit(1, 2)
    n: int = job.result(timeout=10)
    data: bytes = fetch.submit("https://example.org", tries=2).result()
    high: Job[int] = add.with_options(queue="high", priority=5).submit(1, y=2)
    later = add.with_options(delay=1.5).with_options(retries=3)
    jobs: list[Job[int]] = later.map([(1, 2), (3, 4)])
    one: Job[int] = add.submit_with((1, 2), priority=5, job_id="sum-1")
    many: list[Job[int]] = add.map([(1, 2)], queue="bulk")
    last: int = chord([add.s(i, i) for i in range(3)], total.s()).submit().result()
    chained: Job[object] = chain(add.s(1, 2), add.s(3)).submit()
    everything = group(add.s(1, 1), fetch.s("u")).submit().results()
    plain: int = add(1, 2)
    cleanup.submit()
    anything: Job[object] = app.submit("add", (1, 2))
    print(n, data, high, jobs, one, many, last, chained, everything, plain, anything)
"""

BAD = """
from __future__ import annotations

from jobq import App

app = App("redis://127.0.0.1:1/0")


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task(retries=1)
async def fetch(url: str) -> bytes:
    return url.encode()


add.submit(1, "x")  # E: arg-type
add.submit(1, 2, priority=5)  # E: call-arg
add.with_options(prio=5)  # E: misc|call-arg
add.with_options(priority="high")  # E: misc|arg-type
add.with_options(queue="q").submit(1)  # E: call-arg
reveal_type(add.submit(1, 2).result())  # N: int
reveal_type(fetch.submit("u").result())  # N: bytes
reveal_type(add.map([(1, 2)]))  # N: list[jobq.job.Job[int]]
reveal_type(add.s(1, 2).submit())  # N: jobq.job.Job[int]
"""


def run_mypy(tmp_path: Path, *files: str) -> dict[tuple[str, int], list[str]]:
    """mypy --strict on `files` (under tmp_path); its messages by (file, line)."""
    env = {**os.environ, "MYPY_FORCE_COLOR": "0"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-error-summary",
            "--show-error-codes",
            "--config-file",
            os.devnull,  # not the repository's config (it checks src/jobq)
            "--cache-dir",
            str(tmp_path / ".mypy_cache"),
            *files,
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode in (0, 1), proc.stderr + proc.stdout
    found: dict[tuple[str, int], list[str]] = {}
    for line in proc.stdout.splitlines():
        m = re.match(r"(\S+?\.py):(\d+): (.*)", line)
        assert m, f"unexpected mypy output: {line}"
        found.setdefault((Path(m[1]).name, int(m[2])), []).append(m[3])
    return found


def test_mypy_sees_the_task_types(tmp_path: Path) -> None:
    (tmp_path / "good.py").write_text(GOOD)
    (tmp_path / "bad.py").write_text(BAD)
    found = run_mypy(tmp_path, "good.py", "bad.py")

    good = {k: v for k, v in found.items() if k[0] == "good.py"}
    assert not good, f"a correct producer does not type-check: {good}"

    expected = 0
    for n, line in enumerate(BAD.splitlines(), 1):
        if "  # E: " in line:
            expected += 1
            codes = line.split("  # E: ")[1].split("|")
            got = found.get(("bad.py", n), [])
            call = line.split("  #")[0]
            assert any(m.startswith("error:") and any(f"[{c}]" in m for c in codes) for m in got), (
                f"line {n} ({call}): expected an error [{'|'.join(codes)}], got {got}"
            )
        elif "  # N: " in line:
            expected += 1
            want = line.split("  # N: ")[1]
            # mypy names builtins in full or not, by version
            got = [m.replace("builtins.", "") for m in found.get(("bad.py", n), [])]
            assert f'note: Revealed type is "{want}"' in got, f"line {n}: {got}"
    unexpected = {
        k: v
        for k, v in found.items()
        if k[0] == "bad.py" and "  # " not in BAD.splitlines()[k[1] - 1]
    }
    assert expected == 9 and not unexpected, unexpected


def test_a_parameter_named_like_an_option_goes_to_the_function(app: App) -> None:
    """`queue` is both a job option and this function's parameter: the function gets it;
    `priority`, which it does not declare, is still taken as the job's option."""

    @app.task
    def route(x: int, queue: str) -> str:
        return f"{x}:{queue}"

    job = route.submit(1, queue="blue", priority=7)  # type: ignore[call-arg]
    info = job.info()
    assert (info.queue, info.priority) == ("default", 7)
    assert app.serializer.decode_args(info.payload) == ([1], {"queue": "blue"})
    with deployment(app):
        assert job.result(timeout=30) == "1:blue"


def test_options_apart_from_arguments(app: App) -> None:
    @app.task(priority=1)
    def echo(value: str, timeout: float) -> str:
        return f"{value}/{timeout}"

    bound = echo.with_options(queue="high", priority=5)
    a = bound.submit("a", timeout=2.5)
    b = bound.with_options(priority=9).submit_with(("b", 1.0), queue="default")
    c = echo.submit_with(["c"], {"timeout": 0.5}, timeout=60)
    d = echo.submit("d", 3.0)
    got = {j.id: (j.info().queue, j.info().priority, j.info().timeout_ms) for j in (a, b, c, d)}
    assert got == {
        a.id: ("high", 5, None),
        b.id: ("default", 9, None),
        c.id: ("default", 1, 60_000),
        d.id: ("default", 1, None),
    }
    (m,) = bound.map([("m", 1.0)])
    assert m.info().queue == "high"
    sig = bound.s("s", 4.0)
    assert sig.options == {"queue": "high", "priority": 5}
    with deployment(app):
        assert [j.result(timeout=30) for j in (b, c, d)] == ["b/1.0", "c/0.5", "d/3.0"]


def test_with_options_refuses_an_unknown_option_where_it_is_written() -> None:
    app = App("redis://127.0.0.1:1/0")  # never connects

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    with pytest.raises(ConfigError, match=r"unknown submit option.*prio"):
        add.with_options(prio=5)  # type: ignore[call-arg]
    assert add(2, 3) == 5


def test_the_typed_options_are_the_submit_options() -> None:
    """`SubmitOptions` (what a type checker accepts) and SUBMIT_OPTIONS (what `App.spec`
    accepts) name the same options."""
    assert set(SubmitOptions.__annotations__) == SUBMIT_OPTIONS
