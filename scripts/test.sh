#!/usr/bin/env bash
# The project's whole test run (what CI runs, via .ci/run): installs the system
# packages the real-client tests need, checks formatting and lints, builds,
# and runs every test — unit, property, simulation, real clients, namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-deps.sh

export CARGO_TERM_COLOR=never
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo build"
cargo build --workspace --locked
echo "== cargo test"
# One test binary at a time per crate is cargo's default; inside a binary the
# tests run in parallel, so every test uses unique names for its sockets,
# temp dirs, namespaces and loop devices.
cargo test --workspace --locked --no-fail-fast 2>&1 | tee /tmp/hadisk-test.log
echo "== all tests passed"
