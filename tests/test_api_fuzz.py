"""Property test: requests generated from /openapi.json (valid and invalid ones, by
schemathesis + hypothesis) against the live master never get a 5xx. Bounded to a few seconds
per operation."""

from __future__ import annotations

from collections.abc import Iterator

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import strategies as st
from live_master import LiveMaster, LiveWorker
from schemathesis import GenerationMode

from jobq import App
from jobq.master import create_app

# The document the server publishes (building the app connects to nothing).
SPEC = create_app(App("redis://127.0.0.1:1/0")).openapi()
SCHEMA = schemathesis.openapi.from_dict(SPEC)
OPERATIONS = [
    r.ok()
    for r in SCHEMA.get_all_operations()
    if r.ok().path != "/v1/events"  # an endless stream; covered by test_api
]
TOKEN = "fuzz-token"


@pytest.fixture(scope="module")
def live(valkey: object) -> Iterator[LiveMaster]:
    url = valkey.url  # type: ignore[attr-defined]
    worker_app = App(url, prefix="fuzz", heartbeat_ms=200, tick_ms=50)
    http_app = App(url, prefix="fuzz")
    worker = LiveWorker(worker_app).start()
    master = LiveMaster(http_app, TOKEN).start()
    yield master
    master.stop()
    worker.stop()
    http_app.close()
    worker_app.close()


@pytest.mark.parametrize("op", OPERATIONS, ids=lambda op: op.label)
def test_no_server_errors(live: LiveMaster, op: schemathesis.APIOperation) -> None:
    seen: list[int] = []
    # Valid requests and invalid ones (wrong types, missing fields, out-of-range values).
    cases = st.one_of(
        op.as_strategy(generation_mode=GenerationMode.POSITIVE),
        op.as_strategy(generation_mode=GenerationMode.NEGATIVE),
    )
    auth = {"Authorization": f"Bearer {TOKEN}"}

    @hypothesis.settings(
        max_examples=60,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[hypothesis.Phase.generate],
    )
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        case = data.draw(cases)
        resp = case.call(base_url=live.url, headers=auth, timeout=30)
        seen.append(resp.status_code)
        assert resp.status_code < 500, (
            f"{case.method} {case.formatted_path} -> {resp.status_code}: {resp.text[:500]}"
        )

    run()
    assert seen
