#!/usr/bin/env bash
# The vault's unique key, as it is and as it could be, on a table of pii_vault's shape at
# 10 M logins (2.5 M values, one per four logins; N= to change): 11,200 new values (an
# 8,000-message batch's two fields, less its repeats) by one sorted INSERT … ON CONFLICT DO
# NOTHING, alternated across the variants and an empty table. BENCHMARKS.md, "Growth".
# Then how long each key takes to build on the filled table: a constraint that is not a
# B-tree cannot be built CONCURRENTLY, so that build is how long an upgrade in place would
# hold the vault (and ingest) locked. Needs DATABASE_URL (e.g. source .stack/env); drops
# its tables after.
#
#   v_btree   PRIMARY KEY (field, blind_index), 64 hex characters (V1 to V17)
#   v_bytea   the same key, the blind index as 32 bytes
#   v_hash    EXCLUDE USING hash (blind_index WITH =): hash indexes have one column, so the
#             field leaves the key (each field's blind index has a key of its own)
set -euo pipefail
N=${N:-2500000}
P="psql ${DATABASE_URL:?DATABASE_URL} -v ON_ERROR_STOP=1 -q"
FIELD="CASE WHEN g % 2 = 0 THEN 'ip' ELSE 'device_id' END"
HEX="encode(sha256(convert_to('v'||g,'UTF8')),'hex')"
REST="1, sha256(convert_to('n'||g,'UTF8')), sha256(convert_to('c'||g,'UTF8'))"
COLS="v(field, blind_index, key_version, nonce, ciphertext)"
$P <<SQL
DROP TABLE IF EXISTS v_btree, v_bytea, v_hash, v_empty;
CREATE TABLE v_btree (field text, blind_index varchar(64), key_version int4, nonce bytea, ciphertext bytea);
INSERT INTO v_btree SELECT $FIELD, $HEX, $REST FROM generate_series(1, $N) g;
CREATE TABLE v_hash AS SELECT * FROM v_btree;
CREATE TABLE v_bytea AS SELECT field, decode(blind_index, 'hex') AS blind_index, key_version, nonce, ciphertext FROM v_btree;
CREATE TABLE v_empty (LIKE v_btree);
SET maintenance_work_mem = '64MB';
\timing on
\echo build: primary key (B-tree), 64 hex characters
ALTER TABLE v_btree ADD PRIMARY KEY (field, blind_index);
\echo build: primary key (B-tree), 32 bytes
ALTER TABLE v_bytea ADD PRIMARY KEY (field, blind_index);
\echo build: exclusion constraint (hash)
ALTER TABLE v_hash ADD EXCLUDE USING hash (blind_index WITH =);
\timing off
ALTER TABLE v_empty ADD PRIMARY KEY (field, blind_index);
CREATE INDEX ON v_btree (key_version); CREATE INDEX ON v_bytea (key_version);
CREATE INDEX ON v_hash (key_version); CREATE INDEX ON v_empty (key_version);
VACUUM ANALYZE v_btree; VACUUM ANALYZE v_bytea; VACUUM ANALYZE v_hash;
CHECKPOINT;
SELECT t, pg_size_pretty(pg_indexes_size(t::regclass)) FROM unnest(array['v_btree', 'v_bytea', 'v_hash']) t;
SQL
for rep in $(seq 1 "${REPS:-9}"); do
  for t in v_empty v_btree v_bytea v_hash; do
    s=$(( (rep * 10 + 1) * 1000000 ))
    key=$HEX; [ $t = v_bytea ] && key="decode($HEX, 'hex')"
    ms=$($P -At <<SQL | tail -1
\timing on
INSERT INTO $t SELECT * FROM (SELECT $FIELD, $key, $REST FROM generate_series($s, $s + 11199) g) $COLS
ORDER BY field COLLATE "C", blind_index ON CONFLICT DO NOTHING;
SQL
)
    echo "$rep $t $ms"
  done
done
$P -c "DROP TABLE v_btree, v_bytea, v_hash, v_empty"
