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
#   before   with FETCHD_BEFORE=PATH: that fetchd binary (e.g. one built
#            from the commit before the guard), at its default flags, to
#            show what the always-on changes cost
# Medians of the rounds, and each row as a fraction of `open`: requests per
# second (median), and fetchd's CPU time per request over all rounds (user
# + system of the process, /proc/PID/stat), which two shared cores disturb
# far less than the rate. Loopback only; everything started here is stopped on exit.
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
open=$target open_pid=$fetchd_pid
guard_flags=(--allow_cidrs=127.0.0.0/8)
start_fetchd "${guarded[@]}"
guard=$target guarded_pid=$fetchd_pid
start_fetchd "${guarded[@]}" --tls_cert="$tmp/server.pem" --tls_key="$tmp/server.key"
tls=$target tls_pid=$fetchd_pid
servers=(open guarded tls)
if [[ -n ${FETCHD_BEFORE:-} ]]; then
  log=$tmp/before.log
  "$FETCHD_BEFORE" --listen=127.0.0.1:0 --metrics_listen=127.0.0.1:0 2>"$log" &
  before_pid=$!
  pids+=("$before_pid")
  for _ in $(seq 100); do grep -q '"event":"serving"' "$log" && break; sleep 0.1; done
  before=127.0.0.1:$(grep -o '"port":[0-9]*' "$log" | head -1 | cut -d: -f2)
  servers+=(before)
fi

rate() { awk '{for (i = 2; i <= NF; i++) if ($i == "req/s") print $(i - 1)}'; }
load() {  # target rpcs [fetch_load flags...]
  local target=$1 rpcs=$2
  shift 2
  build/bin/fetch_load --target="$target" --base="$base" --n=20000 \
    --rpcs="$rpcs" --concurrency=64 "$@" | rate
}
# CPU time fetchd has used so far, in clock ticks (user + system, all
# threads); summed over the rounds, so the tick is fine enough.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
run() {  # name rpcs
  case $1 in
    open) load "$open" "$2" ;;
    guarded) load "$guard" "$2" --token="$token" ;;
    tls) load "$tls" "$2" --token="$token" --tls_ca="$tmp/ca.pem" ;;
    before) load "$before" "$2" ;;
  esac
}

echo "origin $base; open $open, guarded $guard, tls $tls ($(nproc) cores), $rounds rounds" >&2
for who in "${servers[@]}"; do run "$who" 1 >/dev/null; done  # warm
for r in $(seq "$rounds"); do
  # Alternate the order so drift over the run hits every server alike.
  order=("${servers[@]}")
  ((r % 2 == 0)) && order=($(printf '%s\n' "${servers[@]}" | tac))
  for who in "${order[@]}"; do
    pid_var=${who}_pid
    for shape in 1x20000 100x200; do
      t0=$(ticks "${!pid_var}")
      rps=$(run "$who" "$([[ $shape == 1x20000 ]] && echo 1 || echo 100)")
      t1=$(ticks "${!pid_var}")
      cpu_us=$(echo "($t1 - $t0) * 1000000 / $hz / 20000" | bc -l)
      echo "$who $shape $rps $cpu_us" >>"$tmp/results"
    done
  done
  echo "round $r done" >&2
done

awk "$awk_median"'
  { runs[$1 " " $2] = runs[$1 " " $2] " " $3; cpu[$1 " " $2] += $4; n[$1 " " $2]++ }
  END {
    printf "%-8s %-8s %10s %7s %14s %7s\n", "server", "shape", "req/s", "÷open", "fetchd CPU/req", "÷open"
    split("1x20000 100x200", shapes, " ")
    nw = split("open guarded tls before", who, " ")
    if (!(("before " shapes[1]) in runs)) nw = 3
    for (s = 1; s <= 2; s++) {
      base = median(runs["open " shapes[s]])
      cbase = cpu["open " shapes[s]] / n["open " shapes[s]]
      for (w = 1; w <= nw; w++) {
        k = who[w] " " shapes[s]
        m = median(runs[k])
        c = cpu[k] / n[k]
        printf "%-8s %-8s %10d %7.3f %11.2f us %7.3f\n", who[w], shapes[s], m, m / base, c, c / cbase
      }
    }
    printf "\nreq/s of each round:\n"
    for (s = 1; s <= 2; s++) for (w = 1; w <= nw; w++) printf "  %-8s %-8s%s\n", who[w], shapes[s], runs[who[w] " " shapes[s]]
  }' "$tmp/results"
