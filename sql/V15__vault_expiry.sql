-- login-etl schema, version 15: PII kept no longer than needed (issue 19, item 4;
-- docs/vault.md, "admin expire"; docs/security.md, "Expiry").
--
--   'expire'                     a new action of the audit: one batch of the expiry, asked
--                                by the key administrator (`pii-vault admin expire`) or by
--                                the scheduled `vault-expiry` function (caller
--                                `schedule:vault-expiry`).
--   vault.pii_vault_expiry       one row: where the expiry's pass through `pii_vault` stands
--                                (the last (field, blind_index) a batch decided; NULL: the
--                                next batch starts at the beginning). Each batch moves it in
--                                its own transaction, so an interrupted run resumes there.
--   login_etl_vault_expiry       NOLOGIN group of the scheduled expiry's login: it reads
--                                the mask columns and dates of user_logins, the keys (its
--                                audit key, wrapped) and the columns of pii_vault that
--                                decide, deletes vault rows, appends to the audit as the
--                                service does, and takes the erasure lock. It cannot read a
--                                ciphertext, a marker, the quarantine or the budgets, nor
--                                change or read back what the audit says beyond the
--                                columns an outcome names.
--
-- The vault service's login gets the same rights on the cursor (the command runs there).

DO $$
BEGIN
    CREATE ROLE login_etl_vault_expiry NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END $$;

CREATE TABLE vault.pii_vault_expiry (
    only_row    boolean     PRIMARY KEY DEFAULT true CHECK (only_row),
    field       text        CHECK (field IN ('ip', 'device_id')),
    blind_index varchar(64) CHECK (blind_index ~ '^[0-9a-f]{64}$'),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CHECK ((field IS NULL) = (blind_index IS NULL))
);
INSERT INTO vault.pii_vault_expiry DEFAULT VALUES;
REVOKE ALL ON vault.pii_vault_expiry FROM PUBLIC;
GRANT SELECT, UPDATE (field, blind_index, updated_at) ON vault.pii_vault_expiry
    TO login_etl_vault_service, login_etl_vault_expiry;

-- The expiry's login. Schemas first (a name in a schema one may not use is refused
-- before any lock: docs/security.md, "Tables out of reach").
GRANT USAGE ON SCHEMA login_data, vault, pii_audit_log, pii_locks TO login_etl_vault_expiry;
-- Last seen: the masks through their per-partition indexes, the date prunes partitions.
GRANT SELECT (masked_ip, masked_device_id, create_date) ON login_data.user_logins TO login_etl_vault_expiry;
-- What decides, and the delete; never the ciphertext, nonce or key version.
GRANT SELECT (field, blind_index, created_at, erased_at), DELETE ON vault.pii_vault TO login_etl_vault_expiry;
-- The audit key's wrapped blob (its KMS role may unwrap that purpose only).
GRANT SELECT ON vault.pii_keys TO login_etl_vault_expiry;
-- The erasure lock, exclusive per batch (as forget takes it).
GRANT SELECT (only_row), UPDATE (only_row) ON pii_locks.erasure TO login_etl_vault_expiry;

-- The audit, as the service appends (crates/vault-service/src/audit.rs): the tables are
-- the audit owner's.
SET ROLE login_etl_audit_owner;
ALTER TABLE pii_audit_log.pii_audit_entries
    DROP CONSTRAINT pii_audit_action_check,
    ADD CONSTRAINT pii_audit_action_check
        CHECK (action IN ('find', 'reveal', 'forget', 'audit', 'init-keys', 'rotate-key', 'reencrypt',
                          'quarantine-list', 'quarantine-show', 'quarantine-replay',
                          'quarantine-import-dlq', 'quarantine-purge', 'audit-verify', 'request',
                          'expire')) NOT VALID;
GRANT INSERT ON pii_audit_log.pii_audit_entries TO login_etl_vault_expiry;
-- An outcome names its request's caller, action, field and request id; the refusal limit
-- counts a caller's refusals: only those columns, never a reason or a target.
GRANT SELECT (id, caller, action, field, request_id, outcome, at) ON pii_audit_log.pii_audit_entries
    TO login_etl_vault_expiry;
GRANT SELECT, UPDATE (seq, chain) ON pii_audit_log.pii_audit_chain_head TO login_etl_vault_expiry;
DO $$
BEGIN
    EXECUTE format('GRANT USAGE ON SEQUENCE %s TO login_etl_vault_expiry',
                   pg_get_serial_sequence('pii_audit_log.pii_audit_entries', 'id'));
END $$;
RESET ROLE;
