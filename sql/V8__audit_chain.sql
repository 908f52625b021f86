-- login-etl schema, version 8: an audit that shows tampering (docs/security.md, "The audit").
--
--   login_etl_audit_owner   NOLOGIN: owns the audit's tables and view; migrations act as it.
--   pii_audit_entries       the audit's entries (the table `pii_audit` was): never changed;
--                           an outcome is an entry of its own (outcome_of = the request's id);
--                           each new entry carries its place in the chain (seq, gapless) and
--                           its link (chain = HMAC under the service's audit key, which the
--                           database never sees, of the previous link and every column).
--   pii_audit_chain_head    one row: the newest link; its row lock orders the chain.
--   pii_audit               a view: one row per request with its outcome, as before.
--
-- The service's login may SELECT and INSERT entries, and move the head; nothing else.
-- Entries of earlier versions keep seq and chain NULL (not covered; `audit verify` says
-- so) and keep their masks in clear: the audit is never rewritten.

-- Roles are cluster-wide: databases of one cluster migrated at the same time race here.
DO $$
BEGIN
    CREATE ROLE login_etl_audit_owner NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END $$;
-- The migrating role acts as the owner (SET ROLE below; later migrations do the same).
DO $$
BEGIN
    GRANT login_etl_audit_owner TO CURRENT_USER;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END $$;
GRANT USAGE, CREATE ON SCHEMA public TO login_etl_audit_owner;

ALTER TABLE pii_audit RENAME TO pii_audit_entries;
ALTER TABLE pii_audit_entries OWNER TO login_etl_audit_owner;

-- Nothing of an entry changes any more, not even an outcome-less one.
CREATE OR REPLACE FUNCTION pii_audit_append_only() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'pii_audit is append-only: % refused', TG_OP USING ERRCODE = '42501';
END $$;

SET ROLE login_etl_audit_owner;

ALTER TABLE pii_audit_entries
    ADD COLUMN seq bigint,
    ADD COLUMN chain bytea,
    ADD COLUMN outcome_of bigint REFERENCES pii_audit_entries (id),
    -- Every new entry is chained (rows of earlier versions are not: NOT VALID).
    ADD CONSTRAINT pii_audit_entries_chained
        CHECK (seq IS NOT NULL AND seq > 0 AND chain IS NOT NULL AND octet_length(chain) = 32
               AND (outcome_of IS NULL OR outcome IS NOT NULL)) NOT VALID,
    -- An outcome entry stands for the reveal or erasure it ends, reason included.
    DROP CONSTRAINT pii_audit_reason_required,
    ADD CONSTRAINT pii_audit_reason_required
        CHECK (action NOT IN ('reveal', 'forget') OR reason IS NOT NULL OR outcome = 'refused'
               OR outcome_of IS NOT NULL) NOT VALID,
    DROP CONSTRAINT pii_audit_action_check,
    ADD CONSTRAINT pii_audit_action_check
        CHECK (action IN ('find', 'reveal', 'forget', 'audit', 'init-keys', 'rotate-key', 'reencrypt',
                          'quarantine-list', 'quarantine-show', 'quarantine-replay',
                          'quarantine-import-dlq', 'quarantine-purge', 'audit-verify')) NOT VALID;
CREATE UNIQUE INDEX pii_audit_entries_seq_idx ON pii_audit_entries (seq);
CREATE UNIQUE INDEX pii_audit_entries_outcome_of_idx ON pii_audit_entries (outcome_of);

CREATE TABLE pii_audit_chain_head (
    one   boolean PRIMARY KEY DEFAULT true CHECK (one),
    seq   bigint  NOT NULL CHECK (seq >= 0),
    chain bytea   CHECK (octet_length(chain) = 32)
);
INSERT INTO pii_audit_chain_head (seq, chain) VALUES (0, NULL);

-- The audit as it read before: a request's row with its outcome (from the outcome's entry
-- for chained requests, from the row itself for older ones).
CREATE VIEW pii_audit AS
SELECT r.id, r.at, r.db_user, r.caller, r.action, r.field,
       coalesce(r.blind_index, o.blind_index) AS blind_index,
       r.reason,
       coalesce(r.outcome, o.outcome) AS outcome,
       r.request_id, r.target,
       coalesce(r.outcome_at, o.at) AS outcome_at,
       coalesce(o.detail, r.detail) AS detail,
       r.seq
  FROM pii_audit_entries r
  LEFT JOIN pii_audit_entries o ON o.outcome_of = r.id
 WHERE r.outcome_of IS NULL;

RESET ROLE;

-- Privileges, from nothing.
REVOKE ALL ON pii_audit_entries, pii_audit_chain_head, pii_audit FROM PUBLIC,
    login_etl_writer, login_etl_analyst, login_etl_vault_reader, login_etl_auditor, login_etl_vault_service;
GRANT SELECT ON pii_audit_entries, pii_audit TO login_etl_auditor;
GRANT SELECT, INSERT ON pii_audit_entries TO login_etl_vault_service;
GRANT SELECT ON pii_audit TO login_etl_vault_service;
GRANT SELECT, UPDATE (seq, chain) ON pii_audit_chain_head TO login_etl_vault_service;
