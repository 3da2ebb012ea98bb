#!/usr/bin/env bash
# Issue #18 item 6: scripts/run.sh builds only what it runs. Two checks, no
# build: (1) run.sh's own commands (FETCHD_DRY_RUN=1) build exactly the
# targets fetchd and fetchctl, with the release preset, then exec fetchd with
# the given args; (2) those two targets' build graph in this build tree
# (ninja -t commands) compiles no test, benchmark or GoogleTest code and is a
# fraction of the full graph.
#   run_sh_test.sh SOURCE_DIR BINARY_DIR NINJA
set -euo pipefail
src=$1 bin=$2 ninja=$3
fail() { echo "run_sh_test: FAILED: $*" >&2; exit 1; }

out=$(FETCHD_DRY_RUN=1 bash "$src/scripts/run.sh" --listen=127.0.0.1:0 --workers=2 2>&1)
echo "$out"
builds=$(grep -c '^cmake --build' <<<"$out" || true)
((builds == 1)) || fail "want one 'cmake --build', got $builds"
build=$(grep '^cmake --build' <<<"$out")
[[ $build == "cmake --build build "*" --target fetchd fetchctl" ]] ||
  fail "build command is '$build', want 'cmake --build build ... --target fetchd fetchctl'"
if configure=$(grep '^cmake --preset' <<<"$out"); then
  [[ $configure == "cmake --preset release" ]] || fail "configure is '$configure'"
fi
exec_line=$(tail -1 <<<"$out")
[[ $exec_line == "exec build/bin/fetchd --listen=127.0.0.1:0 --workers=2" ]] ||
  fail "last line is '$exec_line', want fetchd exec'd with the args"
grep -q 'refuses loopback' <<<"$out" || fail "the SSRF hint is gone"

if [[ ! -f $bin/build.ninja ]]; then
  echo "run_sh_test: not a Ninja tree; graph check skipped"; exit 0
fi
# Every command that building fetchd and fetchctl from nothing would run.
cmds=$("$ninja" -C "$bin" -t commands fetchd fetchctl)
all=$("$ninja" -C "$bin" -t commands all | grep -c . || true)
n=$(grep -c . <<<"$cmds" || true)
grep -q -- '-o bin/fetchd ' <<<"$cmds" || fail "no link of bin/fetchd"
grep -q -- '-o bin/fetchctl ' <<<"$cmds" || fail "no link of bin/fetchctl"
if bad=$(grep -E -- "-c [^ ]*/(tests|bench)/|-lgtest|libgtest|libgmock|-o bin/[a-z_]*(_test|_load)( |$)" <<<"$cmds" | head -3) && [[ -n $bad ]]; then
  fail "fetchd+fetchctl build tests or benchmarks: $bad"
fi
# Today: ~100 of ~180 commands; the rest is tests and benchmarks.
((n * 10 < all * 8)) || fail "$n of $all commands: not a subset worth having"
echo "run_sh_test: ok (run.sh builds fetchd fetchctl: $n of $all build commands)"
