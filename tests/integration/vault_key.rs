//! The vault's key checked through a hash index (V18): what it refuses, and its upgrade in
//! place, with `migrate`'s preparation (a copy with the new keys, kept in step by a
//! trigger, swapped in) while batches keep coming, and without it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use login_etl::handler;
use testkit::{TestDb, event, login_body};

use crate::upgrades::filled_with;
use tokio_postgres::error::SqlState;

/// `n` logins, each with an ip and a device id no other call's logins have: every one a
/// new vault row.
pub(crate) fn fresh_logins(n: usize, tag: &str) -> Vec<(String, String)> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    (0..n)
        .map(|i| {
            let k = NEXT.fetch_add(1, Ordering::SeqCst);
            let id = format!("{tag}-{i:05}");
            let body =
                login_body(&id, &format!("198.18.{}.{}", k / 250 % 250, k % 250), &format!("fresh-{k}"));
            (id, body)
        })
        .collect()
}

/// A database at `version` whose vault the function filled with `values` logins' values
/// (two rows a login: more than one statement of the preparation's copy from 2,500); the
/// function and those logins.
pub(crate) async fn vaulted_at(
    version: i32,
    values: usize,
) -> (TestDb, Arc<login_etl::App>, Vec<(String, String)>) {
    filled_with(version, fresh_logins(values, "old")).await
}

/// One batch of 50 logins with new values; how long it took.
pub(crate) async fn fresh_batch(app: &login_etl::App, tag: &str) -> Duration {
    let started = Instant::now();
    let (_, stats) = handler::handle_with_stats(app, event(&fresh_logins(50, tag))).await.expect("batch");
    assert_eq!(stats.written, 50);
    started.elapsed()
}

/// What a database says of `vault.pii_vault`: owner, rights (table and columns),
/// constraints, indexes and triggers, each as its definition; and what the preparation
/// leaves behind, if anything.
pub(crate) async fn vault_definition(db: &TestDb) -> Vec<String> {
    db.texts(
        "SELECT 'owner ' || pg_get_userbyid(relowner) FROM pg_class WHERE oid = 'vault.pii_vault'::regclass
         UNION ALL
         SELECT 'grant ' || a.privilege_type || ' ' || pg_get_userbyid(a.grantee) || ' ' || a.is_grantable
           FROM pg_class c, aclexplode(c.relacl) a WHERE c.oid = 'vault.pii_vault'::regclass
         UNION ALL
         SELECT 'grant ' || a.privilege_type || ' (' || att.attname || ') ' || pg_get_userbyid(a.grantee)
           FROM pg_attribute att, aclexplode(att.attacl) a WHERE att.attrelid = 'vault.pii_vault'::regclass
         UNION ALL
         SELECT 'constraint ' || conname || ' ' || pg_get_constraintdef(oid)
           FROM pg_constraint WHERE conrelid = 'vault.pii_vault'::regclass
         UNION ALL
         SELECT 'index ' || pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = 'vault.pii_vault'::regclass
         UNION ALL
         SELECT 'trigger ' || pg_get_triggerdef(oid) FROM pg_trigger
          WHERE tgrelid = 'vault.pii_vault'::regclass AND NOT tgisinternal
         UNION ALL
         SELECT 'left ' || c.relname FROM pg_class c WHERE c.relnamespace = 'vault'::regnamespace
            AND c.relname LIKE 'pii_vault_hashed%'
         UNION ALL
         SELECT 'left ' || proname FROM pg_proc WHERE proname = 'pii_vault_mirror'
         ORDER BY 1",
        &[],
    )
    .await
}

/// Every mask in `user_logins` has its vault row: nothing the function vaulted was lost.
pub(crate) async fn assert_every_mask_vaulted(db: &TestDb) {
    let missing = db
        .count(
            "SELECT count(*) FROM login_data.user_logins u
              WHERE NOT EXISTS (SELECT 1 FROM vault.pii_vault v WHERE v.field = 'ip' AND v.blind_index = u.masked_ip)
                 OR NOT EXISTS (SELECT 1 FROM vault.pii_vault v
                                 WHERE v.field = 'device_id' AND v.blind_index = u.masked_device_id)",
        )
        .await;
    assert_eq!(missing, 0, "logins whose values the vault lost");
}

/// The vault's rows as (field, mask, ciphertext), sorted.
pub(crate) async fn vault_rows(db: &TestDb) -> Vec<String> {
    db.texts(
        "SELECT field || ' ' || blind_index || ' ' || coalesce(encode(ciphertext, 'hex'), 'erased')
           FROM vault.pii_vault ORDER BY 1",
        &[],
    )
    .await
}

/// A V17 database filled through the function, migrated while batches keep coming: the
/// preparation copies the vault beside the batches, V18 swaps the copy in within its lock
/// wait; every row kept as it was, every value of every login vaulted, no batch fails or
/// waits 2 s beyond its normal time; the vault then is what a new database's is (owner,
/// rights, keys, triggers; nothing of the preparation left); re-delivery adds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v17_vault_filled_through_the_function_gets_its_hash_key_in_place_while_ingest_runs() {
    let (db, app, old) = vaulted_at(17, 3000).await;
    let mut normal = Duration::ZERO;
    for i in 0..5 {
        normal = normal.max(fresh_batch(&app, &format!("before{i}")).await);
    }
    let before = vault_rows(&db).await;
    let table = "SELECT 'vault.pii_vault'::regclass::oid::bigint";
    let old_table = db.count(table).await;

    let running = Arc::new(AtomicBool::new(true));
    let ingest = {
        let (app, running) = (Arc::clone(&app), Arc::clone(&running));
        tokio::spawn(async move {
            let mut times = Vec::new();
            while running.load(Ordering::SeqCst) {
                times.push(fresh_batch(&app, &format!("during{}", times.len())).await);
            }
            times
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let applied = db.migrate().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    running.store(false, Ordering::SeqCst);
    let during = ingest.await.expect("no batch failed");

    assert!(applied.iter().any(|name| name == "V18__vault_key_by_hash"), "{applied:?}");
    assert_ne!(db.count(table).await, old_table, "the prepared copy took the old table's place");
    assert!(!during.is_empty());
    let slowest = during.iter().max().copied().expect("batches");
    assert!(slowest <= normal + Duration::from_secs(2), "{slowest:?} against {normal:?}");
    let after = vault_rows(&db).await;
    for row in &before {
        assert!(after.binary_search(row).is_ok(), "a vault row changed or went: {}", &row[..12]);
    }
    assert!(after.len() > before.len(), "the batches during the upgrade vaulted their values");
    assert_every_mask_vaulted(&db).await;
    assert_eq!(vault_definition(&db).await, vault_definition(&TestDb::new().await).await);
    let (_, again) = handler::handle_with_stats(&app, event(&old)).await.expect("again");
    assert_eq!((again.written, again.already_present), (0, 3000));
    assert_eq!(vault_rows(&db).await, after, "re-delivery vaults nothing again");
}

/// The preparation's steps one by one, with the changes a forget, a re-encryption and a
/// batch make between them: a row deleted before the copy or after it does not come back,
/// an update is kept, a new value is kept.
#[tokio::test]
async fn the_preparation_keeps_deletes_updates_and_inserts_made_around_its_copy() {
    let (db, app, _) = vaulted_at(17, 3000).await;
    let client = db.connect().await;
    let masks =
        db.texts("SELECT blind_index FROM vault.pii_vault WHERE field = 'ip' ORDER BY 1 LIMIT 3", &[]).await;
    let (forgotten_before, reencrypted, forgotten_after) = (&masks[0], &masks[1], &masks[2]);

    login_etl_migrations::create_table(&client).await.expect("table");
    login_etl_migrations::mirror_changes(&client).await.expect("mirror");
    let delete = "DELETE FROM vault.pii_vault WHERE field = 'ip' AND blind_index = $1";
    client.execute(delete, &[forgotten_before]).await.expect("forgotten before the copy");
    client
        .execute(
            "UPDATE vault.pii_vault SET ciphertext = '\\x00ff' WHERE field = 'ip' AND blind_index = $1",
            &[reencrypted],
        )
        .await
        .expect("re-encrypted");
    fresh_batch(&app, "meanwhile").await;
    login_etl_migrations::copy_rows(&client).await.expect("copy");
    client.execute(delete, &[forgotten_after]).await.expect("forgotten after the copy");
    let expected = vault_rows(&db).await;

    let applied = db.migrate().await;

    assert_eq!(applied.first().map(String::as_str), Some("V18__vault_key_by_hash"), "{applied:?}");
    assert_eq!(vault_rows(&db).await, expected);
    for gone in [forgotten_before, forgotten_after] {
        let left = db
            .count(&format!(
                "SELECT count(*) FROM vault.pii_vault WHERE field = 'ip' AND blind_index = '{gone}'"
            ))
            .await;
        assert_eq!(left, 0, "a forgotten value came back");
    }
    let kept = db
        .count(&format!(
            "SELECT count(*) FROM vault.pii_vault WHERE blind_index = '{reencrypted}' AND ciphertext = '\\x00ff'"
        ))
        .await;
    assert_eq!(kept, 1, "the re-encryption kept");
}

/// V18 without the preparation (another tool's migrations): it builds the keys on the
/// table itself and keeps every row.
#[tokio::test]
async fn v18_alone_builds_the_keys_and_keeps_every_row() {
    let (db, _app, _) = vaulted_at(17, 200).await;
    let before = vault_rows(&db).await;
    let mut client = db.connect().await;

    let applied = login_etl_migrations::migrate_to_unprepared(&mut client, 18).await.expect("V18 alone");

    assert_eq!(applied, ["V18__vault_key_by_hash"]);
    assert_eq!(vault_rows(&db).await, before);
    assert_eq!(vault_definition(&db).await, vault_definition(&TestDb::new().await).await);
}

/// The key is unique whatever the way in: a plain INSERT of a vaulted mask fails on it
/// (`exclusion_violation`), the same mask under the other field too (each field's masks
/// are HMACs under keys of their own: one in both is a collision, or a forgery), and the
/// writer's ON CONFLICT DO NOTHING meets it; a lookup by (field, mask) goes through the
/// hash index.
#[tokio::test]
async fn the_vault_key_refuses_a_second_row_for_a_mask_and_serves_lookups() {
    let (db, _app, _) = vaulted_at(18, 20).await;
    let client = db.connect().await;
    let mask = &db.texts("SELECT blind_index FROM vault.pii_vault WHERE field = 'ip' LIMIT 1", &[]).await[0];
    for field in ["ip", "device_id"] {
        let error = client
            .execute(
                "INSERT INTO vault.pii_vault (field, blind_index, key_version, nonce, ciphertext)
                 VALUES ($1, $2, 1, '\\x000000000000000000000000', '\\x00')",
                &[&field, mask],
            )
            .await
            .expect_err("a second row for one mask");
        assert_eq!(error.code(), Some(&SqlState::EXCLUSION_VIOLATION), "{field}: {error}");
    }
    let skipped = client
        .execute(
            "INSERT INTO vault.pii_vault (field, blind_index, key_version, nonce, ciphertext)
             VALUES ('ip', $1, 1, '\\x000000000000000000000000', '\\x00') ON CONFLICT DO NOTHING",
            &[mask],
        )
        .await
        .expect("ON CONFLICT DO NOTHING");
    assert_eq!(skipped, 0);
    client.batch_execute("SET enable_seqscan = off").await.expect("set");
    let explain = format!(
        "EXPLAIN SELECT ciphertext FROM vault.pii_vault WHERE field = 'ip' AND blind_index = '{mask}'"
    );
    let plan: Vec<String> =
        client.query(&explain, &[]).await.expect("plan").iter().map(|row| row.get(0)).collect();
    assert!(plan.join("\n").contains("pii_vault_blind_index_key"), "{plan:?}");
}
