//! Red team, issue 19: the partition retention's name-parsing path. A table the retention
//! finds detached (an interrupted run's leftover) is dropped by the range its name says;
//! these tests try to make that path drop rows inside the retention, or a table that is not
//! the maintenance's.

use chrono::NaiveDate;
use login_etl_core::store::partitions::{self, Cancel};
use testkit::*;
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

fn date(text: &str) -> NaiveDate {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").expect("date")
}

/// A standalone `login_data.{name}` shaped like `user_logins`, owned by `owner`, holding one
/// login dated `dated` (what an interrupted detach leaves, or an upgrade's legacy table).
async fn plant(db: &TestDb, name: &str, owner: &str, dated: &str) {
    db.connect()
        .await
        .batch_execute(&format!(
            "CREATE TABLE login_data.{name} (LIKE login_data.user_logins INCLUDING DEFAULTS);
             INSERT INTO login_data.{name} (sqs_message_id, create_date) VALUES ('rt19-{name}', '{dated}');
             ALTER TABLE login_data.{name} OWNER TO {owner};"
        ))
        .await
        .expect("plant");
}

async fn exists(db: &TestDb, name: &str) -> bool {
    db.count(&format!("SELECT count(*) FROM pg_class WHERE relname = '{name}'")).await == 1
}

/// The retention as the maintenance's own login runs it, with `cutoff`.
async fn retention(
    db: &TestDb,
    cutoff: &str,
) -> Result<partitions::Maintenance, login_etl_core::store::StoreError> {
    let login = db.login_in("login_etl_partition_maintainer").await;
    let mut client = connect(&login).await;
    partitions::expire(&mut client, &Cancel::new(&login, NoTls), Some(date(cutoff))).await
}

/// The upgrade names its legacy table by the month of its bound (`user_logins_before_YYYY_MM`),
/// but a bound prepared by the operator (docs/operations.md, "Upgrading to partitions") may
/// fall mid-month: the table then holds rows dated after the month its name says. Left
/// detached by an interrupted run, it must not be dropped by its name while it holds a row
/// dated on or after the cutoff.
#[tokio::test]
async fn a_detached_table_whose_name_says_an_older_range_than_its_rows_is_not_dropped() {
    let db = TestDb::new().await;
    // Rows up to 2020-02-14 (a bound of 2020-02-15), named by the month: "before 2020-02".
    plant(&db, "user_logins_before_2020_02", "login_etl_partition_owner", "2020-02-10").await;
    let _ = retention(&db, "2020-02-01").await;
    assert!(
        exists(&db, "user_logins_before_2020_02").await,
        "a table holding a login dated after the cutoff was dropped by its name"
    );
    // Past its rows, it goes.
    let run = retention(&db, "2020-03-01").await.expect("retention");
    assert!(!exists(&db, "user_logins_before_2020_02").await);
    assert_eq!(run.dropped.iter().map(|d| d.rows).sum::<i64>(), 1);
}

/// A month's table renamed (or made) with a misleading name: `user_logins_2020_01` holding
/// a login of 2026. Never dropped by its name.
#[tokio::test]
async fn a_detached_month_holding_a_recent_login_is_not_dropped_by_its_name() {
    let db = TestDb::new().await;
    plant(&db, "user_logins_2020_01", "login_etl_partition_owner", "2026-11-20").await;
    let _ = retention(&db, "2020-06-01").await;
    assert!(exists(&db, "user_logins_2020_01").await, "a table with a login of 2026 dropped as January 2020");
}

/// Only the owner's tables are the maintenance's leftovers: one of another owner in
/// `login_data`, named as a month long past, stays.
#[tokio::test]
async fn a_table_of_another_owner_named_as_an_old_month_is_never_dropped() {
    let db = TestDb::new().await;
    plant(&db, "user_logins_2019_01", "login_etl_vault_service", "2019-01-10").await;
    let run = retention(&db, "2020-06-01").await.expect("retention");
    assert!(exists(&db, "user_logins_2019_01").await);
    assert!(run.dropped.iter().all(|d| d.name != "user_logins_2019_01"), "{run:?}");
}

/// The writer cannot plant such a table: no CREATE in `login_data` (nor a partition of
/// `user_logins`, nor a detach).
#[tokio::test]
async fn the_writer_cannot_plant_a_table_the_retention_reads_by_name() {
    let db = TestDb::new().await;
    let writer = connect(&db.login_in("login_etl_writer").await).await;
    for sql in [
        "CREATE TABLE login_data.user_logins_2019_02 (x int)",
        "CREATE TABLE login_data.user_logins_2019_03 PARTITION OF login_data.user_logins
             FOR VALUES FROM ('2019-03-01') TO ('2019-04-01')",
        "ALTER TABLE login_data.user_logins DETACH PARTITION login_data.user_logins_2025_11",
        "ALTER TABLE login_data.user_logins_2025_11 RENAME TO user_logins_2019_04",
    ] {
        let error = writer.batch_execute(sql).await.expect_err(sql);
        assert!(
            matches!(error.code(), Some(c) if *c == SqlState::INSUFFICIENT_PRIVILEGE || *c == SqlState::UNDEFINED_TABLE),
            "{sql}: {error}"
        );
    }
    assert!(!exists(&db, "user_logins_2019_02").await);
}

/// An operator's hostile `USER_LOGINS_RETENTION_MONTHS`: refused at start unless it is a
/// whole number of months that keeps every date a message can still carry; what is
/// accepted means exactly its months, and its cutoff never reaches into the window.
#[test]
fn a_hostile_partition_retention_is_refused_at_start_or_keeps_the_window() {
    use login_etl_housekeeping::partitions::Settings;
    let with = |value: &str| {
        let value = value.to_owned();
        Settings::from_vars(move |name| (name == "USER_LOGINS_RETENTION_MONTHS").then(|| value.clone()))
    };
    for bad in [
        "0",
        "-1",
        "1",
        "2",
        "١٢",
        "１２",
        "12 months",
        "1e1",
        "0x0c",
        "12.0",
        "1201",
        "4294967297",
        "12\u{0}",
    ] {
        assert!(with(bad).is_err(), "accepted {bad:?}");
    }
    for (good, months) in [(" 12 ", 12), ("+12", 12), ("\u{a0}6", 6), ("1200", 1200)] {
        let settings = with(good).expect(good);
        assert_eq!(settings.retention_months, Some(months), "{good:?}");
        for today in ["2026-03-31", "2026-12-06", "2027-02-28"] {
            let today = date(today);
            let cutoff = settings.cutoff(today).expect("cutoff");
            assert!(cutoff <= settings.window(today).from, "{good:?} on {today}: {cutoff} inside the window");
        }
    }
}
