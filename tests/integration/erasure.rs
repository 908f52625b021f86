//! The ingest's side of erasure that unlinks (docs/security.md, "Erasure"): a value whose
//! marker is in `pii_erasures` is written as its token, in the login rows (by INSERT and
//! by COPY) and the quarantine's masks, and never vaulted; a batch waits for an erasure in
//! progress and then finds its marker. The erasures are made here as the vault service's
//! `forget` makes them (crates/vault-service/tests/erasure.rs runs the real one).

use login_etl::{App, handler};
use login_etl_core::crypto::erasure::new_token;
use login_etl_core::crypto::{BlindIndex, PiiField};
use login_etl_core::store::erasure;
use testkit::*;

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
        "INSERT INTO pii_erasures (field, marker, token) VALUES ('ip', $1, $2)",
        &[&app.keyring.erasure.marker(PiiField::Ip, &mask).as_str(), &token.as_str()],
    )
    .await
    .expect("erasure");
    token
}

#[tokio::test]
async fn a_batch_writes_an_erased_values_token_by_insert_and_by_copy_and_vaults_nothing_of_it() {
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

    for (tag, size) in [("small", 20), ("copy", login_etl_core::store::batch::COPY_MIN_ROWS + 7)] {
        let mut records = many_logins(size, tag);
        records.push((format!("{tag}-rejected"), rejected_login_body("u", erased_ip, "dev-rejected")));
        let (_, stats) = handler::handle_with_stats(&app, event(&records)).await.expect("batch");
        assert_eq!((stats.written, stats.quarantined), (size as u64, 1), "{tag}");
        let carrying = (0..size).filter(|i| i % 7 == 3).count() as i64;
        assert_eq!(
            count(format!("SELECT count(*) FROM user_logins WHERE sqs_message_id LIKE '{tag}-%' AND masked_ip = '{token}'"))
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
    for table in ["user_logins", "pii_vault", "login_quarantine_masks"] {
        assert_eq!(
            count(format!("SELECT count(*) FROM {table} t WHERE t::text LIKE '%{mask}%'")).await,
            0,
            "{table}"
        );
    }
    // Every other value is masked and vaulted as ever: six ips, seven device ids.
    assert_eq!(count("SELECT count(*) FROM pii_vault WHERE field = 'ip'".into()).await, 6);
    assert_eq!(count("SELECT count(*) FROM pii_vault WHERE field = 'device_id'".into()).await, 7);
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
            "SELECT count(*) FROM user_logins WHERE sqs_message_id = 'wait-1' AND masked_ip = '{token}'"
        ))
        .await,
        1
    );
    assert_eq!(db.count("SELECT count(*) FROM pii_vault WHERE field = 'ip'").await, 0);
}
