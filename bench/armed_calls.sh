#!/usr/bin/env bash
# What --armed_calls_per_method costs or gains, A/B in one run.
#
#   bench/armed_calls.sh [ROUNDS=5] [SECONDS=3] [COUNTS="1 8 64"]
#
# fetchd servers identical but for --armed_calls_per_method, one per count
# (1 = one request armed per method per CQ, as before issue #15). Rounds
# alternate the order; each measures, on every server:
#   compute n=1 c=16      Compute.Run sqrt_sum(1), 16 calls in flight over
#                         2 driver threads: the RPC overhead, where arming
#                         matters most (bench/compute_load)
#   compute n=1e6 c=16    sqrt_sum(1e6): CPU-bound calls
#   fetch 100x200         20,000 URLs of nginx as 100 BatchFetch RPCs of 200
#                         sent at once, max_concurrency 64 (bench/fetch_load)
# Medians of the rounds, and each count ÷ the first. Loopback only;
# everything started here is stopped on exit.
set -euo pipefail
rounds=${1:-5}
seconds=${2:-3}
read -r -a counts <<<"${3:-1 8 64}"
origin_port=18090
source "$(dirname "$0")/lib.sh"

base=$(bash "$shared/origin.sh" start "$origin_port" | tail -n1)
declare -A targets
for a in "${counts[@]}"; do
  start_fetchd --armed_calls_per_method="$a"
  targets[$a]=$target
done

compute() {  # target n -> calls/s
  build/bin/compute_load --target="$1" --n="$2" --concurrency=16 --threads=2 \
    --duration="${seconds}s" --warmup=500ms |
    sed -E 's/.*calls\/s=([0-9.]+).*/\1/'
}
fetch() {  # target -> req/s
  build/bin/fetch_load --target="$1" --base="$base" --n=20000 --rpcs=100 \
    --concurrency=64 | awk '{for (i = 2; i <= NF; i++) if ($i == "req/s") print $(i - 1)}'
}

echo "origin $base; counts ${counts[*]} ($(nproc) cores), $rounds rounds" >&2
for a in "${counts[@]}"; do fetch "${targets[$a]}" >/dev/null; done
for r in $(seq "$rounds"); do
  order=("${counts[@]}")
  ((r % 2 == 0)) && order=($(printf '%s\n' "${counts[@]}" | tac))
  for a in "${order[@]}"; do
    t=${targets[$a]}
    echo "$a compute-n1 $(compute "$t" 1)" >>"$tmp/results"
    echo "$a compute-n1e6 $(compute "$t" 1000000)" >>"$tmp/results"
    echo "$a fetch-100x200 $(fetch "$t")" >>"$tmp/results"
  done
  echo "round $r done" >&2
done

awk -v counts="${counts[*]}" "$awk_median"'
  { runs[$2 " " $1] = runs[$2 " " $1] " " $3 }
  END {
    nc = split(counts, c, " ")
    printf "%-14s", "load"
    for (j = 1; j <= nc; j++) printf " %10s", "armed=" c[j]
    for (j = 2; j <= nc; j++) printf " %8s", c[j] "÷" c[1]
    printf "\n"
    n = split("compute-n1 compute-n1e6 fetch-100x200", loads, " ")
    for (i = 1; i <= n; i++) {
      printf "%-14s", loads[i]
      for (j = 1; j <= nc; j++) m[j] = median(runs[loads[i] " " c[j]])
      for (j = 1; j <= nc; j++) printf " %10.0f", m[j]
      for (j = 2; j <= nc; j++) printf " %8.3f", m[j] / m[1]
      printf "\n"
    }
  }' "$tmp/results"
