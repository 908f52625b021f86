-- login-etl schema, version 3: the vault as an audited service (docs/security.md).
--
-- No role a person uses can read pii_vault or pii_keys, or call anything that returns
-- their content. Only the vault service (pii-vault-service) reads the vault, and it
-- commits an audit row in a transaction of its own before it reads or computes anything.
--
--   login_etl_writer         the ingest function: INSERT user_logins; INSERT the sealed
--                            columns of pii_vault; SELECT pii_keys. Nothing else.
--   login_etl_analyst        SELECT user_logins.
--   login_etl_vault_reader   (people, from version 2) now exactly the analyst's rights.
--   login_etl_auditor        SELECT pii_audit.
--   login_etl_vault_service  the service: SELECT user_logins, pii_vault, pii_keys,
--                            pii_audit; INSERT pii_audit and pii_keys; records outcomes;
--                            erases and re-encrypts vault rows in place.

DO $$
DECLARE
    role_name text;
BEGIN
    FOREACH role_name IN ARRAY ARRAY['login_etl_vault_service', 'login_etl_auditor'] LOOP
        BEGIN
            EXECUTE format('CREATE ROLE %I NOLOGIN', role_name);
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END LOOP;
END $$;

-- Erasure in place: an erased value keeps its row, without ciphertext, so no later insert
-- of the same (field, mask) can bring it back: the writer's ON CONFLICT DO NOTHING meets
-- the row whatever it sends, and a plain INSERT fails on the primary key.
ALTER TABLE pii_vault
    ALTER COLUMN key_version DROP NOT NULL,
    ALTER COLUMN nonce DROP NOT NULL,
    ALTER COLUMN ciphertext DROP NOT NULL,
    ADD COLUMN erased_at timestamptz;
INSERT INTO pii_vault (field, blind_index, erased_at)
SELECT field, blind_index, erased_at FROM pii_erasures
ON CONFLICT (field, blind_index) DO UPDATE
    SET key_version = NULL, nonce = NULL, ciphertext = NULL, erased_at = EXCLUDED.erased_at;
ALTER TABLE pii_vault ADD CONSTRAINT pii_vault_sealed_or_erased CHECK (
    (erased_at IS NULL AND key_version IS NOT NULL AND nonce IS NOT NULL AND ciphertext IS NOT NULL)
    OR (erased_at IS NOT NULL AND key_version IS NULL AND nonce IS NULL AND ciphertext IS NULL));
DROP TABLE pii_erasures;

-- The functions that returned ciphertext to people, with the audit in the caller's
-- (rollback-able) transaction, are gone.
DROP FUNCTION IF EXISTS pii_reveal(text, text, text, text);
DROP FUNCTION IF EXISTS pii_forget(text, text, text, text);

-- Keys: an index key has one version forever (duplicates must keep matching); versions
-- stay far from integer overflow.
ALTER TABLE pii_keys
    ADD CONSTRAINT pii_keys_one_index_key_version CHECK (purpose = 'data' OR version = 1),
    ADD CONSTRAINT pii_keys_version_bounded CHECK (version <= 1000000);

-- The audit: who (the IAM principal SigV4 proved), what, why, which request, and the
-- outcome, recorded after the act. Rows of version 2 keep their `caller` (was `actor`).
ALTER TABLE pii_audit RENAME COLUMN actor TO caller;
ALTER TABLE pii_audit
    DROP CONSTRAINT pii_audit_action_check,
    DROP CONSTRAINT pii_audit_outcome_check,
    DROP CONSTRAINT pii_audit_reason_check,
    ALTER COLUMN field DROP NOT NULL,
    ALTER COLUMN blind_index DROP NOT NULL,
    ALTER COLUMN reason DROP NOT NULL,
    ALTER COLUMN outcome DROP NOT NULL,
    ADD COLUMN request_id text,
    ADD COLUMN target text,
    ADD COLUMN outcome_at timestamptz,
    ADD COLUMN detail text,
    ADD CONSTRAINT pii_audit_action_check
        CHECK (action IN ('find', 'reveal', 'forget', 'audit', 'init-keys', 'rotate-key', 'reencrypt')),
    ADD CONSTRAINT pii_audit_outcome_check
        CHECK (outcome IN ('revealed', 'erased', 'unknown', 'forgotten', 'refused', 'found', 'listed',
                           'created', 'failed', 'done'));
-- Reasons: at least 8 characters besides white space, no control characters; a reveal
-- or erasure needs one unless it was refused. (NOT VALID: version 2 rows may be shorter.)
ALTER TABLE pii_audit
    ADD CONSTRAINT pii_audit_reason_visible
        CHECK (reason IS NULL OR (char_length(regexp_replace(reason, '\s', '', 'g')) >= 8
                                  AND reason !~ '[[:cntrl:]]')) NOT VALID,
    ADD CONSTRAINT pii_audit_reason_required
        CHECK (action NOT IN ('reveal', 'forget') OR reason IS NOT NULL OR outcome = 'refused') NOT VALID;
CREATE INDEX pii_audit_caller_action_at_idx ON pii_audit (caller, action, at);

-- Append-only, even for the table's owner's mistakes: an outcome is written once, into
-- a row that has none; nothing else of a row changes, and no row is deleted.
CREATE FUNCTION pii_audit_append_only() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.outcome IS NULL
       AND (NEW.id, NEW.at, NEW.db_user, NEW.caller, NEW.action, NEW.field, NEW.reason, NEW.request_id, NEW.target)
           IS NOT DISTINCT FROM
           (OLD.id, OLD.at, OLD.db_user, OLD.caller, OLD.action, OLD.field, OLD.reason, OLD.request_id, OLD.target)
       AND (OLD.blind_index IS NULL OR NEW.blind_index IS NOT DISTINCT FROM OLD.blind_index) THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'pii_audit is append-only: % refused', TG_OP USING ERRCODE = '42501';
END $$;
CREATE TRIGGER pii_audit_append_only BEFORE UPDATE OR DELETE ON pii_audit
    FOR EACH ROW EXECUTE FUNCTION pii_audit_append_only();
CREATE TRIGGER pii_audit_no_truncate BEFORE TRUNCATE ON pii_audit
    FOR EACH STATEMENT EXECUTE FUNCTION pii_audit_append_only();
REVOKE ALL ON FUNCTION pii_audit_append_only() FROM PUBLIC;

-- Privileges, from nothing.
REVOKE ALL ON user_logins, pii_keys, pii_vault, pii_audit FROM PUBLIC,
    login_etl_writer, login_etl_analyst, login_etl_vault_reader, login_etl_auditor, login_etl_vault_service;
REVOKE ALL ON SEQUENCE pii_audit_id_seq FROM PUBLIC,
    login_etl_writer, login_etl_analyst, login_etl_vault_reader, login_etl_auditor, login_etl_vault_service;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
-- New functions of the migrating role are not PUBLIC-executable.
ALTER DEFAULT PRIVILEGES REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;

GRANT USAGE ON SCHEMA public TO login_etl_auditor, login_etl_vault_service;

GRANT INSERT ON user_logins TO login_etl_writer;
GRANT INSERT (field, blind_index, key_version, nonce, ciphertext) ON pii_vault TO login_etl_writer;
GRANT SELECT ON pii_keys TO login_etl_writer;

GRANT SELECT ON user_logins TO login_etl_analyst, login_etl_vault_reader;

GRANT SELECT ON pii_audit TO login_etl_auditor;

GRANT SELECT ON user_logins, pii_keys, pii_vault, pii_audit TO login_etl_vault_service;
GRANT INSERT ON pii_audit, pii_keys TO login_etl_vault_service;
GRANT USAGE ON SEQUENCE pii_audit_id_seq TO login_etl_vault_service;
GRANT UPDATE (outcome, outcome_at, blind_index, detail) ON pii_audit TO login_etl_vault_service;
GRANT INSERT (field, blind_index, erased_at) ON pii_vault TO login_etl_vault_service;
GRANT UPDATE (key_version, nonce, ciphertext, erased_at) ON pii_vault TO login_etl_vault_service;
