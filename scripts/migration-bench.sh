#!/usr/bin/env bash
# Times schema version 13's statements (crates/server/src/store.rs, V13) on a version 12 layout
# of the tables they touch: H hosts (2 kB rows) and R reports each (time-ordered ids), with the
# indexes reports_host_created and reports_created. SQLite through Python's sqlite3 (the
# system's SQLite, not the server's bundled one); PostgreSQL through psql when
# NODETRUST_TEST_PG_URL is set (scripts/with-postgres.sh sets it). docs/PERFORMANCE.md, "Scale,
# twenty-first round".
#
#   scripts/with-postgres.sh scripts/migration-bench.sh [HOSTS] [REPORTS_PER_HOST]
set -euo pipefail
hosts=${1:-10000}
per=${2:-100}
work=$(mktemp -d /tmp/nodetrust-migration.XXXXXX)
trap 'rm -rf "$work"' EXIT

# The statements, as the server runs them.
statements=(
  "ALTER TABLE hosts ADD COLUMN last_report TEXT"
  "ALTER TABLE hosts ADD COLUMN previous_report TEXT"
  "ALTER TABLE reports ADD COLUMN previous TEXT DEFAULT ''"
  "UPDATE hosts SET last_report = (SELECT r.id FROM reports r WHERE r.host_name = hosts.name ORDER BY r.created DESC, r.id DESC LIMIT 1)"
  "CREATE INDEX IF NOT EXISTS reports_before_chains ON reports (host_name, created) WHERE previous = ''"
  "DROP INDEX IF EXISTS reports_host_created"
)
layout="CREATE TABLE hosts (name TEXT PRIMARY KEY, pad TEXT);
CREATE TABLE reports (id TEXT PRIMARY KEY, host_name TEXT NOT NULL, verdict TEXT NOT NULL, reasons TEXT NOT NULL, created BIGINT NOT NULL, expires BIGINT NOT NULL, signed_report TEXT NOT NULL, hardware_uuid TEXT);
CREATE INDEX reports_host_created ON reports (host_name, created);
CREATE INDEX reports_created ON reports (created);"

printf '%s\n' "${statements[@]}" > "$work/v13.sql"
python3 - "$work/t.db" "$hosts" "$per" "$work/v13.sql" "$layout" <<'PY'
import random, sqlite3, sys, time
path, hosts, per, v13, layout = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
c = sqlite3.connect(path, isolation_level=None)
c.execute("PRAGMA journal_mode=WAL")
c.executescript(layout)
c.execute("BEGIN")
c.executemany("INSERT INTO hosts VALUES (?, ?)", ((f"host-{i:06d}", "x" * 2000) for i in range(hosts)))
t0 = 1_700_000_000_000
def reports():
    for k in range(per):
        for i in range(hosts):
            created = t0 + k * 60_000 + i
            yield (f"{created:012x}{random.getrandbits(80):020x}", f"host-{i:06d}", "trusted", "[]", created, created + 600_000, "", "uuid")
c.executemany("INSERT INTO reports VALUES (?, ?, ?, ?, ?, ?, ?, ?)", reports())
c.execute("COMMIT")
c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
start = time.time()
c.execute("BEGIN")
for stmt in open(v13).read().splitlines():
    t = time.time()
    c.execute(stmt)
    print(f"sqlite {time.time() - t:7.2f} s  {stmt[:72]}")
c.execute("COMMIT")
print(f"sqlite: version 13 in {time.time() - start:.2f} s for {hosts * per} reports (SQLite {sqlite3.sqlite_version})")
PY

if [ -n "${NODETRUST_TEST_PG_URL:-}" ]; then
  export PGOPTIONS="--client-min-messages=warning"
  psql=(psql -q -X -v ON_ERROR_STOP=1 "$NODETRUST_TEST_PG_URL")
  "${psql[@]}" -c "DROP TABLE IF EXISTS reports; DROP TABLE IF EXISTS hosts;"
  "${psql[@]}" <<SQL
$layout
INSERT INTO hosts SELECT 'host-' || lpad(i::text, 6, '0'), repeat('x', 2000) FROM generate_series(0, $hosts - 1) i;
INSERT INTO reports SELECT lpad(to_hex(1700000000000 + k * 60000 + i), 12, '0') || substr(md5(random()::text), 1, 20),
  'host-' || lpad(i::text, 6, '0'), 'trusted', '[]', 1700000000000 + k * 60000 + i, 0, '', 'uuid'
  FROM generate_series(0, $per - 1) k, generate_series(0, $hosts - 1) i;
VACUUM ANALYZE;
SQL
  start=$(date +%s%N)
  { echo "BEGIN;"; sed 's/$/;/' "$work/v13.sql"; echo "COMMIT;"; } | "${psql[@]}"
  end=$(date +%s%N)
  echo "postgresql: version 13 in $(( (end - start) / 1000000 )) ms for $((hosts * per)) reports"
  "${psql[@]}" -c "DROP TABLE reports; DROP TABLE hosts;"
fi
