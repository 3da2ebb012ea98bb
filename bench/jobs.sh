#!/usr/bin/env bash
# Jobs (issue #17): a batch job through each store against the same URLs as
# one live StreamBatchFetch, side by side in one run.
#
#   bench/jobs.sh [ROUNDS=3]
#   env: JOBS_N=100000 (URLs), JOBS_CONCURRENCY=64 (max_concurrency of the
#        batch, live and job alike), JOBS_PROBE_RATE=50 (probe requests/s),
#        JOBS_PROBE_SECONDS=10 (the idle probe), JOBS_MAX_SECONDS=3600 (the
#        whole run), JOBS_POSTGRES=auto|off
#
# Origin: ../shared/bench/origin.sh (nginx on 127.0.0.1:18092, /items/N.json,
# ~200 B). Two fetchd on loopback, the same build and flags but the store:
#   sqlite    --job_store=sqlite:TMP/jobs.db
#   postgres  --job_store=postgresql://... on a private PostgreSQL 15 started
#             here (initdb + pg_ctl in a temp dir, a free loopback port,
#             stopped at the end; skipped when its binaries are missing)
# Both: --max_batch_items=JOBS_N (the live stream carries every URL in one
# call), --max_request_bytes=64 MiB (a 100,000-URL Submit is ~4.5 MB), and a
# tokens file with two identities: `jobs` runs the workloads, `probe` the
# latency probe (so the probe gets its own round-robin share of transfers).
# Rounds alternate the order of, each through bench/jobs_load (C++):
#   live      one StreamBatchFetch of the JOBS_N URLs (sqlite's fetchd);
#             items/s from the call's start to its last result
#   unary     one unary BatchFetch of them (a second reference)
#   sqlite,   one batch job of the same URLs: items/s from Submit's start to
#   postgres  the terminal Watch event (÷live is the goal: >= 80% SQLite,
#             >= 60% PostgreSQL); also Submit's own time, Submit-returned ->
#             first result in ListResults (polled every 5 ms) and -> first
#             Watch event with done > 0, the job's run rate (started_at ..
#             finished_at), and the read-back of every result (checked;
#             "+read": the job and the read-back together, the time a
#             client takes to hold every body, as live's client does)
#   idle      no load
# and beside every one of them the probe: unary BatchFetch of 1 URL at
# JOBS_PROBE_RATE/s as identity `probe`, p50/p99/max. Store bytes per item
# are taken after round 1's job on the empty store: SQLite jobs.db + -wal +
# -shm; PostgreSQL the sum of pg_total_relation_size over its tables (with
# indexes and TOAST). Medians of the rounds. Loopback only; everything
# started here is stopped on exit.
set -euo pipefail
rounds=${1:-3}
n=${JOBS_N:-100000}
conc=${JOBS_CONCURRENCY:-64}
probe_rate=${JOBS_PROBE_RATE:-50}
probe_seconds=${JOBS_PROBE_SECONDS:-10}
max_seconds=${JOBS_MAX_SECONDS:-3600}
want_postgres=${JOBS_POSTGRES:-auto}
origin_port=18092
source "$(dirname "$0")/lib.sh"

# PostgreSQL: /work/shared/DESIGN.md's recipe (as root, the data dir belongs
# to `postgres` and the binaries run through runuser).
pg_bin=/usr/lib/postgresql/15/bin
pg_dir="" pg_port="" pg_running=""
pg_run=()
pg_stop() {
  if [[ -n $pg_running ]]; then
    timeout 60 "${pg_run[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -m fast -w -t 30 stop >/dev/null 2>&1 || true
    pg_running=""
  fi
  [[ -n $pg_dir ]] && rm -rf "$pg_dir"
  return 0
}
pg_start() {
  [[ -x $pg_bin/initdb && -x $pg_bin/pg_ctl ]] || return 1
  pg_dir=$(mktemp -d /tmp/fetchd-bench-pg.XXXXXX)
  chmod 755 "$pg_dir"
  if ((EUID == 0)); then
    chown postgres: "$pg_dir"
    pg_run=(runuser -u postgres --)
  fi
  pg_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  timeout 120 "${pg_run[@]}" "$pg_bin/initdb" -D "$pg_dir/data" -A trust -U fetchd >"$tmp/initdb.log" 2>&1 ||
    { cat "$tmp/initdb.log" >&2; return 1; }
  pg_running=1
  timeout 120 "${pg_run[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -w -t 60 -l "$pg_dir/log" \
    -o "-p $pg_port -k $pg_dir -c listen_addresses=127.0.0.1" start >/dev/null ||
    { cat "$pg_dir/log" >&2; return 1; }
}
psql_at() { psql -h 127.0.0.1 -p "$pg_port" -U fetchd -d postgres -Atc "$1"; }

# The run bounds its own time: past JOBS_MAX_SECONDS it stops (the EXIT trap
# then stops everything it started).
finish() { pg_stop; cleanup; }
trap finish EXIT
trap 'exit 143' TERM INT
( trap 'kill "$s" 2>/dev/null; exit 0' TERM
  sleep "$max_seconds" & s=$!
  wait "$s"
  echo "jobs.sh: over JOBS_MAX_SECONDS=$max_seconds s, stopping" >&2
  kill -TERM $$ ) &
pids+=($!)

base=$(bash "$shared/origin.sh" start "$origin_port" | tail -n1)
jobs_token=jobs-token-$RANDOM$RANDOM-0123456789abcdef
probe_token=probe-token-$RANDOM$RANDOM-0123456789abcdef
printf 'jobs %s\nprobe %s\n' "$jobs_token" "$probe_token" >"$tmp/tokens"
common=(--auth_tokens_file="$tmp/tokens" --max_request_bytes=$((64 << 20))
  --max_batch_items=$((n > 20000 ? n : 20000)) --max_job_items=$((n > 1000000 ? n : 1000000)))
timeout_s=$((n / 100 + 120))  # every RPC's deadline: 100 items/s at worst
load() {  # label target mode [flags]
  build/bin/jobs_load --label="$1" --target="$2" --mode="$3" --base="$base" \
    --n="$n" --concurrency="$conc" --token="$jobs_token" \
    --probe_token="$probe_token" --timeout_s="$timeout_s" "${@:4}"
}

mkdir -p "$tmp/sqlite"
start_fetchd "${common[@]}" --job_store="sqlite:$tmp/sqlite/jobs.db"
sqlite_target=$target sqlite_pid=$fetchd_pid
stores=(sqlite)
postgres_note=""
if [[ $want_postgres != off ]] && pg_start; then
  start_fetchd "${common[@]}" --job_store="postgresql://fetchd@127.0.0.1:$pg_port/postgres"
  postgres_target=$target postgres_pid=$fetchd_pid
  stores+=(postgres)
else
  postgres_note="PostgreSQL: not measured (JOBS_POSTGRES=$want_postgres, or no $pg_bin/initdb)"
fi
declare -A store_target=([sqlite]=$sqlite_target [postgres]=${postgres_target:-}) \
  store_pid=([sqlite]=$sqlite_pid [postgres]=${postgres_pid:-})
echo "origin $base, fetchd sqlite $sqlite_target${postgres_target:+, postgres $postgres_target (PostgreSQL on 127.0.0.1:$pg_port)}" \
  "($(nproc) cores), $n URLs at c=$conc, probe $probe_rate/s, $rounds rounds" >&2
# Warm: the origin connections and allocators, as in a running service.
for s in "${stores[@]}"; do
  load warm "${store_target[$s]}" live --n=$((n < 5000 ? n : 5000)) >/dev/null
done

store_bytes() {  # store -> "total_bytes detail"
  case $1 in
    sqlite)
      local db=$tmp/sqlite/jobs.db f total=0 detail=""
      for f in "$db" "$db-wal" "$db-shm"; do
        local size=0
        [[ -f $f ]] && size=$(stat -c %s "$f")
        total=$((total + size))
        detail="$detail ${f##*/}=$size"
      done
      # The database's own size as its readers see it (WAL frames
      # included once): the WAL file holds every committed version of the
      # pages it rewrote until a checkpoint, so on a small job it is most
      # of the files' size.
      if command -v sqlite3 >/dev/null; then
        detail="$detail logical=$(sqlite3 -readonly "$db" 'PRAGMA page_count' 'PRAGMA page_size' | paste -sd'*' | bc)"
      fi
      echo "$total$detail" ;;
    postgres)
      psql_at "SELECT sum(pg_total_relation_size(c.oid)) || ' results=' ||
                      sum(pg_total_relation_size(c.oid)) FILTER (WHERE c.relname = 'results') ||
                      ' (tables, indexes, TOAST; not pg_wal) tables=' ||
                      string_agg(c.relname, ',' ORDER BY c.relname)
               FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace
               WHERE c.relkind IN ('r', 'p')
                 AND s.nspname NOT IN ('pg_catalog', 'information_schema')
                 AND s.nspname NOT LIKE 'pg_toast%'" ;;
  esac
}
# CPU time so far (user + system, clock ticks) of the given processes.
ticks() { for p in "$@"; do awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || true; done | awk '{t += $1} END {print t + 0}'; }
# "PID TICKS" lines for the private PostgreSQL's processes: the postmaster
# and its children (the backends of fetchd's pooled connections, the
# writers).
pg_ticks() {
  local master p
  master=$(head -1 "$pg_dir/data/postmaster.pid")
  for p in "$master" $(pgrep -P "$master"); do echo "$p $(ticks "$p")"; done
}
# Their CPU between two pg_ticks snapshots; a backend born in between counts
# from 0 (one that ended in between is missed).
pg_delta() { awk 'FNR == NR { t0[$1] = $2; next } { d += $2 - t0[$1] } END { print d + 0 }' "$1" "$2"; }
hz=$(getconf CLK_TCK)

workloads=(live unary "${stores[@]}" idle)
for r in $(seq "$rounds"); do
  order=("${workloads[@]}")
  if ((r % 2 == 0)); then  # reversed every other round
    order=()
    for ((i = ${#workloads[@]} - 1; i >= 0; i--)); do order+=("${workloads[$i]}"); done
  fi
  for w in "${order[@]}"; do
    pid=${store_pid[$w]:-$sqlite_pid}
    [[ $w == postgres ]] && pg_ticks >"$tmp/pg0"
    t0=$(ticks "$pid")
    case $w in
      live | unary) args=("$sqlite_target" "$w") ;;
      idle) args=("$sqlite_target" probe --probe_seconds="$probe_seconds") ;;
      *) args=("${store_target[$w]}" job) ;;
    esac
    if ! line=$(load "$w" "${args[@]}" --probe_rate="$probe_rate"); then
      echo "jobs.sh: $w failed: $line" >&2
      exit 1
    fi
    if [[ ${store_target[$w]+set} ]] && ((r == 1)); then
      echo "bytes $w $(store_bytes "$w")" >>"$tmp/bytes"
    fi
    t1=$(ticks "$pid")
    # fetchd's (and PostgreSQL's) CPU per item, in microseconds.
    line="$line cpu_us=$(echo "1000000 * ($t1 - $t0) / $hz / $n" | bc -l | cut -c1-8)"
    if [[ $w == postgres ]]; then
      pg_ticks >"$tmp/pg1"
      line="$line pg_cpu_us=$(echo "1000000 * $(pg_delta "$tmp/pg0" "$tmp/pg1") / $hz / $n" | bc -l | cut -c1-8)"
    fi
    echo "$line" >>"$tmp/results"
    echo "  $line" >&2
  done
  echo "round $r done" >&2
done

awk -v n="$n" -v note="$postgres_note" "$awk_median"'
  FNR == NR {  # results: LABEL mode=M key=value ...
    for (i = 2; i <= NF; i++) if (split($i, kv, "=") == 2 && kv[2] ~ /^-?[0-9.]+$/) v[$1, kv[1]] = v[$1, kv[1]] " " kv[2]
    seen[$1] = 1
    next
  }
  { bytes[$2] = $3; detail[$2] = $0; sub(/^bytes [a-z]+ [0-9]+ ?/, "", detail[$2]) }
  function m(who, key) { return ((who, key) in v) ? median(v[who, key]) : -1 }
  END {
    live = m("live", "items_s"); unary = m("unary", "items_s")
    printf "%-9s %8s %6s %7s %10s %8s %7s %7s %10s %9s %9s %9s %9s %9s %s\n", "who", "items/s", "÷live", "÷unary", "+read it/s", "run it/s", "submit", "claim", "1st result", "1st watch", "read it/s", "probe p50", "p99", "max", "CPU us/it"
    split("live unary sqlite postgres idle", who, " ")
    for (i = 1; i <= 5; i++) {
      w = who[i]
      if (!(w in seen)) continue
      probe = sprintf("%7.2fms %7.2fms %7.2fms", m(w, "probe_p50_ms"), m(w, "probe_p99_ms"), m(w, "probe_max_ms"))
      if (w == "idle") {
        printf "%-9s %8s %6s %7s %10s %8s %7s %7s %10s %9s %9s %s\n", w, "", "", "", "", "", "", "", "", "", "", probe
      } else if (w == "live" || w == "unary") {
        printf "%-9s %8d %5.0f%% %6.0f%% %10s %8s %7s %7s %10s %9s %9s %s %9.1f\n", w, m(w, "items_s"), 100 * m(w, "items_s") / live, 100 * m(w, "items_s") / unary, "", "", "", "", "", "", "", probe, m(w, "cpu_us")
      } else {
        a = m(w, "items_s"); b = m(w, "readback_items_s")
        printf "%-9s %8d %5.0f%% %6.0f%% %10d %8d %5.0fms %5.0fms %8.0fms %7.0fms %9d %s %9.1f%s\n", w, a, 100 * a / live, 100 * a / unary, 1 / (1 / a + 1 / b), m(w, "run_items_s"), m(w, "submit_ms"), m(w, "claim_ms"), m(w, "first_result_ms"), m(w, "first_watch_ms"), b, probe, m(w, "cpu_us"), (w == "postgres" ? sprintf(" +%.1f pg", m(w, "pg_cpu_us")) : "")
      }
    }
    if ("sqlite" in seen) printf "\ngoal: sqlite job >= 80%% of live: %s\n", (m("sqlite", "items_s") >= 0.8 * live ? "met" : "NOT met")
    if ("postgres" in seen) printf "goal: postgres job >= 60%% of live: %s\n", (m("postgres", "items_s") >= 0.6 * live ? "met" : "NOT met")
    printf "\none call on the ended job (median of 21): "
    for (i = 3; i <= 4; i++) if (who[i] in seen) printf "%s Get %.2f ms, ListResults(1) %.2f ms; ", who[i], m(who[i], "get_ms"), m(who[i], "list1_ms")
    printf "\n"
    printf "\nstore bytes per item (round 1 job, empty store, %d items; includes the stored request):\n", n
    for (s in bytes) printf "  %-9s %8.0f B/item  (%s)\n", s, bytes[s] / n, detail[s]
    if (note != "") printf "  %s\n", note
    printf "\nlive: one StreamBatchFetch, call start -> last result (the goal'"'"'s reference); unary: one BatchFetch of\n"
    printf "them all; items/s of a job: Submit start -> terminal Watch event; +read it/s: the job and then reading\n"
    printf "every result back (ListResults pages of 10,000), as a client of live gets them; run it/s: the job'"'"'s\n"
    printf "started_at..finished_at; claim: its created_at..started_at; 1st result: Submit returned -> first\n"
    printf "result in ListResults (5 ms polls); 1st watch: Submit returned -> first Watch event with done > 0;\n"
    printf "probe: unary BatchFetch of 1 URL at a steady rate, another identity, beside each workload (idle:\n"
    printf "alone); CPU: fetchd'"'"'s user+system time per item over the workload (live, unary: the sqlite\n"
    printf "fetchd), + pg: the private PostgreSQL'"'"'s processes\n"
  }' "$tmp/results" "$tmp/bytes"
