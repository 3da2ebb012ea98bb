#!/usr/bin/env bash
# Runs every libFuzzer target (tests/fuzz) for SECONDS each (default 30),
# one at a time, on a copy of its seed corpus (tests/fuzz/corpus/<name>/,
# never modified here). Builds the targets in build-asan/ first if needed.
# Prints per target: runs, runs/s, coverage (edges) and features, and the
# result; exits non-zero if any target crashed, leaked, timed out
# (-timeout=10 per input) or ran out of memory (-rss_limit_mb=2048), and
# prints where the input that did it was kept (build-asan/fuzz-artifacts/).
#
#   scripts/fuzz.sh [SECONDS]      FUZZ_TARGETS="url_policy request" to pick
#   FUZZ_MAX_LEN=N                 longest input tried (default 4096)
#
# The targets call pure functions only; where the kernel allows it they run
# in a network namespace of their own as well, so that no packet can leave
# even if the code under test tried (unshare -rn).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-30}
[[ $seconds =~ ^[0-9]+$ && $seconds -ge 1 ]] || {
  echo "usage: $0 [SECONDS]" >&2
  exit 2
}
all=(url_policy link_header page_cursor resume_token json_process html_title
  request)
read -r -a targets <<<"${FUZZ_TARGETS:-${all[*]}}"
max_len=${FUZZ_MAX_LEN:-4096}
dir=build-asan

if command -v ccache >/dev/null; then
  export CMAKE_CXX_COMPILER_LAUNCHER=ccache CCACHE_BASEDIR=$PWD CCACHE_NOHASHDIR=1
fi
[[ -f $dir/build.ninja ]] || cmake --preset asan >/dev/null
grep -q '^FETCHD_FUZZ:BOOL=ON' "$dir/CMakeCache.txt" ||
  cmake -S . -B "$dir" -DFETCHD_FUZZ=ON >/dev/null
echo "== build (fuzz targets)" >&2
cmake --build "$dir" -j "${FETCHD_JOBS:-2}" --target \
  "${targets[@]/%/_fuzzer}"

netns=()
if unshare -rn true 2>/dev/null; then netns=(unshare -rn); fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
artifacts=$PWD/$dir/fuzz-artifacts
mkdir -p "$artifacts"
# Leaks count as failures; the rest as scripts/test.sh sets them.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

failed=0
summary=()
for name in "${targets[@]}"; do
  bin=$dir/bin/${name}_fuzzer
  seeds=tests/fuzz/corpus/$name
  corpus=$work/$name
  mkdir -p "$corpus"
  cp -r "$seeds"/. "$corpus"/
  log=$work/$name.log
  echo "== fuzz $name (${seconds}s, $(ls "$seeds" | wc -l) seeds)" >&2
  rc=0
  "${netns[@]}" "$bin" -max_total_time="$seconds" -timeout=10 \
    -rss_limit_mb=2048 -max_len="$max_len" -print_final_stats=1 \
    -artifact_prefix="$artifacts/$name-" "$corpus" >"$log" 2>&1 || rc=$?
  # A crash can come before any status line: nothing found is not an error.
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1 || true)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2 || true)
  ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | cut -d' ' -f2 || true)
  time_s=$(grep -o 'Done [0-9]* runs in [0-9]* second' "$log" | tail -1 |
    awk '{print $5}' || true)
  rate=-
  [[ -n $runs && -n $time_s ]] && rate=$((runs / (time_s > 0 ? time_s : 1)))
  units=$(ls "$corpus" | wc -l)
  if ((rc == 0)); then
    result=ok
  else
    failed=1
    what=$(grep -m1 -oE 'ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer|UndefinedBehaviorSanitizer): [a-z-]+( [a-z-]+)?|runtime error: .*|FUZZ_CHECK failed: .*|terminate called .*' "$log" || true)
    input=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
    result="FAILED (exit $rc): ${what:-see log}; input: ${input:-none written}"
    # The reason in full, for CI logs.
    grep -E -A30 '^==[0-9]+==ERROR|FUZZ_CHECK failed|runtime error|terminate called|ERROR: libFuzzer' \
      "$log" | head -60 >&2 || tail -40 "$log" >&2
  fi
  line=$(printf '%-13s runs %9s  %7s/s  cov %5s  ft %6s  corpus %4s  %s' \
    "$name" "${runs:-?}" "$rate" "${cov:-?}" "${ft:-?}" "$units" "$result")
  echo "$line" >&2
  summary+=("$line")
done

echo "== fuzz summary (${seconds}s per target, max_len $max_len)" >&2
printf '%s\n' "${summary[@]}" >&2
if ((failed)); then
  echo "== fuzzing FAILED: crashing inputs are in $artifacts; add each to" \
    "tests/fuzz/corpus/<target>/ once fixed" >&2
  exit 1
fi
echo "== fuzzing passed" >&2
