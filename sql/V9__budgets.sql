-- Budgets per person and per role, and the lock that serializes them, in tables only the
-- vault service may touch (docs/security.md, "Budgets").
--
--   pii_budget_keys   one row per budget key (`role:…`, `person:…`); the service locks the
--                     role's row, then the person's (always in that order), for the
--                     transaction that counts and records a request. Locking a row
--                     (SELECT … FOR UPDATE, INSERT … ON CONFLICT DO UPDATE) needs UPDATE
--                     on the table, which no other role has: no other login can hold a
--                     staff member's budget (an advisory lock, by contrast, anyone could).
--   pii_budget_spent  what each recorded audit row spent: reveal units (finds, reveals,
--                     forgets of a value, quarantine shows) or erasure units (users erased
--                     by forget --user-id), per person and per role. A request refused after
--                     it was recorded gets its units back (its row is deleted).

CREATE TABLE pii_budget_keys (
    key text PRIMARY KEY CHECK (char_length(key) BETWEEN 1 AND 2100)
);

CREATE TABLE pii_budget_spent (
    audit_id bigint      PRIMARY KEY,
    kind     text        NOT NULL CHECK (kind IN ('reveal', 'erasure')),
    person   text        NOT NULL,
    role     text        NOT NULL,
    units    integer     NOT NULL CHECK (units > 0),
    at       timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX pii_budget_spent_person_idx ON pii_budget_spent (person, kind, at);
CREATE INDEX pii_budget_spent_role_idx ON pii_budget_spent (role, kind, at);

REVOKE ALL ON pii_budget_keys, pii_budget_spent FROM PUBLIC,
    login_etl_writer, login_etl_analyst, login_etl_vault_reader, login_etl_auditor,
    login_etl_quarantine_purge;
GRANT SELECT, INSERT, UPDATE ON pii_budget_keys TO login_etl_vault_service;
GRANT SELECT, INSERT, DELETE ON pii_budget_spent TO login_etl_vault_service;
