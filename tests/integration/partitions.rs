//! `user_logins` partitioned by month (sql/V13__user_logins_partitioned.sql, issue 19):
//! the maintenance makes partitions ahead, idempotently, without holding ingest back; a
//! message for a month without one is quarantined, never lost; the writer runs no DDL, the
//! maintenance's login owns nothing but `user_logins`; retention drops exactly the
//! months past it while batches keep coming, finishes a detach an interrupted run left
//! pending, and the upgrade's `user_logins_before_…` once its bound is past.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{Datelike, NaiveDate, Utc};
use login_etl::handler;
use login_etl_core::store::partitions::{
    self, Cancel, DDL_LOCK_TIMEOUT, Interval, PartitionMap, Window, next_month,
};
use testkit::{TestDb, cold_start, connect, event, login_body, many_logins, new_kms, quarantined_ids};
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

pub(crate) fn d(text: &str) -> NaiveDate {
    text.parse().expect("date")
}

pub(crate) fn month(date: NaiveDate) -> NaiveDate {
    date.with_day(1).expect("first")
}

/// An event whose records were sent at `sent_ms` each (id, body, SentTimestamp).
pub(crate) fn event_sent_at(records: &[(String, String, i64)]) -> aws_lambda_events::sqs::SqsEvent {
    let plain: Vec<(String, String)> =
        records.iter().map(|(id, body, _)| (id.clone(), body.clone())).collect();
    let mut event = event(&plain);
    for (record, (_, _, sent_ms)) in event.records.iter_mut().zip(records) {
        record.attributes.insert("SentTimestamp".into(), sent_ms.to_string());
    }
    event
}

pub(crate) fn ms(date: &str) -> i64 {
    d(date).and_hms_opt(12, 0, 0).expect("noon").and_utc().timestamp_millis()
}

/// Names, bounds and owners of the partitions, oldest first.
pub(crate) async fn partitions_of(db: &TestDb) -> Vec<(String, String, String)> {
    db.connect()
        .await
        .query(
            "SELECT c.relname::text, pg_get_expr(c.relpartbound, c.oid), pg_get_userbyid(c.relowner)::text
               FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
              WHERE i.inhparent = 'login_data.user_logins'::regclass ORDER BY 1",
            &[],
        )
        .await
        .expect("partitions")
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect()
}

#[tokio::test]
async fn the_maintenance_makes_every_reachable_month_ahead_once_each_a_full_partition() {
    let db = TestDb::empty().await;
    let mut client = db.connect().await;
    login_etl_migrations::migrate(&mut client).await.expect("migrate");
    assert!(partitions_of(&db).await.is_empty(), "a new database keeps no catch-all partition");
    let today = Utc::now().date_naive();
    let window = Window::around(today, partitions::DEFAULT_DAYS_BACK, partitions::DEFAULT_MONTHS_AHEAD);

    let first = partitions::ensure(&mut client, window, Interval::Month).await.expect("maintenance");
    let again = partitions::ensure(&mut client, window, Interval::Month).await.expect("maintenance again");

    let mut expected = Vec::new();
    let mut m = window.from;
    while m < window.to {
        expected.push(partitions::partition_name(m, next_month(m)));
        m = m.checked_add_months(chrono::Months::new(1)).expect("month");
    }
    assert!(expected.contains(&partitions::partition_name(month(today), next_month(month(today)))));
    assert!(expected.len() >= 2 + 1 + 2, "two months back, this one, two ahead: {expected:?}");
    assert_eq!(first.created, expected);
    assert!(again.created.is_empty(), "idempotent: {again:?}");
    let made = partitions_of(&db).await;
    assert_eq!(made.len(), expected.len());
    for (name, bound, owner) in &made {
        assert_eq!(owner, "login_etl_partition_owner", "{name}");
        assert!(bound.starts_with("FOR VALUES FROM ('"), "{name}: {bound}");
        // Each has the key, both masks' B-trees and the BRIN, attached to the parent's,
        // and the erasure guard.
        let sql = format!(
            "SELECT count(*) FROM pg_index i JOIN pg_inherits h ON h.inhrelid = i.indexrelid
              WHERE i.indrelid = 'login_data.{name}'::regclass"
        );
        assert_eq!(db.count(&sql).await, 4, "{name}");
        let sql = format!(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'login_data.{name}'::regclass
                AND tgname = 'user_logins_erasure_token_guard'"
        );
        assert_eq!(db.count(&sql).await, 1, "{name}");
    }
    assert_eq!(
        db.count("SELECT count(*) FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partdefid").await,
        0,
        "no DEFAULT partition (DETACH CONCURRENTLY refuses one)"
    );
}

/// The batch is prepared against the partitions: a message dated where none is goes to
/// the quarantine with `no_partition`, the rest is written. Once the maintenance has made
/// its month, its re-delivery is written (the function reads the partitions again when a
/// date misses).
#[tokio::test]
async fn a_message_for_a_month_without_partition_is_quarantined_and_the_rest_of_its_batch_written() {
    let db = TestDb::new().await;
    let app = cold_start(&db, &new_kms().await).await;
    let far = "2031-06-15";
    let records = vec![
        ("now-1".to_owned(), login_body("u1", "198.51.100.1", "d1"), Utc::now().timestamp_millis()),
        ("far".to_owned(), login_body("u2", "198.51.100.2", "d2"), ms(far)),
        ("now-2".to_owned(), login_body("u3", "198.51.100.3", "d3"), Utc::now().timestamp_millis()),
    ];

    let (response, stats) = handler::handle_with_stats(&app, event_sent_at(&records)).await.expect("batch");

    assert!(response.batch_item_failures.is_empty());
    assert_eq!((stats.written, stats.quarantined), (2, 1));
    assert_eq!(stats.rejected_by_reason.get("no_partition"), Some(&1));
    assert_eq!(quarantined_ids(&db).await, vec!["far".to_owned()]);
    assert_eq!(
        db.count("SELECT count(*) FROM login_data.login_quarantine WHERE reason_code = 'no_partition'").await,
        1
    );
    assert!(login_etl_core::store::quarantine::reason_codes().contains(&"no_partition"));

    partitions::ensure(
        &mut db.connect().await,
        Window { from: d("2031-06-01"), to: d("2031-07-01") },
        Interval::Month,
    )
    .await
    .expect("the month made");
    let (_, again) = handler::handle_with_stats(&app, event_sent_at(&records)).await.expect("again");
    assert_eq!((again.written, again.already_present, again.quarantined), (1, 2, 0));
    assert_eq!(db.count("SELECT count(*) FROM login_data.user_logins_2031_06").await, 1);
}

/// A partition gone after the function read the map (dropped by hand here; a retention
/// step later): the write fails with "no partition of relation … found for row", the
/// batch fails whole (SQS delivers it again), the function reads the map again, and the
/// next delivery quarantines the message (`no_partition`) and writes the rest. Nothing
/// is lost.
#[tokio::test]
async fn a_partition_gone_since_the_map_was_read_fails_the_batch_then_its_redelivery_is_quarantined() {
    let db = TestDb::new().await;
    let app = cold_start(&db, &new_kms().await).await;
    db.connect()
        .await
        .batch_execute(
            "ALTER TABLE login_data.user_logins DETACH PARTITION login_data.user_logins_2025_11;
             DROP TABLE login_data.user_logins_2025_11",
        )
        .await
        .expect("dropped");
    let records = vec![
        ("gone".to_owned(), login_body("u1", "198.51.100.1", "d1"), ms("2025-11-20")),
        ("here".to_owned(), login_body("u2", "198.51.100.2", "d2"), Utc::now().timestamp_millis()),
    ];

    let error = handler::handle_with_stats(&app, event_sent_at(&records)).await.expect_err("the write fails");
    assert!(login_etl_core::error::report(&error).contains("no partition of relation"), "{error:?}");
    assert_eq!(db.count("SELECT count(*) FROM login_data.user_logins").await, 0, "nothing half-written");
    assert!(!app.partitions().covers(d("2025-11-20")), "the map was read again");

    let (_, again) = handler::handle_with_stats(&app, event_sent_at(&records)).await.expect("redelivery");
    assert_eq!((again.written, again.quarantined), (1, 1));
    assert_eq!(again.rejected_by_reason.get("no_partition"), Some(&1));
}

/// Re-delivery stays idempotent across the new key, for a batch whose rows go to two
/// partitions (each message keeps its SentTimestamp, so its key).
#[tokio::test]
async fn redelivery_across_two_months_adds_nothing() {
    let db = TestDb::new().await;
    let app = cold_start(&db, &new_kms().await).await;
    let records: Vec<(String, String, i64)> = (0..40)
        .map(|i| {
            let sent = if i % 2 == 0 { ms("2025-11-30") } else { ms("2025-12-01") };
            (format!("m-{i:03}"), login_body(&format!("u{i}"), "198.51.100.9", "dev"), sent)
        })
        .collect();
    let (_, first) = handler::handle_with_stats(&app, event_sent_at(&records)).await.expect("first");
    let (_, again) = handler::handle_with_stats(&app, event_sent_at(&records)).await.expect("again");
    assert_eq!((first.written, again.written, again.already_present), (40, 0, 40));
    assert_eq!(db.count("SELECT count(*) FROM login_data.user_logins_2025_11").await, 20);
    assert_eq!(db.count("SELECT count(*) FROM login_data.user_logins_2025_12").await, 20);
}

/// With a partition per day (`PARTITION_INTERVAL=day`): a batch across two days of two
/// months is written to each day's partition, a message dated where no day has one is
/// quarantined (`no_partition`), and re-delivery adds nothing.
#[tokio::test]
async fn day_partitions_take_the_function_s_rows_and_redelivery_adds_nothing() {
    let db = TestDb::empty().await;
    let mut client = db.connect().await;
    login_etl_migrations::migrate(&mut client).await.expect("migrations apply");
    let made =
        partitions::ensure(&mut client, Window { from: d("2025-11-01"), to: d("2026-01-01") }, Interval::Day)
            .await
            .expect("days made");
    assert_eq!(made.created.len(), 61);
    assert_eq!(made.created.first().map(String::as_str), Some("user_logins_2025_11_01"));
    let app = cold_start(&db, &new_kms().await).await;
    let mut records: Vec<(String, String, i64)> = (0..40)
        .map(|i| {
            let sent = if i % 2 == 0 { ms("2025-11-30") } else { ms("2025-12-01") };
            (format!("m-{i:03}"), login_body(&format!("u{i}"), "198.51.100.9", "dev"), sent)
        })
        .collect();
    records.push(("later".to_owned(), login_body("u9", "198.51.100.8", "d9"), ms("2026-01-01")));

    let (_, first) = handler::handle_with_stats(&app, event_sent_at(&records)).await.expect("first");
    let (_, again) = handler::handle_with_stats(&app, event_sent_at(&records)).await.expect("again");

    assert_eq!((first.written, first.quarantined), (40, 1));
    assert_eq!(first.rejected_by_reason.get("no_partition"), Some(&1));
    assert_eq!((again.written, again.already_present), (0, 40));
    assert_eq!(db.count("SELECT count(*) FROM login_data.user_logins_2025_11_30").await, 20);
    assert_eq!(db.count("SELECT count(*) FROM login_data.user_logins_2025_12_01").await, 20);
    assert_eq!(db.count("SELECT count(*) FROM login_data.user_logins").await, 40);
}

/// A partition dropped while the map is read (a retention run beside the function's
/// reload): the catalog's rows of the reader's snapshot still list it, but its bound can no
/// longer be printed (NULL). The map leaves it out instead of failing (it panicked on the
/// missing bound before), and still has every other partition.
#[tokio::test]
async fn the_map_read_while_a_partition_is_dropped_leaves_it_out() {
    let db = TestDb::new().await;
    partitions::ensure(
        &mut db.connect().await,
        Window { from: d("2031-06-01"), to: d("2031-08-01") },
        Interval::Month,
    )
    .await
    .expect("months");
    let mut reader = db.connect().await;
    let snapshot = reader
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .start()
        .await
        .expect("a snapshot");
    snapshot.query_one("SELECT 1", &[]).await.expect("the snapshot taken");
    db.connect()
        .await
        .batch_execute(
            "ALTER TABLE login_data.user_logins DETACH PARTITION login_data.user_logins_2031_06;
             DROP TABLE login_data.user_logins_2031_06",
        )
        .await
        .expect("dropped meanwhile");

    let map = PartitionMap::load(&snapshot).await.expect("the map, without the dropped partition");

    assert!(!map.covers(d("2031-06-15")));
    assert!(map.covers(d("2031-07-15")));
    assert!(!map.partitions().iter().any(|(name, _)| name == "user_logins_2031_06"));
}

/// On PostgreSQL 15: ATTACH PARTITION takes SHARE UPDATE EXCLUSIVE on the parent, so it
/// goes through while a writer's transaction and a long read hold the table, and the
/// INSERTs after it are not queued; `CREATE TABLE … PARTITION OF` needs ACCESS EXCLUSIVE
/// and waits for them (here: gives up at its lock timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_goes_through_open_writes_and_reads_where_partition_of_would_wait() {
    let db = TestDb::new().await;
    let (writer, reader) = (db.connect().await, db.connect().await);
    writer
        .batch_execute(&format!(
            "BEGIN; INSERT INTO login_data.user_logins (sqs_message_id, create_date) VALUES ('open', '{}')",
            Utc::now().date_naive()
        ))
        .await
        .expect("an open write");
    reader.batch_execute("BEGIN; SELECT count(*) FROM public.user_logins").await.expect("an open read");

    let started = Instant::now();
    let made = partitions::ensure(
        &mut db.connect().await,
        Window { from: d("2032-01-01"), to: d("2032-04-01") },
        Interval::Month,
    )
    .await
    .expect("attached while both are open");
    assert_eq!(made.created.len(), 3);
    assert_eq!(made.lock_timeouts, 0, "no lock waited for");
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());

    let error = db
        .connect()
        .await
        .batch_execute(
            "BEGIN; SET LOCAL lock_timeout = 500;
             CREATE TABLE login_data.user_logins_2033_01 PARTITION OF login_data.user_logins
                 FOR VALUES FROM ('2033-01-01') TO ('2033-02-01')",
        )
        .await
        .expect_err("PARTITION OF waits for the open transactions");
    assert_eq!(error.code(), Some(&SqlState::LOCK_NOT_AVAILABLE));
    writer.batch_execute("COMMIT").await.expect("commit");
    reader.batch_execute("COMMIT").await.expect("commit");
}

/// Batches run back to back through the function while the maintenance makes two years of
/// partitions, an analyst's read holds the table open throughout, and another session
/// holds a lock the ATTACH must wait for (its tries time out and go again). No batch takes
/// more than 2 s beyond the slowest batch before the maintenance started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_batch_stalls_beyond_two_seconds_while_the_maintenance_runs() {
    let db = TestDb::new().await;
    let app = Arc::new(cold_start(&db, &new_kms().await).await);
    let baseline = run_batches(&app, "before", 10).await;
    let normal = baseline.iter().max().copied().expect("batches");

    let reader = db.connect().await;
    reader.batch_execute("BEGIN; SELECT count(*) FROM public.user_logins").await.expect("an open read");
    // SHARE UPDATE EXCLUSIVE (as a manual VACUUM or ANALYZE would hold): conflicts with
    // ATTACH, not with INSERT. Held 3 s.
    let blocker = db.connect().await;
    blocker
        .batch_execute("BEGIN; LOCK TABLE login_data.user_logins IN SHARE UPDATE EXCLUSIVE MODE")
        .await
        .expect("lock");
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        blocker.batch_execute("COMMIT").await.expect("release");
    });

    let running = Arc::new(AtomicBool::new(true));
    let ingest = batches_until_stopped(&app, &running);
    let mut client = db.connect().await;
    let made = partitions::ensure(
        &mut client,
        Window { from: d("2034-01-01"), to: d("2036-01-01") },
        Interval::Month,
    )
    .await
    .expect("maintenance");
    running.store(false, Ordering::SeqCst);
    let during = ingest.await.expect("ingest");
    release.await.expect("released");
    reader.batch_execute("COMMIT").await.expect("commit");

    assert_eq!(made.created.len(), 24);
    assert!(made.lock_timeouts >= 1, "the held lock made a try time out: {made:?}");
    assert!(during.len() >= 3, "batches ran meanwhile: {}", during.len());
    let slowest = during.iter().max().copied().expect("batches");
    assert!(
        slowest <= normal + Duration::from_secs(2),
        "a batch took {slowest:?} during the maintenance (before: at most {normal:?})"
    );
    assert!(DDL_LOCK_TIMEOUT <= Duration::from_secs(1));
}

/// Batches of 50 run back to back until `running` is cleared; how long each took.
pub(crate) fn batches_until_stopped(
    app: &Arc<login_etl::App>,
    running: &Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<Duration>> {
    let (app, running) = (Arc::clone(app), Arc::clone(running));
    tokio::spawn(async move {
        let mut times = Vec::new();
        while running.load(Ordering::SeqCst) {
            times.extend(run_batches(&app, &format!("during{}", times.len()), 1).await);
        }
        times
    })
}

/// `n` batches of 50 new logins dated today; how long each took.
pub(crate) async fn run_batches(app: &login_etl::App, tag: &str, n: usize) -> Vec<Duration> {
    let mut times = Vec::new();
    for i in 0..n {
        let records: Vec<(String, String, i64)> = many_logins(50, &format!("{tag}-{i}"))
            .into_iter()
            .map(|(id, body)| (id, body, Utc::now().timestamp_millis()))
            .collect();
        let started = Instant::now();
        let (_, stats) = handler::handle_with_stats(app, event_sent_at(&records)).await.expect("batch");
        times.push(started.elapsed());
        assert_eq!(stats.written, 50);
    }
    times
}

/// The writer may not make, attach or detach a partition, nor run the maintenance; the
/// maintenance's login may, and has no right on anything else (the vault, the audit, the
/// quarantine), and its owner role owns nothing but `user_logins` and its partitions.
#[tokio::test]
async fn the_writer_runs_no_ddl_and_the_maintainer_owns_only_user_logins() {
    let db = TestDb::new().await;
    let writer_login = db.login_in("login_etl_writer").await;
    let writer = connect(&writer_login).await;
    for ddl in [
        "CREATE TABLE login_data.user_logins_2040_01 (LIKE login_data.user_logins)",
        "ALTER TABLE login_data.user_logins DETACH PARTITION login_data.user_logins_2025_11",
        "ALTER TABLE login_data.user_logins ATTACH PARTITION login_data.user_logins_2025_11
             FOR VALUES FROM ('2025-11-01') TO ('2025-12-01')",
        "DROP TABLE login_data.user_logins_2025_11",
        "ALTER TABLE login_data.user_logins DETACH PARTITION login_data.user_logins_2025_11 CONCURRENTLY",
        "ALTER TABLE login_data.user_logins DETACH PARTITION login_data.user_logins_2025_11 FINALIZE",
        "SET ROLE login_etl_partition_owner",
    ] {
        let error = writer.batch_execute(ddl).await.expect_err(ddl);
        assert_eq!(error.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{ddl}: {error:?}");
    }
    let mut writer = connect(&writer_login).await;
    partitions::ensure(&mut writer, Window { from: d("2040-01-01"), to: d("2040-02-01") }, Interval::Month)
        .await
        .expect_err("the writer cannot run the maintenance");
    partitions::expire(&mut writer, &Cancel::new(&db.config, NoTls), Some(d("2025-12-01")))
        .await
        .expect_err("nor the retention");
    assert!(partitions_of(&db).await.iter().any(|(name, _, _)| name == "user_logins_2025_11"), "still there");

    let mut maintainer = connect(&db.login_in("login_etl_partition_maintainer").await).await;
    let made = partitions::ensure(
        &mut maintainer,
        Window { from: d("2040-01-01"), to: d("2040-02-01") },
        Interval::Month,
    )
    .await
    .expect("the maintainer can");
    assert_eq!(made.created, vec!["user_logins_2040_01".to_owned()]);
    for sql in [
        "SELECT 1 FROM vault.pii_vault",
        "SELECT 1 FROM vault.pii_keys",
        "SELECT 1 FROM pii_audit_log.pii_audit_entries",
        "SELECT 1 FROM login_data.login_quarantine",
        "SELECT 1 FROM pii_budget.pii_budget_spent",
        "CREATE TABLE vault.elsewhere (x int)",
        "CREATE TABLE public.elsewhere (x int)",
    ] {
        let error = maintainer.batch_execute(sql).await.expect_err(sql);
        assert_eq!(error.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{sql}: {error:?}");
    }
    let owned = db
        .texts(
            "SELECT c.relname::text FROM pg_class c
              WHERE c.relowner = 'login_etl_partition_owner'::regrole AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
                AND c.relname NOT LIKE 'user\\_logins%'",
            &[],
        )
        .await;
    assert!(owned.is_empty(), "the owner owns {owned:?}");
    assert_eq!(
        PartitionMap::load(&maintainer).await.expect("map").partitions().len(),
        partitions_of(&db).await.len()
    );
}

/// Rows in each partition, by name.
async fn rows_per_partition(db: &TestDb) -> Vec<(String, i64)> {
    let mut counts = Vec::new();
    for (name, _, _) in partitions_of(db).await {
        let rows = db.count(&format!("SELECT count(*) FROM login_data.{name}")).await;
        counts.push((name, rows));
    }
    counts
}

/// Retention while batches run back to back through the function and an analyst's read
/// holds every partition for 3 s (the DETACH's wait is cancelled, the partition left
/// pending detach, its FINALIZE times out and goes again): exactly the months wholly
/// before the cutoff go, each counted; every other month keeps its rows, every batch is
/// written, none takes more than 2 s beyond the slowest before; a second run drops
/// nothing; a message dated in a dropped month is then quarantined `no_partition`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_exactly_the_old_months_while_a_drain_runs_and_stalls_no_batch() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app = Arc::new(cold_start(&db, &kms).await);
    let dated = [("2025-01-20", 3), ("2025-02-10", 5), ("2025-03-31", 7), ("2025-04-01", 11)];
    let mut records = Vec::new();
    for (date, n) in dated {
        for i in 0..n {
            records.push((
                format!("{date}-{i}"),
                login_body(&format!("u{i}"), "198.51.100.7", "d7"),
                ms(date),
            ));
        }
    }
    let (_, filled) = handler::handle_with_stats(&app, event_sent_at(&records)).await.expect("filled");
    assert_eq!(filled.written, 26);
    let normal = run_batches(&app, "before", 10).await.into_iter().max().expect("batches");
    let before = rows_per_partition(&db).await;

    let reader = db.connect().await;
    reader.batch_execute("BEGIN; SELECT count(*) FROM public.user_logins").await.expect("an open read");
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        reader.batch_execute("COMMIT").await.expect("read ends");
    });
    let running = Arc::new(AtomicBool::new(true));
    let ingest = batches_until_stopped(&app, &running);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut maintainer = connect(&db.login_in("login_etl_partition_maintainer").await).await;
    let started = Instant::now();
    let dropped = partitions::expire(&mut maintainer, &Cancel::new(&db.config, NoTls), Some(d("2025-04-01")))
        .await
        .expect("retention");
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    running.store(false, Ordering::SeqCst);
    let during = ingest.await.expect("no batch failed");
    release.await.expect("released");

    let gone: Vec<(&str, i64)> = dropped.dropped.iter().map(|x| (x.name.as_str(), x.rows)).collect();
    assert_eq!(gone, [("user_logins_2025_01", 3), ("user_logins_2025_02", 5), ("user_logins_2025_03", 7)]);
    assert_eq!(dropped.dropped[2].range.to, Some(d("2025-04-01")));
    assert!(dropped.lock_timeouts >= 1, "the read made a try time out: {dropped:?}");
    assert!(took >= Duration::from_secs(2), "the drop waited for the read: {took:?}");
    assert!(during.len() >= 3, "batches ran meanwhile: {}", during.len());
    let slowest = during.iter().max().copied().expect("batches");
    assert!(
        slowest <= normal + Duration::from_secs(2),
        "a batch took {slowest:?} during the drop (before: {normal:?})"
    );

    let after = rows_per_partition(&db).await;
    let this_month = partitions::partition_name(
        month(Utc::now().date_naive()),
        next_month(month(Utc::now().date_naive())),
    );
    for (name, rows) in &before {
        if gone.iter().any(|(g, _)| g == name) {
            assert!(!after.iter().any(|(n, _)| n == name), "{name} dropped");
            let sql = format!("SELECT count(*) FROM pg_class WHERE relname = '{name}'");
            assert_eq!(db.count(&sql).await, 0, "{name}: no table left");
        } else if name == &this_month {
            let now = after.iter().find(|(n, _)| n == name).expect("kept").1;
            assert_eq!(now, rows + 50 * during.len() as i64, "every drained message written");
        } else {
            assert_eq!(after.iter().find(|(n, _)| n == name), Some(&(name.clone(), *rows)), "kept whole");
        }
    }
    assert_eq!(db.count("SELECT count(*) FROM login_data.user_logins_2025_04").await, 11);

    let again = partitions::expire(&mut maintainer, &Cancel::new(&db.config, NoTls), Some(d("2025-04-01")))
        .await
        .expect("again");
    assert!(again.dropped.is_empty(), "idempotent: {again:?}");

    // A late message for a dropped month: counted, quarantined, never lost.
    let late = vec![("late".to_owned(), login_body("u1", "198.51.100.1", "d1"), ms("2025-02-14"))];
    let fresh = cold_start(&db, &kms).await;
    let (_, stats) = handler::handle_with_stats(&fresh, event_sent_at(&late)).await.expect("late");
    assert_eq!((stats.written, stats.quarantined), (0, 1));
    assert_eq!(stats.rejected_by_reason.get("no_partition"), Some(&1));
    assert_eq!(quarantined_ids(&db).await, vec!["late".to_owned()]);
}

/// A `DETACH … CONCURRENTLY` interrupted (its wait for a read timed out) leaves the
/// partition pending detach: it takes no row any more and covers nothing; the next run
/// finishes it (`FINALIZE`) and drops it, counted.
#[tokio::test]
async fn a_detach_left_pending_by_an_interrupted_run_is_finished_by_the_next() {
    let db = TestDb::new().await;
    let app = cold_start(&db, &new_kms().await).await;
    let records: Vec<(String, String, i64)> =
        (0..4).map(|i| (format!("m{i}"), login_body("u", "198.51.100.3", "d3"), ms("2025-02-03"))).collect();
    handler::handle_with_stats(&app, event_sent_at(&records)).await.expect("filled");
    db.leave_pending_detach("user_logins_2025_02").await;
    let map = PartitionMap::load(&db.connect().await).await.expect("map");
    assert!(map.detaching().iter().map(|(name, _)| name.as_str()).eq(["user_logins_2025_02"]));
    assert!(!map.covers(d("2025-02-03")), "a pending partition takes no row");

    let mut maintainer = connect(&db.login_in("login_etl_partition_maintainer").await).await;
    // Months before March go: the pending one first, then January.
    let run = partitions::expire(&mut maintainer, &Cancel::new(&db.config, NoTls), Some(d("2025-03-01")))
        .await
        .expect("next run");
    assert!(
        run.dropped
            .iter()
            .map(|x| (x.name.as_str(), x.rows))
            .eq([("user_logins_2025_02", 4), ("user_logins_2025_01", 0)]),
        "{run:?}"
    );
    assert!(PartitionMap::load(&maintainer).await.expect("map").detaching().is_empty());
    assert_eq!(db.count("SELECT count(*) FROM pg_class WHERE relname = 'user_logins_2025_02'").await, 0);
    assert!(partitions_of(&db).await.iter().any(|(name, _, _)| name == "user_logins_2025_03"), "March kept");
}

/// The upgrade's `user_logins_before_YYYY_MM` (every date before its bound) is dropped once
/// the bound is at or before the cutoff, and not a day earlier.
#[tokio::test]
async fn the_upgrades_old_table_goes_once_its_bound_is_past_the_cutoff() {
    let db = TestDb::at_version(12).await;
    let app = cold_start(&db, &new_kms().await).await;
    handler::handle_with_stats(&app, event(&many_logins(120, "old"))).await.expect("filled");
    db.migrate().await;
    let bound = month(Utc::now().date_naive()).checked_add_months(chrono::Months::new(2)).expect("bound");
    let legacy = format!("user_logins_before_{}", bound.format("%Y_%m"));
    let mut maintainer = connect(&db.login_in("login_etl_partition_maintainer").await).await;

    let early = bound.pred_opt().expect("day");
    let kept = partitions::expire(&mut maintainer, &Cancel::new(&db.config, NoTls), Some(early))
        .await
        .expect("a day early");
    assert!(!kept.dropped.iter().any(|x| x.name == legacy), "{kept:?}");
    assert!(partitions_of(&db).await.iter().any(|(name, _, _)| name == &legacy));

    let run = partitions::expire(&mut maintainer, &Cancel::new(&db.config, NoTls), Some(bound))
        .await
        .expect("retention");
    let dropped = run.dropped.iter().find(|x| x.name == legacy).expect("the old table dropped");
    assert_eq!((dropped.range.from, dropped.range.to, dropped.rows), (None, Some(bound), 120));
    assert!(!partitions_of(&db).await.iter().any(|(name, _, _)| name == &legacy));
}
