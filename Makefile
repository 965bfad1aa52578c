# msgtrace — build, test, demo, benchmarks. `make help` lists the targets.
SHELL := /bin/bash
MUSL := x86_64-unknown-linux-musl
GNU := x86_64-unknown-linux-gnu
STATIC_BIN := target/msgtrace-static
# SPEC §9: the stripped static binary stays within 2.5 MiB.
SIZE_BUDGET := 2621440

.PHONY: help test static size demo bench cross receivers fmt clippy unit deps

help:
	@echo "make test      fmt + clippy + every test (installs rsyslog, the musl target)"
	@echo "make demo      build, start the Microsoft 365 emulator, pull once to stdout, stop"
	@echo "make static    stripped static binary at $(STATIC_BIN)"
	@echo "make size      print the static binary's size against the budget"
	@echo "make bench     benchmarks of SPEC §9, written to tests/bench/RESULTS.md"
	@echo "make cross     static aarch64/armv7 builds where a linker is installable"

# What the tests need on a fresh machine: the musl target, and real receivers.
deps:
	@rustup target list --installed 2>/dev/null | grep -q $(MUSL) || rustup target add $(MUSL) || echo "note: musl target unavailable, static builds fall back to glibc crt-static"
	@bash tests/support/install-receivers.sh

static:
	@if rustup target list --installed 2>/dev/null | grep -q $(MUSL); then \
	  CC_x86_64_unknown_linux_musl=$$(command -v musl-gcc || command -v gcc) cargo build --release --locked --target $(MUSL) && \
	  cp target/$(MUSL)/release/msgtrace $(STATIC_BIN); \
	else \
	  RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked --target $(GNU) && \
	  cp target/$(GNU)/release/msgtrace $(STATIC_BIN); \
	fi
	@echo "static binary: $(STATIC_BIN) $$(stat -c %s $(STATIC_BIN)) bytes"

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
