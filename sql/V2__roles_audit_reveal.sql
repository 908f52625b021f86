-- Least privilege: three group roles (NOLOGIN; grant them to login users), the audit
-- log, erasure tombstones, and the only two ways to reach the vault's ciphertext:
-- pii_reveal() and pii_forget(), SECURITY DEFINER, each writing its audit row itself.
--
--   login_etl_writer        the function: INSERT user_logins and pii_vault; SELECT and
--                           INSERT pii_keys (read wrapped keys, create the first ones);
--                           no SELECT on pii_vault.
--   login_etl_analyst       SELECT user_logins, nothing else.
--   login_etl_vault_reader  staff: SELECT user_logins, pii_keys (wrapped: useless without
--                           KMS), pii_audit; EXECUTE pii_reveal / pii_forget.

-- Roles are cluster-wide: create each only if absent. Databases of one cluster migrated
-- at the same time race here, hence the exception handler.
DO $$
DECLARE
    role_name text;
BEGIN
    FOREACH role_name IN ARRAY ARRAY['login_etl_writer', 'login_etl_analyst', 'login_etl_vault_reader'] LOOP
        BEGIN
            EXECUTE format('CREATE ROLE %I NOLOGIN', role_name);
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END LOOP;
END $$;

CREATE TABLE IF NOT EXISTS pii_audit (
    id          bigserial   PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    db_user     text        NOT NULL DEFAULT session_user,
    actor       text        NOT NULL CHECK (btrim(actor) <> ''),
    action      text        NOT NULL CHECK (action IN ('reveal', 'forget')),
    field       text        NOT NULL CHECK (field IN ('ip', 'device_id')),
    blind_index varchar(64) NOT NULL,
    reason      text        NOT NULL CHECK (btrim(reason) <> ''),
    outcome     text        NOT NULL CHECK (outcome IN ('revealed', 'erased', 'unknown', 'forgotten'))
);
CREATE INDEX IF NOT EXISTS pii_audit_at_idx ON pii_audit (at);

-- A value that was crypto-shredded: reveals answer "erased", and the writer does not
-- vault it again (erasure is permanent; the masks in user_logins stay).
CREATE TABLE IF NOT EXISTS pii_erasures (
    field       text        NOT NULL CHECK (field IN ('ip', 'device_id')),
    blind_index varchar(64) NOT NULL,
    erased_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (field, blind_index)
);

-- Returns the sealed value (or why there is none) and records the reveal first, in the
-- caller's transaction: no row of pii_vault leaves this function without its audit row.
CREATE OR REPLACE FUNCTION pii_reveal(p_field text, p_blind_index text, p_reason text, p_actor text)
RETURNS TABLE (outcome text, key_version integer, nonce bytea, ciphertext bytea)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    sealed record;
BEGIN
    IF p_reason IS NULL OR btrim(p_reason) = '' THEN
        RAISE EXCEPTION 'a reason is required to reveal PII' USING ERRCODE = '22023';
    END IF;
    SELECT v.key_version, v.nonce, v.ciphertext INTO sealed
      FROM public.pii_vault v WHERE v.field = p_field AND v.blind_index = p_blind_index;
    IF FOUND THEN
        outcome := 'revealed';
    ELSIF EXISTS (SELECT 1 FROM public.pii_erasures e WHERE e.field = p_field AND e.blind_index = p_blind_index) THEN
        outcome := 'erased';
    ELSE
        outcome := 'unknown';
    END IF;
    INSERT INTO public.pii_audit (actor, action, field, blind_index, reason, outcome)
    VALUES (coalesce(nullif(btrim(p_actor), ''), session_user), 'reveal', p_field, p_blind_index, p_reason, outcome);
    IF outcome = 'revealed' THEN
        key_version := sealed.key_version;
        nonce := sealed.nonce;
        ciphertext := sealed.ciphertext;
    END IF;
    RETURN NEXT;
END $$;

-- Crypto-shreds one value: its vault row goes, a tombstone stays, the audit row records it.
CREATE OR REPLACE FUNCTION pii_forget(p_field text, p_blind_index text, p_reason text, p_actor text)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    result text;
BEGIN
    IF p_reason IS NULL OR btrim(p_reason) = '' THEN
        RAISE EXCEPTION 'a reason is required to erase PII' USING ERRCODE = '22023';
    END IF;
    DELETE FROM public.pii_vault v WHERE v.field = p_field AND v.blind_index = p_blind_index;
    IF FOUND THEN
        result := 'forgotten';
    ELSIF EXISTS (SELECT 1 FROM public.pii_erasures e WHERE e.field = p_field AND e.blind_index = p_blind_index) THEN
        result := 'erased';
    ELSE
        result := 'unknown';
    END IF;
    IF result <> 'unknown' THEN
        INSERT INTO public.pii_erasures (field, blind_index) VALUES (p_field, p_blind_index)
        ON CONFLICT DO NOTHING;
    END IF;
    INSERT INTO public.pii_audit (actor, action, field, blind_index, reason, outcome)
    VALUES (coalesce(nullif(btrim(p_actor), ''), session_user), 'forget', p_field, p_blind_index, p_reason, result);
    RETURN result;
END $$;

-- PUBLIC gets EXECUTE on new functions and may hold table grants from elsewhere: undo.
REVOKE ALL ON user_logins, pii_keys, pii_vault, pii_audit, pii_erasures FROM PUBLIC;
REVOKE ALL ON SEQUENCE pii_audit_id_seq FROM PUBLIC;
REVOKE ALL ON FUNCTION pii_reveal(text, text, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION pii_forget(text, text, text, text) FROM PUBLIC;

GRANT USAGE ON SCHEMA public TO login_etl_writer, login_etl_analyst, login_etl_vault_reader;

GRANT INSERT ON user_logins, pii_vault TO login_etl_writer;
GRANT SELECT, INSERT ON pii_keys TO login_etl_writer;
GRANT SELECT ON pii_erasures TO login_etl_writer;

GRANT SELECT ON user_logins TO login_etl_analyst;

GRANT SELECT ON user_logins, pii_keys, pii_audit TO login_etl_vault_reader;
GRANT EXECUTE ON FUNCTION pii_reveal(text, text, text, text) TO login_etl_vault_reader;
GRANT EXECUTE ON FUNCTION pii_forget(text, text, text, text) TO login_etl_vault_reader;
