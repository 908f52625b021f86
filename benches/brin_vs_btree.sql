-- A month's range scans on sent_at: BRIN against B-tree (BENCHMARKS.md, "BRIN on sent_at").
-- psql "$DATABASE_URL" -X -q -f benches/brin_vs_btree.sql   (on the local stack; drops its two tables at the end)
DROP TABLE IF EXISTS brin_t, btree_t;
-- One month of logins, 3 M rows (about 1.2 per second), sent_at in arrival order with up to 5 min of jitter.
CREATE TABLE brin_t AS
SELECT md5(i::text) AS sqs_message_id, md5((i % 100000)::text) AS masked_ip,
       timestamptz '2026-11-01' + (i * interval '864 ms') + (random() * interval '5 min') AS sent_at,
       repeat('x', 60) AS filler
  FROM generate_series(1, 3000000) i;
CREATE TABLE btree_t AS TABLE brin_t;
CREATE INDEX ON brin_t USING brin (sent_at);
CREATE INDEX ON btree_t (sent_at);
VACUUM ANALYZE brin_t; VACUUM ANALYZE btree_t;
SELECT 'brin' AS idx, pg_size_pretty(pg_indexes_size('brin_t')) UNION ALL SELECT 'btree', pg_size_pretty(pg_indexes_size('btree_t'));
SET max_parallel_workers_per_gather = 0;
-- warm
SELECT count(*) FROM brin_t; SELECT count(*) FROM btree_t;
\timing on
\echo one hour
SELECT count(*), max(masked_ip) FROM brin_t WHERE sent_at >= '2026-11-15 10:00' AND sent_at < '2026-11-15 11:00';
SELECT count(*), max(masked_ip) FROM btree_t WHERE sent_at >= '2026-11-15 10:00' AND sent_at < '2026-11-15 11:00';
SELECT count(*), max(masked_ip) FROM brin_t WHERE sent_at >= '2026-11-15 10:00' AND sent_at < '2026-11-15 11:00';
SELECT count(*), max(masked_ip) FROM btree_t WHERE sent_at >= '2026-11-15 10:00' AND sent_at < '2026-11-15 11:00';
\echo one day
SELECT count(*), max(masked_ip) FROM brin_t WHERE sent_at >= '2026-11-15' AND sent_at < '2026-11-16';
SELECT count(*), max(masked_ip) FROM btree_t WHERE sent_at >= '2026-11-15' AND sent_at < '2026-11-16';
SELECT count(*), max(masked_ip) FROM brin_t WHERE sent_at >= '2026-11-15' AND sent_at < '2026-11-16';
SELECT count(*), max(masked_ip) FROM btree_t WHERE sent_at >= '2026-11-15' AND sent_at < '2026-11-16';
\echo one week
SELECT count(*), max(masked_ip) FROM brin_t WHERE sent_at >= '2026-11-08' AND sent_at < '2026-11-15';
SELECT count(*), max(masked_ip) FROM btree_t WHERE sent_at >= '2026-11-08' AND sent_at < '2026-11-15';
SELECT count(*), max(masked_ip) FROM brin_t WHERE sent_at >= '2026-11-08' AND sent_at < '2026-11-15';
SELECT count(*), max(masked_ip) FROM btree_t WHERE sent_at >= '2026-11-08' AND sent_at < '2026-11-15';
DROP TABLE brin_t, btree_t;
