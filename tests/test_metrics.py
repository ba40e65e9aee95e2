"""`/metrics` and `/v1/autoscale` over real HTTP (uvicorn) against the test Valkey and a real
in-process worker: the exposition parsed strictly (naming conventions, HELP/TYPE once per
family, histogram series), the new families' values, and the scrape's cost counted on the
server (INFO commandstats): the same with 10 jobs as with 1000, and one read for many
concurrent scrapes."""

from __future__ import annotations

import itertools
import math
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import redis
from conftest import on_every_layout
from live_master import LiveMaster, LiveWorker, register_tasks

from jobq import App
from jobq.job import Job
from jobq.master.metrics import cache_of
from jobq.states import JobState

pytestmark = on_every_layout

# -- a strict parser of the text format (0.0.4) ----------------------------------------------

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SAMPLE = re.compile(rf"^({_NAME})(\{{(.*)\}})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')


@dataclass
class Family:
    name: str
    kind: str = ""
    help: str = ""
    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)


def parse(text: str) -> dict[str, Family]:
    """Families by name. Fails on anything off: HELP or TYPE twice, a sample before (or outside)
    its family's TYPE, a bad label set, a value that is not a number, a family split up."""
    assert text.endswith("\n")
    fams: dict[str, Family] = {}
    current: Family | None = None
    for line in text.splitlines():
        assert line, "no blank lines"
        if line.startswith("# HELP "):
            name, _, help_ = line[7:].partition(" ")
            assert name not in fams, f"HELP of {name} twice (or after its samples)"
            current = fams[name] = Family(name, help=help_)
            continue
        if line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert current is not None and current.name == name and not current.kind, line
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped"), line
            current.kind = kind
            continue
        assert not line.startswith("#"), line
        m = _SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        sname, labels_raw, value = m.group(1), m.group(3), m.group(4)
        labels: dict[str, str] = {}
        if labels_raw:
            pos = 0
            while pos < len(labels_raw):
                lm = _LABEL.match(labels_raw, pos)
                assert lm, f"bad labels in {line!r}"
                assert lm.group(1) not in labels, f"label twice in {line!r}"
                labels[lm.group(1)] = lm.group(2)
                pos = lm.end()
        assert current is not None and current.kind, f"sample before its TYPE: {line!r}"
        allowed = {current.name}
        if current.kind == "histogram":
            allowed = {current.name + s for s in ("_bucket", "_sum", "_count")}
        assert sname in allowed, f"{sname} outside its family {current.name}"
        v = math.inf if value == "+Inf" else float(value)
        current.samples.append((sname, labels, v))
    return fams


def check_conventions(fams: dict[str, Family]) -> None:
    for name, f in fams.items():
        assert name.startswith("jobq_"), name
        assert f.help and f.kind, name
        if f.kind == "counter":
            assert name.endswith("_total"), f"counter {name} must end in _total"
        else:
            assert not name.endswith("_total"), f"{f.kind} {name} must not end in _total"
        if "second" in name or "age" in name:
            assert name.endswith("_seconds"), f"{name}: time in base unit, named _seconds"
        assert not re.search(r"_(ms|milliseconds|minutes)(_|$)", name), name
        if f.kind == "histogram":
            check_histogram(f)
        for _, labels, v in f.samples:
            assert "le" not in labels or f.kind == "histogram"
            assert v >= 0 or f.kind == "gauge"


def check_histogram(f: Family) -> None:
    series: dict[tuple[tuple[str, str], ...], dict[str, Any]] = {}
    for sname, labels, v in f.samples:
        key = tuple(sorted((k, x) for k, x in labels.items() if k != "le"))
        s = series.setdefault(key, {"buckets": []})
        if sname.endswith("_bucket"):
            s["buckets"].append((math.inf if labels["le"] == "+Inf" else float(labels["le"]), v))
        else:
            assert "le" not in labels
            s[sname.rsplit("_", 1)[1]] = v
    for key, s in series.items():
        bs = s["buckets"]
        assert bs and bs[-1][0] == math.inf, f"{f.name}{key}: last bucket le=+Inf"
        assert [b for b, _ in bs] == sorted(b for b, _ in bs), "le ascending"
        assert all(a[1] <= b[1] for a, b in itertools.pairwise(bs)), "cumulative"
        assert s["count"] == bs[-1][1], f"{f.name}{key}: _count = the +Inf bucket"
        assert s["sum"] >= 0


def value(fams: dict[str, Family], name: str, **labels: str) -> float:
    got = [
        v
        for sname, ls, v in family_of(fams, name).samples
        if sname == name and all(ls.get(k) == x for k, x in labels.items())
    ]
    assert len(got) == 1, f"{name}{labels}: {len(got)} samples"
    return got[0]


def family_of(fams: dict[str, Family], sample: str) -> Family:
    for suffix in ("_bucket", "_sum", "_count"):
        if sample.endswith(suffix) and sample.removesuffix(suffix) in fams:
            return fams[sample.removesuffix(suffix)]
    return fams[sample]


def scrape(http: httpx.Client, **params: Any) -> dict[str, Family]:
    r = http.get("/metrics", params=params)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    fams = parse(r.text)
    check_conventions(fams)
    try:  # the reference parser too, where it is installed
        from prometheus_client.parser import text_string_to_metric_families
    except ImportError:
        pass
    else:
        names = {m.name for m in text_string_to_metric_families(r.text)}
        assert len(names) == len(fams)
    return fams


def wait_for(check: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def settle(job: Job[Any]) -> None:
    wait_for(lambda: job.status() in FINAL, 30, f"job {job.id} to finish")


FINAL = {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture
def worker_app(url: str, prefix: str) -> Iterator[App]:
    a = App(url, prefix=prefix, heartbeat_ms=200, tick_ms=50)
    yield a
    a.close()


@pytest.fixture
def http_with_worker(app: App, worker_app: App) -> Iterator[httpx.Client]:
    register_tasks(app)
    worker = LiveWorker(worker_app, ["default"], concurrency=3, name="w-metrics").start()
    master = LiveMaster(app, rate_interval_s=0.2).start()
    try:
        with httpx.Client(base_url=master.url, timeout=30) as c:
            yield c
    finally:
        master.stop()
        worker.stop()


@pytest.fixture
def master(app: App) -> Iterator[LiveMaster]:
    """A master alone (no worker), its rate sampler quiet: the only commands it sends while a
    test runs are its scrapes and the event hub's blocking XREAD."""
    register_tasks(app)
    m = LiveMaster(app, rate_interval_s=3600).start()
    yield m
    m.stop()


# -- what a scrape shows -------------------------------------------------------------------------


def test_scrape_follows_conventions_and_shows_the_figures(
    app: App, http_with_worker: httpx.Client
) -> None:
    http = http_with_worker
    jobs = [app.submit("add", [i, 1]) for i in range(5)]
    bad = app.submit("boom", ["no"])
    for j in [*jobs, bad]:
        settle(j)
    pending = app.submit("add", [1, 2], queue="later")  # a queue nobody serves

    def settled() -> dict[str, Family] | None:
        fams = scrape(http)
        done = value(
            fams, "jobq_task_jobs_finished_total", queue="default", task="add", outcome="succeeded"
        )
        # ... and the worker's registry entry seen (its first heartbeat may come later).
        live = any(
            ls.get("worker") == "w-metrics" for _, ls, _ in fams["jobq_worker_free_slots"].samples
        )
        return fams if done == 5 and live else None

    fams = wait_for(settled, 15, "the outcomes in a scrape")
    # The original families, names unchanged.
    for name in ("jobq_jobs", "jobq_jobs_finished_total", "jobq_jobs_retried_total",
                 "jobq_dead_letter_jobs", "jobq_queues_truncated", "jobq_workers",
                 "jobq_events_stream_length", "jobq_event_clients",
                 "jobq_event_clients_dropped_total"):  # fmt: skip
        assert name in fams, name
    assert value(fams, "jobq_jobs_finished_total", queue="default", outcome="succeeded") == 5
    assert value(fams, "jobq_jobs", queue="later", state="queued") == 1
    # Per task: counters and histograms.
    assert (
        value(fams, "jobq_task_jobs_finished_total", queue="default", task="boom", outcome="failed")
        == 1
    )
    assert value(fams, "jobq_task_runtime_seconds_count", queue="default", task="add") == 5
    assert value(fams, "jobq_task_queue_wait_seconds_count", queue="default", task="add") == 5
    assert (
        value(fams, "jobq_task_runtime_seconds_bucket", queue="default", task="add", le="+Inf") == 5
    )
    assert fams["jobq_task_runtime_seconds"].kind == "histogram"
    # The queue nobody serves: waiting, with an age; the served, drained queue: age 0.
    assert value(fams, "jobq_queue_oldest_age_seconds", queue="default") == 0
    assert value(fams, "jobq_queue_oldest_age_seconds", queue="later") >= 0
    assert value(fams, "jobq_queue_desired_workers", queue="later") == 1  # work, nothing ran
    assert value(fams, "jobq_queue_workers", queue="later") == 0
    assert value(fams, "jobq_queue_workers", queue="default") == 1
    # The worker's slots.
    busy = value(fams, "jobq_worker_busy_slots", worker="w-metrics")
    free = value(fams, "jobq_worker_free_slots", worker="w-metrics")
    assert busy + free == 3
    assert value(fams, "jobq_worker_jobs_processed_total", worker="w-metrics") >= 0
    # The broker's memory against its budget.
    assert value(fams, "jobq_broker_memory_used_bytes") > 0
    assert 0 < value(fams, "jobq_broker_memory_limit_ratio") <= 1
    assert "jobq_broker_memory_max_bytes" in fams
    assert pending.id


def test_oldest_age_grows_while_a_job_waits(app: App, master: LiveMaster) -> None:
    app.submit("add", [1, 1], queue="idle")
    time.sleep(1.3)
    with httpx.Client(base_url=master.url, timeout=30) as http:
        fams = scrape(http)
        age = value(fams, "jobq_queue_oldest_age_seconds", queue="idle")
        assert 1.0 <= age < 60
        assert value(fams, "jobq_jobs", queue="idle", state="queued") == 1


def test_autoscale_route(app: App, http_with_worker: httpx.Client) -> None:
    http = http_with_worker
    for j in [app.submit("nap", [0.05]) for _ in range(6)]:
        settle(j)
    app.submit_many("add", [((i, i), {}) for i in range(40)], queue="backlog")

    def body(**params: Any) -> dict[str, Any]:
        r = http.get("/v1/autoscale", params=params)
        assert r.status_code == 200, r.text
        got: dict[str, Any] = r.json()
        return got

    def has_runtime() -> dict[str, Any] | None:
        b = body(target_s=30)
        by = {q["queue"]: q for q in b["queues"]}
        return b if by.get("default", {}).get("runtime_mean_s") else None

    b = wait_for(has_runtime, 15, "the runtimes counted")
    assert b["target_s"] == 30
    by = {q["queue"]: q for q in b["queues"]}
    d = by["default"]
    assert set(d) == {"queue", "desired_workers", "backlog", "arrival_per_s", "runtime_mean_s",
                      "slots_per_worker", "workers", "busy", "free", "reason"}  # fmt: skip
    assert d["workers"] == 1 and d["slots_per_worker"] == 3 and d["busy"] + d["free"] == 3
    assert d["runtime_mean_s"] > 0.01
    q = by["backlog"]
    assert q["backlog"] == 40 and q["workers"] == 0 and q["runtime_mean_s"] is None
    assert q["desired_workers"] == 1 and "no runtime" in q["reason"]

    # The arrival rate, measured by the master's sampler (every 0.2 s here) over the last minute.
    def arrival() -> float | None:
        got: float | None = body(queue="default")["queues"][0]["arrival_per_s"]
        return got

    assert wait_for(lambda: arrival() is not None, 15, "an arrival rate") is True
    assert arrival() is not None and arrival() >= 0  # type: ignore[operator]
    # One queue asked for; an unknown queue is idle.
    one = body(queue="backlog", target_s=30)["queues"]
    assert [x["queue"] for x in one] == ["backlog"] and one[0]["desired_workers"] == 1
    unknown = body(queue="nope")["queues"]
    assert unknown[0]["desired_workers"] == 0 and "idle" in unknown[0]["reason"]

    # The metric says the same as the route for the same target (both read one snapshot,
    # fresh for a second: asked again should a new one fall between them).
    def same() -> bool:
        route = body(target_s=30)["queues"]
        fams = scrape(http, target_s=30)
        return all(
            value(fams, "jobq_queue_desired_workers", queue=x["queue"]) == x["desired_workers"]
            for x in route
        )

    wait_for(same, 10, "the metric and the route to agree")
    for bad in ("0", "-1", "x", "1e9"):
        assert http.get("/v1/autoscale", params={"target_s": bad}).status_code == 422
        assert http.get("/metrics", params={"target_s": bad}).status_code == 422


# -- what a scrape costs ---------------------------------------------------------------------------

#: Commands not from the scrape: the event hub's blocking read, and INFO (the counting itself;
#: the scrape's one INFO memory per partition is counted apart).
NOT_SCRAPE = {"cmdstat_xread", "cmdstat_info"}


def commands(r: redis.Redis) -> dict[str, int]:
    stats = r.info("commandstats")
    return {k: int(v["calls"]) for k, v in stats.items() if k not in NOT_SCRAPE}


def cost(r: redis.Redis, act: Callable[[], None]) -> tuple[int, dict[str, int]]:
    before = commands(r)
    act()
    after = commands(r)
    diff = {k: n - before.get(k, 0) for k, n in after.items() if n != before.get(k, 0)}
    return sum(diff.values()), diff


def test_scrape_cost_is_bounded(app: App, master: LiveMaster, rclient: redis.Redis) -> None:
    cache = cache_of(master.web.state)
    with httpx.Client(base_url=master.url, timeout=30) as http:

        def one_scrape() -> None:
            assert http.get("/metrics").status_code == 200

        cache.ttl_s = 0.0  # every scrape reads, to count one read
        app.submit_many("add", [((i, i), {}) for i in range(10)], queue="a")
        app.submit("add", [0, 0], queue="b")
        one_scrape()  # warm (connections made, layout read)
        small, small_by = cost(rclient, one_scrape)
        app.submit_many("add", [((i, i), {}) for i in range(990)], queue="a")
        big, big_by = cost(rclient, one_scrape)
        print(f"commands per scrape: {small} with 11 jobs, {big} with 1001 ({big_by})")
        assert small == big, (small_by, big_by)
        # More queues: a few commands per queue (bounded by the MAX_QUEUES cap).
        for i in range(20):
            app.submit("add", [0, 0], queue=f"more{i}")
        wider, _ = cost(rclient, one_scrape)
        per_queue = (wider - big) / 20
        print(f"commands per scrape with 22 queues: {wider} ({per_queue:.1f} per queue)")
        assert 0 < per_queue <= 8 * app.store.partitions  # a few reads per queue per partition

        # Cached: many scrapers at once cost one read.
        cache.ttl_s = 5.0
        time.sleep(0.01)
        reads = cache.reads

        def many() -> None:
            threads = [threading.Thread(target=one_scrape) for _ in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)

        cache._kept.clear()
        together, _ = cost(rclient, many)
        print(f"8 concurrent scrapes: {together} commands, {cache.reads - reads} read(s)")
        assert cache.reads - reads == 1
        assert together == wider
        again, _ = cost(rclient, one_scrape)
        assert again == 0


def test_scrape_cost_is_capped_by_the_queue_cap(
    app: App, master: LiveMaster, rclient: redis.Redis
) -> None:
    """Past `MAX_QUEUES` queue names a scrape reads only the first ones (and says so)."""
    from jobq.master.rates import MAX_QUEUES

    cache_of(master.web.state).ttl_s = 0.0
    rclient.sadd(app.store.keys.queues, *(f"n{i:05}" for i in range(MAX_QUEUES + 500)))
    with httpx.Client(base_url=master.url, timeout=60) as http:
        fams: dict[str, Family] = {}

        def one_scrape() -> None:
            fams.update(scrape(http))

        n, by = cost(rclient, one_scrape)
        print(f"commands per scrape over {MAX_QUEUES + 500} queue names: {n}")
        assert value(fams, "jobq_queues_truncated") == 1
        shown = {ls["queue"] for _, ls, _ in fams["jobq_queue_desired_workers"].samples}
        assert MAX_QUEUES <= len(shown) < MAX_QUEUES + 500
        assert n <= 5 * (len(shown) + 10) * app.store.partitions, by
