"""Helpers shared by the tests that run real `jobq` subprocesses (workers, masters): polling a
condition with a deadline, and a subprocess whose output goes to a log file it can wait on."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def wait_until(check: Callable[[], T], timeout: float, what: str = "a condition") -> T:
    """Return check()'s first truthy value; fail after `timeout` seconds naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)


class JobqProcess:
    """One `jobq` subprocess with its output in a log file."""

    def __init__(
        self, name: str, proc: subprocess.Popen[bytes], log_path: Path, wait_s: float = 30
    ) -> None:
        self.name = name
        self.proc = proc
        self.log_path = log_path
        self.wait_s = wait_s

    @classmethod
    def spawn(
        cls,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        env: dict[str, str],
        cwd: Path | None = None,
        wait_s: float = 30,
    ) -> JobqProcess:
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                list(argv),
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=cwd,
            )
        return cls(name, proc, log_path, wait_s)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float | None = None) -> None:
        """Wait until the log contains `text` (fails early if the process exits)."""

        def seen() -> bool:
            if text in self.log():
                return True
            if not self.alive():
                raise AssertionError(
                    f"{self.name} (pid {self.pid}) exited ({self.proc.returncode}) before "
                    f"logging {text!r}:\n{self.log()}"
                )
            return False

        wait_until(seen, self.wait_s if timeout is None else timeout, f"{text!r} in {self.name}")

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def wait_exit(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM (graceful shutdown) and wait for the exit code."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


def kill_all(procs: Sequence[JobqProcess], tail: int = 4000) -> None:
    """Teardown: kill what is left (resuming SIGSTOP'd ones) and print each log's end."""
    for p in procs:
        if p.alive():
            with contextlib.suppress(ProcessLookupError):
                p.signal(signal.SIGCONT)  # a SIGSTOP'd process would linger until resumed
                p.proc.kill()
        p.proc.wait(30)
        print(f"--- {p.name} pid {p.pid} (exit {p.proc.returncode}) ---\n{p.log()[-tail:]}")
