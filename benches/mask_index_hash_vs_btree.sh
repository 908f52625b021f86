#!/usr/bin/env bash
# Mask indexes, B-tree against hash, on a table of the current month partition's shape at
# 50 M logins a year (4.2 M rows), against a day's partition (140 k rows): 8,000 new rows
# by one INSERT … SELECT, alternated. BENCHMARKS.md, "Growth". Needs a database to write
# to: DATABASE_URL (e.g. the local stack's: source .stack/env). Drops its tables after.
#
# HOT=0.05 (default 0): that share of the existing and of the new rows carries one and the
# same ip mask (a carrier's NAT address seen in many logins): a hash index keeps every
# entry of one value in one bucket's chain of pages, which an insert walks to its end and a
# lookup of that value reads whole. Then the lookup of the hot value is timed too.
set -euo pipefail
HOT=${HOT:-0}
P="psql ${DATABASE_URL:?DATABASE_URL} -v ON_ERROR_STOP=1 -q"
MASK="CASE WHEN random() < $HOT THEN repeat('f', 64) ELSE encode(sha256(convert_to('a'||g,'UTF8')),'hex') END"
ROW="$MASK, encode(sha256(convert_to('b'||g,'UTF8')),'hex'), md5('m'||g)::uuid::text, '2025-11-01', repeat('x', 60)"
$P <<SQL
DROP TABLE IF EXISTS t_btree, t_hash, t_small;
CREATE TABLE t_btree (m1 varchar(256), m2 varchar(256), id varchar(128), d date, pad text);
INSERT INTO t_btree SELECT $ROW FROM generate_series(1,4200000) g;
CREATE TABLE t_hash AS SELECT * FROM t_btree;
CREATE TABLE t_small AS SELECT * FROM t_btree LIMIT 140000;
SET maintenance_work_mem = '1GB';
CREATE INDEX ON t_btree(m1); CREATE INDEX ON t_btree(m2); ALTER TABLE t_btree ADD PRIMARY KEY (id, d);
CREATE INDEX ON t_hash USING hash(m1); CREATE INDEX ON t_hash USING hash(m2); ALTER TABLE t_hash ADD PRIMARY KEY (id, d);
CREATE INDEX ON t_small(m1); CREATE INDEX ON t_small(m2); ALTER TABLE t_small ADD PRIMARY KEY (id, d);
VACUUM ANALYZE t_btree; VACUUM ANALYZE t_hash; VACUUM ANALYZE t_small;
CHECKPOINT;
SELECT 'btree', pg_size_pretty(pg_indexes_size('t_btree')), 'hash', pg_size_pretty(pg_indexes_size('t_hash')), 'small', pg_size_pretty(pg_indexes_size('t_small'));
SQL
for rep in 1 2 3 4 5 6 7; do
  for t in t_btree t_hash t_small; do
    s=$(( (rep * 10 + 1) * 1000000 ))
    ms=$($P -At <<SQL | tail -1
\timing on
INSERT INTO $t SELECT $ROW FROM generate_series($s + 0, $s + 7999) g;
SQL
)
    echo "$rep $t $ms"
  done
done
if [ "$HOT" != 0 ]; then
  for rep in 1 2 3; do
    for t in t_btree t_hash; do
      ms=$($P -At <<SQL | tail -1
\timing on
SELECT count(*) FROM $t WHERE m1 = repeat('f', 64);
SQL
)
      echo "lookup of the hot value $rep $t $ms"
    done
  done
fi
$P -c "DROP TABLE t_btree, t_hash, t_small"
