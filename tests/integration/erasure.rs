//! The ingest's side of erasure that unlinks (docs/security.md, "Erasure"): a value whose
//! marker is in `pii_erasures` is written as its token, in the login rows (small and
//! large batches) and the quarantine's masks, and never vaulted; a batch waits for an erasure in
//! progress and then finds its marker. The erasures are made here as the vault service's
//! `forget` makes them (crates/vault-service/tests/erasure.rs runs the real one).

use login_etl::{App, handler};
use login_etl_core::crypto::erasure::new_token;
use login_etl_core::crypto::{BlindIndex, PiiField};
use login_etl_core::error::report;
use login_etl_core::store::erasure;
use testkit::*;
use tokio_postgres::error::SqlState;

/// The function as a login in the writer role.
async fn writer(db: &TestDb, kms: &login_etl_core::keys::Kms) -> App {
    init_keys(db, kms).await;
    let mut config = db.app_config();
    config.database = db.login_in("login_etl_writer").await.into();
    App::init(&config, kms).await.expect("cold start")
}

/// Records the erasure of `ip` in `tx` as `forget` does: under the erasure lock, its
/// marker and a fresh token. Returns the token.
async fn erase(tx: &tokio_postgres::Transaction<'_>, app: &App, ip: &str) -> BlindIndex {
    erasure::lock_exclusive(tx).await.expect("lock");
    let mask = app.keyring.indexer.index(PiiField::Ip, ip);
    let token = new_token();
    tx.execute(
        "INSERT INTO vault.pii_erasures (field, marker, token) VALUES ('ip', $1, $2)",
        &[&app.keyring.erasure.marker(PiiField::Ip, &mask).as_str(), &token.as_str()],
    )
    .await
    .expect("erasure");
    token
}

#[tokio::test]
async fn a_batch_small_or_large_writes_an_erased_values_token_and_vaults_nothing_of_it() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app = writer(&db, &kms).await;
    // many_logins: ips 198.51.100.0 to .6, repeating.
    let erased_ip = "198.51.100.3";
    let token = {
        let mut owner = db.connect().await;
        let tx = owner.transaction().await.expect("tx");
        let token = erase(&tx, &app, erased_ip).await;
        tx.commit().await.expect("commit");
        token
    };
    let mask = app.keyring.indexer.index(PiiField::Ip, erased_ip);
    let count = |sql: String| {
        let db = &db;
        async move { db.count(&sql).await }
    };

    for (tag, size) in [("small", 20), ("large", 1007)] {
        let mut records = many_logins(size, tag);
        records.push((format!("{tag}-rejected"), rejected_login_body("u", erased_ip, "dev-rejected")));
        let (_, stats) = handler::handle_with_stats(&app, event(&records)).await.expect("batch");
        assert_eq!((stats.written, stats.quarantined), (size as u64, 1), "{tag}");
        let carrying = (0..size).filter(|i| i % 7 == 3).count() as i64;
        assert_eq!(
            count(format!("SELECT count(*) FROM login_data.user_logins WHERE sqs_message_id LIKE '{tag}-%' AND masked_ip = '{token}'"))
                .await,
            carrying,
            "{tag}: the erased value's logins carry its token"
        );
        assert_eq!(
            quarantine_masks(&db, &format!("{tag}-rejected")).await,
            vec![
                (
                    "device_id".to_owned(),
                    app.keyring.indexer.index(PiiField::DeviceId, "dev-rejected").to_string()
                ),
                ("ip".to_owned(), token.to_string())
            ],
            "{tag}"
        );
    }
    for table in ["login_data.user_logins", "vault.pii_vault", "login_data.login_quarantine_masks"] {
        assert_eq!(
            count(format!("SELECT count(*) FROM {table} t WHERE t::text LIKE '%{mask}%'")).await,
            0,
            "{table}"
        );
    }
    // Every other value is masked and vaulted as ever: six ips, seven device ids.
    assert_eq!(count("SELECT count(*) FROM vault.pii_vault WHERE field = 'ip'".into()).await, 6);
    assert_eq!(count("SELECT count(*) FROM vault.pii_vault WHERE field = 'device_id'".into()).await, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_waits_for_an_erasure_in_progress_then_writes_its_token() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app: &'static App = Box::leak(Box::new(writer(&db, &kms).await));
    let ip = "203.0.113.91";

    let mut owner = db.connect().await;
    let tx = owner.transaction().await.expect("tx");
    let token = erase(&tx, app, ip).await;
    let writing = tokio::spawn(async move {
        handler::handle(app, event(&[("wait-1".into(), login_body("u-wait", ip, "dev-wait"))]))
            .await
            .map(drop)
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!writing.is_finished(), "the batch looked its markers up before the erasure committed");
    tx.commit().await.expect("commit");
    writing.await.expect("task").expect("batch");
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM login_data.user_logins WHERE sqs_message_id = 'wait-1' AND masked_ip = '{token}'"
        ))
        .await,
        1
    );
    assert_eq!(db.count("SELECT count(*) FROM vault.pii_vault WHERE field = 'ip'").await, 0);
}

/// The erasure lock is a row only the function and the service may lock (locking takes
/// UPDATE on it): every other role is refused every row lock and the table lock, and is
/// refused before queueing a lock by a statement that locks first and checks after (a
/// queued lock would hold every later batch back: with a batch holding the lock, such a
/// statement would time out instead); the advisory key the lock once was, held by one of
/// them, holds no batch back.
#[tokio::test]
async fn no_other_role_can_take_the_erasure_lock_and_stall_a_batch() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app = writer(&db, &kms).await;
    let mut ingest = connect(&db.login_in("login_etl_writer").await).await;
    let roles =
        ["login_etl_analyst", "login_etl_auditor", "login_etl_quarantine_purge", "login_etl_vault_reader"];
    for (i, role) in roles.into_iter().enumerate() {
        let other = connect(&db.login_in(role).await).await;
        other.batch_execute("SET lock_timeout = '300ms'").await.expect("set");
        let in_flight = ingest.transaction().await.expect("tx");
        in_flight.batch_execute("SELECT FROM pii_locks.erasure FOR SHARE").await.expect("a batch's lock");
        for lock in [
            "SELECT FROM pii_locks.erasure FOR UPDATE",
            "SELECT FROM pii_locks.erasure FOR NO KEY UPDATE",
            "SELECT FROM pii_locks.erasure FOR SHARE",
            "SELECT FROM pii_locks.erasure FOR KEY SHARE",
            "LOCK TABLE pii_locks.erasure IN EXCLUSIVE MODE",
            "CREATE RULE stall AS ON INSERT TO pii_locks.erasure DO INSTEAD NOTHING",
            "COMMENT ON TABLE pii_locks.erasure IS 'stall'",
        ] {
            let error = other.batch_execute(&format!("BEGIN; {lock}")).await.expect_err(lock);
            assert_eq!(error.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{role}: {lock}");
            other.batch_execute("ROLLBACK").await.expect("rollback");
        }
        in_flight.commit().await.expect("commit");
        other
            .batch_execute("SELECT pg_advisory_lock(hashtextextended('login-etl:erasure', 0))")
            .await
            .expect("any login takes an advisory lock");
        let id = format!("stall-{i}");
        let records = [(id.clone(), login_body(&id, "203.0.113.95", "dev-stall"))];
        let answer =
            tokio::time::timeout(std::time::Duration::from_secs(2), handler::handle(&app, event(&records)))
                .await
                .unwrap_or_else(|_| panic!("{role} stalled a batch"))
                .expect("batch");
        assert!(answer.batch_item_failures.is_empty(), "{role}");
    }
    assert_eq!(
        db.count("SELECT count(*) FROM login_data.user_logins WHERE sqs_message_id LIKE 'stall-%'").await,
        4
    );
}

/// A writer that cannot get the erasure lock fails with a clear error, never waits without
/// bound; one that finds no row to lock fails, never writes unlocked.
#[tokio::test]
async fn a_writer_that_cannot_take_the_erasure_lock_fails_clearly() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app = writer(&db, &kms).await;
    let values = erasure::mark(
        &app.keyring.erasure,
        [(PiiField::Ip, &app.keyring.indexer.index(PiiField::Ip, "203.0.113.96"))],
    );
    let mut ingest = connect(&db.login_in("login_etl_writer").await).await;
    ingest.batch_execute("SET lock_timeout = '200ms'").await.expect("set");

    let mut owner = db.connect().await;
    let forget = owner.transaction().await.expect("tx");
    erasure::lock_exclusive(&forget).await.expect("lock");
    let tx = ingest.transaction().await.expect("tx");
    let error = report(&erasure::erased(&tx, &values).await.expect_err("the lock is held"));
    assert!(error.contains("lock timeout") && error.contains("55P03"), "{error}");
    drop(tx);
    forget.rollback().await.expect("rollback");

    owner.batch_execute("DELETE FROM pii_locks.erasure").await.expect("the owner deletes the row");
    let tx = ingest.transaction().await.expect("tx");
    let error = report(&erasure::erased(&tx, &values).await.expect_err("no row to lock"));
    assert!(error.contains("pii_locks.erasure"), "{error}");
}
