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

.PHONY: all deps build generate check-generate lint test unit-test demo scenarios bench clean

# System packages (Debian/Ubuntu) the demo, tests and benchmarks use.
DEB_PACKAGES := make git ca-certificates clang llvm libbpf-dev bpftool iproute2 iptables nftables \
	iperf3 tcpdump conntrack jq kmod containerd runc containernetworking-plugins busybox-static
DEP_TOOLS    := clang llvm-strip bpftool ip iptables iptables-legacy nft iperf3 tcpdump containerd runc

# Installs what is missing (a no-op when everything is there), so `make demo`
# and `make test` work on a fresh machine.
deps:
	@missing=""; for t in $(DEP_TOOLS); do command -v $$t >/dev/null 2>&1 || missing="$$missing $$t"; done; \
	  test -e /usr/lib/cni/bridge || missing="$$missing cni-plugins"; \
	  test -z "$$missing" && exit 0; \
	  echo "installing system packages (missing:$$missing)"; \
	  test "$$(id -u)" = 0 || { echo "make: missing$$missing; run as root (or: apt-get install $(DEB_PACKAGES))" >&2; exit 2; }; \
	  command -v apt-get >/dev/null || { echo "make: missing$$missing and no apt-get: install them by hand" >&2; exit 2; }; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(DEB_PACKAGES)

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
test: deps check-generate lint
	@test "$$(id -u)" = 0 || { echo "make test needs root (privileged lab tests): run it with sudo" >&2; exit 2; }
	SKBTRAIL_REQUIRE_PRIVILEGED=1 $(GO) test $(GOFLAGS_T) -p 1 -v ./... 2>&1 | tee .test.log | grep -E '^(=== RUN|--- (FAIL|SKIP)|FAIL|ok|PASS|panic)' | grep -v '^=== RUN' ; \
	  status=$${PIPESTATUS[0]}; \
	  if grep -q -- '--- SKIP' .test.log; then echo "FAIL: tests were skipped (the privileged suite must run):" >&2; grep -- '--- SKIP' .test.log >&2; exit 1; fi; \
	  exit $$status

unit-test:
	$(GO) test $(GOFLAGS_T) ./pkg/... ./tracer/...

scenarios: build
	@$(BIN)/skbtrail-lab faults

demo: deps build
	@test "$$(id -u)" = 0 || { echo "make demo needs root (it creates network namespaces): run it with sudo" >&2; exit 2; }
	@echo "scenarios (make demo SCENARIO=<name>):"; $(BIN)/skbtrail-lab faults | sed 's/^/  /'
	@echo
	$(BIN)/skbtrail-lab demo --skbtrail $(BIN)/skbtrail --fault $(SCENARIO) --flavor $(FLAVOR) || test $$? -le 1

bench: deps build
	$(GO) build -o $(BIN)/skbtrail-bench ./tests/bench/cmd/skbtrail-bench
	$(GO) test -run '^$$' -bench . -benchmem -cpu 1 -count 3 ./pkg/journey/ ./tracer/ ./tests/bench/ > $(BIN)/bench-micro.txt; \
	  status=$$?; cat $(BIN)/bench-micro.txt; exit $$status
	@status=0; $(BIN)/skbtrail-bench micro $(BIN)/bench-micro.txt || status=$$?; \
	  test "$$(id -u)" = 0 || { echo "make bench: the throughput benchmark needs root (it builds a network-namespace lab, runs iperf3/tcpdump in it and loads BPF programs): run it with sudo" >&2; exit 2; }; \
	  $(BIN)/skbtrail-bench throughput --skbtrail $(BIN)/skbtrail $(BENCH_FLAGS) || status=$$?; \
	  exit $$status

clean:
	rm -rf $(BIN) .test.log
