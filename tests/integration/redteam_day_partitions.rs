//! Red team of `PARTITION_INTERVAL=day` (commit c4b720c) as the ingest function meets it:
//! the function's map (`PartitionMap`, its `covers` now a binary search) against what the
//! catalog really routes, with day partitions mixed with a month, an upgrade's
//! `user_logins_before_…` (unbounded below), a gap, a partition pending detach, one
//! unbounded above, a DEFAULT partition; and a batch across a year's end whose day
//! partitions go (dropped, left pending detach) between the map's read and the write. Every
//! message must be written to its UTC day's partition or quarantined `no_partition`, never
//! lost. Each test fails if its attack succeeds.

use chrono::{NaiveDate, TimeDelta};
use login_etl::handler;
use login_etl_core::store::partitions::{self, Interval, PartitionMap, Window, partition_name};
use testkit::{TestDb, cold_start, login_body, new_kms, quarantined_ids};
use tokio_postgres::error::SqlState;

use crate::partitions::{d, event_sent_at};

async fn fresh() -> (TestDb, tokio_postgres::Client) {
    let db = TestDb::empty().await;
    let mut client = db.connect().await;
    login_etl_migrations::migrate(&mut client).await.expect("migrate");
    (db, client)
}

/// For every date from `from` to `to`: whether the map covers it, and whether the catalog
/// takes a row of that date (an INSERT, rolled back). The dates where they disagree.
async fn disagreements(client: &mut tokio_postgres::Client, from: NaiveDate, to: NaiveDate) -> Vec<String> {
    let map = PartitionMap::load(&*client).await.expect("map");
    let mut wrong = Vec::new();
    for day in from.iter_days().take_while(|day| *day < to) {
        let tx = client.transaction().await.expect("tx");
        let taken = tx
            .execute(
                "INSERT INTO login_data.user_logins (sqs_message_id, create_date) VALUES ('probe', $1)",
                &[&day],
            )
            .await;
        tx.rollback().await.expect("rollback");
        let taken = match taken {
            Ok(_) => true,
            Err(error) if error.code() == Some(&SqlState::CHECK_VIOLATION) => false,
            Err(error) => panic!("{day}: {error}"),
        };
        if taken != map.covers(day) {
            wrong.push(format!("{day}: catalog takes it: {taken}, map covers it: {}", map.covers(day)));
        }
    }
    wrong
}

/// The map's binary search against the catalog's routing, date by date over seven months,
/// for a map mixing an upgrade's table unbounded below (bound mid-month), days, a whole
/// month, a day dropped (a gap), a month without partition, a day pending detach, and a
/// partition unbounded above; then the same with a DEFAULT partition added (every date
/// taken). A date the map covers but the catalog refuses would fail its batch on every
/// delivery; one the catalog takes but the map does not would be quarantined for nothing.
#[tokio::test]
async fn the_map_covers_exactly_the_dates_the_catalog_takes_with_day_partitions_mixed_in() {
    let (db, mut client) = fresh().await;
    client
        .batch_execute(
            "CREATE TABLE login_data.user_logins_before_2025_11 PARTITION OF login_data.user_logins
                 FOR VALUES FROM (MINVALUE) TO ('2025-11-15')",
        )
        .await
        .expect("an upgrade's table");
    let day = Interval::Day;
    partitions::ensure(&mut client, Window { from: d("2025-11-01"), to: d("2025-12-01") }, day)
        .await
        .expect("days");
    partitions::ensure(&mut client, Window { from: d("2025-12-01"), to: d("2026-01-01") }, Interval::Month)
        .await
        .expect("a month");
    partitions::ensure(&mut client, Window { from: d("2026-01-01"), to: d("2026-02-01") }, day)
        .await
        .expect("days");
    client
        .batch_execute(
            "ALTER TABLE login_data.user_logins DETACH PARTITION login_data.user_logins_2025_11_20;
             DROP TABLE login_data.user_logins_2025_11_20;
             CREATE TABLE login_data.user_logins_after PARTITION OF login_data.user_logins
                 FOR VALUES FROM ('2026-03-01') TO (MAXVALUE)",
        )
        .await
        .expect("a gap, and a partition unbounded above");
    db.leave_pending_detach("user_logins_2026_01_05").await;
    let map = PartitionMap::load(&client).await.expect("map");
    assert!(map.detaching().iter().map(|(n, _)| n.as_str()).eq(["user_logins_2026_01_05"]));
    assert!(map.partitions().len() > 40, "{}", map.partitions().len());

    let wrong = disagreements(&mut client, d("2025-10-01"), d("2026-05-01")).await;
    assert!(wrong.is_empty(), "the map and the catalog disagree:\n{}", wrong.join("\n"));
    for (date, covered) in [
        ("2025-11-14", true),
        ("2025-11-20", false),
        ("2026-01-05", false),
        ("2026-02-14", false),
        ("2030-01-01", true),
    ] {
        assert_eq!(map.covers(d(date)), covered, "{date}");
    }

    // The pending detach finished, a DEFAULT partition added: every date is taken.
    client
        .batch_execute(
            "ALTER TABLE login_data.user_logins DETACH PARTITION login_data.user_logins_2026_01_05 FINALIZE;
             CREATE TABLE login_data.user_logins_default PARTITION OF login_data.user_logins DEFAULT",
        )
        .await
        .expect("a DEFAULT partition");
    let wrong = disagreements(&mut client, d("2025-10-01"), d("2026-05-01")).await;
    assert!(wrong.is_empty(), "with a DEFAULT partition:\n{}", wrong.join("\n"));
}

fn at(text: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(text).expect("time").timestamp_millis()
}

/// A batch across a year's end on day partitions, each day's first and last millisecond,
/// after the function read its map: one day's partition then dropped, the next day's left
/// pending detach. The first delivery (dates the stale map covers) fails whole (nothing
/// half-written); its redelivery, with messages dated before and after every partition
/// added, writes each message to its UTC day's
/// partition and quarantines (`no_partition`) exactly those no partition takes; a third
/// delivery adds nothing. No message is lost or written to another day.
#[tokio::test]
async fn a_batch_across_a_year_end_on_day_partitions_is_written_to_its_days_or_quarantined_never_lost() {
    let (db, mut client) = fresh().await;
    partitions::ensure(&mut client, Window { from: d("2025-12-01"), to: d("2026-02-01") }, Interval::Day)
        .await
        .expect("days");
    let app = cold_start(&db, &new_kms().await).await;
    client
        .batch_execute(
            "ALTER TABLE login_data.user_logins DETACH PARTITION login_data.user_logins_2025_12_31;
             DROP TABLE login_data.user_logins_2025_12_31",
        )
        .await
        .expect("a day dropped");
    db.leave_pending_detach("user_logins_2026_01_01").await;

    let mut sent = Vec::new();
    for day in d("2025-12-29").iter_days().take_while(|day| *day < d("2026-01-04")) {
        sent.push(day.and_hms_opt(0, 0, 0).expect("midnight").and_utc().timestamp_millis());
        sent.push(day.and_hms_milli_opt(23, 59, 59, 999).expect("last ms").and_utc().timestamp_millis());
    }
    sent.extend([at("2025-11-30T23:59:59.999Z"), at("2026-02-01T00:00:00Z"), at("2026-01-31T23:59:59.999Z")]);
    let records: Vec<(String, String, i64)> = sent
        .iter()
        .enumerate()
        .map(|(i, ms)| (format!("yr-{i:02}"), login_body(&format!("u{i}"), "198.51.100.4", "d4"), *ms))
        .collect();
    let date_of = |ms: i64| chrono::DateTime::from_timestamp_millis(ms).expect("time").date_naive();
    let no_partition = |date: NaiveDate| {
        date < d("2025-12-01")
            || date >= d("2026-02-01")
            || date == d("2025-12-31")
            || date == d("2026-01-01")
    };

    // First delivered without the dates no partition ever had (those would make the
    // function read its map again before preparing): its stale map covers every date.
    let covered_then: Vec<(String, String, i64)> = records
        .iter()
        .filter(|(_, _, ms)| date_of(*ms) >= d("2025-12-01") && date_of(*ms) < d("2026-02-01"))
        .cloned()
        .collect();
    assert!(covered_then.iter().all(|(_, _, ms)| app.partitions().covers(date_of(*ms))));
    let first = handler::handle_with_stats(&app, event_sent_at(&covered_then)).await;
    assert!(first.is_err(), "the stale map's write cannot succeed: {:?}", first.map(|(_, s)| s));
    assert_eq!(db.count("SELECT count(*) FROM login_data.user_logins").await, 0, "nothing half-written");

    let (response, again) =
        handler::handle_with_stats(&app, event_sent_at(&records)).await.expect("redelivery");
    assert!(response.batch_item_failures.is_empty());
    let expected_quarantined: Vec<String> =
        records.iter().filter(|(_, _, ms)| no_partition(date_of(*ms))).map(|(id, _, _)| id.clone()).collect();
    assert_eq!(expected_quarantined.len(), 6);
    assert_eq!(again.written as usize + expected_quarantined.len(), records.len());
    assert_eq!(again.rejected_by_reason.get("no_partition"), Some(&expected_quarantined.len()));
    assert_eq!(quarantined_ids(&db).await, expected_quarantined);
    for (id, _, ms) in records.iter().filter(|(_, _, ms)| !no_partition(date_of(*ms))) {
        let row = client
            .query_one(
                "SELECT tableoid::regclass::text, create_date FROM login_data.user_logins WHERE sqs_message_id = $1",
                &[id],
            )
            .await
            .unwrap_or_else(|error| panic!("{id} lost: {error}"));
        let (table, date): (String, NaiveDate) = (row.get(0), row.get(1));
        assert_eq!(date, date_of(*ms), "{id}");
        let day_partition = partition_name(date, date + TimeDelta::days(1));
        assert_eq!(table, format!("login_data.{day_partition}"), "{id}");
    }

    let (_, third) = handler::handle_with_stats(&app, event_sent_at(&records)).await.expect("third");
    assert_eq!((third.written, third.already_present), (0, again.written));
    assert_eq!(db.count("SELECT count(*) FROM login_data.user_logins").await, again.written as i64);
    assert_eq!(
        db.count("SELECT count(DISTINCT message_id) FROM login_data.login_quarantine").await,
        expected_quarantined.len() as i64
    );
}
