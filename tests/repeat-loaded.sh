#!/usr/bin/env bash
# The loopback suite N times in a row (default 20) while every core is kept
# busy by a spinning shell loop, to find tests that depend on how fast the
# machine is rather than on what the daemon does. Not part of run-all.sh (it
# takes a while); run it after touching anything time-dependent:
#   bash tests/repeat-loaded.sh 20
# Stops at the first failing run and keeps its log in target/repeat-loaded/.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-20}
logs=target/repeat-loaded
mkdir -p "$logs"

cargo test --locked --no-run >/dev/null 2>&1 || cargo test --locked --no-run

spinners=()
for _ in $(seq "$(nproc)"); do
  bash -c 'while :; do :; done' &
  spinners+=($!)
done
trap 'kill "${spinners[@]}" 2>/dev/null || true' EXIT
echo "repeat-loaded: $(nproc) spinning loops (pids ${spinners[*]}) keep every core busy"

started=$(date +%s)
for run in $(seq "$runs"); do
  log=$logs/run-$run.log
  run_started=$(date +%s)
  if cargo test --locked >"$log" 2>&1; then
    counts=$(awk '/^test result:/ { p += $4; f += $6 } END { printf "%d passed, %d failed", p, f }' "$log")
    echo "run $run of $runs: $counts in $(($(date +%s) - run_started)) s"
    rm -f "$log"
  else
    echo "run $run of $runs FAILED after $(($(date +%s) - run_started)) s; log: $log"
    grep -E '^test .* FAILED$|panicked at' "$log" | head -20
    exit 1
  fi
done
echo "repeat-loaded: $runs runs in a row passed in $(($(date +%s) - started)) s with every core busy"
