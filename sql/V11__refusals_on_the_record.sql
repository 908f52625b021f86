-- Every request that reaches the vault service is on the record, refusals included:
--   'request' — the action of a request that did not parse far enough to name an
--               operation (wrong method or path, a body too large, not JSON, an unknown
--               op); its row holds the op it named if any, its size and a keyed hash of
--               its body (detail), never the body.
-- A caller's refused rows are limited per minute (crates/vault-service/src/audit.rs,
-- REFUSAL_ROWS_PER_MINUTE); the refusals beyond are counted here, one row per caller and
-- minute, so a flood of refusals is on the record without filling the audit.
-- The audit's tables belong to its NOLOGIN owner (V8): act as it.
SET ROLE login_etl_audit_owner;

ALTER TABLE pii_audit_entries
    DROP CONSTRAINT pii_audit_action_check,
    ADD CONSTRAINT pii_audit_action_check
        CHECK (action IN ('find', 'reveal', 'forget', 'audit', 'init-keys', 'rotate-key', 'reencrypt',
                          'quarantine-list', 'quarantine-show', 'quarantine-replay',
                          'quarantine-import-dlq', 'quarantine-purge', 'audit-verify', 'request')) NOT VALID;

CREATE TABLE pii_audit_refusals_over_limit (
    caller  text        NOT NULL CHECK (btrim(caller) <> ''),
    minute  timestamptz NOT NULL,
    refused int8        NOT NULL CHECK (refused > 0),
    PRIMARY KEY (caller, minute)
);

REVOKE ALL ON pii_audit_refusals_over_limit FROM PUBLIC;
GRANT SELECT ON pii_audit_refusals_over_limit TO login_etl_auditor, login_etl_vault_service;
GRANT INSERT, UPDATE (refused) ON pii_audit_refusals_over_limit TO login_etl_vault_service;

RESET ROLE;
