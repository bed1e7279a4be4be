# Every target runs inside .venv (created by scripts/bootstrap).
PY := .venv/bin/python
PROTO_FILES := $(wildcard proto/coord/v1/*.proto)

.PHONY: help bootstrap test check lint typecheck imports proto proto-check demo bench fmt chaos go-test

help:
	@echo "make demo       local 3-node cluster with a live failover demo"
	@echo "make test       checks + unit + integration tests (what CI runs)"
	@echo "make check      ruff, mypy --strict, import contracts, proto freshness"
	@echo "make proto      regenerate coord/v1 and clients/go/coordpb from proto/"
	@echo "make go-test    go vet, staticcheck, the Go client's unit tests (clients/go, offline)"
	@echo "make bench      side-by-side benchmarks with etcd (see bench/README.md)"
	@echo "make chaos      every chaos scenario through Toxiproxy (SEED=n to repeat a run)"

bootstrap:
	@scripts/bootstrap

demo:
	@scripts/demo

test:
	@scripts/test

check: bootstrap lint typecheck imports proto-check

lint:
	$(PY) -m ruff check coord tests bench chaos
	$(PY) -m ruff format --check coord tests chaos

fmt:
	$(PY) -m ruff format coord tests chaos
	$(PY) -m ruff check --fix coord tests chaos

typecheck:
	$(PY) -m mypy

imports:
	.venv/bin/lint-imports

proto: bootstrap
	$(PY) -m grpc_tools.protoc -Iproto --python_out=. --grpc_python_out=. \
		--mypy_out=. --mypy_grpc_out=. --plugin=protoc-gen-mypy=.venv/bin/protoc-gen-mypy --plugin=protoc-gen-mypy_grpc=.venv/bin/protoc-gen-mypy_grpc $(PROTO_FILES)
	clients/go/gen.sh

# Regenerate into a scratch dir and diff: generated code must match the protos.
proto-check:
	@tmp=$$(mktemp -d) && \
	$(PY) -m grpc_tools.protoc -Iproto --python_out=$$tmp --grpc_python_out=$$tmp \
		--mypy_out=$$tmp --mypy_grpc_out=$$tmp --plugin=protoc-gen-mypy=.venv/bin/protoc-gen-mypy --plugin=protoc-gen-mypy_grpc=.venv/bin/protoc-gen-mypy_grpc $(PROTO_FILES) >/dev/null 2>&1 && \
	diff -r -x __init__.py -x __pycache__ $$tmp/coord/v1 coord/v1 && \
	clients/go/gen.sh $$tmp/go && diff -r $$tmp/go/coordpb clients/go/coordpb && \
	rm -rf $$tmp && echo "proto: generated code is fresh (Python and Go)"

# The Go client's vet, staticcheck (pinned, built by scripts/bootstrap) and unit tests,
# goroutine leaks failing them (goleak); offline once scripts/bootstrap fetched the modules.
go-test:
	@test -x .venv/go-bin/staticcheck || { echo "go-test: .venv/go-bin/staticcheck is missing: run scripts/bootstrap" >&2; exit 1; }
	cd clients/go && go vet ./... && ../../.venv/go-bin/staticcheck ./... && go test ./...

bench: bootstrap
	$(PY) bench/run_all.py

# The full chaos suite (about 20 minutes with the membership, clock, transfer and lost-answer scenarios): a table of scenarios and violations.
SEED ?= $(shell date +%s)
chaos: bootstrap
	$(PY) -m chaos.run --seed $(SEED)
