#!/usr/bin/env bash
# Configures (once) and builds one preset: release -> build/, asan -> build-asan/.
#   scripts/build.sh [release|asan] [TARGET...]
# With TARGETs, builds only those (scripts/run.sh: fetchd and fetchctl) in the
# same directory and cache, so a later full build (scripts/test.sh) reuses
# their objects and does not reconfigure. FETCHD_DRY_RUN=1 prints the cmake
# commands instead of running them (tests/scripts/run_sh_test.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
preset=${1:-release}
case "$preset" in
  release) dir=build ;;
  asan) dir=build-asan ;;
  *) echo "usage: $0 [release|asan] [TARGET...]" >&2; exit 2 ;;
esac
shift $(($# > 0 ? 1 : 0))
targets=("$@")
run() {
  if [[ -n ${FETCHD_DRY_RUN:-} ]]; then echo "$*"; else "$@"; fi
}
# ccache, where installed, makes a fresh clone's build of an unchanged tree
# cheap (CI builds from a clean clone every time); paths are taken relative
# to the clone, so two clones share the cache.
if command -v ccache >/dev/null; then
  export CMAKE_CXX_COMPILER_LAUNCHER=ccache CCACHE_BASEDIR=$PWD CCACHE_NOHASHDIR=1
fi
if [[ ! -f $dir/build.ninja ]]; then
  if [[ -n ${FETCHD_DRY_RUN:-} ]]; then echo "cmake --preset $preset"
  else cmake --preset "$preset" >/dev/null; fi
fi
run cmake --build "$dir" -j "${FETCHD_JOBS:-2}" ${targets[@]+--target "${targets[@]}"}
