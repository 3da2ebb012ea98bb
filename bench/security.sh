#!/usr/bin/env bash
# What the SSRF guard, bearer tokens and TLS on the gRPC port cost, A/B in
# one run.
#
#   bench/security.sh [ROUNDS=5]
#
# Origin: ../shared/bench/origin.sh (nginx on 127.0.0.1:18090). Three fetchd
# servers at default flags otherwise, measured in alternating rounds with
# bench/fetch_load (20,000 small-JSON URLs as 1 BatchFetch and as 100 RPCs
# of 200, max_concurrency 64, bodies returned):
#   open     --allow_private_networks: no address guard, no tokens
#   guarded  the guard on (loopback opened with --allow_cidrs=127.0.0.0/8, so
#            every new connection is still checked) and --auth_tokens_file
#            (every RPC carries a bearer token that is checked)
#   tls      guarded, plus TLS on the gRPC port (--tls_cert/--tls_key; a CA
#            and certificate made here with openssl)
# Medians of the rounds, and each row as a fraction of `open`. Loopback
# only; everything started here is stopped on exit.
set -euo pipefail
rounds=${1:-5}
origin_port=18090
source "$(dirname "$0")/lib.sh"

base=$(bash "$shared/origin.sh" start "$origin_port" | tail -n1)

# A throwaway CA and a server certificate for 127.0.0.1, and a token.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
  -subj "/CN=bench CA" -keyout "$tmp/ca.key" -out "$tmp/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -subj "/CN=127.0.0.1" -keyout "$tmp/server.key" -out "$tmp/server.csr" 2>/dev/null
openssl x509 -req -in "$tmp/server.csr" -CA "$tmp/ca.pem" -CAkey "$tmp/ca.key" \
  -CAcreateserial -days 1 -extfile <(printf 'subjectAltName=IP:127.0.0.1\n') \
  -out "$tmp/server.pem" 2>/dev/null
token=$(openssl rand -hex 32)
echo "bench $token" >"$tmp/tokens"

# lib.sh's start_fetchd adds $guard_flags (the guard on, loopback opened).
guarded=(--auth_tokens_file="$tmp/tokens")
guard_flags=(--allow_private_networks)  # nothing to refuse: no check runs
start_fetchd
open=$target
guard_flags=(--allow_cidrs=127.0.0.0/8)
start_fetchd "${guarded[@]}"
guard=$target
start_fetchd "${guarded[@]}" --tls_cert="$tmp/server.pem" --tls_key="$tmp/server.key"
tls=$target

rate() { awk '{for (i = 2; i <= NF; i++) if ($i == "req/s") print $(i - 1)}'; }
load() {  # target rpcs [fetch_load flags...]
  local target=$1 rpcs=$2
  shift 2
  build/bin/fetch_load --target="$target" --base="$base" --n=20000 \
    --rpcs="$rpcs" --concurrency=64 "$@" | rate
}
run() {  # name rpcs
  case $1 in
    open) load "$open" "$2" ;;
    guarded) load "$guard" "$2" --token="$token" ;;
    tls) load "$tls" "$2" --token="$token" --tls_ca="$tmp/ca.pem" ;;
  esac
}

echo "origin $base; open $open, guarded $guard, tls $tls ($(nproc) cores), $rounds rounds" >&2
for who in open guarded tls; do run "$who" 1 >/dev/null; done  # warm
for r in $(seq "$rounds"); do
  # Alternate the order so drift over the run hits every server alike.
  order=(open guarded tls)
  ((r % 2 == 0)) && order=(tls guarded open)
  for who in "${order[@]}"; do
    echo "$who 1x20000 $(run "$who" 1)" >>"$tmp/results"
    echo "$who 100x200 $(run "$who" 100)" >>"$tmp/results"
  done
  echo "round $r done" >&2
done

awk "$awk_median"'
  { runs[$1 " " $2] = runs[$1 " " $2] " " $3 }
  END {
    printf "%-8s %-8s %10s %9s   %s\n", "server", "shape", "req/s", "÷open", "rounds"
    split("1x20000 100x200", shapes, " ")
    split("open guarded tls", who, " ")
    for (s = 1; s <= 2; s++) {
      base = median(runs["open " shapes[s]])
      for (w = 1; w <= 3; w++) {
        k = who[w] " " shapes[s]
        m = median(runs[k])
        printf "%-8s %-8s %10d %8.3f   %s\n", who[w], shapes[s], m, m / base, runs[k]
      }
    }
  }' "$tmp/results"
