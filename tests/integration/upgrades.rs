//! Upgrades in place: a database an earlier release left, filled through the function,
//! migrated while batches keep coming (V13: `user_logins` partitioned; V17: the masks
//! indexed by hash), and each migration applied without `migrate`'s preparation, as
//! another tool would.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use login_etl::handler;
use login_etl_core::store::partitions;
use testkit::{TestDb, cold_start, event, many_logins, new_kms};

use crate::mask_indexes::{assert_lookup_uses_hash, assert_masks_hashed_everywhere, mask_indexes};
use crate::partitions::{batches_until_stopped, month, partitions_of, run_batches};

/// A database migrated up to `version`, `rows` new logins written into it through the
/// function; the function and those logins.
pub(crate) async fn filled_at(
    version: i32,
    rows: usize,
) -> (TestDb, Arc<login_etl::App>, Vec<(String, String)>) {
    filled_with(version, many_logins(rows, "old")).await
}

/// A database migrated up to `version`, `logins` written into it through the function;
/// the function and those logins.
pub(crate) async fn filled_with(
    version: i32,
    logins: Vec<(String, String)>,
) -> (TestDb, Arc<login_etl::App>, Vec<(String, String)>) {
    let db = TestDb::at_version(version).await;
    let app = Arc::new(cold_start(&db, &new_kms().await).await);
    let (_, filled) = handler::handle_with_stats(&app, event(&logins)).await.expect("filled");
    assert_eq!(filled.written, u64::try_from(logins.len()).expect("rows"));
    (db, app, logins)
}

/// A database V1–V12 made, filled through the function, migrated while batches keep
/// coming and a person's read holds the table: every row is kept (the old table is now the partition of every date before its
/// bound), no batch fails or waits more than 2 s beyond its normal time, the old rows stay
/// idempotent under the new key, and new months get partitions of their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v12_database_filled_through_the_function_upgrades_in_place_while_ingest_runs() {
    let (db, app, old) = filled_at(12, 300).await;
    let normal = run_batches(&app, "before", 5).await.into_iter().max().expect("batches");

    let running = Arc::new(AtomicBool::new(true));
    let ingest = batches_until_stopped(&app, &running);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A person's read through the view, open for 3 s as the migration starts: the
    // upgrade's locks wait for it at most 1 s a try, and are tried again.
    let reader = db.connect().await;
    reader.batch_execute("BEGIN; SELECT count(*) FROM public.user_logins").await.expect("an open read");
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        reader.batch_execute("COMMIT").await.expect("read ends");
    });
    let started = Instant::now();
    let applied = db.migrate().await;
    assert!(started.elapsed() >= Duration::from_secs(2), "the migration waited for the read");
    release.await.expect("released");
    tokio::time::sleep(Duration::from_millis(300)).await;
    running.store(false, Ordering::SeqCst);
    let during = ingest.await.expect("no batch failed");
    let rounds = during.len();

    assert!(applied.iter().any(|name| name.starts_with("V13__")), "{applied:?}");
    assert!(during.len() >= 2);
    let slowest = during.iter().max().copied().expect("batches");
    assert!(slowest <= normal + Duration::from_secs(2), "{slowest:?} against {normal:?}");
    assert_eq!(
        db.count("SELECT count(*) FROM login_data.user_logins").await,
        300 + 5 * 50 + rounds as i64 * 50,
        "every row kept"
    );
    let made = partitions_of(&db).await;
    let legacy =
        &made.iter().find(|(name, _, _)| name.starts_with("user_logins_before_")).expect("the old table").1;
    let bound = month(Utc::now().date_naive()).checked_add_months(chrono::Months::new(2)).expect("bound");
    assert_eq!(legacy, &format!("FOR VALUES FROM (MINVALUE) TO ('{bound}')"));
    assert!(
        made.iter()
            .any(|(name, _, _)| name == &partitions::partition_name(bound, partitions::next_month(bound))),
        "{made:?}"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM pg_constraint WHERE conrelid = 'login_data.user_logins'::regclass AND contype = 'p'")
            .await,
        1
    );

    // The old rows under the new key: a re-delivery adds nothing.
    let (_, again) = handler::handle_with_stats(&app, event(&old)).await.expect("again");
    assert_eq!((again.written, again.already_present), (0, 300));
    // The people's view reads the partitioned table.
    assert_eq!(
        db.count("SELECT count(*) FROM public.user_logins").await,
        db.count("SELECT count(*) FROM login_data.user_logins").await
    );
    // V17 after V13: the old table's masks too are indexed by hash.
    assert_masks_hashed_everywhere(&db).await;
}

/// V13 applied without `migrate`'s preparation (another tool, or by hand): it builds the
/// key's index, the BRIN and the range CHECK in its own transaction and keeps every row
/// all the same.
#[tokio::test]
async fn v13_alone_builds_what_the_preparation_would_have_and_keeps_every_row() {
    let (db, app, old) = filled_at(12, 200).await;
    let mut client = db.connect().await;

    let applied = login_etl_migrations::migrate_to_unprepared(&mut client, 13).await.expect("V13 alone");
    db.make_partitions(&mut client).await;

    assert_eq!(applied, ["V13__user_logins_partitioned"]);
    assert_eq!(db.count("SELECT count(*) FROM login_data.user_logins").await, 200);
    let made = partitions_of(&db).await;
    let bound = month(Utc::now().date_naive()).checked_add_months(chrono::Months::new(2)).expect("bound");
    let legacy =
        made.iter().find(|(name, _, _)| name.starts_with("user_logins_before_")).expect("the old table");
    assert_eq!(legacy.1, format!("FOR VALUES FROM (MINVALUE) TO ('{bound}')"));
    let (_, again) = handler::handle_with_stats(&app, event(&old)).await.expect("again");
    assert_eq!((again.written, again.already_present), (0, 200));
}

/// A database V16 left, filled through the function, migrated while batches keep coming:
/// each existing partition's hash indexes were built by the preparation (its names), V17
/// only attached them; every row is kept, no batch waits more than 2 s beyond its normal
/// time, the B-trees are gone, re-delivery still adds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v16_database_filled_through_the_function_gets_hash_indexes_in_place_while_ingest_runs() {
    let (db, app, old) = filled_at(16, 300).await;
    let before = db.partition_names().await;
    let normal = run_batches(&app, "before", 5).await.into_iter().max().expect("batches");

    let running = Arc::new(AtomicBool::new(true));
    let ingest = batches_until_stopped(&app, &running);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let applied = db.migrate().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    running.store(false, Ordering::SeqCst);
    let during = ingest.await.expect("no batch failed");

    assert_eq!(applied.first().map(String::as_str), Some("V17__mask_hash_indexes"), "{applied:?}");
    assert!(!during.is_empty());
    let slowest = during.iter().max().copied().expect("batches");
    assert!(slowest <= normal + Duration::from_secs(2), "{slowest:?} against {normal:?}");
    assert_eq!(
        db.count("SELECT count(*) FROM login_data.user_logins").await,
        300 + 5 * 50 + during.len() as i64 * 50,
        "every row kept"
    );
    assert_masks_hashed_everywhere(&db).await;
    let names: Vec<String> = mask_indexes(&db).await.into_iter().map(|(_, index, ..)| index).collect();
    for partition in &before {
        for column in ["masked_ip", "masked_device_id"] {
            let prepared = format!("{partition}_{column}_hash");
            assert!(names.contains(&prepared), "{prepared} built beforehand and attached: {names:?}");
        }
    }
    assert_lookup_uses_hash(&db).await;
    let (_, again) = handler::handle_with_stats(&app, event(&old)).await.expect("again");
    assert_eq!((again.written, again.already_present), (0, 300));
}

/// V17 applied without `migrate`'s preparation (another tool): it builds each partition's
/// hash indexes in its own transaction, and keeps every row.
#[tokio::test]
async fn v17_alone_builds_the_hash_indexes_and_keeps_every_row() {
    let (db, _app, _) = filled_at(16, 200).await;
    let mut client = db.connect().await;

    let applied = login_etl_migrations::migrate_to_unprepared(&mut client, 17).await.expect("V17 alone");

    assert_eq!(applied, ["V17__mask_hash_indexes"]);
    assert_eq!(db.count("SELECT count(*) FROM login_data.user_logins").await, 200);
    assert_masks_hashed_everywhere(&db).await;
}
