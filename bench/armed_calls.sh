#!/usr/bin/env bash
# What --armed_calls_per_method costs or gains, A/B in one run.
#
#   bench/armed_calls.sh [ROUNDS=5] [SECONDS=3]
#
# Two fetchd servers, identical but for --armed_calls_per_method: 1 (one
# request armed per method per CQ, as before issue #15) and 64 (the
# default). Rounds alternate the order; each measures, on both servers:
#   compute n=1 c=16      Compute.Run sqrt_sum(1), 16 calls in flight over
#                         2 driver threads: the RPC overhead, where arming
#                         matters most (bench/compute_load)
#   compute n=1e6 c=16    sqrt_sum(1e6): CPU-bound calls
#   fetch 100x200         20,000 URLs of nginx as 100 BatchFetch RPCs of 200
#                         sent at once, max_concurrency 64 (bench/fetch_load)
# Medians of the rounds, and 64 ÷ 1. Loopback only; everything started
# here is stopped on exit.
set -euo pipefail
rounds=${1:-5}
seconds=${2:-3}
origin_port=18090
source "$(dirname "$0")/lib.sh"

base=$(bash "$shared/origin.sh" start "$origin_port" | tail -n1)
start_fetchd --armed_calls_per_method=1
armed1=$target
start_fetchd --armed_calls_per_method=64
armed64=$target

compute() {  # target n -> calls/s
  build/bin/compute_load --target="$1" --n="$2" --concurrency=16 --threads=2 \
    --duration="${seconds}s" --warmup=500ms |
    sed -E 's/.*calls\/s=([0-9.]+).*/\1/'
}
fetch() {  # target -> req/s
  build/bin/fetch_load --target="$1" --base="$base" --n=20000 --rpcs=100 \
    --concurrency=64 | awk '{for (i = 2; i <= NF; i++) if ($i == "req/s") print $(i - 1)}'
}

echo "origin $base; armed=1 on $armed1, armed=64 on $armed64 ($(nproc) cores), $rounds rounds" >&2
fetch "$armed1" >/dev/null
fetch "$armed64" >/dev/null
for r in $(seq "$rounds"); do
  order=(1 64)
  ((r % 2 == 0)) && order=(64 1)
  for a in "${order[@]}"; do
    t=armed$a
    echo "$a compute-n1 $(compute "${!t}" 1)" >>"$tmp/results"
    echo "$a compute-n1e6 $(compute "${!t}" 1000000)" >>"$tmp/results"
    echo "$a fetch-100x200 $(fetch "${!t}")" >>"$tmp/results"
  done
  echo "round $r done" >&2
done

awk "$awk_median"'
  { runs[$2 " " $1] = runs[$2 " " $1] " " $3 }
  END {
    printf "%-14s %12s %12s %8s\n", "load", "armed=1", "armed=64", "64÷1"
    n = split("compute-n1 compute-n1e6 fetch-100x200", loads, " ")
    for (i = 1; i <= n; i++) {
      one = median(runs[loads[i] " 1"])
      many = median(runs[loads[i] " 64"])
      printf "%-14s %12.0f %12.0f %8.3f\n", loads[i], one, many, many / one
    }
  }' "$tmp/results"
