#!/usr/bin/env bash
# The README's second command: install what is missing, build, and run every
# test twice: the Release build (g++), then the same suite under
# AddressSanitizer + UndefinedBehaviorSanitizer (clang, -Wthread-safety
# -Werror, build-asan/), then every fuzz target for 30 s (scripts/fuzz.sh,
# built in build-asan/). Non-zero if anything fails.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh test

jobs=${FETCHD_JOBS:-2}
run_suite() {  # preset dir
  echo "== build ($1)" >&2
  bash scripts/build.sh "$1"
  echo "== test ($1)" >&2
  ctest --test-dir "$2" -j "$jobs" --output-on-failure --timeout 300
}

run_suite release build
export ASAN_OPTIONS=detect_leaks=1:detect_stack_use_after_return=1:strict_init_order=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
run_suite asan build-asan
bash scripts/fuzz.sh "${FETCHD_FUZZ_SECONDS:-30}"
echo "== all tests passed (release, asan+ubsan and fuzzing)" >&2
