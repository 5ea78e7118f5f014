# skbtrail — build, demo, test, bench.
#   make demo [SCENARIO=name] [FLANNEL=real|imitation]
#                               build, create a lab, trace a SYN, print the diagnosis (root)
#   make demo CLUSTER=1 [SCENARIO=name]
#                               the same lab with a real kube-apiserver + etcd and one daemon per
#                               lab node, traced through the kubectl plugin (root)
#   make test                   lint + generated-code check + every test, privileged ones required,
#                               + the race detector over pkg/, cmd/, netnsutil/ (root)
#   make bench                  throughput, decode, daemon (idle, startup, churn), dense-node ready time, nftrace marking cost and cluster-trace benchmarks (root)
#   make fuzz [FUZZTIME=60s]    every Go fuzz target for FUZZTIME each (make test runs each 200 times)

SHELL     := /bin/bash
GO        ?= go
BIN       := bin
SCENARIO  ?= forward-drop
FLAVOR    ?= flannel
# Who programs flannel.1 in `make demo` (FLAVOR=flannel): real (flanneld v0.26.7 per node + etcd,
# built once by tests/cluster/build-components.sh flannel) or imitation (the lab writes it by hand).
FLANNEL   ?= real
GOFLAGS_T ?= -count=1 -timeout 60m
CLUSTER   ?=
FUZZTIME  ?= 60s
VERSION   ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X main.version=$(VERSION)

.PHONY: fuzz all deps deps-packages deps-cluster deps-flannel build generate check-generate lint test unit-test demo scenarios bench clean

# CLUSTER=1 (anything but empty or 0) makes `make demo` run the cluster demo.
cluster := $(filter-out 0,$(CLUSTER))
# The demo runs the real flanneld: flannel flavour, FLANNEL=real, not the cluster demo.
demo_flannel := $(if $(filter flannel,$(FLAVOR)),$(FLANNEL),imitation)
demo_real    := $(if $(cluster),,$(filter real,$(demo_flannel)))

# Packages run a second time under the race detector by `make test`.
RACE_PKGS := ./pkg/... ./cmd/... ./netnsutil/...

# System packages (Debian/Ubuntu) the demo, tests and benchmarks use.
DEB_PACKAGES := make git ca-certificates clang llvm libbpf-dev bpftool iproute2 iptables nftables \
	iperf3 tcpdump tshark conntrack jq kmod containerd runc containernetworking-plugins busybox-static
DEP_TOOLS    := clang llvm-strip bpftool ip iptables iptables-legacy nft iperf3 tcpdump tshark containerd runc

# Installs what is missing (a no-op when everything is there), so `make demo`
# and `make test` work on a fresh machine.
deps: deps-packages deps-cluster

deps-packages:
	@missing=""; for t in $(DEP_TOOLS); do command -v $$t >/dev/null 2>&1 || missing="$$missing $$t"; done; \
	  test -e /usr/lib/cni/bridge || missing="$$missing cni-plugins"; \
	  test -z "$$missing" && exit 0; \
	  echo "installing system packages (missing:$$missing)"; \
	  test "$$(id -u)" = 0 || { echo "make: missing$$missing; run as root (or: apt-get install $(DEB_PACKAGES))" >&2; exit 2; }; \
	  command -v apt-get >/dev/null || { echo "make: missing$$missing and no apt-get: install them by hand" >&2; exit 2; }; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(DEB_PACKAGES)

# kube-apiserver, kubectl, kubelet, etcd and flanneld (whatever tests/cluster/build-components.sh
# builds) for the cluster-mode tests, the real-flanneld lab, demo and bench, built from the Go module
# proxy once per machine into $SKBTRAIL_CACHE (default /var/cache/skbtrail); the
# script returns at once when they are there.
deps-cluster:
	@command -v $(GO) >/dev/null 2>&1 || { echo "make: the cluster components (tests/cluster/build-components.sh) are built with Go: $(GO) not found" >&2; exit 2; }
	@echo "cluster components: tests/cluster/build-components.sh (the first run on a machine builds them: ~12-25 min on 2 cores, ~3 GB RAM, ~5 GB of Go caches; then a no-op)"
	@GO=$(GO) bash tests/cluster/build-components.sh

# etcd and flanneld only, for the real-flanneld demo (the first run builds them: ~4 min on 2 cores).
deps-flannel:
	@command -v $(GO) >/dev/null 2>&1 || { echo "make: flanneld and etcd are built with Go: $(GO) not found" >&2; exit 2; }
	@GO=$(GO) bash tests/cluster/build-components.sh flannel

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/skbtrail ./cmd/skbtrail
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/kubectl-skbtrail ./cmd/kubectl-skbtrail
	$(GO) build -o $(BIN)/skbtrail-lab ./tests/lab/cmd/skbtrail-lab
	$(GO) build -o $(BIN)/skbtrail-cluster ./tests/cluster/cmd/skbtrail-cluster

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
	@echo "race detector: go test -race $(RACE_PKGS)"
	@mkdir -p $(BIN); cc=$${CC:-$$(command -v gcc || command -v clang)}; \
	  SKBTRAIL_REQUIRE_PRIVILEGED=1 CGO_ENABLED=1 CC=$$cc $(GO) test -race $(GOFLAGS_T) -p 1 -v $(RACE_PKGS) 2>&1 | tee $(BIN)/test-race.log | grep -E '^(--- (FAIL|SKIP)|FAIL|ok|PASS|panic|WARNING: DATA RACE)' ; \
	  status=$${PIPESTATUS[0]}; \
	  if grep -q -- '--- SKIP' $(BIN)/test-race.log; then echo "FAIL: tests were skipped under -race:" >&2; grep -- '--- SKIP' $(BIN)/test-race.log >&2; exit 1; fi; \
	  exit $$status
	@echo "fuzz targets, 200 executions each (make fuzz runs them longer)"
	@# a count, not a duration: go1.26's fuzz coordinator can fail a target with a bare
	@# "context deadline exceeded" when a -fuzztime duration ends (golang/go#75804, fixed in 1.27)
	@FUZZ_PARALLEL=2 bash tests/fuzz.sh 200x

# Every fuzz target for FUZZTIME each; a failing input lands in the package's
# testdata/fuzz/ (commit it with the fix: plain go test replays it).
fuzz:
	bash tests/fuzz.sh $(FUZZTIME)

unit-test:
	$(GO) test $(GOFLAGS_T) ./pkg/... ./tracer/...

scenarios: build
	@$(BIN)/skbtrail-lab faults

demo: deps-packages $(if $(cluster),deps-cluster) $(if $(demo_real),deps-flannel) build
	@test "$$(id -u)" = 0 || { echo "make demo needs root (it creates network namespaces): run it with sudo" >&2; exit 2; }
	@echo "scenarios (make demo SCENARIO=<name>):"; $(BIN)/skbtrail-lab faults | sed 's/^/  /'
	@echo
ifneq ($(cluster),)
	@test "$(FLAVOR)" = flannel || { echo "make demo CLUSTER=1 runs the flannel lab only (FLAVOR=$(FLAVOR))" >&2; exit 2; }
	$(BIN)/skbtrail-cluster demo --skbtrail $(BIN)/skbtrail --plugin $(BIN)/kubectl-skbtrail --fault $(SCENARIO) || test $$? -le 1
else
	$(BIN)/skbtrail-lab demo --skbtrail $(BIN)/skbtrail --fault $(SCENARIO) --flavor $(FLAVOR) --flannel $(demo_flannel) || test $$? -le 1
endif

bench: deps build
	$(GO) build -o $(BIN)/skbtrail-bench ./tests/bench/cmd/skbtrail-bench
	$(GO) test -run '^$$' -bench . -benchmem -cpu 1 -count 3 ./pkg/journey/ ./tracer/ ./tests/bench/ > $(BIN)/bench-micro.txt; \
	  status=$$?; cat $(BIN)/bench-micro.txt; exit $$status
	@status=0; $(BIN)/skbtrail-bench micro $(BIN)/bench-micro.txt || status=$$?; \
	  test "$$(id -u)" = 0 || { echo "make bench: the throughput benchmark needs root (it builds a network-namespace lab, runs iperf3/tcpdump in it and loads BPF programs): run it with sudo" >&2; exit 2; }; \
	  $(BIN)/skbtrail-bench throughput --skbtrail $(BIN)/skbtrail $(BENCH_FLAGS) || status=$$?; \
	  $(BIN)/skbtrail-bench daemon --skbtrail $(BIN)/skbtrail $(DAEMON_BENCH_FLAGS) || status=$$?; \
	  $(BIN)/skbtrail-bench dense --skbtrail $(BIN)/skbtrail $(DENSE_BENCH_FLAGS) || status=$$?; \
	  $(BIN)/skbtrail-bench nftmark $(NFTMARK_BENCH_FLAGS) || status=$$?; \
	  $(BIN)/skbtrail-cluster bench --skbtrail $(BIN)/skbtrail --plugin $(BIN)/kubectl-skbtrail $(CLUSTER_BENCH_FLAGS) > $(BIN)/bench-cluster.txt || status=$$?; \
	  cat $(BIN)/bench-cluster.txt; \
	  exit $$status

clean:
	rm -rf $(BIN) .test.log
