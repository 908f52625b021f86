-- login-etl schema, version 12: the tables the function and the vault service use, out of
-- every other login's reach (docs/security.md, "Tables out of reach").
--
-- PostgreSQL takes the table lock of a few statements before it checks any right on the
-- table: CREATE RULE (ACCESS EXCLUSIVE), CREATE TRIGGER and a temporary table's foreign
-- key (SHARE ROW EXCLUSIVE), COMMENT ON (SHARE UPDATE EXCLUSIVE). A login that may read a
-- table can hold ACCESS SHARE on it in one open transaction and queue such a statement from
-- a second session; every INSERT then queues behind that request until `lock_timeout`: an
-- analyst stopped ingest (user_logins), an auditor the vault service (pii_audit_entries),
-- for as long as they liked. A name in a schema the login has no USAGE on is refused before
-- any lock (as pii_locks.erasure was in V10). So every table the function or the service
-- uses moves into a schema only they may use (people and the quarantine purge's login may
-- name none of them):
--
--   login_data     (owner: the migrating role) user_logins, login_quarantine,
--                  login_quarantine_masks. USAGE: login_etl_writer, login_etl_vault_service.
--                  (Issue 19 makes login_data.user_logins partitioned; a maintenance role
--                  will get USAGE here, no person.)
--   pii_audit_log  (owner: login_etl_audit_owner, as the tables) pii_audit_entries,
--                  pii_audit_chain_head, pii_audit_refusals_over_limit and the view
--                  pii_audit (the service's one definition of it). USAGE: the service.
--   pii_budget     (owner: the migrating role) pii_budget_keys, pii_budget_spent. USAGE:
--                  the service.
--   vault          (owner: the migrating role) pii_vault, pii_keys, pii_erasures. USAGE:
--                  the function, the service.
-- No right on a table is needed to hold a lock on it: a login that may use its schema
-- holds ACCESS SHARE on it to the end of its transaction with `PREPARE p AS SELECT … FROM
-- it` or `CREATE TEMP VIEW … AS SELECT … FROM it` (neither checks SELECT). So the tables no
-- person could read (the budgets, the vault, the keys, the markers) were as exposed as
-- the ones they could, and move too.
--
-- ALTER TABLE … SET SCHEMA keeps the rows, indexes, constraints, triggers, policies, owned
-- sequences and grants. People keep their names: views in public, read with the views'
-- owners' rights, SELECT only (no INSERT, UPDATE or DELETE for anyone: a view is no way in,
-- and FOR UPDATE or LOCK TABLE beyond ACCESS SHARE through one needs those):
--   public.user_logins                    analysts, vault readers
--   public.pii_audit, public.pii_audit_entries, public.pii_audit_refusals_over_limit
--                                         auditors
-- A statement that locks first, on a view, locks the view only; the function and the
-- service never read a view in public (they name the tables), so a person's queued lock on
-- a view holds back other people's reads of it, nothing else.
--
-- The quarantine purge's login loses its rights on login_quarantine (it could row-lock the
-- bodies it may erase, and name the table): it calls public.purge_expired_quarantine, a
-- SECURITY DEFINER function of the table's owner that erases what the V6 policies let it
-- (bodies older than the retention, never younger than a day, labelled `purge`), at most
-- `max_rows`, skipping rows another session holds.
--
-- Left in public: the views, the functions, and refinery's history (migrations only).

CREATE SCHEMA login_data;
REVOKE ALL ON SCHEMA login_data FROM PUBLIC;
GRANT USAGE ON SCHEMA login_data TO login_etl_writer, login_etl_vault_service;
ALTER TABLE public.user_logins SET SCHEMA login_data;
ALTER TABLE public.login_quarantine SET SCHEMA login_data;
ALTER TABLE public.login_quarantine_masks SET SCHEMA login_data;

CREATE SCHEMA pii_budget;
REVOKE ALL ON SCHEMA pii_budget FROM PUBLIC;
GRANT USAGE ON SCHEMA pii_budget TO login_etl_vault_service;
ALTER TABLE public.pii_budget_keys SET SCHEMA pii_budget;
ALTER TABLE public.pii_budget_spent SET SCHEMA pii_budget;

CREATE SCHEMA vault;
REVOKE ALL ON SCHEMA vault FROM PUBLIC;
GRANT USAGE ON SCHEMA vault TO login_etl_writer, login_etl_vault_service;
ALTER TABLE public.pii_vault SET SCHEMA vault;
ALTER TABLE public.pii_keys SET SCHEMA vault;
ALTER TABLE public.pii_erasures SET SCHEMA vault;
-- A SQL function's body is kept as text: name the table where it now is (V10's shape, a
-- plain SQL function the masks' triggers call in their WHEN clause).
CREATE OR REPLACE FUNCTION public.is_erasure_token(field text, mask text) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM vault.pii_erasures e
                    WHERE e.field OPERATOR(pg_catalog.=) $1 AND e.token OPERATOR(pg_catalog.=) $2)
$$;

-- The audit's schema belongs to the audit's owner, as its tables do (V8).
CREATE SCHEMA pii_audit_log AUTHORIZATION login_etl_audit_owner;
SET ROLE login_etl_audit_owner;
REVOKE ALL ON SCHEMA pii_audit_log FROM PUBLIC;
GRANT USAGE ON SCHEMA pii_audit_log TO login_etl_vault_service;
ALTER TABLE public.pii_audit_entries SET SCHEMA pii_audit_log;
ALTER TABLE public.pii_audit_chain_head SET SCHEMA pii_audit_log;
ALTER TABLE public.pii_audit_refusals_over_limit SET SCHEMA pii_audit_log;
ALTER VIEW public.pii_audit SET SCHEMA pii_audit_log;
-- Only the service reads in there.
REVOKE ALL ON pii_audit_log.pii_audit_entries, pii_audit_log.pii_audit,
    pii_audit_log.pii_audit_refusals_over_limit FROM login_etl_auditor;

-- The auditors' names, as before.
CREATE VIEW public.pii_audit AS SELECT * FROM pii_audit_log.pii_audit;
CREATE VIEW public.pii_audit_entries AS SELECT * FROM pii_audit_log.pii_audit_entries;
CREATE VIEW public.pii_audit_refusals_over_limit AS SELECT * FROM pii_audit_log.pii_audit_refusals_over_limit;
REVOKE ALL ON public.pii_audit, public.pii_audit_entries, public.pii_audit_refusals_over_limit FROM PUBLIC;
GRANT SELECT ON public.pii_audit, public.pii_audit_entries, public.pii_audit_refusals_over_limit
    TO login_etl_auditor;
RESET ROLE;

-- The analysts' and vault readers' name, as before.
CREATE VIEW public.user_logins AS SELECT * FROM login_data.user_logins;
REVOKE ALL ON public.user_logins FROM PUBLIC;
GRANT SELECT ON public.user_logins TO login_etl_analyst, login_etl_vault_reader;
REVOKE ALL ON login_data.user_logins FROM login_etl_analyst, login_etl_vault_reader;

-- The purge: a function instead of rights on the table.
REVOKE ALL ON login_data.login_quarantine, login_data.login_quarantine_masks FROM login_etl_quarantine_purge;
DROP POLICY purge_sees_the_expired ON login_data.login_quarantine;
DROP POLICY purge_erases_the_expired ON login_data.login_quarantine;

-- Erases the bodies quarantined more than `retention_days` (at least 1) ago and not yet
-- erased, at most `max_rows`, skipping rows another session holds; returns how many. The
-- row stays, without its body, marked `purge` (crates/core/src/store/quarantine.rs,
-- purge_expired, is its one caller).
CREATE FUNCTION public.purge_expired_quarantine(retention_days integer, max_rows bigint) RETURNS bigint
LANGUAGE plpgsql STRICT SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    erased bigint;
BEGIN
    UPDATE login_data.login_quarantine q
       SET key_version = NULL, nonce = NULL, ciphertext = NULL,
           erased_at = clock_timestamp(), erased_by = 'purge'
     WHERE (q.message_id, q.attempt) IN (
           SELECT e.message_id, e.attempt FROM login_data.login_quarantine e
            WHERE e.erased_at IS NULL
              AND e.quarantined_at < now() - make_interval(days => greatest(retention_days, 1))
            LIMIT greatest(max_rows, 0) FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS erased = ROW_COUNT;
    RETURN erased;
END $$;
REVOKE ALL ON FUNCTION public.purge_expired_quarantine(integer, bigint) FROM PUBLIC;
-- The scheduled purge, and `pii-vault quarantine purge` through the service (which may
-- erase those columns anyway).
GRANT EXECUTE ON FUNCTION public.purge_expired_quarantine(integer, bigint)
    TO login_etl_quarantine_purge, login_etl_vault_service;
