-- login-etl schema, version 6: the quarantine (docs/operations.md, "The failure path").
--
-- A message the function rejects is written here, in the same transaction as its batch's
-- rows, and then reported as processed: SQS deletes it on its first receive, so no
-- plaintext waits in any queue. The body is sealed (AES-256-GCM-SIV under the current data
-- key, AAD = purpose, message id, attempt, key version); reason code, field and SQS
-- attributes stay readable for the runbook. The blind indexes of every ip and device id
-- the body holds where they can be read are kept beside it (login_quarantine_masks), so
-- `pii-vault forget` reaches every quarantined copy of a value.
--
--   login_etl_writer              INSERT (the columns below, and masks) only: no SELECT, so
--                                 the INSERT is `ON CONFLICT DO NOTHING` without a target.
--   login_etl_vault_service       reads it (list, show, replay, forget, re-encrypt) and
--                                 writes only the columns that erase, re-seal or mark a
--                                 replay; imports what reached the DLQ.
--   login_etl_quarantine_purge    the scheduled purge: erases bodies older than a day
--                                 (row security) and past the retention.
--   people (analyst, vault reader, auditor): nothing.
-- A trigger (login_quarantine_guard, at the end) holds every role but the owner to those
-- changes, row by row.

DO $$
BEGIN
    CREATE ROLE login_etl_quarantine_purge NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END $$;

CREATE TABLE IF NOT EXISTS login_quarantine (
    -- The SQS message id; for a replay, the original message's id.
    -- Printable ASCII, as login_etl_core::event::MessageId takes it (SQS's ids are UUIDs).
    message_id       varchar(128) NOT NULL CHECK (message_id ~ '^[!-~]{1,128}$'),
    -- 0 when first seen; n for the n-th replay that was rejected again.
    attempt          integer      NOT NULL CHECK (attempt BETWEEN 0 AND 1000),
    -- Where it came from: the login queue, a replay, or the dead-letter queue (import-dlq).
    source           varchar(16)  NOT NULL CHECK (source IN ('queue', 'replay', 'dead-letter')),
    reason_code      varchar(64)  NOT NULL CHECK (reason_code ~ '^[a-z_]{1,64}$'),
    field            varchar(32)  CHECK (field ~ '^[a-z_]{1,32}$'),
    -- SQS SentTimestamp (the login's create_date), when the message carried a valid one.
    sent_at          timestamptz,
    receive_count    integer      CHECK (receive_count >= 0),
    quarantined_at   timestamptz  NOT NULL DEFAULT now(),
    key_version      integer      CHECK (key_version >= 1),
    nonce            bytea        CHECK (octet_length(nonce) = 12),
    ciphertext       bytea,
    -- Erased bodies keep their row (the runbook still sees that the message existed).
    erased_at        timestamptz,
    erased_by        varchar(16)  CHECK (erased_by IN ('forget', 'purge')),
    -- Set only after the replay was sent; replay_attempt is the attempt number it carried.
    replayed_at      timestamptz,
    replay_attempt   integer      CHECK (replay_attempt BETWEEN 1 AND 1000),
    PRIMARY KEY (message_id, attempt),
    CONSTRAINT login_quarantine_sealed_or_erased CHECK (
        (erased_at IS NULL AND erased_by IS NULL
            AND key_version IS NOT NULL AND nonce IS NOT NULL AND ciphertext IS NOT NULL)
        OR (erased_at IS NOT NULL AND erased_by IS NOT NULL
            AND key_version IS NULL AND nonce IS NULL AND ciphertext IS NULL)),
    CONSTRAINT login_quarantine_replay_marked_whole CHECK ((replayed_at IS NULL) = (replay_attempt IS NULL))
);
CREATE INDEX IF NOT EXISTS login_quarantine_quarantined_at_idx ON login_quarantine (quarantined_at);

-- Which quarantined bodies hold which value: a row per readable ip or device id (a field
-- given twice: both values; a body cut short: what it held before the cut).
CREATE TABLE IF NOT EXISTS login_quarantine_masks (
    message_id  varchar(128) NOT NULL CHECK (message_id ~ '^[!-~]{1,128}$'),
    attempt     integer      NOT NULL CHECK (attempt BETWEEN 0 AND 1000),
    field       varchar(16)  NOT NULL CHECK (field IN ('ip', 'device_id')),
    blind_index varchar(64)  NOT NULL CHECK (octet_length(blind_index) = 64 AND blind_index !~ '[^0-9a-f]'),
    PRIMARY KEY (message_id, attempt, field, blind_index)
);
CREATE INDEX IF NOT EXISTS login_quarantine_masks_value_idx ON login_quarantine_masks (field, blind_index);

-- The audit knows the quarantine's operations. NOT VALID: every existing row met the
-- narrower rule, and the check then takes its lock only for the catalog change.
ALTER TABLE pii_audit
    DROP CONSTRAINT pii_audit_action_check,
    ADD CONSTRAINT pii_audit_action_check
        CHECK (action IN ('find', 'reveal', 'forget', 'audit', 'init-keys', 'rotate-key', 'reencrypt',
                          'quarantine-list', 'quarantine-show', 'quarantine-replay',
                          'quarantine-import-dlq', 'quarantine-purge')) NOT VALID,
    DROP CONSTRAINT pii_audit_outcome_check,
    ADD CONSTRAINT pii_audit_outcome_check
        CHECK (outcome IN ('revealed', 'erased', 'unknown', 'forgotten', 'refused', 'found', 'listed',
                           'created', 'failed', 'done', 'shown', 'replayed', 'imported', 'purged')) NOT VALID;

REVOKE ALL ON login_quarantine, login_quarantine_masks FROM PUBLIC, login_etl_writer, login_etl_analyst,
    login_etl_vault_reader, login_etl_auditor, login_etl_vault_service, login_etl_quarantine_purge;

GRANT USAGE ON SCHEMA public TO login_etl_quarantine_purge;

GRANT INSERT (message_id, attempt, source, reason_code, field, sent_at, receive_count,
              key_version, nonce, ciphertext)
    ON login_quarantine TO login_etl_writer;
GRANT INSERT ON login_quarantine_masks TO login_etl_writer;

GRANT SELECT ON login_quarantine, login_quarantine_masks TO login_etl_vault_service;
GRANT INSERT (message_id, attempt, source, reason_code, field, sent_at, receive_count,
              key_version, nonce, ciphertext)
    ON login_quarantine TO login_etl_vault_service;
GRANT INSERT ON login_quarantine_masks TO login_etl_vault_service;
GRANT UPDATE (key_version, nonce, ciphertext, erased_at, erased_by, replayed_at, replay_attempt)
    ON login_quarantine TO login_etl_vault_service;

-- The purge reads only what it needs to pick rows, and writes only what erases.
GRANT SELECT (message_id, attempt, quarantined_at, erased_at) ON login_quarantine TO login_etl_quarantine_purge;
GRANT UPDATE (key_version, nonce, ciphertext, erased_at, erased_by) ON login_quarantine TO login_etl_quarantine_purge;

-- Row security, so that the purge's login erases nothing younger than the shortest
-- retention (1 day) and nothing but as a purge: column grants alone would let it erase
-- any body, or label an erasure `forget`. The other roles keep what the grants give them.
-- (The table's owner, which migrates, is not subject to row security.)
ALTER TABLE login_quarantine ENABLE ROW LEVEL SECURITY;
CREATE POLICY writer_adds ON login_quarantine FOR INSERT TO login_etl_writer WITH CHECK (true);
CREATE POLICY service_works ON login_quarantine FOR ALL TO login_etl_vault_service USING (true) WITH CHECK (true);
CREATE POLICY purge_sees_the_expired ON login_quarantine FOR SELECT TO login_etl_quarantine_purge
    USING (quarantined_at < now() - interval '1 day');
CREATE POLICY purge_erases_the_expired ON login_quarantine FOR UPDATE TO login_etl_quarantine_purge
    USING (quarantined_at < now() - interval '1 day' AND erased_at IS NULL)
    WITH CHECK (erased_by = 'purge' AND erased_at IS NOT NULL
                AND key_version IS NULL AND nonce IS NULL AND ciphertext IS NULL);

-- What the roles that work on the quarantine may change, row by row (a policy cannot see
-- the old row, a trigger can): an erased row never changes again, a replay mark once set
-- stays, the erasure time is the time of the erasure, and what a row says about its
-- message (key, source, reason, dates, receive count) never changes. The table's owner
-- and superusers (migrations, a DBA) are not bound by it.
CREATE OR REPLACE FUNCTION login_quarantine_guard() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
       OR current_user = (SELECT tableowner FROM pg_tables WHERE schemaname = TG_TABLE_SCHEMA AND tablename = TG_TABLE_NAME) THEN
        RETURN NEW;
    END IF;
    IF OLD.erased_at IS NOT NULL THEN
        RAISE EXCEPTION 'login_quarantine: an erased row never changes' USING ERRCODE = '42501';
    END IF;
    IF OLD.replayed_at IS NOT NULL
       AND (NEW.replayed_at, NEW.replay_attempt) IS DISTINCT FROM (OLD.replayed_at, OLD.replay_attempt) THEN
        RAISE EXCEPTION 'login_quarantine: a replay mark never changes' USING ERRCODE = '42501';
    END IF;
    IF NEW.erased_at IS NOT NULL AND NEW.erased_at < clock_timestamp() - interval '1 minute' THEN
        RAISE EXCEPTION 'login_quarantine: an erasure is dated when it happens' USING ERRCODE = '42501';
    END IF;
    IF (NEW.message_id, NEW.attempt, NEW.source, NEW.reason_code, NEW.field, NEW.sent_at, NEW.receive_count,
        NEW.quarantined_at)
       IS DISTINCT FROM
       (OLD.message_id, OLD.attempt, OLD.source, OLD.reason_code, OLD.field, OLD.sent_at, OLD.receive_count,
        OLD.quarantined_at) THEN
        RAISE EXCEPTION 'login_quarantine: what a row says about its message never changes' USING ERRCODE = '42501';
    END IF;
    RETURN NEW;
END $$;
REVOKE ALL ON FUNCTION login_quarantine_guard() FROM PUBLIC;
CREATE TRIGGER login_quarantine_guard BEFORE UPDATE ON login_quarantine
    FOR EACH ROW EXECUTE FUNCTION login_quarantine_guard();
