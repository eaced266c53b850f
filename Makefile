# The README's commands. `make serve` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RECEIVER_TEST_DATABASE_URL ?= postgresql+psycopg://postgres@127.0.0.1:5432/test
export RECEIVER_TEST_DATABASE_URL

.PHONY: serve test fuzz bench install clean

$(BIN)/vod-receiver: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[postgres,test]"
	touch $@

install: $(BIN)/vod-receiver

serve: install
	$(BIN)/vod-receiver serve

test: install
	$(BIN)/pytest $(PYTEST_ARGS)

# The fuzz run of docs/security.md; e.g. make fuzz FUZZ_ARGS="--requests 5000 --database-url postgresql+psycopg://…"
FUZZ_ARGS ?= --requests 5000
fuzz: install
	$(BIN)/python -m bench.fuzz $(FUZZ_ARGS)

# Prints figures (docs/operations.md); set RECEIVER_BENCH_POSTGRES_URL to include PostgreSQL.
bench: install
	$(BIN)/python -m bench.ingest $(BENCH_ARGS)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache

# Admin query latency over 1,000,000 events; add BENCH_ARGS="--database-url postgresql+psycopg://
# postgres@127.0.0.1:5432/vodr_bench_q" for PostgreSQL (the database is created and dropped).
.PHONY: bench-queries
bench-queries: install
	$(BIN)/python -m bench.queries $(BENCH_ARGS)

# Handler worker: events/s with a no-op handler and commit -> handler start p50/p99; set
# RECEIVER_BENCH_POSTGRES_URL to include PostgreSQL (vodr_bench_work is created and dropped).
.PHONY: bench-work
bench-work: install
	$(BIN)/python -m bench.work $(BENCH_ARGS)

# Upload throughput and memory against Tencent's vod-python-sdk (docs/upload.md). The peer lives
# in its own virtualenv: it pulls in the whole tencentcloud-sdk-python, which the project avoids.
.PHONY: bench-upload
bench-upload: install $(VENV)-peer/bin/python
	$(BIN)/python -m bench.upload --peer-python $(VENV)-peer/bin/python $(BENCH_ARGS)

$(VENV)-peer/bin/python:
	$(PYTHON) -m venv $(VENV)-peer
	$(VENV)-peer/bin/pip install --quiet vod-python-sdk

# The pull consumer against the emulator (events/s, CPU per event); PostgreSQL too when
# RECEIVER_BENCH_POSTGRES_URL is set (database vodr_bench_pull created and dropped).
.PHONY: bench-pull
bench-pull: install
	$(BIN)/python -m bench.pull $(BENCH_ARGS)

# Operator page server time over 1,000,000 events (goal p95 < 100 ms); PostgreSQL too when
# RECEIVER_BENCH_POSTGRES_URL is set (vodr_bench_web created and dropped), or only the database
# of BENCH_ARGS="--database-url postgresql+psycopg://postgres@127.0.0.1:5432/vodr_bench_web".
.PHONY: bench-web
bench-web: install
	$(BIN)/python -m bench.web $(BENCH_ARGS)
