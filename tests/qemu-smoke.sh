#!/usr/bin/env bash
# Smoke test of one intercomd binary under qemu-user, on loopback only.
#   bash tests/qemu-smoke.sh QEMU CPU BINARY
#   bash tests/qemu-smoke.sh qemu-arm arm1176 target/cross/build/armv5te-unknown-linux-gnueabi/release/intercomd
#
# Starts `QEMU -cpu CPU BINARY --listen 127.0.0.1:0 --https-listen 127.0.0.1:0
# --state-dir TMP`, waits for the daemon's "listening on http://..." and
# "listening on https://..." log lines (it logs the ports it was given), then
# asks it: /healthz answers `ok`, /api/ice-servers has iceServers, GET /
# answers 200, and the HTTPS port answers (curl -k: the certificate is the
# one its own authority made just now). SIGTERM must make it exit 0 within
# 5 s. Prints one line with the timings; exits non-zero with the reason and
# the daemon's log otherwise.
#
# qemu-user runs the ARM program inside its own process, so the pid started
# here is the daemon's: signals reach it as they would on a Pi. A dynamically
# linked binary needs its libraries: set QEMU_LD_PREFIX (qemu reads it), e.g.
# QEMU_LD_PREFIX=/usr/aarch64-linux-gnu. Static binaries need nothing.
set -euo pipefail

if [ $# -ne 3 ]; then
  echo "usage: $0 QEMU CPU BINARY   (e.g. $0 qemu-arm arm1176 path/to/intercomd)" >&2
  exit 2
fi
QEMU=$1
CPU=$2
BINARY=$3
NAME="$(basename "$QEMU") -cpu $CPU"
command -v "$QEMU" >/dev/null 2>&1 || { echo "qemu-smoke: $QEMU is not installed (apt-get install qemu-user)" >&2; exit 1; }
command -v curl >/dev/null 2>&1 || { echo "qemu-smoke: curl is not installed" >&2; exit 1; }
[ -x "$BINARY" ] || { echo "qemu-smoke: $BINARY is not an executable file" >&2; exit 1; }

now_ms() { date +%s%3N; }
WORK=$(mktemp -d "${TMPDIR:-/tmp}/qemu-smoke.XXXXXX")
LOG=$WORK/daemon.log
PID=
cleanup() {
  if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then kill -KILL "$PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
fail() {
  echo "qemu-smoke: FAILED: $NAME $BINARY: $*" >&2
  if [ -s "$LOG" ]; then
    echo "qemu-smoke: the daemon's log:" >&2
    sed 's/^/  | /' "$LOG" >&2
  fi
  exit 1
}

started=$(now_ms)
# The log exists before the daemon starts: the background job opens it in
# its own process, and the first poll below could otherwise run first and
# find no file (under load it did: sed failed, and set -e ended the check).
: >"$LOG"
"$QEMU" -cpu "$CPU" "$BINARY" --listen 127.0.0.1:0 --https-listen 127.0.0.1:0 --state-dir "$WORK/state" >"$LOG" 2>&1 &
PID=$!

# Poll the log every 0.05 s for both addresses, for at most 20 s (the first
# start makes the certificate authority, which takes longest under emulation).
http= https=
for _ in $(seq 400); do
  http=$(sed -n 's/.*listening on http:\/\/\([0-9.]*:[0-9]*\).*/\1/p' "$LOG" | head -n 1)
  https=$(sed -n 's/.*listening on https:\/\/\([0-9.]*:[0-9]*\).*/\1/p' "$LOG" | head -n 1)
  if [ -n "$http" ] && [ -n "$https" ]; then break; fi
  if ! kill -0 "$PID" 2>/dev/null; then
    status=0
    wait "$PID" || status=$?
    PID=
    fail "exited with status $status before listening$([ "$status" = 132 ] && echo ' (SIGILL: an instruction this CPU does not have)')"
  fi
  sleep 0.05
done
[ -n "$http" ] || fail "no 'listening on http://' line within 20 s"
[ -n "$https" ] || fail "no 'listening on https://' line within 20 s"
listening_ms=$(($(now_ms) - started))

asked=$(now_ms)
health=$(curl -sS --max-time 5 "http://$http/healthz" 2>&1) || fail "GET /healthz: $health"
[ "$health" = ok ] || fail "/healthz answered '$health', not 'ok'"
ice=$(curl -sS --max-time 5 "http://$http/api/ice-servers" 2>&1) || fail "GET /api/ice-servers: $ice"
case $ice in *iceServers*) ;; *) fail "/api/ice-servers answered '$ice' (no iceServers)" ;; esac
page=$(curl -sS --max-time 5 -o /dev/null -w '%{http_code} %{size_download}' "http://$http/" 2>&1) || fail "GET /: $page"
[ "${page%% *}" = 200 ] || fail "GET / answered $page"
secure=$(curl -sS -k --max-time 10 -o /dev/null -w '%{http_code}' "https://$https/healthz" 2>&1) ||
  fail "GET https://$https/healthz: $secure"
[ "$secure" = 200 ] || fail "GET https://$https/healthz answered $secure"
asked_ms=$(($(now_ms) - asked))

stopping=$(now_ms)
kill -TERM "$PID"
for _ in $(seq 100); do
  kill -0 "$PID" 2>/dev/null || break
  sleep 0.05
done
if kill -0 "$PID" 2>/dev/null; then
  kill -KILL "$PID" 2>/dev/null || true
  wait "$PID" 2>/dev/null || true
  PID=
  fail "still running 5 s after SIGTERM (killed)"
fi
status=0
wait "$PID" || status=$?
PID=
stopped_ms=$(($(now_ms) - stopping))
[ "$status" = 0 ] || fail "exited with status $status after SIGTERM, not 0"

echo "qemu-smoke: ok: $NAME $(basename "$BINARY"): listening on http $http and https $https after $listening_ms ms; /healthz ok, ice-servers, GET / ${page%% *} (${page#* } bytes), https 200 in $asked_ms ms; exit 0 $stopped_ms ms after SIGTERM"
