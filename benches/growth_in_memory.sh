#!/usr/bin/env bash
# What is left of the growth step when everything an insert touches is in shared buffers
# (BENCHMARKS.md, "Growth", "With the hot set in memory"): tables of the current
# partition's shape at 50 M logins a year and of the vault's at 12.5 M values, each index
# read in by pg_prewarm,
# against empty ones; 8,000 new login rows and 11,200 new vault values (an 8,000-message
# batch's) by one sorted INSERT … ON CONFLICT DO NOTHING each, the tables in turn, 7 rounds.
# Run it against a cluster whose shared_buffers hold the 1.6 GB of indexes it reads in
# (e.g. 4 GB), named by DATABASE_URL. Drops its tables after.
set -euo pipefail
P="psql ${DATABASE_URL:?DATABASE_URL} -v ON_ERROR_STOP=1 -q"
# A login row: two masks, a message id, its day (the existing rows' spread over the
# table's DAYS days that end on 2026-11-30, new rows' that day), padding.
LOGIN="encode(sha256(convert_to('a'||g,'UTF8')),'hex'), encode(sha256(convert_to('b'||g,'UTF8')),'hex'),
       md5('m'||g)::uuid::text, date '2026-11-30' - (g % DAYS)::int, repeat('x', 100)"
VAULT="f.field, encode(sha256(convert_to(f.field||g,'UTF8')),'hex'), 1,
       substr(sha256(convert_to('n'||g,'UTF8')), 1, 12), sha256(convert_to('c'||g,'UTF8'))"
logins() { # name rows days pk
  echo "CREATE TABLE $1 (m1 varchar(256), m2 varchar(256), id varchar(128), d date, pad text);
        INSERT INTO $1 SELECT ${LOGIN//DAYS/$3} FROM generate_series(1, $2) g;
        CREATE INDEX ON $1 USING hash (m1); CREATE INDEX ON $1 USING hash (m2);
        ALTER TABLE $1 ADD PRIMARY KEY ($4);"
}
vault() { # name values
  echo "CREATE TABLE $1 (field text, blind_index varchar(64), key_version int, nonce bytea, ciphertext bytea);
        INSERT INTO $1 SELECT $VAULT FROM generate_series(1, $2) g, (VALUES ('ip'), ('device_id')) f(field);
        ALTER TABLE $1 ADD EXCLUDE USING hash (blind_index WITH =);"
}
LOGIN_TABLES="l_empty l_month l_month_date_first l_week l_day"
FILLED="'l_month', 'l_month_date_first', 'l_week', 'l_day', 'v_full'"
$P <<SQL
DROP TABLE IF EXISTS ${LOGIN_TABLES// /, }, v_empty, v_full;
SET maintenance_work_mem = '1GB';
$(logins l_empty 0 30 "id, d")
$(logins l_month 4200000 30 "id, d")
$(logins l_month_date_first 4200000 30 "d, id")
$(logins l_week 1000000 7 "id, d")
$(logins l_day 140000 1 "id, d")
$(vault v_empty 0)
$(vault v_full 6250000)
VACUUM ANALYZE;
CREATE EXTENSION IF NOT EXISTS pg_prewarm;
SELECT sum(pg_prewarm(indexrelid)) FROM pg_index WHERE indrelid::regclass::text IN ($FILLED);
CHECKPOINT;
SELECT c.relname, pg_size_pretty(pg_indexes_size(c.oid)) FROM pg_class c WHERE relname IN ($FILLED) ORDER BY 1;
SQL
for rep in 1 2 3 4 5 6 7; do
  s=$(( (rep * 10 + 1) * 1000000 ))
  for t in $LOGIN_TABLES; do
    ms=$($P -At <<SQL | tail -1
\timing on
INSERT INTO $t SELECT * FROM (SELECT ${LOGIN//DAYS/1} FROM generate_series($s + 0, $s + 7999) g) r ORDER BY 3, 4 ON CONFLICT DO NOTHING;
SQL
)
    echo "$rep $t $ms"
  done
  for t in v_empty v_full; do
    ms=$($P -At <<SQL | tail -1
\timing on
INSERT INTO $t SELECT * FROM (SELECT $VAULT FROM generate_series($s + 0, $s + 5599) g, (VALUES ('ip'), ('device_id')) f(field)) v ORDER BY 1, 2 ON CONFLICT DO NOTHING;
SQL
)
    echo "$rep $t $ms"
  done
done
$P -c "DROP TABLE ${LOGIN_TABLES// /, }, v_empty, v_full"
