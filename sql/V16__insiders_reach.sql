-- login-etl schema, version 16: what the red team of issue 19 found the new logins could
-- reach (crates/vault-service/tests/redteam_issue19.rs; docs/security.md).
--
-- 1. The vault expiry's login (V15) deletes vault rows; a plain DELETE also reached a
--    pre-V10 erasure tombstone (`erased_at` set), after which the forgotten value was
--    vaulted again by its next login and revealed. A trigger keeps tombstones from every
--    member of login_etl_vault_expiry (the service's `reencrypt` still removes them).
-- 2. The expiry's login appends to the audit chain, as the service's does (V8): its UPDATE
--    on the chain head could rewind `seq`, and every later append then failed on the
--    unique seq, stopping every audited operation (a person's `forget` above all) until
--    someone repaired the head. The head must now name the newest entry.
-- 3. The partition maintenance's login acts as user_logins' owner (V13): it could create a
--    function and a trigger on user_logins, which then ran with the rights of whoever
--    wrote the table (the vault service's `forget` deleted every vault row through it).
--    An event trigger refuses code (functions, procedures, triggers, aggregates,
--    operators) to the logins of the function, the service and the scheduled jobs, as V14
--    refuses rules; migrations, run by a role of no such group or a superuser, still
--    create theirs. People (analysts, auditors) keep their temporary functions: those run
--    in their own sessions only, and they may create nothing in a shared schema.

CREATE OR REPLACE FUNCTION vault.keep_tombstones_from_the_expiry() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF pg_has_role(session_user, 'login_etl_vault_expiry', 'USAGE')
       AND NOT (SELECT r.rolsuper FROM pg_roles r WHERE r.rolname = session_user) THEN
        RAISE EXCEPTION 'an erasure tombstone stays: the vault expiry may not delete it'
            USING ERRCODE = '42501';
    END IF;
    RETURN OLD;
END $$;
REVOKE ALL ON FUNCTION vault.keep_tombstones_from_the_expiry() FROM PUBLIC;
DROP TRIGGER IF EXISTS pii_vault_tombstones_stay ON vault.pii_vault;
-- WHEN: the trigger fires for tombstones only, so the expiry's ordinary deletes pay nothing.
CREATE TRIGGER pii_vault_tombstones_stay BEFORE DELETE ON vault.pii_vault
    FOR EACH ROW WHEN (OLD.erased_at IS NOT NULL)
    EXECUTE FUNCTION vault.keep_tombstones_from_the_expiry();

-- A definer (the audit's owner) so that it reads the entries whatever the updating login.
CREATE OR REPLACE FUNCTION pii_audit_log.chain_head_names_the_newest_entry() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pii_audit_log.pii_audit_entries e
                    WHERE e.seq = NEW.seq AND e.chain IS NOT DISTINCT FROM NEW.chain)
       OR EXISTS (SELECT 1 FROM pii_audit_log.pii_audit_entries e WHERE e.seq > NEW.seq) THEN
        RAISE EXCEPTION 'the audit chain head must name the newest chained entry'
            USING ERRCODE = '42501';
    END IF;
    RETURN NEW;
END $$;
ALTER FUNCTION pii_audit_log.chain_head_names_the_newest_entry() OWNER TO login_etl_audit_owner;
REVOKE ALL ON FUNCTION pii_audit_log.chain_head_names_the_newest_entry() FROM PUBLIC;
DROP TRIGGER IF EXISTS pii_audit_chain_head_follows ON pii_audit_log.pii_audit_chain_head;
CREATE TRIGGER pii_audit_chain_head_follows BEFORE UPDATE ON pii_audit_log.pii_audit_chain_head
    FOR EACH ROW EXECUTE FUNCTION pii_audit_log.chain_head_names_the_newest_entry();

-- USAGE (the group's rights inherited), not MEMBER: a role given a group only to
-- administer it (PostgreSQL 16's CREATEROLE grant to a creator) is not one of its logins.
CREATE OR REPLACE FUNCTION public.login_etl_refuse_code() RETURNS event_trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT (SELECT r.rolsuper FROM pg_roles r WHERE r.rolname = session_user)
       AND EXISTS (SELECT 1 FROM pg_roles r
                    WHERE r.rolname IN ('login_etl_writer', 'login_etl_vault_service',
                                        'login_etl_partition_maintainer', 'login_etl_vault_expiry',
                                        'login_etl_quarantine_purge')
                      AND pg_has_role(session_user, r.oid, 'USAGE')) THEN
        RAISE EXCEPTION '% is refused to the logins of login_etl: their code would run with the rights of whoever fires it', tg_tag
            USING ERRCODE = '42501';
    END IF;
END $$;
REVOKE ALL ON FUNCTION public.login_etl_refuse_code() FROM PUBLIC;
DROP EVENT TRIGGER IF EXISTS login_etl_no_code;
CREATE EVENT TRIGGER login_etl_no_code ON ddl_command_start
    WHEN TAG IN ('CREATE FUNCTION', 'CREATE PROCEDURE', 'CREATE TRIGGER', 'CREATE AGGREGATE',
                 'CREATE OPERATOR', 'ALTER FUNCTION', 'ALTER PROCEDURE')
    EXECUTE FUNCTION public.login_etl_refuse_code();
