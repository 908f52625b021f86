-- login-etl schema, version 13: `login_data.user_logins` partitioned by month of
-- `create_date` (docs/operations.md, "Scaling with a growing dataset"; issue 19).
--
--   login_data.user_logins       PARTITION BY RANGE (create_date), no DEFAULT partition
--                                (DETACH … CONCURRENTLY refuses while one exists).
--                                PRIMARY KEY (sqs_message_id, create_date): the idempotency
--                                key. create_date is the UTC date of the SQS SentTimestamp,
--                                which never changes for a message (a re-delivery carries
--                                the same one, a replay from the quarantine carries the
--                                original's), so a message has one key whatever the delivery.
--                                Partitioned indexes: the masks (B-tree, per partition) and a
--                                BRIN on sent_at (time ranges).
--   login_data.user_logins_YYYY_MM  one month each, made by the partition maintenance
--                                (crates/core/src/store/partitions.rs, the one code path:
--                                the scheduled function, `make run`, the tests).
--   login_data.user_logins_before_YYYY_MM  the table V1–V12 wrote, when it holds rows:
--                                attached as it is, for every date before the first day
--                                of the month after next (its bound; a month's margin for a
--                                prepared table whose migration waits, see below).
--   login_etl_partition_owner    NOLOGIN: owns user_logins and its partitions, nothing else.
--   login_etl_partition_maintainer  NOLOGIN group of the maintenance's login: a member of
--                                the owner (it may run DDL on user_logins: create, attach,
--                                later detach partitions), no right on any other table.
--
-- Upgrade in place, without stopping ingest for more than a second. A migration runs in a
-- transaction, where CREATE INDEX CONCURRENTLY cannot, and the old table needs what a
-- partition of the new one must have: a unique index on (sqs_message_id, create_date), NOT
-- NULL on both, and a proof that every row is below the bound (or ATTACH scans it under
-- ACCESS EXCLUSIVE). Built here on a large table, each would block its INSERTs for a scan.
-- So `login_etl_migrations::migrate` prepares them outside any transaction first, without
-- blocking writes: CREATE UNIQUE INDEX CONCURRENTLY, CREATE INDEX CONCURRENTLY (the BRIN),
-- and a CHECK added NOT VALID (a moment's lock) then VALIDATEd (SHARE UPDATE EXCLUSIVE:
-- INSERTs go on). This migration reuses what it finds (SET NOT NULL and ATTACH then
-- skip their scans: the validated CHECK proves them) and builds what is missing in the
-- transaction (a new or small table: no time). The swap itself takes ACCESS EXCLUSIVE on
-- the view and the old table for a few catalog changes, each lock waited for at most 1 s:
-- an open read through the view or of the table fails the migration instead of holding
-- ingest behind it (`migrate` tries again a few times).

SET LOCAL lock_timeout = '1s';
SET LOCAL datestyle = 'ISO, YMD';

-- Roles are cluster-wide: databases of one cluster migrated at the same time race here.
DO $$
BEGIN
    CREATE ROLE login_etl_partition_owner NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END $$;
DO $$
BEGIN
    CREATE ROLE login_etl_partition_maintainer NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END $$;
DO $$
BEGIN
    GRANT login_etl_partition_owner TO login_etl_partition_maintainer;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END $$;
-- The migrating role acts as the owner (it gives the tables to it, and reads through the
-- view it owns).
DO $$
BEGIN
    GRANT login_etl_partition_owner TO CURRENT_USER;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END $$;
-- CREATE: the partitions. Nothing else of the schema is the owner's.
GRANT USAGE, CREATE ON SCHEMA login_data TO login_etl_partition_owner;
-- ATTACH clones V10's erasure guard onto each new partition: its owner names the trigger's
-- function (a trigger function: nobody can call it otherwise).
GRANT EXECUTE ON FUNCTION public.erasure_token_guard() TO login_etl_partition_owner;

-- The view first (people's reads wait, not ingest), then the table.
LOCK TABLE public.user_logins IN ACCESS EXCLUSIVE MODE;
LOCK TABLE login_data.user_logins IN ACCESS EXCLUSIVE MODE;

DO $$
DECLARE
    bound date;
    legacy text;
    late bigint;
BEGIN
    -- The bound: the prepared CHECK's, or the first day of the month after next.
    SELECT (regexp_match(pg_get_constraintdef(oid), 'create_date < ''([0-9-]+)''::date'))[1]::date
      INTO bound
      FROM pg_constraint
     WHERE conrelid = 'login_data.user_logins'::regclass AND conname = 'user_logins_legacy_range'
       AND convalidated;
    IF bound IS NULL THEN
        bound := (date_trunc('month', current_date) + interval '2 months')::date;
        SELECT count(*) INTO late FROM login_data.user_logins
         WHERE create_date >= bound OR create_date IS NULL OR sqs_message_id IS NULL;
        IF late > 0 THEN
            RAISE EXCEPTION 'user_logins holds % rows dated % or later, or without a date or message id: they fit no partition of the old table; move them out first (docs/operations.md, "Upgrading to partitions")', late, bound
                USING ERRCODE = '23514';
        END IF;
        ALTER TABLE login_data.user_logins DROP CONSTRAINT IF EXISTS user_logins_legacy_range;
        EXECUTE format('ALTER TABLE login_data.user_logins ADD CONSTRAINT user_logins_legacy_range
                        CHECK (sqs_message_id IS NOT NULL AND create_date IS NOT NULL AND create_date < %L::date)',
                       bound);
    END IF;

    -- The key's index and the BRIN, unless prepared (an invalid leftover is rebuilt).
    IF NOT EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                    WHERE i.indrelid = 'login_data.user_logins'::regclass
                      AND c.relname = 'user_logins_legacy_key' AND i.indisvalid) THEN
        DROP INDEX IF EXISTS login_data.user_logins_legacy_key;
        CREATE UNIQUE INDEX user_logins_legacy_key ON login_data.user_logins (sqs_message_id, create_date);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                    WHERE i.indrelid = 'login_data.user_logins'::regclass
                      AND c.relname = 'user_logins_legacy_sent_at_brin' AND i.indisvalid) THEN
        DROP INDEX IF EXISTS login_data.user_logins_legacy_sent_at_brin;
        CREATE INDEX user_logins_legacy_sent_at_brin ON login_data.user_logins USING brin (sent_at);
    END IF;

    -- NOT NULL and the key: no scan (the validated CHECK proves them).
    ALTER TABLE login_data.user_logins
        ALTER COLUMN sqs_message_id SET NOT NULL,
        ALTER COLUMN create_date SET NOT NULL;
    ALTER TABLE login_data.user_logins
        ADD CONSTRAINT user_logins_legacy_pkey PRIMARY KEY USING INDEX user_logins_legacy_key;
    -- The message id alone is no longer the key; the parent's trigger is cloned onto it.
    DROP INDEX login_data.user_logins_sqs_message_id_key;
    DROP TRIGGER user_logins_erasure_token_guard ON login_data.user_logins;
    ALTER INDEX login_data.user_logins_masked_ip_idx RENAME TO user_logins_legacy_masked_ip_idx;
    ALTER INDEX login_data.user_logins_masked_device_id_idx RENAME TO user_logins_legacy_masked_device_id_idx;

    legacy := format('user_logins_before_%s', to_char(bound, 'YYYY_MM'));
    EXECUTE format('ALTER TABLE login_data.user_logins RENAME TO %I', legacy);
    -- Reached through the parent only.
    EXECUTE format('REVOKE ALL ON login_data.%I FROM login_etl_writer, login_etl_vault_service', legacy);
    EXECUTE format('ALTER TABLE login_data.%I OWNER TO login_etl_partition_owner', legacy);
END $$;

-- The partitioned table: the columns of V1–V12, in their order.
CREATE TABLE login_data.user_logins (
    user_id           varchar(128),
    device_type       varchar(32),
    masked_ip         varchar(256),
    masked_device_id  varchar(256),
    locale            varchar(32),
    app_version       integer,
    create_date       date NOT NULL,
    sqs_message_id    varchar(128) NOT NULL,
    app_version_raw   varchar(32),
    sent_at           timestamptz,
    index_key_version integer,
    loaded_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT user_logins_pkey PRIMARY KEY (sqs_message_id, create_date)
) PARTITION BY RANGE (create_date);
CREATE INDEX user_logins_masked_ip_idx ON login_data.user_logins (masked_ip);
CREATE INDEX user_logins_masked_device_id_idx ON login_data.user_logins (masked_device_id);
CREATE INDEX user_logins_sent_at_brin ON login_data.user_logins USING brin (sent_at);
-- V10's guard, on the parent: cloned onto every partition.
CREATE TRIGGER user_logins_erasure_token_guard BEFORE UPDATE ON login_data.user_logins
    FOR EACH ROW
    WHEN ((NEW.masked_ip IS DISTINCT FROM OLD.masked_ip AND NOT public.is_erasure_token('ip', NEW.masked_ip))
          OR (NEW.masked_device_id IS DISTINCT FROM OLD.masked_device_id
              AND NOT public.is_erasure_token('device_id', NEW.masked_device_id)))
    EXECUTE FUNCTION public.erasure_token_guard();
-- V3, V10 and V12's rights, on the parent (a partition is reached through it).
REVOKE ALL ON login_data.user_logins FROM PUBLIC;
GRANT INSERT ON login_data.user_logins TO login_etl_writer;
GRANT SELECT ON login_data.user_logins TO login_etl_vault_service;
GRANT UPDATE (masked_ip, masked_device_id) ON login_data.user_logins TO login_etl_vault_service;
ALTER TABLE login_data.user_logins OWNER TO login_etl_partition_owner;

-- The people's view, on the new table (V12's, same columns and rights).
CREATE OR REPLACE VIEW public.user_logins AS SELECT * FROM login_data.user_logins;

DO $$
DECLARE
    legacy record;
    has_rows boolean;
BEGIN
    SELECT c.relname AS name,
           (regexp_match(pg_get_constraintdef(k.oid), 'create_date < ''([0-9-]+)''::date'))[1]::date AS bound
      INTO STRICT legacy
      FROM pg_class c JOIN pg_constraint k ON k.conrelid = c.oid AND k.conname = 'user_logins_legacy_range'
     WHERE c.relnamespace = 'login_data'::regnamespace AND c.relname LIKE 'user\_logins\_before\_%'
       AND NOT c.relispartition;
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM login_data.%I)', legacy.name) INTO has_rows;
    IF has_rows THEN
        -- Its rows stay where they are: SHARE UPDATE EXCLUSIVE on the parent, no scan (the
        -- CHECK proves the range), its indexes attached, not built.
        EXECUTE format('ALTER TABLE login_data.user_logins ATTACH PARTITION login_data.%I
                        FOR VALUES FROM (MINVALUE) TO (%L)', legacy.name, legacy.bound);
    ELSE
        -- Nothing to keep (a new database): the maintenance makes every month.
        EXECUTE format('DROP TABLE login_data.%I', legacy.name);
    END IF;
END $$;
