"""Workflows whose steps land on every shard of a real Cluster: a chord's members spread over
the primaries, its callback fed every result through the durable hand-off (handoff.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import cluster as cluster_harness
import pytest
from inprocess import deployment

from jobq import App
from jobq.canvas import chord


@pytest.fixture
def capp(valkey_cluster: cluster_harness.ValkeyCluster) -> Iterator[App]:
    a = App(valkey_cluster.url, prefix="h" + uuid.uuid4().hex[:8])

    @a.task
    def square(x: int) -> int:
        return x * x

    @a.task
    def total(xs: list[int]) -> int:
        return sum(xs)

    yield a
    a.close()


def test_a_chord_with_members_on_every_shard(capp: App) -> None:
    square, total = capp.tasks["square"], capp.tasks["total"]
    # 30 members: random ids miss one of 3 partitions with odds of 3 x (2/3)^30, about 1e-5.
    flow = chord([square.s(i) for i in range(30)], total.s())
    specs = flow.specs()
    store = capp.store
    # The members' ids spread them over every primary; the callback sits in one partition.
    assert len({store.layout.place(s) for s in specs[:-1]}) == store.partitions
    job = capp.submit_specs(specs)[-1]
    with deployment(capp, concurrency=4):
        assert job.result(timeout=60) == sum(i * i for i in range(30))


def test_a_chain_across_shards_passes_each_result_on(capp: App) -> None:
    square = capp.tasks["square"]
    # Each step's unique key routes it to a partition of its own: the chain crosses shards.
    steps = [capp.submit("square", (2,), unique_key="step-0-" + uuid.uuid4().hex)]
    for k in range(1, 4):
        steps.append(
            capp.submit(
                "square",
                depends_on=[steps[-1].id],
                pass_results="one",
                unique_key=f"step-{k}-" + uuid.uuid4().hex,
            )
        )
    del square
    with deployment(capp, concurrency=2):
        assert steps[-1].result(timeout=60) == 2**16
