#!/usr/bin/env bash
# Fuzz smoke test: builds every cargo-fuzz target of fuzz/ and runs each for FUZZ_SECONDS
# (default 20) on its corpus (fuzz/corpus/TARGET, kept between runs, gitignored) and its
# committed seeds (fuzz/seeds/TARGET, read only). Fails when any target crashes, leaks, times
# out or fails to build; the input that did it is in fuzz/artifacts/TARGET/.
#
# Only the stable toolchain is assumed: cargo-fuzz passes nightly -Z flags (sanitizer,
# coverage instrumentation), which RUSTC_BOOTSTRAP=1 lets stable rustc accept. Builds go to
# fuzz/target (their own target dir: the workspace build is not invalidated).
#
#   FUZZ_SECONDS=600 scripts/fuzz-smoke.sh          a longer campaign (10 minutes per target)
#   FUZZ_TARGETS="eventlog_parse ima_parse" ...     only these targets
#   FUZZ_SANITIZER=none ...                         without AddressSanitizer (faster, fewer finds)
#   FUZZ_JOBS=1 ...                                 one target at a time (default: one per core)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root/fuzz"
seconds=${FUZZ_SECONDS:-20}
sanitizer=${FUZZ_SANITIZER:-address}
cargo=${CARGO:-cargo}
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="$root/fuzz/target"

if ! "$cargo" fuzz --version >/dev/null 2>&1; then
  echo "fuzz-smoke: installing cargo-fuzz (cargo install cargo-fuzz --locked)" >&2
  "$cargo" install cargo-fuzz --locked
fi

targets=${FUZZ_TARGETS:-$("$cargo" fuzz list)}
if [ -z "$targets" ]; then
  echo "fuzz-smoke: no fuzz targets found in fuzz/Cargo.toml" >&2
  exit 1
fi

echo "fuzz-smoke: building $(echo $targets | wc -w) targets (sanitizer: $sanitizer)" >&2
build_start=$(date +%s)
"$cargo" fuzz build --sanitizer "$sanitizer"
echo "fuzz-smoke: built in $(( $(date +%s) - build_start )) s" >&2

logs="$root/fuzz/target/smoke-logs"
rm -rf "$logs"
mkdir -p "$logs"

# One target: its log in $logs/TARGET.log, its result in $logs/TARGET.status.
run_one() {
  local t=$1
  mkdir -p "corpus/$t"
  local dirs=("corpus/$t")
  [ -d "seeds/$t" ] && dirs+=("seeds/$t")
  if "$cargo" fuzz run --sanitizer "$sanitizer" "$t" "${dirs[@]}" -- \
      -max_total_time="$seconds" -print_final_stats=1 >"$logs/$t.log" 2>&1; then
    echo ok >"$logs/$t.status"
  else
    echo FAILED >"$logs/$t.status"
  fi
}

# Targets run $jobs at a time (default: the number of cores), each on one core.
jobs=${FUZZ_JOBS:-$(nproc 2>/dev/null || echo 1)}
echo "fuzz-smoke: ${seconds} s per target, $jobs at a time" >&2
for t in $targets; do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do
    wait -n || true
  done
  echo "fuzz-smoke: $t" >&2
  run_one "$t" &
done
wait

failed=()
summary=()
for t in $targets; do
  status=$(cat "$logs/$t.status" 2>/dev/null || echo FAILED)
  if [ "$status" != ok ]; then
    failed+=("$t")
    echo "---- $t ----" >&2
    tail -n 40 "$logs/$t.log" >&2
  fi
  runs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$logs/$t.log" | awk '{print $2}' | tail -n1)
  last=$(grep -E '^#[0-9]+' "$logs/$t.log" | tail -n1)
  cov=$(echo "$last" | grep -o 'cov: [0-9]*' | awk '{print $2}')
  ft=$(echo "$last" | grep -o 'ft: [0-9]*' | awk '{print $2}')
  corp=$(echo "$last" | grep -o 'corp: [0-9]*' | awk '{print $2}')
  summary+=("$(printf '%-18s %-6s execs=%-10s cov=%-6s ft=%-6s corpus=%s' "$t" "$status" "${runs:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}")")
done

echo "fuzz-smoke: ${seconds} s per target; logs in $logs"
printf '  %s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz-smoke: FAILED: ${failed[*]} (crashing inputs in fuzz/artifacts/)" >&2
  exit 1
fi
echo "fuzz-smoke: no crash"
