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
# ccache, where installed, makes a fresh clone's build of an unchanged tree
# cheap (CI builds from a clean clone every time); paths are taken relative
# to the clone, so two clones share the cache.
if command -v ccache >/dev/null; then
  export CMAKE_CXX_COMPILER_LAUNCHER=ccache CCACHE_BASEDIR=$PWD CCACHE_NOHASHDIR=1
fi
[[ -f $dir/build.ninja ]] || cmake --preset "$preset" >/dev/null
cmake --build "$dir" -j "${FETCHD_JOBS:-2}"
