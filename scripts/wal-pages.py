#!/usr/bin/env python3
"""Which tables' pages the commits in a SQLite WAL wrote:
`scripts/wal-pages.py DIR [COMMITS]` for a `scripts/scale-bench.sh` work directory (its
`server.db` and `server.db-wal`, read only, after the run).

Reads the frames of the WAL (each a page a commit wrote; a frame with a database size ends its
commit), takes the last COMMITS commits (300), and prints the pages a commit wrote on average,
in all and by the table or index each page belongs to (SQLite's `dbstat`, as the database file
has them: a page the WAL adds past the file's end counts as `(new)`). The WAL holds the commits
since the last checkpoint, the benchmark's steady state when the run ends in it."""
import collections
import sqlite3
import struct
import sys

WAL_HEADER = 32
FRAME_HEADER = 24

directory = sys.argv[1]
last = int(sys.argv[2]) if len(sys.argv) > 2 else 300
with open(f"{directory}/server.db-wal", "rb") as f:
    wal = f.read()
if len(wal) < WAL_HEADER:
    sys.exit("wal-pages: the WAL is empty (checkpointed at the end of the run?)")
(page_size,) = struct.unpack(">I", wal[8:12])
commits, current = [], []
offset = WAL_HEADER
while offset + FRAME_HEADER + page_size <= len(wal):
    page, db_size = struct.unpack(">II", wal[offset:offset + 8])
    current.append(page)
    if db_size:
        commits.append(current)
        current = []
    offset += FRAME_HEADER + page_size
commits = commits[-last:]
if not commits:
    sys.exit("wal-pages: no whole commit in the WAL")

db = sqlite3.connect(f"file:{directory}/server.db?mode=ro", uri=True)
owner = dict((page, name) for name, page in db.execute("SELECT name, pageno FROM dbstat"))
by_table = collections.Counter(owner.get(p, "(new)") for c in commits for p in c)
n = len(commits)
print(f"{n} commits, {sum(map(len, commits)) / n:.2f} pages a commit ({page_size} bytes each)")
for table, pages in by_table.most_common():
    if pages / n >= 0.01:
        print(f"  {table:32s} {pages / n:6.2f}")
