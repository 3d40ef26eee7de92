# The phases, notes and failures of tests/arm.sh and tests/cross.sh: sourced
# by both, after setting REPORT to the script's name for its messages.
#   phase NAME     starts a phase (its time goes into the summary)
#   say TEXT       a line of progress
#   note TEXT      a line of progress that the summary repeats
#   fail TEXT      a failure: the script goes on, and the summary fails
#   die TEXT       stops the script at once
#   run CMD...     runs a command, showing it first
#   report_summary the notes, the time per phase, the failures; exit status
#                  1 if there was any
now_ms() { date +%s%3N; }
PHASE=
PHASE_START=
TIMINGS=()
SUMMARY=()
FAILURES=()
phase() {
  end_phase
  PHASE=$1
  PHASE_START=$(now_ms)
  echo
  echo "=== $REPORT: $1"
}
end_phase() {
  if [ -n "$PHASE" ]; then
    local ms=$(($(now_ms) - PHASE_START))
    TIMINGS+=("$(printf '%-10s %6d.%01d s' "$PHASE" $((ms / 1000)) $((ms % 1000 / 100)))")
    PHASE=
  fi
}
say() { echo "$REPORT: $*"; }
note() { SUMMARY+=("$*"); say "$*"; }
fail() { FAILURES+=("$*"); echo "$REPORT: FAILED: $*" >&2; }
die() { echo "$REPORT: $*" >&2; exit 1; }
run() {
  echo "+ $*"
  "$@"
}
report_summary() {
  end_phase
  echo
  echo "=== $REPORT: summary"
  printf '%s\n' "${SUMMARY[@]}"
  echo "time per phase:"
  printf '  %s\n' "${TIMINGS[@]}"
  if [ ${#FAILURES[@]} -gt 0 ]; then
    echo "$REPORT: ${#FAILURES[@]} failure(s):" >&2
    printf '  %s\n' "${FAILURES[@]}" >&2
    return 1
  fi
  echo "$REPORT: all checks passed"
}
