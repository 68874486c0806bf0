#!/usr/bin/env bash
# Runs a command with its output teed to a log; when it fails, ends with what a reader of the
# last lines needs: the compiler's and the test harness's error lines with their context, the
# failed tests, and the machine's free disk and memory (a full disk or an OOM kill shows up as
# a bare "could not compile").
#   scripts/explain-failure.sh LOG command args...
set -uo pipefail
log=$1
shift
mkdir -p "$(dirname "$log")"
"$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
if [ "$status" -ne 0 ]; then
  echo
  echo "==== failed (exit $status): $* ===="
  echo "---- first errors (full output in $log) ----"
  grep -n -E -A14 '^(error(\[E[0-9]+\])?:|thread .* panicked|---- .* stdout ----)' "$log" | head -n 120
  echo "---- failed tests ----"
  grep -E '^    [^ ].* (FAILED|failed)|^test .* FAILED' "$log" | sort -u | head -n 40
  echo "---- machine ----"
  df -h . /tmp 2>/dev/null
  free -m 2>/dev/null
  dmesg 2>/dev/null | grep -i -E 'out of memory|killed process' | tail -n 3
fi
exit "$status"
