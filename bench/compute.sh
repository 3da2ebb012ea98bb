#!/usr/bin/env bash
# Compute.Run throughput and latency, fetchd vs the seed's ProcessPoolExecutor.
#
#   bench/compute.sh [ROUNDS=3] [SECONDS=3]
#
# For n=1 (RPC overhead) and n=1,000,000 (CPU bound) at 1, 2 and 16
# concurrent callers, bench/compute_load (C++, async stub, closed loop)
# drives a real fetchd on loopback; ../shared/bench/seed_peer.py --compute
# runs the same kernel through a ProcessPoolExecutor. Rounds alternate
# fetchd and the seed; the table shows medians and fetchd ÷ seed ratios.
# Everything binds to 127.0.0.1 and is stopped on exit.
set -euo pipefail
rounds=${1:-3}
seconds=${2:-3}
source "$(dirname "$0")/lib.sh"
seed=$shared/seed_peer.py

start_fetchd
echo "fetchd on $target ($(nproc) cores); $rounds rounds of ${seconds}s per point" >&2

drive() {  # n c -> "calls/s p50_us p99_us"
  local threads=1
  (($2 > 1)) && threads=2
  build/bin/compute_load --target="$target" --n="$1" --concurrency="$2" \
    --threads="$threads" --duration="${seconds}s" --warmup=500ms |
    sed -E 's/.*calls\/s=([0-9.]+) p50_us=([0-9]+) p99_us=([0-9]+).*/\1 \2 \3/'
}
seed_rate() {  # n k -> calls/s
  "$seed" --compute "$1" "$2" | awk '{print $(NF-1)}'
}

for r in $(seq "$rounds"); do
  for n in 1 1000000; do
    for c in 1 2 16; do
      echo "fetchd $n $c $(drive "$n" "$c")" >>"$tmp/results"
    done
  done
  echo "seed 1 - $(seed_rate 1 20000)" >>"$tmp/results"
  echo "seed 1000000 - $(seed_rate 1000000 200)" >>"$tmp/results"
  echo "round $r done" >&2
done

build/bin/compute_load --target="$target" --cancel_probes=20 --cancel_fill="$(nproc)" >"$tmp/cancel"

# Medians per (who, n, c) and the ratios.
awk "$awk_median"'
  $1 == "fetchd" { k = $2 " " $3; rate[k] = rate[k] " " $4; p50[k] = p50[k] " " $5; p99[k] = p99[k] " " $6; keys[k] = 1 }
  $1 == "seed"   { seedr[$2] = seedr[$2] " " $4 }
  END {
    printf "%-10s %-9s %12s %9s %9s %12s %8s\n", "n", "callers", "fetchd/s", "p50_us", "p99_us", "seed/s", "ratio"
    split("1 1000000", ns, " "); split("1 2 16", cs, " ")
    for (i = 1; i <= 2; i++) {
      s = median(seedr[ns[i]])
      for (j = 1; j <= 3; j++) {
        k = ns[i] " " cs[j]
        f = median(rate[k])
        printf "%-10s %-9s %12.0f %9d %9d %12.1f %7.1fx\n", ns[i], cs[j], f, median(p50[k]), median(p99[k]), s, f / s
      }
    }
  }' "$tmp/results"
echo
echo "client cancel -> worker free (server queue_wait of the next call): $(cut -d' ' -f4- "$tmp/cancel")"
