//! The scheduled purge, as its own database login: bodies past the retention erased in
//! place, younger ones kept, nothing else touched.

use std::time::Duration;

use login_etl::handler;
use login_etl_core::store;
use login_etl_housekeeping::purge;
use testkit::*;

#[tokio::test]
async fn bodies_past_the_retention_are_erased_in_place_and_younger_ones_kept() {
    let db = TestDb::new().await;
    let app = cold_start(&db, &new_kms().await).await;
    let bad: Vec<(String, String)> = (0..5).map(|i| (format!("bad-{i}"), format!("not json {i}"))).collect();
    handler::handle_with_stats(&app, event(&bad)).await.expect("batch");
    // Three of them were quarantined 15 days ago, two an hour ago.
    db.connect()
        .await
        .batch_execute(
            "UPDATE login_data.login_quarantine SET quarantined_at = now() - interval '15 days' WHERE message_id < 'bad-3';
             UPDATE login_data.login_quarantine SET quarantined_at = now() - interval '1 hour' WHERE message_id >= 'bad-3';",
        )
        .await
        .expect("age the rows");

    let pool =
        store::stateless_pool(db.login_in("login_etl_quarantine_purge").await.into(), 1).expect("pool");
    let outcome = purge::run(&pool, 14, Duration::from_secs(5)).await.expect("purge");
    assert_eq!(outcome, purge::PurgeOutcome { erased: 3, stopped_for_time: false });

    let rows: Vec<(String, bool, Option<String>)> = db
        .connect()
        .await
        .query(
            "SELECT message_id, ciphertext IS NULL AND nonce IS NULL AND key_version IS NULL, erased_by
               FROM login_data.login_quarantine ORDER BY message_id",
            &[],
        )
        .await
        .expect("rows")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let expected: Vec<(String, bool, Option<String>)> =
        (0..5).map(|i| (format!("bad-{i}"), i < 3, (i < 3).then(|| "purge".to_owned()))).collect();
    assert_eq!(rows, expected, "erased rows stay, without their body");

    // Idempotent: a second run finds nothing more; a shorter retention reaches the rest.
    assert_eq!(purge::run(&pool, 14, Duration::from_secs(5)).await.expect("again").erased, 0);
    assert_eq!(db.count("SELECT count(*) FROM login_data.login_quarantine WHERE erased_at IS NULL").await, 2);
    assert_eq!(db.count("SELECT count(*) FROM login_data.user_logins").await, 0);
}

/// The purge through a transaction-pooling proxy (PgBouncer 1.18, `pool_mode =
/// transaction`, 2 server connections): four concurrent runs erase each expired body
/// once, and leave nothing on the server connections (docs/operations.md, "Connection
/// poolers").
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_purges_through_two_pooled_server_connections_erase_each_body_once() {
    let db = TestDb::new().await;
    let app = cold_start(&db, &new_kms().await).await;
    let bad: Vec<(String, String)> =
        (0..40).map(|i| (format!("bad-{i:02}"), format!("not json {i}"))).collect();
    handler::handle_with_stats(&app, event(&bad)).await.expect("batch");
    db.connect()
        .await
        .batch_execute(
            "UPDATE login_data.login_quarantine SET quarantined_at = now() - interval '15 days' WHERE message_id < 'bad-30'",
        )
        .await
        .expect("age the rows");
    let bouncer = PgBouncer::in_front_of(&db.login_in("login_etl_quarantine_purge").await, 2).await;
    let mut runs = Vec::new();
    for _ in 0..4 {
        let pool = store::stateless_pool(bouncer.config.clone().into(), 1).expect("pool");
        runs.push(tokio::spawn(async move { purge::run(&pool, 14, Duration::from_secs(5)).await }));
    }
    let mut erased = 0;
    for run in runs {
        erased += run.await.expect("task").expect("a purge through the pooler").erased;
    }
    assert_eq!(erased, 30, "each expired body erased by one run");
    assert_eq!(
        db.count("SELECT count(*) FROM login_data.login_quarantine WHERE erased_by = 'purge'").await,
        30
    );
    assert_eq!(
        db.count("SELECT count(*) FROM login_data.login_quarantine WHERE erased_at IS NULL").await,
        10
    );
    bouncer.assert_server_connections_clean().await;
}
