//! Red team of V18, the service's side: the expiry's cursor, which now carries when its row
//! was vaulted (read and written back as text), under the session settings its login may
//! give itself. The test passes while the property holds.

use login_etl::{App, handler};
use pii_vault_service::expiry::{self, Retention};
use testkit::*;

/// One login per (id, ip, device id), each its own batch, all sent `days` ago.
async fn ingest(app: &App, days: i64, rows: &[(&str, &str, &str)]) {
    let sent = chrono::Utc::now().timestamp_millis() - days * 86_400_000;
    for (id, ip, dev) in rows {
        let records = [((*id).to_owned(), login_body(&format!("u-{id}"), ip, dev))];
        let response = handler::handle(app, event_sent_at(&records, sent)).await.expect("ingest");
        assert!(response.batch_item_failures.is_empty());
    }
}

/// The expiry's login sets its own session defaults (`ALTER ROLE CURRENT_USER SET`, open
/// to any role; an operator's database default does the same): `DateStyle = 'SQL, DMY'`
/// and an Indian `TimeZone`, whose `created_at::text` ends in "IST", which the server
/// reads back as Israel's +02:00. The cursor then moved 3.5 h on at each batch and a pass
/// skipped every row vaulted in that time after each batch's last: values unseen for
/// longer than the retention stayed (another zone, e.g. Dublin's summer "IST", moved it
/// back, and a pass went round the same rows without end). A pass, a row a batch, must
/// expire every old value whatever the session's settings.
#[tokio::test]
async fn the_expiry_cursor_survives_the_logins_own_date_style_and_time_zone() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app = writer_app(&db, &kms).await;
    ingest(
        &app,
        40,
        &[
            ("t-1", "203.0.113.181", "dev-t1"),
            ("t-2", "203.0.113.182", "dev-t2"),
            ("t-3", "203.0.113.183", "dev-t3"),
        ],
    )
    .await;
    // Vaulted an hour apart, in the summer (the database owner's right, to stand for time).
    db.connect()
        .await
        .batch_execute(
            "UPDATE vault.pii_vault v SET created_at = timestamptz '2026-07-01 12:00+00' + s.n * interval '1 hour'
               FROM (SELECT field, blind_index, row_number() OVER (ORDER BY field, blind_index) AS n
                       FROM vault.pii_vault) s
              WHERE v.field = s.field AND v.blind_index = s.blind_index",
        )
        .await
        .expect("age");
    let config = db.login_in("login_etl_vault_expiry").await;
    connect(&config)
        .await
        .batch_execute("ALTER ROLE CURRENT_USER SET DateStyle = 'SQL, DMY'; ALTER ROLE CURRENT_USER SET TimeZone = 'Asia/Kolkata'")
        .await
        .expect("a login's own session defaults");
    let pool = login_etl_core::store::stateless_pool(config.clone().into(), 1).expect("pool");
    let mut client = pool.get().await.expect("connection");

    let mut expired = 0;
    for _ in 0..20 {
        let batch =
            expiry::expire_batch(&mut client, Retention::days(30).expect("30"), 1).await.expect("batch");
        expired += batch.expired;
        if batch.done {
            break;
        }
    }

    assert_eq!(expired, 6, "every value unseen for 40 days expired in one pass");
    assert_eq!(db.count("SELECT count(*) FROM vault.pii_vault").await, 0);
}
