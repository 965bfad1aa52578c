# msgtrace — build, test, demo, benchmarks. `make help` lists the targets.
SHELL := /bin/bash
MUSL := x86_64-unknown-linux-musl
GNU := x86_64-unknown-linux-gnu
STATIC_BIN := target/msgtrace-static
# SPEC §9: the stripped static binary stays within 2.5 MiB.
SIZE_BUDGET := 2621440
IMAGE ?= msgtrace:latest

.PHONY: help test static musl-target image size demo bench cross receivers fmt clippy unit deps

help:
	@echo "make test      fmt + clippy + every test (installs the receivers and tools they use)"
	@echo "make demo      build, start the Microsoft 365 emulator, pull once to stdout, stop"
	@echo "make static    stripped static musl binary at $(STATIC_BIN) (installs the musl target)"
	@echo "make image     the scratch image $(IMAGE) from Dockerfile.scratch (buildah, podman or docker)"
	@echo "make size      print the static binary's size against the budget"
	@echo "make bench     benchmarks of SPEC §9, written to tests/bench/RESULTS.md"
	@echo "make cross     static aarch64/armv7 builds where a linker is installable"
	@echo "               (armv7 may fall back to glibc crt-static: tests/support/cross.sh)"

# What the tests need on a fresh machine: real receivers and the tools of
# tests/support/install-tools.sh (the musl target comes with `static`).
deps:
	@bash tests/support/install-receivers.sh
	@bash tests/support/install-tools.sh

# The musl std for `static`: installed here, never replaced by a glibc build (SPEC §8).
musl-target:
	@if [ -d "$$(rustc --print sysroot)/lib/rustlib/$(MUSL)/lib" ]; then :; \
	elif ! command -v rustup >/dev/null; then \
	  echo "make static: FAILED: the Rust std for $(MUSL) is missing and rustup is not installed to add it" >&2; exit 1; \
	else \
	  echo "make static: installing the $(MUSL) target (rustup target add)"; \
	  rustup target add $(MUSL) || { echo "make static: FAILED: \`rustup target add $(MUSL)\` did not work (network to static.rust-lang.org?); no glibc binary is built instead" >&2; exit 1; }; \
	fi

# ring's C and assembly build with musl-gcc when present, else with gcc.
static: musl-target
	CC_x86_64_unknown_linux_musl=$$(command -v musl-gcc || command -v gcc) cargo build --release --locked --target $(MUSL)
	@cp target/$(MUSL)/release/msgtrace $(STATIC_BIN)
	@v=$$($(STATIC_BIN) --version) || { echo "make static: FAILED: $(STATIC_BIN) --version does not run" >&2; exit 1; }; \
	case "$$v" in *"($(MUSL),"*) ;; *) echo "make static: FAILED: $(STATIC_BIN) is not the $(MUSL) build: $$v" >&2; exit 1;; esac; \
	echo "static binary: $(STATIC_BIN) $$(stat -c %s $(STATIC_BIN)) bytes, libc: musl ($(MUSL), statically linked)"

# The scratch image with the first OCI builder found: buildah (daemonless; `--isolation
# chroot` works in an unprivileged container), podman, or docker with a running daemon.
image: static
	@if command -v buildah >/dev/null; then b="buildah bud --isolation chroot"; \
	elif command -v podman >/dev/null; then b="podman build"; \
	elif docker info >/dev/null 2>&1; then b="docker build"; \
	else echo "make image: FAILED: no OCI builder: install buildah (bash tests/support/install-tools.sh), podman, or start docker" >&2; exit 1; fi; \
	echo "make image: $$b -f Dockerfile.scratch -t $(IMAGE) ."; \
	$$b -f Dockerfile.scratch -t $(IMAGE) .

size: static
	@s=$$(stat -c %s $(STATIC_BIN)); \
	printf "stripped static binary: %d bytes (%.2f MiB), budget %d bytes (2.50 MiB)\n" $$s $$(echo "$$s/1048576" | bc -l) $(SIZE_BUDGET); \
	if [ $$s -gt $(SIZE_BUDGET) ]; then echo "FAIL: over budget"; exit 1; fi

fmt:
	cargo fmt --check

clippy:
	cargo clippy --locked --all-targets -- -D warnings

unit:
	cargo test --locked

test: deps fmt clippy static
	MSGTRACE_STATIC_BIN=$(CURDIR)/$(STATIC_BIN) cargo test --locked

demo:
	@bash tests/support/demo.sh

bench: deps static
	@bash tests/bench/run.sh

cross:
	@bash tests/support/cross.sh
