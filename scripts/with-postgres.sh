#!/usr/bin/env bash
# Runs a command with a throwaway PostgreSQL cluster (initdb + pg_ctl as user postgres, on a
# private port and socket directory), exported as NODETRUST_TEST_PG_URL; stops it afterwards.
# Without PostgreSQL installed, runs the command without it (the PostgreSQL tests then say so).
# NODETRUST_TEST_PG_OPTIONS: more server options, e.g. "-c shared_preload_libraries=pg_stat_statements"
# to see which statements the database spends its time on (docs/PERFORMANCE.md).
set -euo pipefail
bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)
if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
  echo "with-postgres: PostgreSQL not installed; running without it" >&2
  exec "$@"
fi
# The port: NODETRUST_TEST_PG_PORT, or the first of 25432-25451 where the cluster starts
# (below the kernel's ephemeral range, 32768 and up, where any outgoing connection of the
# machine may hold the port the cluster wants).
ports=${NODETRUST_TEST_PG_PORT:-$(seq 25432 25451)}
dir=$(mktemp -d /tmp/nodetrust-pg.XXXXXX)
chown postgres:postgres "$dir" 2>/dev/null || true
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
  as_pg "$bindir/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT
as_pg "$bindir/initdb" -D "$dir/data" -U postgres -A trust --no-sync >/dev/null
port=""
for p in $ports; do
  if as_pg "$bindir/pg_ctl" -D "$dir/data" -l "$dir/log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $p -k $dir -c fsync=off -c max_connections=200 ${NODETRUST_TEST_PG_OPTIONS:-}" start >/dev/null; then
    port=$p
    break
  fi
done
if [ -z "$port" ]; then
  echo "with-postgres: PostgreSQL did not start on port(s) $(echo $ports); its log:" >&2
  tail -n 20 "$dir/log" >&2 || true
  exit 1
fi
as_pg "$bindir/createdb" -h 127.0.0.1 -p "$port" -U postgres nodetrust_test
export NODETRUST_TEST_PG_URL="postgres://postgres@127.0.0.1:$port/nodetrust_test"
echo "with-postgres: PostgreSQL at $NODETRUST_TEST_PG_URL"
"$@"
