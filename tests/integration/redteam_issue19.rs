//! Red team, issue 19: the partition retention attacked by the writer. The writer may
//! insert into any partition, so it can hold a transaction open on the very month the
//! retention detaches; no ingest batch may then wait beyond the 2 s bound, and the month
//! goes once the writer's transaction ends.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use login_etl::handler;
use login_etl_core::store::partitions::{self, Cancel};
use testkit::{TestDb, cold_start, connect, login_body, new_kms};
use tokio_postgres::NoTls;

use crate::partitions::{batches_until_stopped, d, event_sent_at, ms, run_batches};

#[tokio::test]
async fn a_writer_holding_an_insert_open_on_the_expiring_month_stalls_no_batch_beyond_two_seconds() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app = Arc::new(cold_start(&db, &kms).await);
    let old = vec![("rt-old".to_owned(), login_body("u-rt", "198.51.100.9", "d9"), ms("2025-02-10"))];
    let (_, filled) = handler::handle_with_stats(&app, event_sent_at(&old)).await.expect("filled");
    assert_eq!(filled.written, 1);
    let normal = run_batches(&app, "rt-before", 5).await.into_iter().max().expect("batches");

    // The writer's own login: an insert into February 2025, its transaction left open for 4 s.
    let writer = connect(&db.login_in("login_etl_writer").await).await;
    writer
        .batch_execute(
            "BEGIN; INSERT INTO login_data.user_logins (sqs_message_id, create_date) VALUES ('rt-held', '2025-02-11')",
        )
        .await
        .expect("held insert");
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(4)).await;
        writer.batch_execute("COMMIT").await.expect("commit");
    });
    let running = Arc::new(AtomicBool::new(true));
    let ingest = batches_until_stopped(&app, &running);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut maintainer = connect(&db.login_in("login_etl_partition_maintainer").await).await;
    let run =
        partitions::expire(&mut maintainer, &Cancel::new(&db.config, NoTls), Some(d("2025-03-01"))).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    running.store(false, Ordering::SeqCst);
    let during = ingest.await.expect("no batch failed");
    release.await.expect("released");

    assert!(during.len() >= 3, "batches ran meanwhile: {}", during.len());
    let slowest = during.iter().max().copied().expect("batches");
    assert!(slowest <= normal + Duration::from_secs(2), "a batch took {slowest:?} (before: {normal:?})");
    // The month goes, now or on the next run, with both rows counted; nothing newer.
    let mut dropped: Vec<(String, i64)> =
        run.map(|r| r.dropped.into_iter().map(|x| (x.name, x.rows)).collect()).unwrap_or_default();
    if !dropped.iter().any(|(name, _)| name == "user_logins_2025_02") {
        let again =
            partitions::expire(&mut maintainer, &Cancel::new(&db.config, NoTls), Some(d("2025-03-01")))
                .await
                .expect("next run");
        dropped.extend(again.dropped.into_iter().map(|x| (x.name, x.rows)));
    }
    let february: Vec<i64> =
        dropped.iter().filter(|(name, _)| name == "user_logins_2025_02").map(|(_, rows)| *rows).collect();
    assert_eq!(february, [2], "{dropped:?}");
    assert!(dropped.iter().all(|(name, _)| name.as_str() < "user_logins_2025_03"), "{dropped:?}");
    assert_eq!(
        db.count("SELECT count(*) FROM login_data.user_logins WHERE create_date >= '2025-03-01'").await,
        50 * (5 + during.len() as i64)
    );
}
