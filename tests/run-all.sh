#!/usr/bin/env bash
# Every test of intercomd: the one command README.md gives and .ci/run calls.
#   sudo bash tests/run-all.sh
# On a bare Debian 12 machine with Rust and Node it installs what is missing
# (Chromium from apt, playwright-core from npm), then runs:
#   1. cargo test: unit tests and the loopback tests against the real binary;
#   2. the real-browser call test, in its own network namespace;
#   3. the footprint benchmark, which fails if a budget is exceeded.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
  echo "run-all: cargo is missing; install Rust from rustup first" >&2
  exit 1
fi
if ! command -v cc >/dev/null 2>&1; then
  apt-get update && apt-get install -y --no-install-recommends build-essential
fi

echo "== cargo test"
cargo test --locked

echo "== real browser: the intercom page in headless Chromium"
bash tests/browser/run.sh target/debug/intercomd

echo "== footprint benchmark"
cargo bench --locked --bench footprint
