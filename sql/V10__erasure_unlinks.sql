-- login-etl schema, version 10: erasure that unlinks (docs/security.md, "Erasure").
--
-- `forget` no longer keeps the erased value's mask anywhere a person can reach it. It
-- draws one random token per erased value and writes it over the value's masks in
-- user_logins and login_quarantine_masks (a token has a mask's shape, so every column and
-- CHECK that holds a mask holds it: rows that shared the value still share the token),
-- deletes the value's vault row, and keeps here the value's marker,
-- HMAC(erasure key, domain || field || mask), beside the token. The ingest looks the
-- markers of its batch up here and writes the token for an erased value (never vaulting
-- it); the service recognises a token here (a reveal answers `erased`). No role a person
-- uses can read this table, and without the erasure key a guess cannot become a marker.
--
-- Tombstones of older versions (pii_vault rows with erased_at and the raw mask) stay
-- until `pii-vault admin reencrypt` converts them (it needs the erasure key, which a
-- migration has not): until then they keep refusing the value as before.
CREATE TABLE IF NOT EXISTS pii_erasures (
    field      text        NOT NULL CHECK (field IN ('ip', 'device_id')),
    marker     varchar(64) NOT NULL CHECK (octet_length(marker) = 64 AND marker !~ '[^0-9a-f]'),
    token      varchar(64) NOT NULL CHECK (octet_length(token) = 64 AND token !~ '[^0-9a-f]'),
    erased_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (field, marker),
    UNIQUE (field, token)
);

REVOKE ALL ON pii_erasures FROM PUBLIC, login_etl_writer, login_etl_analyst, login_etl_vault_reader,
    login_etl_auditor, login_etl_vault_service, login_etl_quarantine_purge;
-- The ingest looks its batch's markers up (it holds the erasure key, never adds one).
GRANT SELECT ON pii_erasures TO login_etl_writer;
GRANT SELECT, INSERT ON pii_erasures TO login_etl_vault_service;

-- The erasure lock (crates/core/src/store/erasure.rs): the one row of pii_locks.erasure,
-- locked FOR SHARE by every transaction that writes masks and FOR UPDATE by forget, each
-- to its end. Not an advisory lock: any login can take one of those and stall the ingest.
-- Locking a row takes SELECT and UPDATE on it, and only the function and the service have
-- them (the CHECK and the key keep UPDATE from changing the row; no role may delete it).
-- In a schema of its own that only they may use: some statements (CREATE RULE) lock a
-- table they can name before checking any right, and a lock queued there would hold every
-- batch back; a name in a schema one may not use is refused before any lock.
CREATE SCHEMA IF NOT EXISTS pii_locks;
REVOKE ALL ON SCHEMA pii_locks FROM PUBLIC;
GRANT USAGE ON SCHEMA pii_locks TO login_etl_writer, login_etl_vault_service;
CREATE TABLE IF NOT EXISTS pii_locks.erasure (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row)
);
INSERT INTO pii_locks.erasure DEFAULT VALUES ON CONFLICT DO NOTHING;
REVOKE ALL ON pii_locks.erasure FROM PUBLIC, login_etl_writer, login_etl_analyst, login_etl_vault_reader,
    login_etl_auditor, login_etl_vault_service, login_etl_quarantine_purge;
GRANT SELECT (only_row), UPDATE (only_row) ON pii_locks.erasure TO login_etl_writer, login_etl_vault_service;

-- forget: the token over the masks, the vault row gone.
GRANT UPDATE (masked_ip, masked_device_id) ON user_logins TO login_etl_vault_service;
GRANT UPDATE (blind_index) ON login_quarantine_masks TO login_etl_vault_service;
GRANT DELETE ON pii_vault TO login_etl_vault_service;
-- Erasure no longer keeps a row, so the service needs neither to insert a vault row nor to
-- date one: without them it cannot make a tombstone or turn one back into a sealed value.
REVOKE INSERT ON pii_vault FROM login_etl_vault_service;
REVOKE UPDATE (erased_at) ON pii_vault FROM login_etl_vault_service;

-- The service's new right on the masks is exactly that: a mask may only become a token of
-- its field's erasures (a policy cannot see the old row, a trigger can). The table's owner
-- and superusers (migrations, a DBA) are not bound by it. forget rewrites every row of a
-- value (an egress ip: 10^5 rows and more) through it under the service's
-- statement_timeout, so the check is the triggers' WHEN clause: per row, a comparison and
-- one index lookup in a plain SQL function, with no trigger call, jsonb or catalog lookup
-- (a plpgsql trigger per row cost ten times as much). Only a change the clause refuses
-- calls the function, which lets the owner and superusers through and refuses the rest.
CREATE OR REPLACE FUNCTION is_erasure_token(field text, mask text) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM public.pii_erasures e
                    WHERE e.field OPERATOR(pg_catalog.=) $1 AND e.token OPERATOR(pg_catalog.=) $2)
$$;
REVOKE ALL ON FUNCTION is_erasure_token(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION is_erasure_token(text, text) TO login_etl_vault_service;
CREATE OR REPLACE FUNCTION erasure_token_guard() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
       OR current_user = (SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = TG_RELID) THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION '%: a mask only ever becomes an erasure token', TG_TABLE_NAME USING ERRCODE = '42501';
END $$;
REVOKE ALL ON FUNCTION erasure_token_guard() FROM PUBLIC;
CREATE TRIGGER user_logins_erasure_token_guard BEFORE UPDATE ON user_logins
    FOR EACH ROW
    WHEN ((NEW.masked_ip IS DISTINCT FROM OLD.masked_ip AND NOT public.is_erasure_token('ip', NEW.masked_ip))
          OR (NEW.masked_device_id IS DISTINCT FROM OLD.masked_device_id
              AND NOT public.is_erasure_token('device_id', NEW.masked_device_id)))
    EXECUTE FUNCTION erasure_token_guard();
-- The field is the row's own (only the owner may change it).
CREATE TRIGGER login_quarantine_masks_erasure_token_guard BEFORE UPDATE ON login_quarantine_masks
    FOR EACH ROW
    WHEN (NEW.blind_index IS DISTINCT FROM OLD.blind_index AND NOT public.is_erasure_token(OLD.field, NEW.blind_index))
    EXECUTE FUNCTION erasure_token_guard();
