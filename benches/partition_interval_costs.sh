#!/usr/bin/env bash
# What a partition per day costs besides ingest (docs/operations.md, "Partition interval";
# BENCHMARKS.md, "Partition interval"): every lookup that does not name a date goes
# through every partition. Two databases migrated as `migrate` makes them, one with
# PARTITION_INTERVAL=month, one with day, over the same 13 months back and 2 ahead (how
# long `migrate` takes to make them), each filled with the same LOGINS logins over the
# last 12 months and VALUES vault values per field (every tenth value seen in the last 30
# days, the rest only before). Then, each in one session (a pooled connection of the
# service), the first time and the median of the next 5:
# - a lookup of one mask over every partition (pii-vault find, forget, duplicates), its
#   planning and execution;
# - one vault expiry batch of ROWS rows (the statement itself, read from
#   crates/vault-service/src/expiry.rs, rolled back), with a retention of 90 days and
#   forever: it decides each value by a NOT EXISTS over the mask indexes, partition by
#   partition, holding the erasure lock that ingest waits for.
# Needs the stack (`make stack`; DATABASE_URL) and target/debug/migrate (`cargo build
# --bin migrate`). Drops its databases after.
set -euo pipefail
cd "$(dirname "$0")/.."
LOGINS=${LOGINS:-2000000} VALUES=${VALUES:-250000} ROWS=${ROWS:-1000}
ADMIN=${DATABASE_URL:?DATABASE_URL}
BATCH=$(sed -n '/^const EXPIRE_BATCH: &str = "/,/";$/p' crates/vault-service/src/expiry.rs |
  sed '1s/^const EXPIRE_BATCH: &str = "//; $s/";$//')
[ -n "$BATCH" ] || { echo "EXPIRE_BATCH not found in crates/vault-service/src/expiry.rs" >&2; exit 1; }
url() { echo "${ADMIN%/*}/$1"; }
median() { printf '%s\n' "$@" | sort -n | sed -n 3p; }
for interval in month day; do
  db="expiry_by_${interval}"
  psql "$ADMIN" -q -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
  started=$(date +%s%N)
  PARTITION_INTERVAL=$interval PARTITION_DAYS_BACK=400 PARTITION_MONTHS_AHEAD=2 \
    target/debug/migrate --database-url "$(url "$db")" >/dev/null
  made_ms=$(( ($(date +%s%N) - started) / 1000000 ))
  psql "$(url "$db")" -v ON_ERROR_STOP=1 -q <<SQL
INSERT INTO login_data.user_logins (user_id, device_type, masked_ip, masked_device_id, locale, app_version,
                                    create_date, sqs_message_id, app_version_raw, sent_at, index_key_version)
SELECT 'user-' || g, 'ios',
       encode(sha256(convert_to('ip' || (g % $VALUES), 'UTF8')), 'hex'),
       encode(sha256(convert_to('dev' || (g % $VALUES), 'UTF8')), 'hex'),
       'DE', 230, t::date, md5('m' || g)::uuid::text, '2.3.0', t, 1
  FROM generate_series(0, $LOGINS - 1) g,
       LATERAL (SELECT now() - interval '1 day' * CASE WHEN g % $VALUES % 10 = 0 THEN (g % 30) ELSE 31 + (g % 334) END) s(t);
INSERT INTO vault.pii_vault (field, blind_index, key_version, nonce, ciphertext, created_at)
SELECT f.field, encode(sha256(convert_to(f.prefix || g, 'UTF8')), 'hex'), 1,
       substr(sha256(convert_to('n' || g, 'UTF8')), 1, 12), sha256(convert_to('c' || g, 'UTF8')),
       now() - interval '400 days'
  FROM generate_series(0, $VALUES - 1) g, (VALUES ('ip', 'ip'), ('device_id', 'dev')) f(field, prefix);
VACUUM ANALYZE;
SQL
  partitions=$(psql "$(url "$db")" -At -c "SELECT count(*) FROM pg_inherits WHERE inhparent = 'login_data.user_logins'::regclass")
  echo "interval $interval: $partitions partitions, made with the migrations in $made_ms ms"
  # One session each, as a pooled connection of the service is: the first time opens
  # every partition (the session's catalog cache), the next 5 are the steady state.
  lookups=$(for i in 0 1 2 3 4 5; do
    echo "EXPLAIN (ANALYZE, SUMMARY) SELECT count(*) FROM login_data.user_logins
            WHERE masked_ip = encode(sha256(convert_to('ip' || $((i * 7)), 'UTF8')), 'hex');"
  done | psql "$(url "$db")" -At)
  plans=($(sed -n 's/^Planning Time: \([0-9.]*\) ms/\1/p' <<<"$lookups"))
  runs=($(sed -n 's/^Execution Time: \([0-9.]*\) ms/\1/p' <<<"$lookups"))
  echo "interval $interval: one mask over every partition: first in a session planning ${plans[0]} ms, execution ${runs[0]} ms; then planning $(median "${plans[@]:1}") ms, execution $(median "${runs[@]:1}") ms"
  for retention in 90 NULL; do
    times=($(for _ in 0 1 2 3 4 5; do
      printf 'BEGIN;\n\\timing on\nEXECUTE expire_batch(NULL, NULL, %s, %s, NULL);\n\\timing off\nROLLBACK;\n' "$ROWS" "$retention"
    done | psql "$(url "$db")" -At -v ON_ERROR_STOP=1 -c "PREPARE expire_batch AS $BATCH" -f - |
      sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p'))
    echo "interval $interval: an expiry batch of $ROWS vault rows, retention ${retention/NULL/forever}: first in a session ${times[0]} ms, then $(median "${times[@]:1}") ms"
  done
  psql "$ADMIN" -q -c "DROP DATABASE $db"
done
