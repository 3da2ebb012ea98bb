#!/usr/bin/env bash
# Configures (once) and builds one preset: release -> build/, asan -> build-asan/.
set -euo pipefail
cd "$(dirname "$0")/.."
preset=${1:-release}
case "$preset" in
  release) dir=build ;;
  asan) dir=build-asan ;;
  *) echo "usage: $0 [release|asan]" >&2; exit 2 ;;
esac
[[ -f $dir/build.ninja ]] || cmake --preset "$preset" >/dev/null
cmake --build "$dir" -j "${FETCHD_JOBS:-2}"
