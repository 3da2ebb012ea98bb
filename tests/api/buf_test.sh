#!/usr/bin/env bash
# Issue #18 item 2: the API gate. The protos are buf-STANDARD clean and not
# broken against the baseline (scripts/buf.sh), and the gate really fails:
# an enum value without its prefix fails lint, and a renumbered field, a
# removed RPC and a changed stream type fail buf breaking.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
buf="$(bash scripts/buf.sh path)"
fail() { echo "FAIL: $*" >&2; exit 1; }

bash scripts/buf.sh lint
bash scripts/buf.sh breaking

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r protos "$work/base"

# Each mutation of a fresh copy must be caught, with the rule buf names.
expect_caught() {  # name, command (lint|breaking), rule, sed script, file
  local name="$1" cmd="$2" rule="$3" script="$4" file="$5"
  rm -rf "$work/new" && cp -r protos "$work/new"
  sed -i "$script" "$work/new/$file"
  cmp -s "protos/$file" "$work/new/$file" && fail "$name: the mutation changed nothing"
  local out
  if [[ "$cmd" == lint ]]; then
    out=$(cd "$work/new" && "$buf" lint 2>&1) && fail "$name: buf lint passed"
  else
    out=$(cd "$work/new" && "$buf" breaking --against "$work/base" 2>&1) &&
      fail "$name: buf breaking passed"
  fi
  grep -q "$rule" <<<"$out" || fail "$name: expected '$rule' in: $out"
  echo "caught: $name"
}
expect_caught "enum value without prefix" lint "should be prefixed with \"METHOD_\"" \
  's/  METHOD_POST = 3;/  METHOD_POST = 3;\n  PUT = 4;/' fetchd/v1/fetch.proto
expect_caught "renumbered field" breaking 'Previously present field "2" with name "max_concurrency"' \
  's/int32 max_concurrency = 2;/int32 max_concurrency = 20;/' fetchd/v1/fetch.proto
expect_caught "removed RPC" breaking "Previously present RPC \"Run\"" \
  '/rpc Run(RunRequest)/d' fetchd/v1/compute.proto
expect_caught "changed stream type" breaking "StreamBatchFetch" \
  's/returns (stream StreamBatchFetchResponse)/returns (stream FetchResult)/' fetchd/v1/fetch.proto
echo "PASS"
