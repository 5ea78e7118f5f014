# skbtrail — build, demo, test, bench.
#   make demo [SCENARIO=name]   build, create a lab, trace a SYN, print the diagnosis (root)
#   make test                   lint + generated-code check + every test, privileged ones required (root)
#   make bench                  throughput and decode benchmarks (root)

SHELL     := /bin/bash
GO        ?= go
BIN       := bin
SCENARIO  ?= forward-drop
FLAVOR    ?= flannel
GOFLAGS_T ?= -count=1
VERSION   ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X main.version=$(VERSION)

.PHONY: all build generate check-generate lint test unit-test demo scenarios bench clean

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/skbtrail ./cmd/skbtrail
	$(GO) build -o $(BIN)/skbtrail-lab ./tests/lab/cmd/skbtrail-lab

# Regenerate the bpf2go output (needs clang, llvm-strip, libbpf headers).
generate:
	$(GO) generate ./tracer/...

# CI: the committed generated files must be exactly what the sources give.
check-generate: generate
	@git diff --exit-code --stat -- tracer/ || { echo "generated BPF files differ from the committed ones: run 'make generate' and commit" >&2; exit 1; }
	@test -z "$$(git status --porcelain -- tracer/)" || { echo "untracked generated files in tracer/:" >&2; git status --porcelain -- tracer/ >&2; exit 1; }

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:" >&2; gofmt -l $$(git ls-files '*.go') >&2; exit 1; }
	$(GO) vet ./...
	$(GO) tool staticcheck ./...

# Every test, privileged ones included; a skipped privileged test fails the run.
test: check-generate lint
	@test "$$(id -u)" = 0 || { echo "make test needs root (privileged lab tests): run it with sudo" >&2; exit 2; }
	SKBTRAIL_REQUIRE_PRIVILEGED=1 $(GO) test $(GOFLAGS_T) -p 1 -v ./... 2>&1 | tee .test.log | grep -E '^(=== RUN|--- (FAIL|SKIP)|FAIL|ok|PASS|panic)' | grep -v '^=== RUN' ; \
	  status=$${PIPESTATUS[0]}; \
	  if grep -q -- '--- SKIP' .test.log; then echo "FAIL: tests were skipped (the privileged suite must run):" >&2; grep -- '--- SKIP' .test.log >&2; exit 1; fi; \
	  exit $$status

unit-test:
	$(GO) test $(GOFLAGS_T) ./pkg/... ./tracer/...

scenarios: build
	@$(BIN)/skbtrail-lab faults

demo: build
	@test "$$(id -u)" = 0 || { echo "make demo needs root (it creates network namespaces): run it with sudo" >&2; exit 2; }
	@echo "scenarios (make demo SCENARIO=<name>):"; $(BIN)/skbtrail-lab faults | sed 's/^/  /'
	@echo
	$(BIN)/skbtrail-lab demo --skbtrail $(BIN)/skbtrail --fault $(SCENARIO) --flavor $(FLAVOR) || test $$? -le 1

bench: build
	$(GO) build -o $(BIN)/skbtrail-bench ./tests/bench/cmd/skbtrail-bench
	$(GO) test -run '^$$' -bench . -benchmem -cpu 1 -count 3 ./pkg/journey/ ./tracer/ ./tests/bench/ > $(BIN)/bench-micro.txt; \
	  status=$$?; cat $(BIN)/bench-micro.txt; exit $$status
	@status=0; $(BIN)/skbtrail-bench micro $(BIN)/bench-micro.txt || status=$$?; \
	  test "$$(id -u)" = 0 || { echo "make bench: the throughput benchmark needs root (it builds a network-namespace lab, runs iperf3/tcpdump in it and loads BPF programs): run it with sudo" >&2; exit 2; }; \
	  $(BIN)/skbtrail-bench throughput --skbtrail $(BIN)/skbtrail $(BENCH_FLAGS) || status=$$?; \
	  exit $$status

clean:
	rm -rf $(BIN) .test.log
