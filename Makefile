# knockgate: `make demo` shows the gate working in a throwaway namespace lab,
# `make test` runs everything CI runs (unit tests, a short smoke of every
# fuzz target, and the kernel integration tests, which need root).

GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X main.version=$(VERSION)
BIN      := bin/knockgate
# Fuzz time per target: short in `make test`, long in `make fuzz`.
SMOKE_FUZZTIME ?= 8s
FUZZTIME       ?= 5m

.PHONY: all build test unit fuzz-smoke integration fuzz demo bench clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/knockgate

test: unit fuzz-smoke integration

unit:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...
	$(GO) vet -tags integration ./...
	$(GO) test -count=1 ./...

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

bench:
	$(GO) test -run='^$$' -bench=. -benchmem ./...

clean:
	rm -rf bin dist
