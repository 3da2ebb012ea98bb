#!/usr/bin/env bash
# BatchFetch throughput, fetchd vs the peers, side by side in one run.
#
#   bench/batch_fetch.sh [ROUNDS=3]
#
# Origin: ../shared/bench/origin.sh (nginx on 127.0.0.1:18090). Rounds
# alternate, each measuring:
#   fetchd     20,000 small-JSON URLs as 1 BatchFetch and as 100 RPCs of 200
#              (sent at once), max_concurrency 64 and 256, via bench/fetch_load
#              (C++, async stub); bodies are returned to the driver. Two
#              servers: default flags (--max_per_host=64: at most 64
#              connections to the origin, the rest wait in fetchd's FIFO),
#              and --max_per_host=256 ("h256" rows, c=256 only: 256
#              connections, as the peers open at c=256)
#   ceiling    ONE thread driving curl multi, 100,000 URLs at 64, 256 and 512
#              in flight (the design's limit falls as connections grow, so
#              each fetchd row is also compared with the ceiling at its own
#              connection count: 64, or 256 for h256)
#   seed       seed_peer.py (aiohttp + Semaphore + gather), 20,000 URLs
#   go, node   the Go (net/http) and Node (fetch) peers, 20,000 URLs
#   fetchctl   (c=64 only) fetchctl fetch on the same 20,000 URLs, client
#              included (wall time from exec to exit, every result a line
#              into a file), as one RPC of 20,000 at --concurrency=64: as
#              run from a script (one BatchFetch response), and with
#              --stream=always ("fetchctl-stream": each result a message, as
#              on a terminal). With FETCHCTL_BEFORE=PATH (a fetchctl built
#              from an earlier commit), that one too ("fetchctl-before")
# then wrk on the origin, a cancel probe (how fast a cancelled call's transfers are all closed), and
# the server's peak RSS for one 20,000-item batch in a fresh fetchd.
# With FETCHD_BEFORE=PATH (a fetchd built from an earlier commit), that
# binary runs the same fetchd rows at default flags ("before-" rows), in
# alternating order with the current build every round, and the table ends
# with current ÷ before for rate and for fetchd CPU time per request.
# Medians of the rounds; ratios are fetchd ÷ peer. Loopback only; everything
# started here is stopped on exit.
set -euo pipefail
rounds=${1:-3}
origin_port=18090
source "$(dirname "$0")/lib.sh"

base=$(bash "$shared/origin.sh" start "$origin_port" | tail -n1)
gcc -O2 -o "$tmp/curl_multi_loop" "$shared/curl_multi_loop.c" -lcurl
(cd "$shared/peers" && GOCACHE=$tmp/gocache go build -o "$tmp/go_peer" go_peer.go)

rate() { awk '{for (i = 2; i <= NF; i++) if ($i == "req/s") print $(i - 1)}'; }
for i in $(seq 20000); do echo "$base/items/$(( (i - 1) % 10000 + 1 )).json"; done >"$tmp/urls"
fetchctl_rate() {  # BINARY [more flags]: 20,000 URLs, client included
  local t0 t1
  t0=$(date +%s%N)
  "$1" --addr="$target" fetch --urls_file="$tmp/urls" --concurrency=64 \
    --batch_size=20000 "${@:2}" >"$tmp/fetchctl.out" 2>"$tmp/fetchctl.err" ||
    { echo "fetchctl: $(tail -n1 "$tmp/fetchctl.err")" >&2; }
  t1=$(date +%s%N)
  echo $((20000 * 1000000000 / (t1 - t0)))
}
load() {  # target rpcs concurrency
  build/bin/fetch_load --target="$1" --base="$base" --n=20000 \
    --rpcs="$2" --concurrency="$3" | rate
}

start_fetchd --max_per_host=256
target256=$target
start_fetchd
servers=(fetchd)
if [[ -n ${FETCHD_BEFORE:-} ]]; then
  fetchd_pid_now=$fetchd_pid target_now=$target
  fetchd_bin=$FETCHD_BEFORE start_fetchd
  before_target=$target before_pid=$fetchd_pid
  target=$target_now fetchd_pid=$fetchd_pid_now
  load "$before_target" 1 64 >/dev/null
  servers=(fetchd before)
fi
declare -A server_target=([fetchd]=$target [before]=${before_target:-}) \
  server_pid=([fetchd]=$fetchd_pid [before]=${before_pid:-})
# CPU time a server has used so far, in clock ticks (user + system).
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
echo "origin $base, fetchd on $target and $target256 (h256) ($(nproc) cores), $rounds rounds" >&2
# Warm: connections and allocator, as in a running service.
load "$target" 1 64 >/dev/null
load "$target256" 1 256 >/dev/null

for r in $(seq "$rounds"); do
  order=("${servers[@]}")
  ((r % 2 == 0 && ${#servers[@]} == 2)) && order=(before fetchd)
  for c in 64 256; do
    for s in "${order[@]}"; do
      for shape in 1 100; do
        t0=$(ticks "${server_pid[$s]}")
        rate_now=$(load "${server_target[$s]}" "$shape" "$c")
        t1=$(ticks "${server_pid[$s]}")
        name=$s-$([[ $shape == 1 ]] && echo 1x20000 || echo 100x200)
        echo "$name $c $rate_now" >>"$tmp/results"
        echo "$name $c $((t1 - t0))" >>"$tmp/ticks"
      done
    done
    if ((c == 256)); then
      echo "fetchd-h256-1x20000 $c $(load "$target256" 1 "$c")" >>"$tmp/results"
      echo "fetchd-h256-100x200 $c $(load "$target256" 100 "$c")" >>"$tmp/results"
    fi
    echo "seed $c $(/usr/bin/python3 "$shared/seed_peer.py" "$base" 20000 "$c" | rate)" >>"$tmp/results"
    echo "go $c $("$tmp/go_peer" "$base" 20000 "$c" | rate)" >>"$tmp/results"
    echo "node $c $(node "$shared/peers/node_peer.mjs" "$base" 20000 "$c" | rate)" >>"$tmp/results"
    if ((c == 64)); then
      echo "fetchctl 64 $(fetchctl_rate build/bin/fetchctl)" >>"$tmp/results"
      echo "fetchctl-stream 64 $(fetchctl_rate build/bin/fetchctl --stream=always)" >>"$tmp/results"
      if [[ -n ${FETCHCTL_BEFORE:-} ]]; then
        echo "fetchctl-before 64 $(fetchctl_rate "$FETCHCTL_BEFORE")" >>"$tmp/results"
      fi
    fi
  done
  for c in 64 256 512; do
    echo "curl-multi $c $("$tmp/curl_multi_loop" "$base" 100000 "$c" | rate)" >>"$tmp/results"
  done
  echo "round $r done" >&2
done

wrk_rate=$(wrk -t1 -c64 -d3s "$base/items/1.json" | awk '/Requests\/sec/{printf "%d", $2}')

# Client cancel -> every transfer of the call closed (50 hung transfers).
cancel=$(build/bin/fetch_load --target="$target" --cancel_probes=10 --cancel_items=50 |
  sed -E 's/.*p50_ms=([0-9.]+) max_ms=([0-9.]+).*/p50 \1 ms, max \2 ms/')

# Peak RSS of a fresh server over one 20,000-item batch (bodies returned).
start_fetchd --max_per_host=256
build/bin/fetch_load --target="$target" --base="$base" --n=20000 --rpcs=1 --concurrency=256 >/dev/null
rss_kb=$(awk '/VmHWM/{print $2}' "/proc/$fetchd_pid/status")

awk -v wrk="$wrk_rate" -v rss="$rss_kb" -v cancel="$cancel" "$awk_median"'
  { runs[$1 " " $2] = runs[$1 " " $2] " " $3 }
  END {
    ceiling64 = median(runs["curl-multi 64"])
    printf "%-20s %5s %10s %8s %7s %7s %10s %12s\n", "who", "c", "req/s", "÷seed", "÷go", "÷node", "÷ceil(64)", "÷ceil(same)"
    n = split("fetchd-1x20000 fetchd-100x200 fetchd-h256-1x20000 fetchd-h256-100x200 fetchctl fetchctl-stream fetchctl-before seed go node curl-multi", who, " ")
    for (c = 64; c <= 512; c *= 2) {
      if (c == 128) continue
      seed = go = node = 0
      if (("seed " c) in runs) seed = median(runs["seed " c])
      if (("go " c) in runs) go = median(runs["go " c])
      if (("node " c) in runs) node = median(runs["node " c])
      for (i = 1; i <= n; i++) {
        k = who[i] " " c
        if (!(k in runs)) continue
        m = median(runs[k])
        conn = who[i] ~ /^fetchd-h256/ ? 256 : (who[i] ~ /^fetch/ ? 64 : c)
        same = median(runs["curl-multi " conn])
        if (seed > 0 && go > 0 && node > 0) {
          printf "%-20s %5d %10d %7.1fx %6.2fx %6.2fx %9.0f%% %11.0f%%\n", who[i], c, m, m / seed, m / go, m / node, 100 * m / ceiling64, 100 * m / same
        } else {
          printf "%-20s %5d %10d %8s %7s %7s %9.0f%% %11.0f%%\n", who[i], c, m, "", "", "", 100 * m / ceiling64, 100 * m / same
        }
      }
    }
    printf "\nwrk on the origin (c=64): %d req/s\n", wrk
    printf "fetchd peak RSS, fresh server, one 20,000-item BatchFetch (c=256, bodies returned): %.0f MB\n", rss / 1024
    printf "client cancel -> all 50 hung transfers of the call closed (10 probes): %s\n", cancel
  }' "$tmp/results"
if [[ -n ${FETCHD_BEFORE:-} ]]; then
  echo
  awk -v hz="$(getconf CLK_TCK)" -v rounds="$rounds" "$awk_median"'
    FNR == NR { runs[$1 " " $2] = runs[$1 " " $2] " " $3; next }
    { ticks[$1 " " $2] += $3 }
    END {
      printf "%-14s %5s %10s %10s %8s %14s %14s %8s\n", "shape", "c", "req/s", "before", "÷before", "CPU/req", "before", "÷before"
      n = split("1x20000 100x200", shape, " ")
      for (c = 64; c <= 256; c *= 4) for (i = 1; i <= n; i++) {
        now = median(runs["fetchd-" shape[i] " " c]); old = median(runs["before-" shape[i] " " c])
        cn = 1e6 * ticks["fetchd-" shape[i] " " c] / hz / (20000 * rounds)
        co = 1e6 * ticks["before-" shape[i] " " c] / hz / (20000 * rounds)
        printf "%-14s %5d %10d %10d %7.3fx %11.2f us %11.2f us %7.3fx\n", shape[i], c, now, old, now / old, cn, co, cn / co
      }
    }' "$tmp/results" "$tmp/ticks"
fi
