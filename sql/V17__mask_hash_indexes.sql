-- login-etl schema, version 17: the masks indexed by hash, not B-tree (issue 19, item 7;
-- BENCHMARKS.md, "Growth").
--
-- Every lookup of a mask is equality (`pii-vault find`, `forget`, the vault expiry's NOT
-- EXISTS, duplicate queries): a hash index serves each, at a 4-byte hash per entry
-- instead of a 64-character key. The current month's B-trees on random 64-character keys
-- were what made a batch into a large month cost twice one into a small month; hash
-- indexes take new rows into a month of 4.2 M rows as fast as into a day's.
--
-- Upgrade in place. A CREATE INDEX on the partitioned table attaches a matching index a
-- partition already has instead of building one. `login_etl_migrations::migrate` builds
-- them first, outside any transaction, partition by partition, CONCURRENTLY (writes go
-- on), as `user_logins_…_masked_ip_hash` / `…_masked_device_id_hash`; here each is then
-- only attached (a catalog change). A partition without one (migrations run by another
-- tool) gets it built here, blocking its INSERTs for the build: no time on a new or small
-- table. The B-trees then go (DROP of the parent's index drops every partition's). Each
-- lock is waited for at most 1 s; `migrate` tries again a few times.
--
-- New partitions get the hash indexes when the maintenance attaches them (ATTACH builds
-- the parent's indexes on the empty table).

SET LOCAL lock_timeout = '1s';

CREATE INDEX user_logins_masked_ip_hash ON login_data.user_logins USING hash (masked_ip);
CREATE INDEX user_logins_masked_device_id_hash ON login_data.user_logins USING hash (masked_device_id);
DROP INDEX login_data.user_logins_masked_ip_idx;
DROP INDEX login_data.user_logins_masked_device_id_idx;
