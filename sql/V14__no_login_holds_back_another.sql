-- login-etl schema, version 14: what the fourth red team of issue 18 found a login of the
-- service itself could still hold back (docs/security.md, "Tables out of reach").
--
-- 1. CREATE RULE takes ACCESS EXCLUSIVE on its table before it checks ownership. V12 put
--    the tables out of the people's reach, but the function's and the service's logins
--    may use their schemas: one holding a lock on user_logins in an open transaction
--    (the writer by `LOCK … IN ROW EXCLUSIVE MODE`, which its INSERT right allows; the
--    service by a read) and queueing CREATE RULE from a second session stalled the other
--    (every find, or every batch) until its lock_timeout, for as long as it liked. An event
--    trigger refuses CREATE RULE to every member of a login_etl role before any lock is
--    taken (ddl_command_start runs before the statement opens its table). This project
--    uses no rules; the tables' owner may still create one.
-- 2. The writer inserts quarantined messages with ON CONFLICT DO NOTHING, which waits for a
--    transaction that holds a row of the same key: the purge's login, calling
--    purge_expired_quarantine in a transaction it keeps open, held back every batch that
--    quarantined an old message again (a redelivery, an import). The insert now leaves out
--    the keys already there (crates/core/src/store/table.rs, `insert_new_sql`), asking
--    `login_data.quarantined_keys` for the keys of its batch: a definer function, so the
--    writer still reads nothing of the quarantine (which of the keys it names exist, a
--    plain INSERT's unique violation told it already), and a read, which waits for no lock.
-- 3. A forget skips an old body another session holds (the purge's login, erasing it); if
--    that transaction rolled back, the body kept its ciphertext until its retention ran
--    out. The purge now also erases every body whose masks hold an erasure token,
--    whatever its age, so a forgotten value's body is gone by the purge's next run.

CREATE OR REPLACE FUNCTION public.login_etl_refuse_rules() RETURNS event_trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles r
                WHERE r.rolname LIKE 'login\_etl\_%' AND r.rolname <> 'login_etl_audit_owner'
                  AND pg_has_role(current_user, r.oid, 'MEMBER')) THEN
        RAISE EXCEPTION 'CREATE RULE is refused to the login_etl roles: its table lock would hold back ingest and the vault service'
            USING ERRCODE = '42501';
    END IF;
END $$;
REVOKE ALL ON FUNCTION public.login_etl_refuse_rules() FROM PUBLIC;
DROP EVENT TRIGGER IF EXISTS login_etl_no_rules;
CREATE EVENT TRIGGER login_etl_no_rules ON ddl_command_start WHEN TAG IN ('CREATE RULE')
    EXECUTE FUNCTION public.login_etl_refuse_rules();

CREATE FUNCTION login_data.quarantined_keys(message_ids text[], attempts integer[])
RETURNS TABLE (message_id text, attempt integer)
LANGUAGE sql STABLE STRICT SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT q.message_id::text, q.attempt
      FROM login_data.login_quarantine q
      JOIN unnest(message_ids, attempts) AS k(message_id, attempt)
        ON q.message_id = k.message_id AND q.attempt = k.attempt
$$;
REVOKE ALL ON FUNCTION login_data.quarantined_keys(text[], integer[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION login_data.quarantined_keys(text[], integer[])
    TO login_etl_writer, login_etl_vault_service;

CREATE OR REPLACE FUNCTION public.purge_expired_quarantine(retention_days integer, max_rows bigint) RETURNS bigint
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
              AND (e.quarantined_at < now() - make_interval(days => greatest(retention_days, 1))
                   OR EXISTS (SELECT 1 FROM login_data.login_quarantine_masks m
                                JOIN vault.pii_erasures t ON t.field = m.field AND t.token = m.blind_index
                               WHERE m.message_id = e.message_id AND m.attempt = e.attempt))
            LIMIT greatest(max_rows, 0) FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS erased = ROW_COUNT;
    RETURN erased;
END $$;
