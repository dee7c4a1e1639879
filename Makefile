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
# Minimising a new corpus entry may take at most this long: with go test's
# default of 60s, one target spent its run minimising (0.47 M execs in
# place of 2.49 M), so a run explores instead.
FUZZMINTIME    ?= 5s

.PHONY: all build test unit fuzz-smoke integration fuzz demo bench clean release man install deb deb-test

# `make install`: the binary, man pages, completions, systemd unit and
# examples under $(DESTDIR)$(PREFIX); never /etc (a policy is the
# operator's to write) and never a service enabled. `make deb` installs
# with PREFIX=/usr into a staging tree and packs it with dpkg-deb.
PREFIX      ?= /usr/local
SBINDIR     ?= $(PREFIX)/sbin
MANDIR      ?= $(PREFIX)/share/man
DOCDIR      ?= $(PREFIX)/share/doc/knockgate
UNITDIR     ?= $(PREFIX)/lib/systemd/system
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR  ?= $(PREFIX)/share/zsh/site-functions
MANPAGES    := bin/man/knockgate.8 bin/man/knockgate.hcl.5
# Where make deb puts the .deb, and where make test keeps its verbose logs.
DEB_DIR     ?= dist
TESTLOGS    ?= bin/test-logs

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

test: unit fuzz-smoke integration deb-test

unit:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...
	$(GO) vet -tags integration ./...
	$(GO) test -race -count=1 ./...

# Runs every Fuzz function of the module, one after the other (go test can
# fuzz only one target per run). With a second argument, each target's
# output goes to a log in $(TESTLOGS) and one line per target is printed
# (the log in full when the target fails). Go 1.26's fuzz coordinator can
# fail a target with a bare "context deadline exceeded" at the end of
# -fuzztime when a loaded machine delays its workers (golang/go#75804,
# fixed in Go 1.27): that ending, with no failing input written, is a
# finished run, not a finding.
define run_fuzz
	@set -e; mkdir -p $(TESTLOGS); for f in $$(grep -rl --include='*_test.go' '^func Fuzz' .); do \
	  pkg=$$(dirname $$f); \
	  for t in $$(grep -o '^func Fuzz[A-Za-z0-9_]*' $$f | cut -d' ' -f2); do \
	    if [ -z "$(2)" ]; then \
	      echo "fuzz $$pkg $$t for $(1)"; \
	      $(GO) test -run='^$$' -fuzz="^$$t$$" -fuzztime=$(1) -fuzzminimizetime=$(FUZZMINTIME) $$pkg; \
	    else \
	      log=$(TESTLOGS)/fuzz-$$t.log; \
	      if $(GO) test -run='^$$' -fuzz="^$$t$$" -fuzztime=$(1) -fuzzminimizetime=$(FUZZMINTIME) $$pkg >$$log 2>&1; then \
	        printf 'ok    fuzz %-28s %-22s %s\n' $${pkg#./} $$t "$$(grep -o 'execs: [0-9]*' $$log | tail -1)"; \
	      elif grep -qx '    context deadline exceeded' $$log && ! grep -q 'Failing input written to' $$log; then \
	        printf 'ok    fuzz %-28s %-22s %s (ended by go1.26 fuzz coordinator deadline race, golang/go#75804; no failing input)\n' \
	          $${pkg#./} $$t "$$(grep -o 'execs: [0-9]*' $$log | tail -1)"; \
	      else \
	        cat $$log; echo "FAIL  fuzz $$pkg $$t (log: $$log)"; exit 1; \
	      fi; \
	    fi; \
	  done; \
	done
endef

fuzz-smoke:
	$(call run_fuzz,$(SMOKE_FUZZTIME),quiet)

fuzz:
	$(call run_fuzz,$(FUZZTIME))

# The kernel tests run with -v into $(TESTLOGS)/integration.log; make
# prints the tally and go test's ok/FAIL line per package, and the whole log
# when a test fails. INTEGRATION_FLAGS go to go test (-run=TestX).
INTEGRATION_FLAGS ?=
integration: build
	@if [ "$$(id -u)" != 0 ]; then echo "integration tests need root (network namespaces, iptables, NFQUEUE)"; exit 1; fi
	@mkdir -p $(TESTLOGS); log=$(TESTLOGS)/integration.log; \
	echo "integration tests (root; verbose log: $$log)"; \
	KNOCKGATE_BIN=$(CURDIR)/$(BIN) $(GO) test -tags integration -count=1 -v -timeout 12m $(INTEGRATION_FLAGS) ./gate/ ./integration/ >$$log 2>&1; rc=$$?; \
	[ $$rc = 0 ] || cat $$log; \
	grep -E '^    --- SKIP|^--- SKIP' $$log | sed 's/^ *--- SKIP: /skipped: /' || true; \
	echo "$$(grep -c '^ *--- PASS' $$log) passed, $$(grep -c '^ *--- FAIL' $$log) failed, $$(grep -c '^ *--- SKIP' $$log) skipped"; \
	grep -E '^(ok|FAIL|panic:)' $$log || true; \
	exit $$rc

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

# Man pages from docs/*.md, with go-md2man (Debian: go-md2man). Made on
# every run, since their header carries $(VERSION), which no file date
# tracks.
man: $(MANPAGES)

bin/man/%: docs/%.md FORCE
	@command -v go-md2man >/dev/null || { echo "make man needs go-md2man (Debian: apt-get install go-md2man)"; exit 1; }
	@mkdir -p bin/man
	sed 's/@VERSION@/$(VERSION)/' $< >$@.md
	go-md2man -in $@.md -out $@
	@rm -f $@.md

install: build man
	install -D -m 0755 $(BIN) $(DESTDIR)$(SBINDIR)/knockgate
	install -D -m 0644 bin/man/knockgate.8 $(DESTDIR)$(MANDIR)/man8/knockgate.8
	install -D -m 0644 bin/man/knockgate.hcl.5 $(DESTDIR)$(MANDIR)/man5/knockgate.hcl.5
	install -D -m 0644 contrib/completion/knockgate.bash $(DESTDIR)$(BASHCOMPDIR)/knockgate
	install -D -m 0644 contrib/completion/_knockgate $(DESTDIR)$(ZSHCOMPDIR)/_knockgate
	@# The unit names the binary where make install puts it.
	install -d $(DESTDIR)$(UNITDIR)
	sed 's|^ExecStart=/usr/local/bin/knockgate |ExecStart=$(SBINDIR)/knockgate |' contrib/systemd/knockgate.service >$(DESTDIR)$(UNITDIR)/knockgate.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/knockgate.service
	@grep -q '^ExecStart=$(SBINDIR)/knockgate ' $(DESTDIR)$(UNITDIR)/knockgate.service || { echo "install: contrib/systemd/knockgate.service has no ExecStart=/usr/local/bin/knockgate to point at $(SBINDIR)"; exit 1; }
	install -d $(DESTDIR)$(DOCDIR)/examples/iptables $(DESTDIR)$(DOCDIR)/examples/nftables
	install -m 0644 README.md CHANGELOG.md SECURITY.md $(DESTDIR)$(DOCDIR)/
	install -m 0644 contrib/examples/*.hcl contrib/systemd/knockgate-modules.conf $(DESTDIR)$(DOCDIR)/examples/
	install -m 0644 contrib/iptables/* $(DESTDIR)$(DOCDIR)/examples/iptables/
	install -m 0644 contrib/nftables/* $(DESTDIR)$(DOCDIR)/examples/nftables/

# `make deb`: a Debian package of this build in $(DEB_DIR), made with
# dpkg-deb, no network (packaging/deb/build.sh). GOARCH=arm64 make deb
# builds one for another architecture.
deb: build man
	rm -rf bin/deb-root
	$(MAKE) -s --no-print-directory install DESTDIR=$(CURDIR)/bin/deb-root PREFIX=/usr \
	  UNITDIR=/usr/lib/systemd/system ZSHCOMPDIR=/usr/share/zsh/vendor-completions
	packaging/deb/build.sh bin/deb-root $(VERSION) $(DEB_DIR) >bin/deb.path
	@cat bin/deb.path

# Root: installs the .deb with dpkg, checks it, purges it and checks that
# nothing is left (packaging/deb/test-deb.sh). One line per check goes to
# $(TESTLOGS)/deb-test.log; make prints the tally, or the log on failure.
deb-test: deb
	@if [ "$$(id -u)" != 0 ]; then echo "the package test needs root (dpkg -i)"; exit 1; fi
	@mkdir -p $(TESTLOGS); log=$(TESTLOGS)/deb-test.log; \
	if packaging/deb/test-deb.sh $$(cat bin/deb.path) >$$log 2>&1; then \
	  echo "package test: $$(tail -1 $$log) (log: $$log)"; \
	else \
	  cat $$log; echo "FAIL  package test (log: $$log)"; exit 1; \
	fi

FORCE:

clean:
	rm -rf bin dist
