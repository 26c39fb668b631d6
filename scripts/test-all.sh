#!/usr/bin/env bash
# Runs every braid test on a fresh machine: installs what the tests need, builds, then runs the
# Rust tests on both I/O backends and the SQL and client-driver suites against a real server.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/braid-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
mkdir -p "$CARGO_TARGET_DIR"

step() { printf '\n== %s\n' "$*"; }

step "prerequisites"
./scripts/setup.sh

step "build"
cargo build --workspace --all-targets

step "tests (blocking I/O backend)"
BRAID_IO_BACKEND=std cargo test --workspace --no-fail-fast

step "tests (io_uring I/O backend)"
# The whole workspace again, server included, on io_uring. `--workspace` rather than
# `-p braid-storage`: a narrower package set resolves dependency features differently and would
# rebuild them. BRAID_REQUIRE_URING makes a refused io_uring fail the run instead of silently
# testing the blocking backend twice.
BRAID_IO_BACKEND=uring BRAID_REQUIRE_URING=1 cargo test --workspace --no-fail-fast

if [ -x scripts/test-clients.sh ]; then
  step "client driver tests"
  ./scripts/test-clients.sh
fi

step "all tests passed"
