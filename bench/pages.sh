#!/usr/bin/env bash
# FetchPages throughput, latency hiding and memory, fetchd vs the peers.
#
#   bench/pages.sh [ROUNDS=3]
#
# Rounds alternate, each measuring on the 1,000-page cursor chain of
# ../shared/bench/origin.sh (nginx; /pages/N.json, "next" a relative URL):
#   fetchd   FetchPages, cursor strategy (pointer /next), items_pointer
#            /items, prefetch 2, via bench/pages_load (C++, sync stub)
#   seed     seed_peer.py --pages (the seed's sequential async generator)
#   go       go_peer -pages (net/http, sequential)
#   fetchctl fetchctl --json pages, the same walk as fetchd's row, client
#            included: wall time from exec to exit, every page a JSON line
#            into a file, as a user runs it (and with FETCHCTL_BEFORE=PATH,
#            a fetchctl built from an earlier commit: "fetchctl-before")
# With FETCHD_BEFORE=PATH (a fetchd built from an earlier commit), a second
# fetchd from that binary walks the same chain in the same rounds, order
# alternating: "fetchd-before" (pages_load) and "fetchctl@before" (this
# fetchctl against it), for an A/B of the server's walk path.
# Then, against the test origin (bench/test_origin, page-number API adding
# 20 ms per page): 100 pages at prefetch 1 and prefetch 4. Then 100,000
# pages from the test origin with a slow reader (50 µs per page), sampling
# the server's RSS every 10,000 pages in a fresh fetchd. And a cancel probe:
# how fast a cancelled walk's transfers are all closed.
# Medians of the rounds (BENCH_RAW=FILE keeps every figure). Loopback only;
# everything started here is stopped on exit.
set -euo pipefail
rounds=${1:-3}
origin_port=18091
source "$(dirname "$0")/lib.sh"

base=$(bash "$shared/origin.sh" start "$origin_port" | tail -n1)
(cd "$shared/peers" && GOCACHE=$tmp/gocache go build -o "$tmp/go_peer" go_peer.go)
build/bin/test_origin >"$tmp/origin.url" &
pids+=($!)
for _ in $(seq 100); do [[ -s $tmp/origin.url ]] && break; sleep 0.1; done
slow=$(cat "$tmp/origin.url")

rate() { awk '{for (i = 2; i <= NF; i++) if ($i == "pages/s") print $(i - 1)}'; }
walk() {  # url strategy prefetch [more flags]
  build/bin/pages_load --target="${walk_target:-$target}" --url="$1" \
    --strategy="$2" --prefetch="$3" "${@:4}" | rate
}

fetchctl_walk() {  # BINARY [TARGET]: pages/s of the chain, client included
  local t0 t1 n
  t0=$(date +%s%N)
  "$1" --addr="${2:-$target}" --json pages "$base/pages/1.json" --strategy=cursor \
    --items_pointer=/items --prefetch=2 >"$tmp/fetchctl.out" 2>"$tmp/fetchctl.err" ||
    { cat "$tmp/fetchctl.err" >&2; exit 1; }
  t1=$(date +%s%N)
  n=$(wc -l <"$tmp/fetchctl.out")
  ((n == 1000)) || { echo "fetchctl printed $n pages, not 1000" >&2; exit 1; }
  echo $((n * 1000000000 / (t1 - t0)))
}

before_target=""
if [[ -n ${FETCHD_BEFORE:-} ]]; then
  fetchd_bin=$FETCHD_BEFORE start_fetchd
  before_target=$target
  walk_target=$before_target walk "$base/pages/1.json" cursor 2 >/dev/null
fi
start_fetchd
echo "origin $base, test origin $slow, fetchd on $target ($(nproc) cores), $rounds rounds" >&2
walk "$base/pages/1.json" cursor 2 >/dev/null  # warm: the connection

# The chain through fetchd (and the before binary's, odd rounds first).
chain_rows() {  # round
  local order=(now) who
  if [[ -n $before_target ]]; then
    order=(now before)
    (($1 % 2 == 1)) && order=(before now)
  fi
  for who in "${order[@]}"; do
    if [[ $who == now ]]; then
      echo "fetchd $(walk "$base/pages/1.json" cursor 2)" >>"$tmp/results"
      echo "fetchctl $(fetchctl_walk build/bin/fetchctl)" >>"$tmp/results"
    else
      echo "fetchd-before $(walk_target=$before_target walk "$base/pages/1.json" cursor 2)" >>"$tmp/results"
      echo "fetchctl@before $(fetchctl_walk build/bin/fetchctl "$before_target")" >>"$tmp/results"
    fi
  done
}

for r in $(seq "$rounds"); do
  chain_rows "$r"
  echo "seed $(/usr/bin/python3 "$shared/seed_peer.py" --pages "$base" | rate)" >>"$tmp/results"
  echo "go $("$tmp/go_peer" -pages "$base" | rate)" >>"$tmp/results"
  if [[ -n ${FETCHCTL_BEFORE:-} ]]; then
    echo "fetchctl-before $(fetchctl_walk "$FETCHCTL_BEFORE")" >>"$tmp/results"
  fi
  for p in 1 4; do
    echo "slow-prefetch-$p $(walk "$slow/pn/bench$r$p?last=100&delay=20" page_number "$p")" >>"$tmp/results"
  done
  echo "round $r done" >&2
done

# Client cancel -> the walk's transfers all closed (4 pages in flight).
cancel=$(build/bin/pages_load --target="$target" --cancel_probes=10 --prefetch=4 |
  sed -E 's/.*p50_ms=([0-9.]+) max_ms=([0-9.]+).*/p50 \1 ms, max \2 ms/')

# 100,000 pages, slow reader, fresh server: RSS every 10,000 pages.
kill "$fetchd_pid"; wait "$fetchd_pid" 2>/dev/null || true
start_fetchd
rss=""
while read -r line; do
  case $line in
    progress*) rss="$rss $(awk '/VmRSS/{print $2}' "/proc/$fetchd_pid/status")" ;;
    fetchd*) echo "slow-reader $(echo "$line" | rate)" >>"$tmp/results" ;;
  esac
done < <(build/bin/pages_load --target="$target" --url="$slow/pn/rss?last=100000" \
  --strategy=page_number --prefetch=2 --read_delay_us=50 --progress_every=10000)
hwm=$(awk '/VmHWM/{print $2}' "/proc/$fetchd_pid/status")

# Every run's figure, one "who pages/s" line each, for a closer look.
if [[ -n ${BENCH_RAW:-} ]]; then cp "$tmp/results" "$BENCH_RAW"; fi
awk -v rss="$rss" -v hwm="$hwm" -v cancel="$cancel" "$awk_median"'
  { runs[$1] = runs[$1] " " $2 }
  END {
    seed = median(runs["seed"]); go = median(runs["go"])
    printf "%-20s %10s %8s %7s\n", "who (1,000 pages)", "pages/s", "÷seed", "÷go"
    n = split("fetchd fetchd-before fetchctl fetchctl@before fetchctl-before seed go", who, " ")
    for (i = 1; i <= n; i++) {
      if (!(who[i] in runs)) continue
      m = median(runs[who[i]])
      printf "%-20s %10d %7.2fx %6.2fx\n", who[i], m, m / seed, m / go
    }
    p1 = median(runs["slow-prefetch-1"]); p4 = median(runs["slow-prefetch-4"])
    printf "\norigin adding 20 ms per page (page_number, 100 pages):\n"
    printf "  prefetch 1: %d pages/s, prefetch 4: %d pages/s (%.2fx)\n", p1, p4, p4 / p1
    printf "\n100,000 pages, reader sleeping 50 us per page: %d pages/s\n", median(runs["slow-reader"])
    n = split(rss, v, " ")
    printf "  fetchd RSS (MB) every 10,000 pages:"
    for (i = 1; i <= n; i++) printf " %.1f", v[i] / 1024
    printf "\n  peak RSS: %.1f MB\n", hwm / 1024
    printf "\nclient cancel -> the walk\x27s 4 in-flight transfers closed (10 probes): %s\n", cancel
  }' "$tmp/results"
