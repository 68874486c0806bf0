# nodetrust — the two commands a newcomer needs:
#   make demo   run the whole system on an embedded default
#   make test   install what the tests need, then fmt, clippy, dependency rules, every test and
#               a fuzz smoke run
# Both are meant for a fresh Debian 12 machine, as root (apt-get installs the packages).

SHELL := /bin/bash
CARGO ?= cargo
DEB_PACKAGES := swtpm swtpm-tools libtss2-dev tpm2-tools pkg-config postgresql openssl chromium

# A one-off build (CI, a fresh machine) gains nothing from incremental state, and full debug
# information triples the size of every test binary: a fresh `make test` build takes 4.5 GB
# this way against 13 GB with cargo's defaults (docs/PERFORMANCE.md, "Build"). Panics still
# name file and line. Set either variable to override.
export CARGO_INCREMENTAL ?= 0
export CARGO_PROFILE_DEV_DEBUG ?= line-tables-only

.PHONY: deps test lint check-deps test-only fuzz-smoke demo bench clean-pg

deps:
	@scripts/install-deps.sh $(DEB_PACKAGES)

lint:
	$(CARGO) fmt --all -- --check
	for src in crates/*/src; do python3 scripts/module-cycles.py "$$src" || exit 1; done
	scripts/explain-failure.sh target/logs/clippy.log \
	  $(CARGO) clippy --workspace --all-targets --locked -- -D warnings

check-deps:
	scripts/check-pure-deps.sh

test-only:
	scripts/explain-failure.sh target/logs/test.log \
	  scripts/with-postgres.sh $(CARGO) test --workspace --locked --no-fail-fast

# Every fuzz target for FUZZ_SECONDS (default 20) on its seeds; any crash fails (docs/FUZZING.md).
fuzz-smoke:
	CARGO=$(CARGO) scripts/fuzz-smoke.sh

test: deps lint check-deps test-only fuzz-smoke

demo: deps
	scripts/demo.sh

bench:
	$(CARGO) bench -p nodetrust-tpm-wire --bench quote_verify
