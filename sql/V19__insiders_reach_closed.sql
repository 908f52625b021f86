-- login-etl schema, version 19: the four breaks the red team found in V16's guards
-- (crates/vault-service/tests/redteam_issue19.rs, tests/integration/redteam_v17.rs;
-- docs/security.md: "The partition maintenance's login is `user_logins`'s owner", and
-- "Expiry"). Numbered 19: a version 18 is made on another branch; this one depends on
-- nothing of it. Below: 1., then 2. and 4. (one event trigger function), then 3.
--
-- Who acts as a login of login_etl. V16 asked whether the session's login inherits a
-- group's rights (pg_has_role(session_user, …, 'USAGE')). A login made NOINHERIT (an
-- operator's choice) has them only after `SET ROLE <group>` (or, the maintenance's,
-- `SET ROLE login_etl_partition_owner`), and then the session's login still inherits
-- nothing: V16's guards let it through. They now also judge the current role once the
-- session has switched to another (current_user <> session_user): the session acts as a
-- login when that role is, or is a member of (MEMBER: any membership, whatever it
-- confers), one of the groups (or, for code, login_etl_partition_owner). The test is
-- written out in the two functions that make it, not a function of its own: every role
-- running DDL would need EXECUTE on that, and people may execute no function of the
-- schema (crates/vault-service/tests/vault_service.rs).
-- The migrating role still passes: a superuser is never judged (as in V16), and without a
-- SET ROLE it is judged as in V16, by the groups' rights it inherits, which it has none of
-- (PostgreSQL 16 makes a role with CREATEROLE an ADMIN-only member of the roles it
-- creates, which MEMBER counts, so MEMBER is asked of a switched-to role only; the
-- migrating role switches to login_etl_audit_owner, a member of no group). A NOINHERIT
-- login that has not switched holds no right of a group: it may create only what any role
-- may (temporary functions, as people do).
--
-- 1. The tombstone guard (V16's `vault.keep_tombstones_from_the_expiry`) judges so for
--    login_etl_vault_expiry: a NOINHERIT login of the expiry that switched to the group
--    deletes no tombstone either.
-- 2. The event trigger `login_etl_no_code` judges so for the logins' groups (and the
--    partition owner, once switched to): the maintenance's login switched to the table
--    owner's role (or to its group) creates no function or trigger. The migrating role is a
--    member of the partition owner (V13) and inherits it; it is not judged by that
--    membership unless it switched to that role (a migration making code on user_logins
--    does so as itself, as V13's and V16's did).
-- 3. An audit entry planted ahead of the chain head (the expiry's or the service's login may
--    INSERT entries, to append) made V16's head trigger refuse every later append: the
--    entries are append-only, so only the audit's owner could remove it. Now an entry must
--    take the head's next number (`seq` = head + 1, a BEFORE INSERT trigger) and the head
--    must have reached it when the transaction commits (a deferred constraint trigger): an
--    entry is only ever the next link, moved to by the head in its own transaction, which
--    V16 keeps naming the newest entry. One SECURITY DEFINER function of the audit's
--    owner (it reads the head whatever the inserting login). A superuser's session or a
--    role with the owner's rights (the migrating role; they may disable these triggers
--    anyway) is not held to it, so the owner's repairs and the tests that play the owner
--    (copies, unchained entries) go on; an entry without a number is left to the CHECK
--    `pii_audit_entries_chained`, which refuses it to the logins.
-- 4. The partition maintenance's login owns user_logins and its partitions: it could attach
--    expressions that run with the rights of whoever reads or writes the table (the vault
--    service's find reads it, its forget UPDATEs it, the function INSERTs): a CHECK
--    constraint, a column default (or generated column), a row security policy, a domain's
--    CHECK or default. For every login of the groups (judged as in 2.):
--      - CREATE POLICY, ALTER POLICY, CREATE DOMAIN and ALTER DOMAIN are refused at
--        ddl_command_start with the code (`login_etl_no_code`);
--      - after every CREATE TABLE and ALTER TABLE (ddl_command_end, event trigger
--        `login_etl_no_borrowed_expressions`, the same function), user_logins' partition
--        tree must hold no row security (enabled or forced) and no CHECK constraint or
--        default calling anything but a built-in: each function a CHECK's or a default's
--        expression calls must be a built-in IMMUTABLE one (or, in a default, one of the
--        clock's: now(), clock_timestamp(), statement_timestamp(),
--        transaction_timestamp()), and neither may depend on a function, operator or type
--        made in the database (built-in operators, comparisons and arithmetic, pass; a
--        generated column may call immutable functions only anyway). Built-ins that
--        are only STABLE or VOLATILE (query_to_xml reads any table with the caller's
--        rights, set_config, nextval, pg_sleep) are refused, which a "built-in of
--        pg_catalog" rule would have let through.
--    The check is of the tree's state after the command, not of the command: a table made
--    with such a constraint outside the tree is refused when ATTACHed. What the maintenance
--    does passes: `CREATE TABLE … (LIKE user_logins INCLUDING DEFAULTS …)` copies the
--    parent's now(), ATTACH PARTITION adds no constraint, DETACH PARTITION … CONCURRENTLY
--    adds to the partition a CHECK of its bounds made of the date's built-in operators
--    (and the partition leaves the tree), FINALIZE removes one. A simpler "no CHECK from
--    these logins at all" would refuse the maintenance whenever a partition pending detach
--    (with that CHECK) is still in the tree. The tree's state is checked rather than a
--    snapshot compared before and after the command: an expression run during the command
--    (a CHECK validating, a rewrite) could rewrite any snapshot the session may write.
--    A migration that gives user_logins row security, or a default or CHECK calling other
--    functions, must widen this check in the same migration (the maintenance's tests fail
--    otherwise).

-- 1.
CREATE OR REPLACE FUNCTION vault.keep_tombstones_from_the_expiry() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT (SELECT r.rolsuper FROM pg_roles r WHERE r.rolname = session_user)
       AND EXISTS (SELECT 1 FROM pg_roles r
                    WHERE r.rolname = 'login_etl_vault_expiry'
                      AND (pg_has_role(session_user, r.oid, 'USAGE')
                           OR (current_user <> session_user
                               AND pg_has_role(current_user, r.oid, 'MEMBER')))) THEN
        RAISE EXCEPTION 'an erasure tombstone stays: the vault expiry may not delete it'
            USING ERRCODE = '42501';
    END IF;
    RETURN OLD;
END $$;

-- 2. and 4.: at ddl_command_start, the statements refused; at ddl_command_end, what
-- user_logins' partition tree may hold.
CREATE OR REPLACE FUNCTION public.login_etl_refuse_code() RETURNS event_trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    parent oid;
    found text;
BEGIN
    IF (SELECT r.rolsuper FROM pg_roles r WHERE r.rolname = session_user)
       OR NOT EXISTS (
           SELECT 1 FROM pg_roles r
            WHERE (r.rolname IN ('login_etl_writer', 'login_etl_vault_service',
                                 'login_etl_partition_maintainer', 'login_etl_vault_expiry',
                                 'login_etl_quarantine_purge')
                   AND pg_has_role(session_user, r.oid, 'USAGE'))
               OR (current_user <> session_user
                   AND r.rolname IN ('login_etl_writer', 'login_etl_vault_service',
                                     'login_etl_partition_maintainer', 'login_etl_vault_expiry',
                                     'login_etl_quarantine_purge', 'login_etl_partition_owner')
                   AND pg_has_role(current_user, r.oid, 'MEMBER'))) THEN
        RETURN;
    END IF;
    IF tg_event = 'ddl_command_start' THEN
        RAISE EXCEPTION '% is refused to the logins of login_etl: their code would run with the rights of whoever fires it', tg_tag
            USING ERRCODE = '42501';
    END IF;
    -- By the catalog, not by a name cast to regclass: the role running the DDL may have
    -- no USAGE on login_data (the purge's login).
    SELECT c.oid INTO parent FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = 'login_data' AND c.relname = 'user_logins';
    IF parent IS NULL THEN
        RETURN;
    END IF;
    WITH tree AS (SELECT t.relid::oid AS relid FROM pg_partition_tree(parent::regclass) t),
    exprs AS (
        SELECT 'a CHECK constraint' AS what, c.oid AS obj, 'pg_constraint'::regclass AS class,
               c.conbin::text AS expr, false AS is_default
          FROM pg_constraint c JOIN tree ON tree.relid = c.conrelid
         WHERE c.contype = 'c'
        UNION ALL
        SELECT 'a default', d.oid, 'pg_attrdef'::regclass, d.adbin::text, true
          FROM pg_attrdef d JOIN tree ON tree.relid = d.adrelid
    ),
    calls AS (
        SELECT e.what, e.is_default, m[1]::oid AS fn
          FROM exprs e, regexp_matches(e.expr, ':funcid (\d+)', 'g') AS m
    )
    SELECT what INTO found FROM (
        SELECT 'row security' AS what
          FROM pg_class c JOIN tree ON tree.relid = c.oid
         WHERE c.relrowsecurity OR c.relforcerowsecurity
        UNION ALL
        SELECT calls.what FROM calls LEFT JOIN pg_proc p ON p.oid = calls.fn
         WHERE p.oid IS NULL OR p.oid >= 16384
            OR NOT (p.provolatile = 'i'
                    OR (calls.is_default AND p.pronamespace = 'pg_catalog'::regnamespace
                        AND p.proname IN ('now', 'clock_timestamp', 'statement_timestamp',
                                          'transaction_timestamp')))
        UNION ALL
        SELECT e.what FROM exprs e JOIN pg_depend d ON d.classid = e.class AND d.objid = e.obj
         WHERE d.refclassid IN ('pg_proc'::regclass, 'pg_operator'::regclass, 'pg_type'::regclass)
           AND d.refobjid >= 16384
    ) refused LIMIT 1;
    IF found IS NOT NULL THEN
        RAISE EXCEPTION '% on user_logins is refused to the logins of login_etl: it would run with the rights of whoever reads or writes the table (%)', found, tg_tag
            USING ERRCODE = '42501';
    END IF;
END $$;
DROP EVENT TRIGGER IF EXISTS login_etl_no_code;
CREATE EVENT TRIGGER login_etl_no_code ON ddl_command_start
    WHEN TAG IN ('CREATE FUNCTION', 'CREATE PROCEDURE', 'CREATE TRIGGER', 'CREATE AGGREGATE',
                 'CREATE OPERATOR', 'ALTER FUNCTION', 'ALTER PROCEDURE',
                 'CREATE POLICY', 'ALTER POLICY', 'CREATE DOMAIN', 'ALTER DOMAIN')
    EXECUTE FUNCTION public.login_etl_refuse_code();
DROP EVENT TRIGGER IF EXISTS login_etl_no_borrowed_expressions;
CREATE EVENT TRIGGER login_etl_no_borrowed_expressions ON ddl_command_end
    WHEN TAG IN ('CREATE TABLE', 'ALTER TABLE', 'CREATE FOREIGN TABLE', 'ALTER FOREIGN TABLE')
    EXECUTE FUNCTION public.login_etl_refuse_code();

-- 3.
CREATE OR REPLACE FUNCTION pii_audit_log.entry_is_the_heads_next() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    head bigint;
BEGIN
    IF NEW.seq IS NULL
       OR (SELECT r.rolsuper FROM pg_roles r WHERE r.rolname = session_user)
       OR pg_has_role(session_user, 'login_etl_audit_owner', 'USAGE') THEN
        RETURN NEW;
    END IF;
    SELECT h.seq INTO head FROM pii_audit_log.pii_audit_chain_head h;
    IF tg_when = 'BEFORE' AND NEW.seq IS DISTINCT FROM head + 1 THEN
        RAISE EXCEPTION 'an audit entry takes the chain head''s next number'
            USING ERRCODE = '42501';
    ELSIF tg_when = 'AFTER' AND (head IS NULL OR head < NEW.seq) THEN
        RAISE EXCEPTION 'an audit entry commits with the chain head moved to it'
            USING ERRCODE = '42501';
    END IF;
    RETURN NEW;
END $$;
ALTER FUNCTION pii_audit_log.entry_is_the_heads_next() OWNER TO login_etl_audit_owner;
REVOKE ALL ON FUNCTION pii_audit_log.entry_is_the_heads_next() FROM PUBLIC;
SET ROLE login_etl_audit_owner;
DROP TRIGGER IF EXISTS pii_audit_entry_is_next ON pii_audit_log.pii_audit_entries;
CREATE TRIGGER pii_audit_entry_is_next BEFORE INSERT ON pii_audit_log.pii_audit_entries
    FOR EACH ROW EXECUTE FUNCTION pii_audit_log.entry_is_the_heads_next();
DROP TRIGGER IF EXISTS pii_audit_entry_head_reached ON pii_audit_log.pii_audit_entries;
CREATE CONSTRAINT TRIGGER pii_audit_entry_head_reached AFTER INSERT ON pii_audit_log.pii_audit_entries
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION pii_audit_log.entry_is_the_heads_next();
RESET ROLE;
