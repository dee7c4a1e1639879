# knockgate: `make demo` shows the gate working in a throwaway namespace lab,
# `make test` runs everything CI runs (unit tests under the race detector,
# a short smoke of every fuzz target, and the kernel integration tests,
# which need root).

GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X main.version=$(VERSION)
BIN      := bin/knockgate
# Fuzz time per target: short in `make test`, long in `make fuzz`.
SMOKE_FUZZTIME ?= 8s
FUZZTIME       ?= 5m

.PHONY: all build test unit fuzz-smoke integration fuzz demo bench clean release

# `make release`: static binaries for the gateways knockgate targets, in
# $(DIST)/knockgate-$(VERSION)-linux-<arch>, with SHA256SUMS. Each entry is
# GOARCH[:extra environment]: arm is ARMv7 (GOARM=7: Raspberry Pi 2+, most
# ARM routers), mipsle is soft-float (GOMIPS=softfloat: MT7621, MT76x8 and
# other FPU-less MIPS routers, without relying on the kernel's FPU
# emulation). More: make release RELEASE_TARGETS="mips:GOMIPS=softfloat".
DIST            ?= dist
RELEASE_TARGETS ?= amd64 arm64 arm:GOARM=7 mipsle:GOMIPS=softfloat

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/knockgate

test: unit fuzz-smoke integration

unit:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...
	$(GO) vet -tags integration ./...
	$(GO) test -race -count=1 ./...

# Runs every Fuzz function of the module, one after the other (go test can
# fuzz only one target per run).
define run_fuzz
	@set -e; for f in $$(grep -rl --include='*_test.go' '^func Fuzz' .); do \
	  pkg=./$$(dirname $$f); \
	  for t in $$(grep -o '^func Fuzz[A-Za-z0-9_]*' $$f | cut -d' ' -f2); do \
	    echo "fuzz $$pkg $$t for $(1)"; \
	    $(GO) test -run='^$$' -fuzz="^$$t$$" -fuzztime=$(1) $$pkg; \
	  done; \
	done
endef

fuzz-smoke:
	$(call run_fuzz,$(SMOKE_FUZZTIME))

fuzz:
	$(call run_fuzz,$(FUZZTIME))

integration: build
	@if [ "$$(id -u)" != 0 ]; then echo "integration tests need root (network namespaces, iptables, NFQUEUE)"; exit 1; fi
	KNOCKGATE_BIN=$(CURDIR)/$(BIN) $(GO) test -tags integration -count=1 -v -timeout 12m ./gate/ ./integration/

demo: build
	@if [ "$$(id -u)" != 0 ]; then echo "make demo needs root (it builds a network namespace lab)"; exit 1; fi
	./contrib/demo/demo.sh $(CURDIR)/$(BIN)

# `make bench` (root, a few minutes): knockgate against a minimal go-nfqueue
# and a minimal libnetfilter_queue consumer in a namespace lab, the engine's
# microbenchmarks and knock-to-open vs knockd; writes
# bench/results/<date>.md and prints a summary (BENCHMARKS.md). The bench's
# programs are built in $(BENCH_BUILD); BENCH_FLAGS go to bench/run (-help).
BENCH_BUILD ?= bench/.build
BENCH_FLAGS ?=
bench: build
	@if [ "$$(id -u)" != 0 ]; then echo "make bench needs root (network namespaces, iptables, NFQUEUE)"; exit 1; fi
	@dpkg -s libnetfilter-queue-dev >/dev/null 2>&1 || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y libnetfilter-queue-dev; }
	$(GO) build -o $(BENCH_BUILD)/run ./bench/run
	$(BENCH_BUILD)/run -build $(BENCH_BUILD) -knockgate $(BIN) -no-build $(BENCH_FLAGS)

# Rebuilds every release binary from scratch (the previous release's
# binaries and SHA256SUMS in $(DIST) are removed first, so SHA256SUMS lists
# exactly what this run built), then prints their sizes.
release:
	@set -e; mkdir -p $(DIST); rm -f $(DIST)/knockgate-* $(DIST)/SHA256SUMS; \
	for t in $(RELEASE_TARGETS); do \
	  arch=$${t%%:*}; extra=; case $$t in *:*) extra=$$(echo "$${t#*:}" | tr , ' ');; esac; \
	  out=$(DIST)/knockgate-$(VERSION)-linux-$$arch; \
	  echo "build $$out$${extra:+ ($$extra)}"; \
	  env -u GOARM -u GOMIPS -u GOAMD64 -u GOARM64 $$extra CGO_ENABLED=0 GOOS=linux GOARCH=$$arch \
	    $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $$out ./cmd/knockgate; \
	done; \
	cd $(DIST) && sha256sum knockgate-* > SHA256SUMS; \
	echo; printf '%-52s %10s %8s\n' binary bytes MiB; \
	for f in knockgate-*; do \
	  n=$$(stat -c %s $$f); printf '%-52s %10d %8s\n' $$f $$n $$(awk "BEGIN{printf \"%.2f\", $$n/1048576}"); \
	done; \
	echo; echo "$(DIST)/SHA256SUMS:"; cat SHA256SUMS

clean:
	rm -rf bin dist
