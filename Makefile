# Godwit: the two commands are `make demo` and `make test` (see README.md).
# Both install what they need first (scripts/deps.sh) and work on a fresh
# Debian machine with Go at /usr/local/go, as root.

SHELL := /bin/bash
export PATH := /usr/local/go/bin:$(HOME)/go/bin:$(PATH)
GO ?= go
BIN := bin/godwit
GUEST := guest/build/guest.elf

.PHONY: all deps bench-deps build guest demo test check unit bench-boot clean

all: build guest

deps:
	@bash scripts/deps.sh

bench-deps:
	@bash scripts/deps.sh --bench

# Without cgo: the VMM then sandboxes itself on every thread (internal/sandbox);
# godwit-vmm is the VMM alone, what host agents start.
# godwit version names the build: the nearest tag (v0.0.0-dev before the
# first) and the commit, +dirty when the tree had changes.
VERSION ?= $(shell git describe --tags 2>/dev/null || echo v0.0.0-dev)
COMMIT ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null)$(shell git diff --quiet HEAD 2>/dev/null || echo +dirty)
LDFLAGS := -X github.com/godwit-vmm/godwit/internal/cli.Version=$(VERSION) -X github.com/godwit-vmm/godwit/internal/cli.Commit=$(COMMIT)
build:
	CGO_ENABLED=0 $(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/godwit
	CGO_ENABLED=0 $(GO) build -ldflags "$(LDFLAGS)" -o bin/godwit-vmm ./cmd/godwit-vmm

guest:
	$(MAKE) -C guest

# The Linux guest: Debian's kernel (its bzImage, and the vmlinux inside it for
# the PVH boot) and an initramfs with busybox-static, the virtio modules and
# the workload guest/linux/gwload, built from apt packages into
# guest/build/linux (rebuilt only when an input changes). See
# guest/linux/README.md.
LINUX_GUEST := guest/build/linux
.PHONY: linux-guest
linux-guest: deps
	$(GO) run ./internal/tools/linuxguest --out $(LINUX_GUEST)

# The main job: boot the Linux guest (Debian's kernel by its PVH entry and
# the project's initramfs) on host A of a small namespace network, migrate
# it A -> B -> A while a client pings it, verify its memory, print the
# figures. About a minute on the software CPU here.
demo: deps build linux-guest
	$(GO) run ./internal/tools/demo --godwit $(BIN) --linux $(LINUX_GUEST)

# The same with the project's bare-metal test guest (boots in under a
# second; the instrument of the tests).
.PHONY: demo-guest demo-linux
demo-guest: deps build guest
	$(GO) run ./internal/tools/demo --godwit $(BIN) --guest $(GUEST)

# The former name of make demo.
demo-linux: demo

# Everything CI runs: formatting, vet, staticcheck, then every test with the
# race detector; the summary counts the tests that need /dev/kvm, root or
# network namespaces and says which skipped and why.
test: deps build guest linux-guest check
	set -o pipefail; GODWIT_GUEST=$(CURDIR)/$(GUEST) $(GO) test -race -count=1 -timeout 40m -json ./... \
		| $(GO) run ./internal/tools/testsummary

check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
		if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	staticcheck ./...

# Unit tests only (no KVM, root or namespaces needed).
unit:
	$(GO) test -short ./...

# Benchmarks against QEMU on the same test guest (docs/BENCHMARKS.md): both
# VMMs started and measured from Go; results in $BENCH_OUT/godwit-bench-<time>/
# (default /tmp/godwit-bench). BENCH_FLAGS go to the tool, e.g.
# BENCH_FLAGS="--save docs/results" to keep the JSON and the table there.
BENCH_FLAGS ?=
bench-boot: bench-deps build guest
	$(GO) run ./internal/tools/bench boot --godwit $(BIN) --guest $(GUEST) $(BENCH_FLAGS)

# The guest's own CPU work on each VMM's CPU: the W 64 64 0 dirty rate and
# the V time and the LOOP rates, Godwit and QEMU on the same kind of
# accelerator.
.PHONY: bench-cpu
bench-cpu: bench-deps build guest
	$(GO) run ./internal/tools/bench cpu --godwit $(BIN) --guest $(GUEST) $(BENCH_FLAGS)

# Launch -> READY of the Linux guest (Debian's kernel, the project's
# initramfs), Godwit vs QEMU on the same files; BENCH_FLAGS as above (e.g.
# --boot-runs 2: a boot takes minutes on the software CPU).
.PHONY: bench-linux
bench-linux: bench-deps build linux-guest
	$(GO) run ./internal/tools/bench linux-boot --godwit $(BIN) --guest $(GUEST) --linux $(LINUX_GUEST) $(BENCH_FLAGS)

.PHONY: bench-migrate
bench-migrate: bench-deps build guest
	$(GO) run ./internal/tools/bench migrate --godwit $(BIN) --guest $(GUEST) $(BENCH_FLAGS)

# Network blackout during live migration, Godwit vs QEMU, between network
# namespaces (docs/NETWORK.md); results in $BENCH_OUT/godwit-netbench-<time>/.
.PHONY: bench-net
bench-net: bench-deps build guest
	$(GO) run ./internal/tools/netbench --godwit $(BIN) --guest $(GUEST) $(BENCH_FLAGS)

clean:
	rm -rf bin
	$(MAKE) -C guest clean
