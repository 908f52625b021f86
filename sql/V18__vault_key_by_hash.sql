-- login-etl schema, version 18: the vault's key checked through a hash index (issue 19,
-- item 7; BENCHMARKS.md, "Growth").
--
-- Every batch with new values inserts them into the vault, each a random place in its key.
-- A B-tree on (field, 64-character blind index) of 2.5 M values (10 M logins) is 256 MB;
-- each insert lands on a leaf page of it no other insert of the batch touches. That was
-- what cost a batch into a filled database a third more than into an empty one (0.73 of
-- its rate at 10 M logins); with the key checked through a hash index (a 4-byte hash an
-- entry, 96 MB) the same database takes a batch at 0.97 of the empty one's rate.
--
-- A hash index cannot be UNIQUE, but it can carry an exclusion constraint with `=`, which
-- is uniqueness: the writer's `INSERT … ON CONFLICT DO NOTHING` takes it as its arbiter, a
-- plain INSERT of an existing key fails (exclusion_violation). A hash index has one column,
-- so the key is the blind index alone: each field's blind index is an HMAC under a key of
-- its own (`index:ip`, `index:device_id`, drawn apart from each other by KMS), so two fields
-- cannot share one short of an HMAC-SHA256 collision. Every lookup of a vault row is by
-- (field, blind index), equality: the hash index finds it, the field is checked on the row.
--
-- The expiry's pass went through the vault in key order; it now goes in the order rows
-- were vaulted, (created_at, field, blind_index), by a B-tree whose inserts all land at its
-- right end (a batch's rows share one created_at). Its cursor gains created_at; a pass that
-- stood somewhere starts again from the beginning.
--
-- Upgrade in place: `login_etl_migrations::migrate` copies a vault that holds rows into a
-- new table with these keys beforehand, without holding back ingest (see
-- `prepare_vault_key_by_hash`); here the new table then takes the old one's place. A vault
-- without that preparation (another tool's migrations, a new database) gets its keys built
-- here, holding the vault for the build: no time when it is empty.

SET LOCAL lock_timeout = '1s';

DO $$
DECLARE
    grant_ record;
BEGIN
    IF pg_catalog.to_regclass('vault.pii_vault_hashed') IS NULL THEN
        ALTER TABLE vault.pii_vault
            DROP CONSTRAINT pii_vault_pkey,
            ADD CONSTRAINT pii_vault_blind_index_key EXCLUDE USING hash (blind_index WITH =);
        CREATE INDEX pii_vault_vaulted_order ON vault.pii_vault (created_at, field, blind_index);
        RETURN;
    END IF;
    -- Prepared: the copy holds every row and the mirror keeps it so until this lock.
    LOCK TABLE vault.pii_vault IN ACCESS EXCLUSIVE MODE;
    DROP TRIGGER IF EXISTS pii_vault_mirror ON vault.pii_vault;
    DROP FUNCTION IF EXISTS vault.pii_vault_mirror();
    -- Unless the preparation broke before its copy was done (the copy marks the table when
    -- it is) and this runs without it (another tool's migrations): then the rest is copied
    -- here, under the lock, rather than the vault losing every row not yet copied.
    IF pg_catalog.obj_description('vault.pii_vault_hashed'::regclass, 'pg_class') IS DISTINCT FROM 'every row copied' THEN
        INSERT INTO vault.pii_vault_hashed SELECT * FROM vault.pii_vault ON CONFLICT DO NOTHING;
    END IF;
    COMMENT ON TABLE vault.pii_vault_hashed IS NULL;
    -- The old table's owner and rights, table-wide and column by column, as they are.
    EXECUTE format('ALTER TABLE vault.pii_vault_hashed OWNER TO %I',
                   (SELECT pg_catalog.pg_get_userbyid(relowner) FROM pg_catalog.pg_class
                     WHERE oid = 'vault.pii_vault'::regclass));
    FOR grant_ IN
        SELECT a.privilege_type, a.grantee, a.is_grantable, NULL::name AS column_
          FROM pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) a
         WHERE c.oid = 'vault.pii_vault'::regclass AND a.grantee <> c.relowner
        UNION ALL
        SELECT a.privilege_type, a.grantee, a.is_grantable, att.attname
          FROM pg_catalog.pg_attribute att, pg_catalog.aclexplode(att.attacl) a
         WHERE att.attrelid = 'vault.pii_vault'::regclass AND att.attnum > 0 AND NOT att.attisdropped
    LOOP
        EXECUTE format('GRANT %s %s ON vault.pii_vault_hashed TO %s %s',
                       grant_.privilege_type,
                       CASE WHEN grant_.column_ IS NULL THEN '' ELSE format('(%I)', grant_.column_) END,
                       CASE WHEN grant_.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_catalog.pg_get_userbyid(grant_.grantee)) END,
                       CASE WHEN grant_.is_grantable THEN 'WITH GRANT OPTION' ELSE '' END);
    END LOOP;
    DROP TABLE vault.pii_vault;
    ALTER TABLE vault.pii_vault_hashed RENAME TO pii_vault;
    ALTER TABLE vault.pii_vault RENAME CONSTRAINT pii_vault_hashed_blind_index_key TO pii_vault_blind_index_key;
    ALTER INDEX vault.pii_vault_hashed_vaulted_order RENAME TO pii_vault_vaulted_order;
    ALTER INDEX vault.pii_vault_hashed_key_version_idx RENAME TO pii_vault_key_version_idx;
    -- V16's guard (its function stays; the trigger went with the old table).
    CREATE TRIGGER pii_vault_tombstones_stay BEFORE DELETE ON vault.pii_vault
        FOR EACH ROW WHEN (OLD.erased_at IS NOT NULL)
        EXECUTE FUNCTION vault.keep_tombstones_from_the_expiry();
END $$;

ALTER TABLE vault.pii_vault_expiry
    ADD COLUMN created_at timestamptz,
    DROP CONSTRAINT pii_vault_expiry_check,
    ADD CONSTRAINT pii_vault_expiry_cursor_whole
        CHECK ((field IS NULL) = (blind_index IS NULL) AND (field IS NULL) = (created_at IS NULL)),
    ADD CONSTRAINT pii_vault_expiry_cursor_finite CHECK (isfinite(created_at));
UPDATE vault.pii_vault_expiry SET field = NULL, blind_index = NULL;
GRANT UPDATE (created_at) ON vault.pii_vault_expiry TO login_etl_vault_service, login_etl_vault_expiry;
