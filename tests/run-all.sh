#!/usr/bin/env bash
# Every test of intercomd: the one command README.md gives and .ci/run calls.
#   bash tests/run-all.sh        (as root, or it asks sudo)
# On a bare Debian 12 machine with Rust and Node it installs what is missing
# (Chromium, mosquitto, zbar-tools and python3 from apt, playwright-core
# from npm), then runs:
#   1. cargo test: unit tests, property tests, and the loopback tests
#      (protocol, rooms, reliability, hostile input, MQTT against a real
#      mosquitto, QR codes read back by zbarimg, the iOS profile read by
#      Python's plistlib) against the real binary;
#   2. the end-to-end suite of the pages in headless Chromium, in its own
#      network namespace;
#   3. tests/arm.sh: the static Pi builds (aarch64, ARMv5TE), the loopback
#      suites against each under qemu with the CPU of every Pi, a Debian 11
#      userland, the systemd unit checks, the Debian packages;
#   4. tests/cross.sh: the same Pi binaries built by `cross` in Podman
#      containers of local Debian images, each started under qemu;
#   5. the footprint and idle-wakeup benchmarks, which fail over budget, and
#      a smoke run of the relay benchmark, which fails if a message is lost.
set -euo pipefail
cd "$(dirname "$0")/.."

# It installs packages, so it runs as root. In a root shell (a fresh Debian
# machine has no sudo) it goes straight on; from a user's shell it asks sudo,
# keeping the PATH and rustup's homes that found cargo.
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "run-all: needs root, and there is no sudo: run it in a root shell" >&2; exit 1; }
  exec sudo env "PATH=$PATH" "RUSTUP_HOME=${RUSTUP_HOME:-$HOME/.rustup}" "CARGO_HOME=${CARGO_HOME:-$HOME/.cargo}" \
    bash "$0" "$@"
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "run-all: cargo is missing; install Rust from rustup first" >&2
  exit 1
fi
if ! command -v cc >/dev/null 2>&1; then
  apt-get update && apt-get install -y --no-install-recommends build-essential
fi
if [ ! -x /usr/sbin/mosquitto ] || ! command -v mosquitto_passwd >/dev/null 2>&1; then
  # tests/mqtt.rs runs a real broker on loopback.
  apt-get update && apt-get install -y --no-install-recommends mosquitto mosquitto-clients
fi
if ! command -v zbarimg >/dev/null 2>&1; then
  # tests/qr.rs reads the daemon's QR codes back with zbarimg.
  apt-get update && apt-get install -y --no-install-recommends zbar-tools
fi
if ! command -v python3 >/dev/null 2>&1; then
  # tests/https.rs reads the .mobileconfig with Python's plistlib.
  apt-get update && apt-get install -y --no-install-recommends python3
fi

echo "== cargo test"
cargo test --locked

echo "== real browser: the intercom, room and door pages in headless Chromium"
bash tests/browser/run.sh target/debug/intercomd

echo "== Raspberry Pi: ARM builds under qemu, systemd unit checks, Debian packages"
bash tests/arm.sh

echo "== cross: the same Pi targets built by \`cross\` with Podman and local images, checked under qemu"
bash tests/cross.sh

echo "== benchmarks: footprint and idle wakeups (each fails if over its budget)"
# Measure the binary exactly as `cargo build --release` ships it: a bench
# build turns on dev-dependencies' features and would measure another one.
cargo build --locked --release
mkdir -p target/shipped
cp target/release/intercomd target/shipped/intercomd
INTERCOMD_BIN=target/shipped/intercomd cargo bench --locked --bench footprint
INTERCOMD_BIN=target/shipped/intercomd cargo bench --locked --bench idle
# A few seconds of the relay benchmark against intercomd alone: it fails if
# a message is lost, duplicated or reordered. The comparison with
# matchbox_server (`cargo bench --bench relay`, about 20 minutes) is run on
# request, not here.
INTERCOMD_BIN=target/shipped/intercomd cargo bench --locked --bench relay -- --smoke
