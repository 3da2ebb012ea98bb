# Sourced by the bench scripts (set -euo pipefail first): installs and
# builds what they need, and gives them a scratch directory ($tmp), cleanup
# on exit of every process in $pids (and of the nginx origin on
# $origin_port, when set), and start_fetchd.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
shared=../shared/bench
[[ -d $shared ]] || { echo "missing $shared (../shared beside the repo)" >&2; exit 1; }

bash scripts/deps.sh bench
bash scripts/build.sh release >/dev/null

tmp=$(mktemp -d)
pids=()
origin_port=${origin_port:-}
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
  if [[ -n $origin_port ]]; then bash "$shared/origin.sh" stop "$origin_port" || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

# fetchd's SSRF guard refuses loopback origins by default. The benchmarks
# keep it on (its check runs once per connection) and open only the loopback
# range their origin (nginx on 127.0.0.1) lives in. For an A/B of the
# guard's cost, FETCHD_GUARD_FLAGS=--allow_private_networks turns the check
# off entirely (nothing left to refuse: no policy runs).
read -r -a guard_flags <<<"${FETCHD_GUARD_FLAGS:---allow_cidrs=127.0.0.0/8}"

# Starts fetchd on an ephemeral loopback port with the flags given; sets
# $fetchd_pid and $target. $fetchd_bin picks another binary (an A/B).
start_fetchd() {
  local log=$tmp/fetchd.$RANDOM.log port
  "${fetchd_bin:-build/bin/fetchd}" --listen=127.0.0.1:0 --metrics_listen=127.0.0.1:0 \
    "${guard_flags[@]}" "$@" 2>"$log" &
  fetchd_pid=$!
  pids+=("$fetchd_pid")
  for _ in $(seq 100); do
    grep -q '"event":"serving"' "$log" 2>/dev/null && break
    kill -0 "$fetchd_pid" 2>/dev/null || { cat "$log" >&2; exit 1; }
    sleep 0.1
  done
  port=$(grep -o '"port":[0-9]*' "$log" | head -1 | cut -d: -f2)
  [[ -n $port ]] || { echo "fetchd did not start" >&2; cat "$log" >&2; exit 1; }
  target=127.0.0.1:$port
}

# An awk function for the tables: median(list) of a space-separated list.
# Use as: awk "$awk_median"'{ ... median(x) ... }'.
awk_median='function median(list,   n, v, i, j, t) {
  n = split(list, v, " ")
  for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (v[j] + 0 < v[i] + 0) { t = v[i]; v[i] = v[j]; v[j] = t }
  return v[int((n + 1) / 2)]
}
'
