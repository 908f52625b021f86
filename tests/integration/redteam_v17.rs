//! Red team of V17 (the masks indexed by hash; `migrate`'s preparation of each partition's
//! hash indexes) and V16 (the tombstone and chain-head triggers, the event trigger
//! `login_etl_no_code`), attacked as the logins that can reach them: the partition
//! maintenance's (which owns `user_logins` and its partitions), the writer, the vault
//! service, the expiry, the purge, people. Each test fails if its attack succeeds.

use testkit::{TestDb, assert_refused_for_rights, connect};
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

use login_etl_core::store::partitions::{self, Cancel, Interval, PartitionMap, Window};

use crate::partitions::d;
use crate::upgrades::filled_at;

const MASKS: [&str; 2] = ["masked_ip", "masked_device_id"];

async fn maintainer_login(db: &TestDb) -> tokio_postgres::Client {
    connect(&db.login_in("login_etl_partition_maintainer").await).await
}

/// The valid indexes of `partition` that V17's `CREATE INDEX … USING hash (column)` on the
/// parent would attach (same definition: hash, that one column, nothing else), by oid.
async fn valid_hash_matches(db: &TestDb, partition: &str, column: &str) -> Vec<u32> {
    let rows = db
        .connect()
        .await
        .query(
            "SELECT i.indexrelid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
              WHERE i.indrelid = ('login_data.' || quote_ident($1))::regclass AND i.indisvalid
                AND pg_get_indexdef(i.indexrelid)
                    = format('CREATE INDEX %I ON login_data.%I USING hash (%I)', c.relname, $1::text, $2::text)",
            &[&partition, &column],
        )
        .await
        .expect("matching indexes");
    rows.iter().map(|row| row.get(0)).collect()
}

/// How many indexes of `partition` on a mask are invalid.
async fn invalid_indexes(db: &TestDb, partition: &str) -> i64 {
    db.connect()
        .await
        .query_one(
            "SELECT count(*) FROM pg_index WHERE indrelid = ('login_data.' || quote_ident($1))::regclass
                AND NOT indisvalid",
            &[&partition],
        )
        .await
        .expect("invalid indexes")
        .get(0)
}

/// The index of `partition` attached to the parent's hash index on `column`, and whether
/// it is valid; `None` when none is.
async fn attached_hash_index(db: &TestDb, partition: &str, column: &str) -> Option<(u32, bool)> {
    db.connect()
        .await
        .query_opt(
            "SELECT i.indexrelid, i.indisvalid FROM pg_inherits h JOIN pg_index i ON i.indexrelid = h.inhrelid
              WHERE h.inhparent = format('login_data.user_logins_%s_hash', $2::text)::regclass
                AND i.indrelid = ('login_data.' || quote_ident($1))::regclass
                AND pg_get_indexdef(i.indexrelid) LIKE format('%% USING hash (%s)', $2::text)",
            &[&partition, &column],
        )
        .await
        .expect("attached index")
        .map(|row| (row.get(0), row.get(1)))
}

/// The parent's indexes are all valid (an invalid partition's index attached to one would
/// leave it invalid, and that partition's lookups by mask scanning).
async fn assert_parent_indexes_valid(db: &TestDb) {
    let invalid = db
        .texts(
            "SELECT c.relname::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
              WHERE i.indrelid = 'login_data.user_logins'::regclass AND NOT i.indisvalid",
            &[],
        )
        .await;
    assert!(invalid.is_empty(), "the parent's invalid indexes: {invalid:?}");
}

/// The partition holding the most rows.
async fn fullest_partition(db: &TestDb) -> String {
    db.texts(
        "SELECT c.relname::text FROM login_data.user_logins u JOIN pg_class c ON c.oid = u.tableoid
          GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1",
        &[],
    )
    .await
    .remove(0)
}

/// The maintenance's login owns the partitions, so before the upgrade to V17 it can make
/// indexes named as the preparation names its own (`<partition>_masked_ip_hash`), but
/// something else: a B-tree, a partial hash, another column's, an expression, another
/// operator class, a table; and leave an invalid hash index under a name of its own (an
/// interrupted `CREATE INDEX CONCURRENTLY`, here marked invalid by hand). The preparation
/// must still leave every partition a valid index V17 attaches (so V17 builds nothing
/// under its lock: on the fullest partition that would hold ingest back for the build) and
/// no invalid one V17 would attach (the parent's index then invalid, the partition's
/// lookups by mask scanning it).
#[tokio::test]
async fn indexes_squatting_the_preparations_names_leave_v17_nothing_to_build_and_nothing_invalid_to_attach() {
    let (db, _app, _) = filled_at(16, 300).await;
    let fullest = fullest_partition(&db).await;
    let others: Vec<String> = db.partition_names().await.into_iter().filter(|p| p != &fullest).collect();
    let [p1, p2, p3] = [&others[0], &others[1], &others[2]];
    let maintainer = maintainer_login(&db).await;
    for sql in [
        format!("CREATE INDEX {fullest}_masked_ip_hash ON login_data.{fullest} (masked_ip)"),
        format!(
            "CREATE INDEX {fullest}_masked_device_id_hash ON login_data.{fullest} USING hash (masked_device_id)
              WHERE masked_device_id IS NULL"
        ),
        format!("CREATE INDEX {p1}_masked_ip_hash ON login_data.{p1} USING hash (masked_device_id)"),
        format!("CREATE INDEX {p1}_masked_device_id_hash ON login_data.{p1} USING hash (lower(masked_device_id))"),
        format!("CREATE TABLE login_data.{p2}_masked_ip_hash (x integer)"),
        format!(
            "CREATE INDEX {p2}_masked_device_id_hash ON login_data.{p2} USING hash (masked_device_id text_pattern_ops)"
        ),
        format!("CREATE INDEX {p3}_leftover ON login_data.{p3} USING hash (masked_ip)"),
        format!("CREATE INDEX {fullest}_leftover ON login_data.{fullest} USING hash (masked_device_id)"),
    ] {
        maintainer.batch_execute(&sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    db.connect()
        .await
        .batch_execute(&format!(
            "UPDATE pg_index SET indisvalid = false
              WHERE indexrelid IN ('login_data.{p3}_leftover'::regclass, 'login_data.{fullest}_leftover'::regclass)"
        ))
        .await
        .expect("interrupted builds");

    let client = db.connect().await;
    login_etl_migrations::prepare_mask_hash_indexes(&client).await.expect("prepared");
    login_etl_migrations::prepare_mask_hash_indexes(&client).await.expect("prepared again");

    let partitions = db.partition_names().await;
    let mut prepared = Vec::new();
    for partition in &partitions {
        for column in MASKS {
            let found = valid_hash_matches(&db, partition, column).await;
            assert!(!found.is_empty(), "{partition}.{column}: no valid hash index for V17 to attach");
            prepared.extend(found);
        }
        assert_eq!(
            invalid_indexes(&db, partition).await,
            0,
            "{partition}: an invalid index V17 would attach"
        );
    }
    let applied = db.migrate().await;

    assert_eq!(applied.first().map(String::as_str), Some("V17__mask_hash_indexes"), "{applied:?}");
    for partition in &partitions {
        for column in MASKS {
            let (index, valid) = attached_hash_index(&db, partition, column).await.expect("attached");
            assert!(valid, "{partition}.{column}: attached invalid");
            assert!(prepared.contains(&index), "{partition}.{column}: V17 built its index itself");
        }
    }
    assert_parent_indexes_valid(&db).await;
    assert_eq!(db.count("SELECT count(*) FROM login_data.user_logins").await, 300);
    // The months the maintenance makes afterwards carry the parent's indexes.
    let mut maintenance = maintainer_login(&db).await;
    partitions::ensure(
        &mut maintenance,
        Window { from: d("2042-01-01"), to: d("2042-03-01") },
        Interval::Month,
    )
    .await
    .expect("maintenance");
    for partition in ["user_logins_2042_01", "user_logins_2042_02"] {
        for column in MASKS {
            let attached = attached_hash_index(&db, partition, column).await;
            assert!(matches!(attached, Some((_, true))), "{partition}.{column}: {attached:?}");
        }
    }
    assert_parent_indexes_valid(&db).await;
}

/// The maintenance's login makes and attaches partitions of its own whose names make the
/// preparation's index names too long (PostgreSQL truncates names to 63 bytes: from 55
/// bytes on, a partition's two names truncate to the same one) or need quoting. The
/// preparation, run twice (as `migrate` runs it again after a failed V17), and V17 must
/// give each a valid attached hash index per mask, rows kept.
#[tokio::test]
async fn partition_names_too_long_or_needing_quotes_still_get_their_hash_indexes() {
    let (db, _app, _) = filled_at(16, 50).await;
    let names = [
        format!("user_logins_2045_01_{}", "l".repeat(40)),
        format!("user_logins_2045_02_{}", "m".repeat(25)),
        "User Logins 2045-03".to_owned(),
    ];
    let maintainer = maintainer_login(&db).await;
    for (i, name) in names.iter().enumerate() {
        let table = format!("login_data.\"{name}\"");
        maintainer
            .batch_execute(&format!(
                "CREATE TABLE {table} (LIKE login_data.user_logins INCLUDING DEFAULTS INCLUDING STORAGE);
                 ALTER TABLE login_data.user_logins ATTACH PARTITION {table}
                     FOR VALUES FROM ('2045-0{}-01') TO ('2045-0{}-01')",
                i + 1,
                i + 2
            ))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    db.connect()
        .await
        .batch_execute(
            "INSERT INTO login_data.user_logins (sqs_message_id, create_date, masked_ip, masked_device_id)
             SELECT 'rt-' || m, make_date(2045, m, 2), repeat('a', 64), repeat('b', 64) FROM generate_series(1, 3) m",
        )
        .await
        .expect("a row in each");

    let client = db.connect().await;
    login_etl_migrations::prepare_mask_hash_indexes(&client).await.expect("prepared");
    login_etl_migrations::prepare_mask_hash_indexes(&client).await.expect("prepared again");
    let applied = db.migrate().await;

    assert_eq!(applied.first().map(String::as_str), Some("V17__mask_hash_indexes"), "{applied:?}");
    for name in &names {
        for column in MASKS {
            assert_eq!(valid_hash_matches(&db, name, column).await.len(), 1, "{name}.{column}: built once");
            let attached = attached_hash_index(&db, name, column).await;
            assert!(matches!(attached, Some((_, true))), "{name}.{column}: {attached:?}");
        }
    }
    assert_parent_indexes_valid(&db).await;
    assert_eq!(db.count("SELECT count(*) FROM login_data.user_logins").await, 53);
}

/// A retention run interrupted before V17 leaves a month pending detach: the upgrade must
/// finish, the pending month keep its rows until the next retention run finishes and drops
/// it (counted), and every partition left carry the hash indexes.
#[tokio::test]
async fn a_month_pending_detach_during_the_upgrade_keeps_its_rows_until_the_retention_drops_it() {
    let (db, _app, _) = filled_at(16, 120).await;
    let fullest = fullest_partition(&db).await;
    db.leave_pending_detach(&fullest).await;
    let map = PartitionMap::load(&db.connect().await).await.expect("map");
    assert!(map.detaching().iter().any(|(name, _)| name == &fullest), "{:?}", map.detaching());

    // `migrate` alone: the maintenance's `ensure` would try to make the pending month again
    // (the tests' window reaches back to 2025; the deployed one does not reach a month the
    // retention detaches).
    let applied = login_etl_migrations::migrate(&mut db.connect().await).await.expect("migrated");

    assert_eq!(applied.first().map(String::as_str), Some("V17__mask_hash_indexes"), "{applied:?}");
    assert_eq!(db.count(&format!("SELECT count(*) FROM login_data.{fullest}")).await, 120, "rows kept");
    let range = map.detaching().iter().find(|(name, _)| name == &fullest).map(|(_, r)| *r).expect("range");
    let cutoff = range.to.expect("bounded month");
    let mut maintainer = maintainer_login(&db).await;
    let run = partitions::expire(&mut maintainer, &Cancel::new(&db.config, NoTls), Some(cutoff))
        .await
        .expect("the next retention run");
    assert!(run.dropped.iter().any(|x| x.name == fullest && x.rows == 120), "{run:?}");
    for partition in db.partition_names().await {
        for column in MASKS {
            let attached = attached_hash_index(&db, &partition, column).await;
            assert!(matches!(attached, Some((_, true))), "{partition}.{column}: {attached:?}");
        }
    }
    assert_parent_indexes_valid(&db).await;
}

/// No login but the maintenance's may make, rebuild, drop, rename or change an index of
/// `user_logins` or its partitions; and none of the function, the service, the scheduled
/// jobs or people (the maintenance's either) may switch off V16's triggers or event
/// trigger, or every trigger at once by `session_replication_role`.
#[tokio::test]
async fn no_login_but_the_maintenance_touches_the_mask_indexes_and_none_switches_v16s_guards_off() {
    let db = TestDb::new().await;
    let partition = db.partition_names().await.remove(0);
    let child: String = db
        .texts(
            "SELECT c.relname::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
              WHERE i.indrelid = ('login_data.' || $1)::regclass AND pg_get_indexdef(i.indexrelid) LIKE '%hash (masked_ip)'",
            &[&partition],
        )
        .await
        .remove(0);
    let index_ddl = [
        "CREATE INDEX rt_ip ON login_data.user_logins USING hash (masked_ip)".to_owned(),
        format!("CREATE INDEX rt_ip ON login_data.{partition} (masked_ip)"),
        format!("CREATE INDEX CONCURRENTLY rt_ip ON login_data.{partition} (masked_ip)"),
        "REINDEX INDEX login_data.user_logins_masked_ip_hash".to_owned(),
        format!("REINDEX INDEX CONCURRENTLY login_data.{child}"),
        format!("REINDEX TABLE login_data.{partition}"),
        "DROP INDEX login_data.user_logins_masked_ip_hash".to_owned(),
        format!("DROP INDEX CONCURRENTLY login_data.{child}"),
        "ALTER INDEX login_data.user_logins_masked_ip_hash RENAME TO rt_ip".to_owned(),
        format!("ALTER INDEX login_data.{child} SET (fillfactor = 10)"),
        "ALTER TABLE login_data.user_logins DISABLE TRIGGER ALL".to_owned(),
    ];
    let guards_off = [
        "ALTER TABLE vault.pii_vault DISABLE TRIGGER pii_vault_tombstones_stay",
        "ALTER TABLE pii_audit_log.pii_audit_chain_head DISABLE TRIGGER pii_audit_chain_head_follows",
        "ALTER EVENT TRIGGER login_etl_no_code DISABLE",
        "DROP EVENT TRIGGER login_etl_no_code",
        "SET session_replication_role = replica",
        "SET SESSION AUTHORIZATION postgres",
    ];
    for group in [
        "login_etl_writer",
        "login_etl_vault_service",
        "login_etl_vault_expiry",
        "login_etl_quarantine_purge",
        "login_etl_analyst",
        "login_etl_vault_reader",
        "login_etl_auditor",
    ] {
        let client = connect(&db.login_in(group).await).await;
        let ddl: Vec<&str> = index_ddl.iter().map(String::as_str).collect();
        assert_refused_for_rights(&client, group, &ddl).await;
        assert_refused_for_rights(&client, group, &guards_off).await;
    }
    let maintainer = maintainer_login(&db).await;
    assert_refused_for_rights(&maintainer, "login_etl_partition_maintainer", &guards_off).await;
}

/// The maintenance's login may not add code that others run (V16's `login_etl_no_code`),
/// but as `user_logins`' owner it may attach expressions to the table: a CHECK constraint,
/// a row security policy. Each is evaluated with the rights of whoever
/// reads or writes the table: the vault service's `find` (a read) and `forget` (an UPDATE
/// of the masks) then call what only the service may call (here `purge_expired_quarantine`,
/// which erased quarantined bodies older than a day). The test fails while any of them
/// runs the maintainer's call with the service's rights.
#[tokio::test]
async fn the_maintainers_expressions_on_user_logins_run_nothing_with_the_services_rights() {
    let db = TestDb::new().await;
    let admin = db.connect().await;
    admin
        .batch_execute(&format!(
            "INSERT INTO login_data.user_logins (sqs_message_id, create_date, masked_ip, masked_device_id)
             VALUES ('rt-row', '{}', repeat('a', 64), repeat('b', 64))",
            chrono::Utc::now().date_naive()
        ))
        .await
        .expect("a login");
    let maintainer = maintainer_login(&db).await;
    let service = connect(&db.login_in("login_etl_vault_service").await).await;
    let call = "public.purge_expired_quarantine(1, 1000000) >= 0";
    let vectors = [
        (
            "check constraint",
            format!("ALTER TABLE login_data.user_logins ADD CONSTRAINT rt_check CHECK ({call}) NOT VALID"),
            "ALTER TABLE login_data.user_logins DROP CONSTRAINT IF EXISTS rt_check",
        ),
        (
            "row security policy",
            format!(
                "ALTER TABLE login_data.user_logins ENABLE ROW LEVEL SECURITY;
                 CREATE POLICY rt_policy ON login_data.user_logins USING ({call}) WITH CHECK (true)"
            ),
            "DROP POLICY IF EXISTS rt_policy ON login_data.user_logins;
             ALTER TABLE login_data.user_logins DISABLE ROW LEVEL SECURITY",
        ),
    ];
    let mut ran = Vec::new();
    for (i, (vector, plant, remove)) in vectors.iter().enumerate() {
        admin
            .batch_execute(&format!(
                "INSERT INTO login_data.login_quarantine
                     (message_id, attempt, source, reason_code, key_version, nonce, ciphertext, quarantined_at)
                 VALUES ('rt-q{i}', 0, 'queue', 'not_json', 1, '\\x000000000000000000000000', '\\x00',
                         now() - interval '10 days')"
            ))
            .await
            .expect("a quarantined body");
        match maintainer.batch_execute(plant).await {
            Err(error) if error.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) => continue,
            other => other.unwrap_or_else(|e| panic!("{vector}: {e}")),
        }
        // What `find` and `forget` send, as the service's login (the mask unchanged: the
        // erasure guard stays out of it).
        let _ = service
            .batch_execute(
                "SELECT count(*) FROM login_data.user_logins WHERE masked_ip = repeat('a', 64);
                 UPDATE login_data.user_logins SET masked_ip = masked_ip WHERE sqs_message_id = 'rt-row'",
            )
            .await;
        admin.batch_execute(remove).await.expect("removed");
        let erased = db
            .count(&format!("SELECT count(*) FROM login_data.login_quarantine WHERE message_id = 'rt-q{i}' AND erased_at IS NOT NULL"))
            .await;
        if erased > 0 {
            ran.push(*vector);
        }
    }
    assert!(ran.is_empty(), "ran with the service's rights through: {ran:?}");
}

/// More ways the maintenance's login (inheriting its group, or NOINHERIT after `SET ROLE
/// login_etl_partition_owner`) could attach an expression others evaluate on
/// `user_logins` (V19): a default (with a built-in that reads any table with the caller's
/// rights), a new column with such a default (a generated column may call immutable
/// functions only, PostgreSQL's own rule), a CHECK on a table made
/// outside the tree and then attached, a partition made with such a CHECK, a domain, a
/// policy, forced row security. Each is refused for rights; what the maintenance adds (a
/// CHECK of built-in comparisons, as `DETACH … CONCURRENTLY` adds) still passes.
#[tokio::test]
async fn the_maintainers_other_expressions_on_user_logins_are_refused() {
    let db = TestDb::new().await;
    let read = "query_to_xml('SELECT 1', true, true, '')::text";
    let refused = [
        format!("ALTER TABLE login_data.user_logins ALTER COLUMN masked_ip SET DEFAULT {read}"),
        format!("ALTER TABLE login_data.user_logins ADD COLUMN rt_g text DEFAULT {read}"),
        format!(
            "CREATE TABLE login_data.rt_x (LIKE login_data.user_logins INCLUDING DEFAULTS,
                                           CONSTRAINT rt_c CHECK ({read} IS NOT NULL));
             ALTER TABLE login_data.user_logins ATTACH PARTITION login_data.rt_x
                 FOR VALUES FROM ('2040-01-01') TO ('2040-02-01')"
        ),
        format!(
            "CREATE TABLE login_data.rt_y PARTITION OF login_data.user_logins
                 (CONSTRAINT rt_c CHECK ({read} IS NOT NULL)) FOR VALUES FROM ('2040-02-01') TO ('2040-03-01')"
        ),
        format!("CREATE DOMAIN login_data.rt_d AS text CHECK ({read} IS NOT NULL)"),
        "CREATE POLICY rt_p ON login_data.user_logins USING (true)".to_owned(),
        "ALTER TABLE login_data.user_logins FORCE ROW LEVEL SECURITY".to_owned(),
    ];
    for noinherit in [false, true] {
        let config = db.login_in("login_etl_partition_maintainer").await;
        let mut prefix = "";
        if noinherit {
            let user = config.get_user().expect("user").to_owned();
            db.connect()
                .await
                .batch_execute(&format!("ALTER ROLE {user} NOINHERIT"))
                .await
                .expect("noinherit");
            prefix = "SET ROLE login_etl_partition_owner; ";
        }
        let maintainer = connect(&config).await;
        for sql in &refused {
            let sql = format!("BEGIN; {prefix}{sql}; COMMIT");
            assert_refused_for_rights(&maintainer, "login_etl_partition_maintainer", &[sql.as_str()]).await;
            maintainer.batch_execute("ROLLBACK").await.expect("rolled back");
        }
        maintainer
            .batch_execute(&format!(
                "{prefix}ALTER TABLE login_data.user_logins ADD CONSTRAINT rt_ok
                     CHECK (create_date IS NOT NULL AND create_date >= '2000-01-01') NOT VALID;
                 ALTER TABLE login_data.user_logins DROP CONSTRAINT rt_ok"
            ))
            .await
            .expect("a CHECK of built-in comparisons");
    }
}
