"""Unit tests of histograms.py: buckets, quantiles, cumulative series, the hash encoding."""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence

import pytest

from jobq.histograms import (
    BOUNDS_MS,
    N_BUCKETS,
    Histogram,
    TaskStats,
    bucket_of,
    merge_task_stats,
    parse_task_stats,
)


def hist(samples: Sequence[float]) -> Histogram:
    counts = [0] * N_BUCKETS
    for s in samples:
        counts[bucket_of(s)] += 1
    return Histogram(tuple(counts), int(sum(samples)))


def test_bounds_are_the_agreed_ones() -> None:
    assert BOUNDS_MS[0] == 1 and BOUNDS_MS[-1] == 3_600_000 and len(BOUNDS_MS) == 18
    assert list(BOUNDS_MS) == sorted(BOUNDS_MS)


def test_bucket_of_is_inclusive_upper_bound() -> None:
    assert bucket_of(0) == 0 and bucket_of(1) == 0 and bucket_of(1.5) == 1
    assert bucket_of(100) == BOUNDS_MS.index(100)
    assert bucket_of(3_600_001) == len(BOUNDS_MS)


def test_empty_histogram() -> None:
    h = Histogram()
    assert h.count == 0 and h.quantile(0.5) is None and h.mean() is None
    assert h.cumulative()[-1] == (math.inf, 0)


def test_quantile_linear_inside_bucket() -> None:
    # 10 samples in (50, 100]: the median lies half-way through that bucket.
    h = hist([60.0] * 10)
    assert h.quantile(0.5) == pytest.approx(75.0)
    assert h.quantile(1.0) == pytest.approx(100.0)
    assert h.quantile(0.0) == pytest.approx(50.0)


def test_quantile_across_buckets_and_overflow() -> None:
    h = hist([1] * 50 + [200] * 45 + [5_000_000] * 5)
    assert h.quantile(0.5) == pytest.approx(1.0)
    assert 100 < (h.quantile(0.9) or 0) <= 250
    assert h.quantile(0.99) == float(BOUNDS_MS[-1])  # the open bucket answers its lower edge


def test_cumulative_for_prometheus() -> None:
    h = hist([1, 3, 3, 7000])
    cum = h.cumulative()
    assert len(cum) == N_BUCKETS
    assert cum[0] == (0.001, 1)
    assert cum[2] == (0.005, 3)
    assert cum[-1] == (math.inf, 4)
    assert all(a[1] <= b[1] for a, b in itertools.pairwise(cum))


def test_wrong_bucket_count_refused() -> None:
    with pytest.raises(ValueError):
        Histogram((1, 2), 3)


def test_parse_and_merge() -> None:
    raw = {
        b"s|a": b"3", b"f|a": b"1", b"r|a": b"2", b"c|a": b"1", b"t3|a": b"4", b"ts|a": b"30",
        b"w0|a": b"4", b"ws|a": b"2", b"s|x|y": b"1", b"t99|a": b"5", b"bogus": b"1",
        b"s|bad": b"nan",
    }  # fmt: skip
    ts = parse_task_stats("q", raw)
    assert [t.task for t in ts] == ["a", "x|y"]
    a = ts[0]
    assert (a.succeeded, a.failed, a.retried, a.cancelled) == (3, 1, 2, 1)
    assert a.runtime.count == 4 and a.runtime.sum_ms == 30 and a.wait.counts[0] == 4
    assert a.failure_rate == pytest.approx(0.25)
    more: dict[str, str] = {"s|a": "2"}
    none: dict[str, str] = {}
    merged = merge_task_stats([ts, parse_task_stats("q", more), parse_task_stats("p", none)])
    assert [(t.queue, t.task) for t in merged] == [("q", "a"), ("q", "x|y")]
    assert merged[0].succeeded == 5 and merged[0].runtime.count == 4
    empty = TaskStats("q", "t", 0, 0, 0, 0, Histogram(), Histogram())
    assert empty.failure_rate is None


def test_the_lua_bucket_bounds_mirror_bounds_ms() -> None:
    """The scripts bucket samples by `TBOUNDS` (lua/_tally.lua); the reader by `BOUNDS_MS`:
    the two tables must be the same, or every figure lands in the wrong bucket."""
    from importlib import resources

    src = (resources.files("jobq") / "lua" / "_tally.lua").read_text()
    m = re.search(r"local TBOUNDS = \{([^}]*)\}", src)
    assert m is not None
    assert tuple(int(v) for v in m.group(1).replace("\n", " ").split(",")) == BOUNDS_MS
