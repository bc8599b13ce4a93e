# llm-grpc — every target installs what it needs into .venv, so each works from a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed
PROTO_SRC := protos/llm_grpc/v1/llm.proto
GEN_DIR := llm_grpc/v1

.PHONY: conformance install run first-run proto proto-check buf-lint lint typecheck test system-deps go-deps go-check node-deps node-test soak fuzz fuzz-schemas test-unit test-integration bench bench-capacity profile bench-routing dashboard clean

PIP := $(PY) -m pip install --quiet --disable-pip-version-check --no-input
INSTALL_LOG := $(VENV)/install.log

# Quiet unless it fails: pip's output goes to $(INSTALL_LOG), shown only when an install fails.
$(STAMP): pyproject.toml clients/python/pyproject.toml
	@echo "installing into $(VENV) (first run: a few minutes; log in $(INSTALL_LOG))"
	@$(PYTHON) -m venv $(VENV)
	@$(PIP) --upgrade pip >$(INSTALL_LOG) 2>&1 || { cat $(INSTALL_LOG); exit 1; }
	@$(PIP) -e '.[dev]' -e clients/python >>$(INSTALL_LOG) 2>&1 || { cat $(INSTALL_LOG); exit 1; }
	@touch $(STAMP)

install: $(STAMP)

## Serve on localhost:50051 with the bundled provider emulators (no keys, no network). RUN_ARGS adds
## flags, e.g. `make run RUN_ARGS="--port 0 --metrics-port 0"` (free ports: what the first-run test uses).
RUN_ARGS ?=
run: $(STAMP)
	@$(BIN)/llm-gateway serve --demo $(RUN_ARGS)

## Regenerate llm_grpc/v1 from protos/ (messages, grpc stubs, .pyi type stubs).
proto: $(STAMP)
	PATH="$(BIN):$$PATH" $(PY) -m grpc_tools.protoc -Iprotos \
		--python_out=. --grpc_python_out=. --mypy_out=. --mypy_grpc_out=. \
		$(PROTO_SRC)

## Fail when the committed generated code differs from what `make proto` would write.
proto-check: $(STAMP)
	@tmp=$$(mktemp -d) && \
	PATH="$(BIN):$$PATH" $(PY) -m grpc_tools.protoc -Iprotos \
		--python_out=$$tmp --grpc_python_out=$$tmp --mypy_out=$$tmp --mypy_grpc_out=$$tmp \
		$(PROTO_SRC) && \
	for f in $$tmp/$(GEN_DIR)/*; do \
		cmp -s "$$f" "$(GEN_DIR)/$$(basename $$f)" || { echo "stale generated code: $(GEN_DIR)/$$(basename $$f); run 'make proto'"; rm -rf $$tmp; exit 1; }; \
	done; rm -rf $$tmp; echo "generated code is current"

buf-lint: $(STAMP)
	cd protos && ../$(BIN)/buf lint
	@if git rev-parse --verify --quiet main >/dev/null; then \
		$(BIN)/buf breaking protos --against '.git#branch=main,subdir=protos' && echo "no breaking change against main"; \
	else echo "no local main branch: buf breaking skipped"; fi

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/ruff format --check .
	$(BIN)/hadolint Dockerfile
	$(BIN)/bandit -q -r server clients/python -x server/emulators
	$(BIN)/bandit -q -r server/emulators -s B101  # the emulators' asserts state test-double invariants
	$(BIN)/yamllint --strict docs/deploy/kubernetes docs/deploy/prometheus  # rules: .yamllint
	$(BIN)/kubernetes-validate --strict -k 1.30.0 $$(ls docs/deploy/kubernetes/*.yaml | grep -v kustomization)
	@# docs/deploy/kubernetes/monitoring/ holds Prometheus Operator CRDs, which have no bundled schema:
	@# tests/integration/test_dashboards.py checks them against the rules file and the Service instead.

typecheck: $(STAMP)
	$(BIN)/mypy

## The README's test command: contract, lint, types, then every test (Python with the Go and Node loops of
## docs/agents.md, the Go client snippet, the Node client's tests). Go and Node packages come first.
## The Python tests measure branch coverage of server/ and the Python client, the servers they start as
## processes included, and fail under the floor ([tool.coverage.*] in pyproject.toml).
test: proto-check buf-lint lint typecheck system-deps node-deps go-deps
	@rm -f .coverage .coverage.*
	$(BIN)/pytest -q -n 2 --cov --cov-report=term-missing:skip-covered
	PYTHON=$(abspath $(PY)) clients/go/build.sh
	cd clients/node && node --test test/

## The live conformance suite: every agent feature against each provider whose key is in the environment
## (cheapest models, under a cent each; a table). Without keys it says so and exits 0. Not part of `test`.
conformance: $(STAMP)
	$(PY) -m tests.conformance

## Debian packages the tests run for real (installed when missing; needs root, as in CI): redis-server,
## and promtool (package prometheus) for the alerting rules and the dashboard's queries.
system-deps:
	@command -v redis-server >/dev/null || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }
	@command -v promtool >/dev/null || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null; }

GO_PACKAGES := golang-go golang-google-grpc-dev golang-google-protobuf-dev golang-github-golang-protobuf-1-5-dev \
	protoc-gen-go protoc-gen-go-grpc protobuf-compiler

## The Go snippet of clients/README.md, generated, built and run against a real demo gateway. Go and
## grpc-go come from Debian's packages (installed here when missing; needs root, as in CI).
go-deps:
	@command -v go >/dev/null && command -v protoc-gen-go-grpc >/dev/null || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(GO_PACKAGES) >/dev/null; }

go-check: $(STAMP) go-deps
	PYTHON=$(abspath $(PY)) clients/go/build.sh
	$(BIN)/pytest -q tests/integration/test_agents_docs.py -k go  # docs/agents.md's Go loop, now Go is here

## The Node.js client's packages (from the npm registry): for its tests and the runnable docs' JS blocks.
node-deps:
	cd clients/node && npm ci --silent --no-audit --no-fund

## The Node.js client's tests against the real gateway (node's own test runner).
node-test: $(STAMP) node-deps
	cd clients/node && node --test test/
	$(BIN)/pytest -q tests/integration/test_agents_docs.py -k node  # docs/agents.md's Node loop

## A newcomer's first hour from a fresh clone (also part of `make test`): git clone, `make run`, every
## runnable README block in a clean shell, the production start with a token, Ctrl-C.
first-run: $(STAMP)
	$(BIN)/pytest -q tests/integration/test_fresh_clone.py

test-unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

test-integration: $(STAMP)
	$(BIN)/pytest -q tests/integration

## The long soak: 20 000 mixed calls with faults and cancellations (a short one runs in `make test`).
soak: $(STAMP)
	SOAK_CALLS=20000 $(BIN)/pytest -q -s tests/integration/test_soak.py -k soak_with_faults

## A long property-based fuzzing campaign through the running server (a short one runs in `make test`):
## every request field, then caller JSON Schemas (fuzz-schemas).
fuzz: $(STAMP) fuzz-schemas
	FUZZ_EXAMPLES=5000 $(BIN)/pytest -q tests/integration/test_fuzz.py

## Generated JSON Schemas (recursive, $ref local/missing/remote, anyOf/allOf/oneOf/not, backtracking
## patterns, 2^N bombs) through the running server: every call ends within its deadline with OK or
## INVALID_ARGUMENT and no connection reaches the loopback listener the schemas name.
fuzz-schemas: $(STAMP)
	FUZZ_EXAMPLES=3000 $(BIN)/pytest -q tests/integration/test_fuzz_schemas.py

## Gateway overhead against the bare SDK and the bare gRPC floor, in one run (docs/benchmarks.md): a report
## on stdout, JSON, Markdown and a PNG under bench/results/. About 5 minutes. Not part of `make test`.
bench: $(STAMP)
	$(PY) -m tests.bench.run
	$(PY) -m tests.bench.capacity

## Upstream capacity: a burst at 3x two rate-limited deployments' combined limit through three replicas on
## one redis-server (served / queued / refused / provider 429s, queue wait p50/p99). About a minute.
bench-capacity: $(STAMP)
	$(PY) -m tests.bench.capacity

## A py-spy flame graph of the gateway under unary load (STREAM=1: streams) in bench/results/flame.svg.
profile: $(STAMP)
	$(PY) -m tests.bench.profile $(if $(STREAM),--stream --out bench/results/flame-stream.svg)

## Cost of routing a labelled task mix by complexity against sending it all to the premium tier.
bench-routing: $(STAMP)
	$(PY) -m tests.bench.routing_cost

## docs/images/dashboard.png: the Grafana dashboard's main panels, computed from ~75 s of real mixed
## traffic against the demo gateway and drawn with matplotlib (docs/operations.md). Not part of `make test`.
dashboard: $(STAMP)
	$(PY) -m tests.bench.dashboard --out docs/images/dashboard.png

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
