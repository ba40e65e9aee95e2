"""Workflows built from task signatures: `group` (fan-out), `chain` (each result feeds the next)
and `chord` (fan-out, then a fan-in job that receives every result in order).

Every workflow is submitted in one round trip; the dependencies are recorded by the enqueue
script and released by the completion script on the server, so no process has to stay alive
to drive a workflow, and nothing polls. Jobs of one workflow placed in different partitions
are linked through durable hand-offs (handoff.py): `specs()` gives the jobs to place, and
handoff.submit sends them in dependency order, one wave per partition boundary crossed.

A `Signature` (one call not yet submitted, ``task.s(...)``) is defined beside `Task` in
tasks.py and re-exported here; this module only composes signatures.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from .errors import ConfigError
from .job import Job
from .model import JobSpec
from .tasks import Signature, TaskHost

__all__ = ["Chain", "Chord", "Group", "GroupResult", "Signature", "chain", "chord", "group"]

R = TypeVar("R")


@dataclass(frozen=True)
class GroupResult:
    """The jobs of a submitted group, in order."""

    jobs: list[Job[Any]]

    def results(self, timeout: float | None = None) -> list[Any]:
        """Every job's result in order (raises the first failure)."""
        return [j.result(timeout=timeout) for j in self.jobs]

    def __iter__(self) -> Iterator[Job[Any]]:
        return iter(self.jobs)

    def __len__(self) -> int:
        return len(self.jobs)


def _app_of(sigs: list[Signature[Any]]) -> TaskHost:
    if not sigs:
        raise ConfigError("a workflow needs at least one signature")
    return sigs[0].task.app


@dataclass(frozen=True)
class Group:
    """Run signatures in parallel."""

    sigs: list[Signature[Any]]

    def submit(self) -> GroupResult:
        app = _app_of(self.sigs)
        return GroupResult(app.submit_specs([s.spec() for s in self.sigs]))


@dataclass(frozen=True)
class Chain:
    """Run signatures one after another; each receives the previous result as first argument."""

    sigs: list[Signature[Any]]

    def specs(self) -> list[JobSpec]:
        """The chain's jobs, each depending on the one before (its result passed on)."""
        specs: list[JobSpec] = []
        for s in self.sigs:
            if specs:
                specs.append(s.spec(depends_on=[specs[-1].id], pass_results="one"))
            else:
                specs.append(s.spec())
        return specs

    def submit(self) -> Job[Any]:
        """Submit the whole chain; returns the last job (its result is the chain's)."""
        return _app_of(self.sigs).submit_specs(self.specs())[-1]


@dataclass(frozen=True)
class Chord(Generic[R]):
    """Run a group, then `body` with the list of the group's results as first argument."""

    header: list[Signature[Any]]
    body: Signature[R]

    def specs(self) -> list[JobSpec]:
        """The header's jobs, then the body depending on all of them (their results passed
        in order)."""
        head = [s.spec() for s in self.header]
        return [*head, self.body.spec(depends_on=[h.id for h in head], pass_results="list")]

    def submit(self) -> Job[R]:
        """Submit header and body together; returns the body's job."""
        return _app_of([self.body]).submit_specs(self.specs())[-1]


def group(*sigs: Signature[Any] | list[Signature[Any]]) -> Group:
    """group(a.s(1), a.s(2)) or group([a.s(i) for i in ...])."""
    flat = [x for s in sigs for x in (s if isinstance(s, list) else [s])]
    return Group(flat)


def chain(*sigs: Signature[Any]) -> Chain:
    return Chain(list(sigs))


def chord(header: Group | list[Signature[Any]], body: Signature[R]) -> Chord[R]:
    return Chord(header.sigs if isinstance(header, Group) else list(header), body)
