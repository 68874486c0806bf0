#!/usr/bin/env bash
# One scale measurement (docs/PERFORMANCE.md, "Scale"): a release nodetrust-server and the load
# generator nodetrust-sim as separate processes, N hosts registered over HTTPS, then the steady
# state measured over a window. Prints the registration time and rate, attestations/s, the
# server's CPU (user + system, from /proc) per attestation, of it the kernel's share, and by
# thread (the async workers; the SQLite connections, whose threads run the statements), the
# server's RSS (and how much of it are pages of mapped files: SQLite's map of its database)
# and the database size per host.
#
#   cargo build --release -p nodetrust-server -p nodetrust-sim
#   scripts/scale-bench.sh [--hosts N] [--ak ecc|rsa] [--mode pull|push] [--interval 10s]
#                          [--warmup S] [--window S] [--db URL] [--perf S] [--restart]
#                          [--concurrency N] [--boot-log FILE] [--callgrind]
#
# --db: a PostgreSQL URL (scripts/with-postgres.sh gives one in $NODETRUST_TEST_PG_URL; the
#       database's own processes are not counted in the server's CPU, and are printed on a line
#       of their own when they run on this machine); SQLite by default.
# --warmup S: seconds between the end of the registration and the window. Push hosts reach
#       their even spread over the interval within six intervals of registering, ten for
#       intervals under 10 s (each wait moves a host a tenth of the interval toward its point);
#       a shorter warm-up measures part of the registration's wave as well.
# --perf S: also record S seconds of the server with `perf record -e cpu-clock -g` during the
#       window (perf.data in the work directory).
# --boot-log FILE: every host measures and sends this binary TCG event log (a real machine's,
#       e.g. tests/fixtures/eventlogs/event-gce-ubuntu-2104-log.bin) instead of the simulator's
#       built-in 14-event boot.
# --concurrency N: the simulator's registrations in flight (128, its own default).
# --restart: after the window, restart the server on the same database and time /readyz, then
#       measure the window again.
# --callgrind: run the server under `valgrind --tool=callgrind`, counting its instructions
#       during the window only, and print the instructions per attestation (callgrind.out.* in
#       the work directory, for callgrind_annotate). A count, not a time: the same build and
#       load give the same count to a fraction of a percent whatever else the machine does, so
#       two builds compare on a noisy machine. Valgrind runs the server about 30 times slower
#       and one thread at a time: use a small fleet (--hosts 300), and compare builds, not
#       microseconds (code that picks its instructions by the CPU's features, such as SHA-256
#       in the sha2 crate, may take its portable path under valgrind).
set -euo pipefail

hosts=10000 ak=ecc mode=pull interval=10s warmup=45 window=30 db="" perf_secs=0 restart=0
concurrency=128 boot_log="" callgrind=0
while [ $# -gt 0 ]; do
  case "$1" in
    --hosts) hosts=$2; shift 2 ;;
    --ak) ak=$2; shift 2 ;;
    --mode) mode=$2; shift 2 ;;
    --interval) interval=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --window) window=$2; shift 2 ;;
    --db) db=$2; shift 2 ;;
    --perf) perf_secs=$2; shift 2 ;;
    --concurrency) concurrency=$2; shift 2 ;;
    --boot-log) boot_log=$(realpath "$2"); shift 2 ;;
    --restart) restart=1; shift ;;
    --callgrind) callgrind=1; shift ;;
    -h|--help) sed -n '2,31p' "$0"; exit 0 ;;
    *) echo "scale-bench: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

root=$(cd "$(dirname "$0")/.." && pwd)
bin=${CARGO_TARGET_DIR:-$root/target}/release
for b in nodetrust-server nodetrust-sim; do
  [ -x "$bin/$b" ] || { echo "scale-bench: $bin/$b missing: cargo build --release -p nodetrust-server -p nodetrust-sim" >&2; exit 2; }
done

work=$(mktemp -d /tmp/nodetrust-scale.XXXXXX)
chmod 700 "$work"
server_pid="" sim_pid=""
cleanup() {
  [ -n "$sim_pid" ] && kill "$sim_pid" 2>/dev/null || true
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT

# A port below the kernel's ephemeral range, free now.
free_port() {
  python3 - <<'EOF'
import random, socket
for _ in range(200):
    p = random.randint(20000, 31999)
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); s.close(); print(p); break
    except OSError:
        s.close()
EOF
}
port=$(free_port)
[ -n "$db" ] || db="sqlite://$work/server.db"

export NODETRUST_ADMIN_USERNAME=admin NODETRUST_ADMIN_PASSWORD=admin-pw \
  MTWILSON_API_USERNAME=agent MTWILSON_API_PASSWORD=agent-pw \
  TRUSTAGENT_ADMIN_USERNAME=tagent TRUSTAGENT_ADMIN_PASSWORD=tagent-pw
export RUST_LOG=${RUST_LOG:-warn}

"$bin/nodetrust-sim" ca --out "$work/ca" >/dev/null

# Under --callgrind, valgrind runs in the server's own process (same pid), counting nothing
# until measure() turns its instrumentation on.
wrap=()
if [ "$callgrind" = 1 ]; then
  command -v valgrind >/dev/null || { echo "scale-bench: --callgrind needs valgrind (apt-get install valgrind)" >&2; exit 2; }
  wrap=(valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$work/callgrind.out.%p")
fi

start_server() {
  "${wrap[@]}" "$bin/nodetrust-server" --listen "127.0.0.1:$port" --db "$db" --state-dir "$work/state" \
    --ek-ca-dir "$work/ca" --attest-interval "$interval" --report-validity 10m \
    >>"$work/server.log" 2>&1 &
  server_pid=$!
}

# Seconds since the server process started until /readyz answers 200.
wait_ready() {
  local t0 now
  t0=$(date +%s.%N)
  for _ in $(seq 1 600); do
    if curl -fsS --cacert "$work/state/server.crt" "https://127.0.0.1:$port/readyz" >/dev/null 2>&1; then
      now=$(date +%s.%N)
      python3 -c "print(f'{$now - $t0:.2f}')"
      return 0
    fi
    sleep 0.05
  done
  echo "scale-bench: the server never became ready; its log: $work/server.log" >&2
  exit 1
}

# attestations, group commits, reports committed, trusted appraisals reused, of which with the
# event log left out
attestations() {
  curl -fsS --cacert "$work/state/server.crt" "https://127.0.0.1:$port/metrics" |
    awk '/^nodetrust_attestations_total[{ ]/ {s += $NF}
         /^nodetrust_report_commits_total / {c = $NF}
         /^nodetrust_reports_committed_total / {r = $NF}
         /^nodetrust_appraisals_reused_total / {u = $NF}
         /^nodetrust_event_logs_left_out_total / {l = $NF}
         END {printf "%d %d %d %d %d\n", s, c, r, u, l}'
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$server_pid/stat"; }
sys_ticks() { awk '{print $15}' "/proc/$server_pid/stat"; }
# CPU of the PostgreSQL processes on this machine (user + system, in ticks; 0 on SQLite).
db_ticks() {
  case "$db" in
    sqlite://*) echo 0 ;;
    *) for p in $(pgrep -x postgres 2>/dev/null); do awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null; done |
         awk '{s += $1} END {print s + 0}' ;;
  esac
}
# Each of the server's threads, a "tid name value" line each: its context switches so far
# (each hand-off between an async worker and a database connection's or the blocking pool's
# thread costs two), or its CPU ticks.
per_thread() {
  local t
  for t in /proc/"$server_pid"/task/*; do
    printf '%s %s %s\n' "${t##*/}" "$(tr ' ' _ 2>/dev/null <"$t/comm")" "$("$1" "$t")"
  done
}
thread_switches() { awk '/ctxt_switches/ {s += $2} END {print s + 0}' "$1/status" 2>/dev/null; }
thread_cpu() { awk '{print $14 + $15}' "$1/stat" 2>/dev/null; }
switches() { per_thread thread_switches; }
thread_ticks() { per_thread thread_cpu; }
# What each thread's value grew by between two snapshots of per_thread, a "name growth" line
# each: a thread started since counts from zero; one that ended since (an idle blocking-pool
# thread) is left out, with its growth in between, rather than taken away.
grown() {
  awk 'NR == FNR {before[$1] = $3; next} {print $2, $3 - ($1 in before ? before[$1] : 0)}' \
    <(printf '%s\n' "$1") <(printf '%s\n' "$2")
}
# The context switches between two snapshots of switches().
switched() { grown "$1" "$2" | awk '{s += $2} END {print s + 0}'; }
# The CPU ticks between two snapshots of thread_ticks() by kind, "workers,sqlite,other": the
# async workers (and the blocking pool's threads, which tokio names alike), the SQLite
# connections (sqlx's threads and the report writer's, `sqlite-reports`), the rest.
ticks_by_kind() {
  grown "$1" "$2" | awk '$1 ~ /^tokio-rt-worker/ {w += $2; next} $1 ~ /^(sqlx-sqlite|sqlite-reports)/ {q += $2; next} {o += $2}
                         END {printf "%d,%d,%d\n", w, q, o}'
}
rss_mib() { awk '/^VmRSS/ {printf "%d\n", $2 / 1024}' "/proc/$server_pid/status"; }
# Of the RSS, the pages of mapped files (the SQLite database's map): the kernel's page cache,
# which holds the file's pages whether or not they are mapped.
rss_file_mib() { awk '/^RssFile/ {printf "%d\n", $2 / 1024}' "/proc/$server_pid/status"; }

measure() {
  local label=$1 a0 c0 a1 c1 k0 k1 t0 t1 tck
  tck=$(getconf CLK_TCK)
  sleep "$warmup"
  a0=$(attestations); c0=$(cpu_ticks); k0=$(sys_ticks); s0=$(switches); d0=$(db_ticks); t0=$(thread_ticks)
  if [ "$callgrind" = 1 ]; then callgrind_control -i on "$server_pid" >/dev/null 2>&1; fi
  if [ "$perf_secs" -gt 0 ]; then
    perf record -q -e cpu-clock -g -o "$work/perf.data" -p "$server_pid" -- sleep "$perf_secs" >/dev/null 2>&1 || true
    sleep $((window - perf_secs > 0 ? window - perf_secs : 0))
  else
    sleep "$window"
  fi
  if [ "$callgrind" = 1 ]; then
    rm -f "$work/callgrind.out.$server_pid".*
    callgrind_control -d "$server_pid" >/dev/null 2>&1
    callgrind_control -i off "$server_pid" >/dev/null 2>&1
  fi
  a1=$(attestations); c1=$(cpu_ticks); k1=$(sys_ticks); s1=$(switches); d1=$(db_ticks); t1=$(thread_ticks)
  python3 - "$label" "$a0" "$a1" "$c0" "$c1" "$tck" "$window" "$(rss_mib)" "$(switched "$s0" "$s1")" "$d0" "$d1" "$k0" "$k1" "$(ticks_by_kind "$t0" "$t1")" "$(rss_file_mib)" <<'EOF'
import sys
label = sys.argv[1]
(a0, m0, r0, u0, l0), (a1, m1, r1, u1, l1) = (map(float, x.split()) for x in sys.argv[2:4])
c0, c1, tck, window, rss, switched, d0, d1, k0, k1 = map(float, sys.argv[4:14])
by_kind = [float(x) for x in sys.argv[14].split(",")]
rss_file = float(sys.argv[15])
n = a1 - a0
cpu = (c1 - c0) / tck
per = f"{cpu / n * 1e6:.0f} us ({(k1 - k0) / tck / n * 1e6:.0f} in the kernel)" if n else "n/a"
print(f"{label}: {n / window:.0f} attestations/s, server CPU {cpu / window:.2f} cores, "
      f"{per} per attestation, RSS {rss:.0f} MiB ({rss_file:.0f} of it mapped files), "
      f"{(r1 - r0) / max(m1 - m0, 1):.1f} reports per commit, "
      f"{switched / max(n, 1):.1f} context switches per attestation, "
      f"{(u1 - u0) / max(n, 1) * 100:.0f} % appraisals reused, "
      f"{(l1 - l0) / max(n, 1) * 100:.0f} % event logs left out, "
      f"load {open('/proc/loadavg').read().split()[0]}")
if n:
    w, q, o = (t / tck / n * 1e6 for t in by_kind)
    print(f"  by thread: async workers {w:.0f} us, SQLite connections {q:.0f} us, other {o:.0f} us "
          f"per attestation")
if d1 > d0 and n:
    print(f"  PostgreSQL's processes: {(d1 - d0) / tck / window:.2f} cores, "
          f"{(d1 - d0) / tck / n * 1e6:.0f} us per attestation")
EOF
  if [ "$callgrind" = 1 ]; then
    local ir n
    ir=$(awk '/^totals:/ {print $2}' "$work/callgrind.out.$server_pid".*)
    n=$(( ${a1%% *} - ${a0%% *} ))
    echo "  callgrind: $ir instructions over $n attestations, $(( ir / (n > 0 ? n : 1) )) per attestation ($work/callgrind.out.$server_pid.*)"
    # Password checks (argon2) run when a cached success expires (every 30 s per account), not
    # per attestation: one more or fewer in a window moves a small fleet's figure by tens of
    # thousands of instructions, so the figure without them is printed too.
    local pw=0 f p
    for f in "$work/callgrind.out.$server_pid".*; do
      p=$( (callgrind_annotate --inclusive=yes --threshold=100 "$f" 2>/dev/null || true) |
        awk '/(argon2::Argon2::hash_password_into|nodetrust_server::auth::verify_password_in) \[/ {gsub(",", "", $1); print $1; exit}')
      pw=$((pw + ${p:-0}))
    done
    echo "  callgrind: without password checks ($pw instructions): $(( (ir - pw) / (n > 0 ? n : 1) )) per attestation"
  fi
}

start_server
echo "ready after start: $(wait_ready) s"

sim_args=(run --server "https://127.0.0.1:$port" --ca-dir "$work/ca" --server-ca "$work/state/server.crt"
  --hosts "$hosts" --concurrency "$concurrency" --ak "$ak" --agent-username agent --agent-password agent-pw)
[ "$mode" = push ] && sim_args+=(--mode push)
[ -n "$boot_log" ] && sim_args+=(--boot-log "$boot_log")
t0=$(date +%s.%N)
"$bin/nodetrust-sim" "${sim_args[@]}" >"$work/sim.log" 2>&1 &
sim_pid=$!
c_reg0=$(cpu_ticks); s_reg0=$(switches)
sim_ticks() { awk '{print $14 + $15}' "/proc/$sim_pid/stat" 2>/dev/null || echo 0; }
g_reg0=$(sim_ticks)
until grep -q '^registered:' "$work/sim.log"; do
  kill -0 "$sim_pid" 2>/dev/null || { echo "scale-bench: the simulator stopped:" >&2; tail -5 "$work/sim.log" >&2; exit 1; }
  sleep 0.2
done
t1=$(date +%s.%N); c_reg1=$(cpu_ticks); s_reg1=$(switches); g_reg1=$(sim_ticks)
python3 - "$hosts" "$t0" "$t1" "$c_reg0" "$c_reg1" "$(getconf CLK_TCK)" "$(switched "$s_reg0" "$s_reg1")" "$g_reg0" "$g_reg1" <<'EOF'
import sys
n, t0, t1, c0, c1, tck, switched, g0, g1 = map(float, sys.argv[1:])
d = t1 - t0
print(f"registration: {n:.0f} hosts in {d:.1f} s, {n / d:.0f}/s, server CPU {(c1 - c0) / tck / n * 1e3:.2f} ms "
      f"and {switched / n:.0f} context switches per host (the simulator: {(g1 - g0) / tck / n * 1e3:.2f} ms per host)")
EOF
# Activations per shared transaction (SQLite; PostgreSQL gives each its own).
curl -fsS --cacert "$work/state/server.crt" "https://127.0.0.1:$port/metrics" |
  awk '/^nodetrust_registration_commits_total / {c = $NF}
       /^nodetrust_registrations_committed_total / {r = $NF}
       END {if (c > 0) printf "  %.1f activations per shared transaction (%d transactions)\n", r / c, c}'

# The age of every host's verdict now (p50, p99, max): the goal is p99 within the interval
# plus 10 %.
verdict_ages() {
  case "$db" in
    sqlite://*)
      f=${db#sqlite://}; f=${f%%\?*}
      python3 - "$f" <<'EOF'
import sqlite3, sys, time
c = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
now = time.time() * 1000
ages = sorted((now - a) / 1000 for (a,) in c.execute("SELECT attested_at FROM hosts WHERE attested_at IS NOT NULL"))
if ages:
    q = lambda p: ages[min(len(ages) - 1, int(p * len(ages)))]
    print(f"verdict age: p50 {q(0.5):.1f} s, p99 {q(0.99):.1f} s, max {ages[-1]:.1f} s over {len(ages)} hosts")
EOF
      ;;
    *)
      psql -qAt "$db" -c "SELECT 'verdict age: p50 ' || round((percentile_cont(0.5) WITHIN GROUP (ORDER BY a))::numeric, 1) || ' s, p99 ' || round((percentile_cont(0.99) WITHIN GROUP (ORDER BY a))::numeric, 1) || ' s, max ' || round(max(a)::numeric, 1) || ' s over ' || count(*) || ' hosts' FROM (SELECT (extract(epoch FROM now()) * 1000 - attested_at) / 1000.0 AS a FROM hosts WHERE attested_at IS NOT NULL) t" || true
      ;;
  esac
}

measure "steady ($hosts hosts, $ak, $mode, every $interval)"
verdict_ages

if [ "$restart" = 1 ]; then
  kill "$server_pid"; wait "$server_pid" 2>/dev/null || true
  start_server
  echo "restart: /readyz after $(wait_ready) s with $hosts hosts"
  measure "after restart"
  verdict_ages
fi

case "$db" in
  sqlite://*)
    f=${db#sqlite://}; f=${f%%\?*}
    # The database file alone (its WAL, up to 40 MiB between checkpoints, apart).
    size=$(du -b "$f" | awk '{print $1}')
    wal=$( (du -b "$f-wal" 2>/dev/null || echo 0) | awk '{print $1}')
    python3 -c "print(f'database: {$size / 1e6:.0f} MB, {$size / $hosts:.0f} bytes per host (and a WAL of {$wal / 1e6:.0f} MB)')"
    ;;
esac
echo "work directory: $work"
