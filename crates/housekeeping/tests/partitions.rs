//! The scheduled partition maintenance as it runs in AWS: its own login (in
//! `login_etl_partition_maintainer`), its pool (nothing set on the session), here through
//! PgBouncer in transaction mode (consecutive transactions on other server connections):
//! every month of its window made once, as the owner, and nothing the second time; the
//! months past its retention dropped once; with `PARTITION_INTERVAL=day` the same a day
//! at a time; bad settings refused at the binary's start.

use std::time::Duration;

use chrono::{Months, Utc};
use login_etl_core::store;
use login_etl_core::store::partitions::{Cancel, Interval, Window, next_month, partition_name};
use login_etl_housekeeping::partitions::{self, Settings};
use testkit::*;
use tokio_postgres::NoTls;

/// A new database, migrated without partitions, and the maintenance's own login behind
/// PgBouncer (transaction mode, one server connection), with its function's pool.
async fn maintainer_through_pooler() -> (TestDb, PgBouncer, deadpool_postgres::Pool) {
    let db = TestDb::empty().await;
    login_etl_migrations::migrate(&mut db.connect().await).await.expect("migrate");
    let login = db.login_in("login_etl_partition_maintainer").await;
    let bouncer = PgBouncer::in_front_of(&login, 1).await;
    let pool = store::stateless_pool(bouncer.config.clone().into(), 1).expect("pool");
    (db, bouncer, pool)
}

/// Two runs of the maintenance, one after the other.
async fn twice(
    pool: &deadpool_postgres::Pool,
    bouncer: &PgBouncer,
    settings: Settings,
    today: chrono::NaiveDate,
) -> [store::partitions::Maintenance; 2] {
    let mut runs = Vec::new();
    for _ in 0..2 {
        let client = &mut pool.get().await.expect("connection");
        let run = partitions::run(client, &Cancel::new(&bouncer.config, NoTls), settings, today).await;
        runs.push(run.unwrap_or_else(|error| panic!("{error:?}\n{}", bouncer.log())));
    }
    [runs.remove(0), runs.remove(0)]
}

#[tokio::test]
async fn the_maintenance_as_its_own_login_through_a_transaction_pooler_makes_its_window_once() {
    let (db, bouncer, pool) = maintainer_through_pooler().await;
    let settings =
        Settings { days_back: 45, months_ahead: 3, interval: Interval::Month, retention_months: None };
    let today = Utc::now().date_naive();

    let [first, again] = twice(&pool, &bouncer, settings, today).await;

    let window = settings.window(today);
    let mut expected = Vec::new();
    let mut month = window.from;
    while month < window.to {
        expected.push(partition_name(month, next_month(month)));
        month = month.checked_add_months(Months::new(1)).expect("month");
    }
    assert_eq!(first.created, expected);
    assert!(again.created.is_empty());
    let owners = db
        .texts(
            "SELECT DISTINCT pg_get_userbyid(c.relowner)::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
              WHERE i.inhparent = 'login_data.user_logins'::regclass",
            &[],
        )
        .await;
    assert_eq!(owners, ["login_etl_partition_owner"]);
}

/// With a retention, the same run through the pooler also drops the months wholly before
/// the cutoff (here two old months made by hand), logs them counted, and the next run drops
/// nothing; `DETACH … CONCURRENTLY` runs alone, its wait bounded by a cancel request that
/// goes through the pooler too.
#[tokio::test]
async fn the_maintenance_through_a_transaction_pooler_drops_the_months_past_its_retention_once() {
    let (db, bouncer, pool) = maintainer_through_pooler().await;
    let today = Utc::now().date_naive();
    let settings =
        Settings { days_back: 45, months_ahead: 1, interval: Interval::Month, retention_months: Some(2) };
    let cutoff = settings.cutoff(today).expect("a cutoff");
    let old = Window { from: cutoff.checked_sub_months(Months::new(2)).expect("month"), to: cutoff };
    store::partitions::ensure(&mut pool.get().await.expect("connection"), old, Interval::Month)
        .await
        .expect("old months");
    db.connect()
        .await
        .execute(
            "INSERT INTO login_data.user_logins (sqs_message_id, create_date) VALUES ('a', $1), ('b', $1)",
            &[&old.from],
        )
        .await
        .expect("rows");

    // A read of the oldest month, open for 1.5 s: the DETACH waits for it, is cancelled
    // through the pooler after 0.5 s, and finished (FINALIZE) once the read is over.
    let reader = db.connect().await;
    let sql =
        format!("BEGIN; SELECT count(*) FROM login_data.{}", partition_name(old.from, next_month(old.from)));
    reader.batch_execute(&sql).await.expect("an open read");
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        reader.batch_execute("COMMIT").await.expect("read ends");
    });
    let started = std::time::Instant::now();
    let [first, again] = twice(&pool, &bouncer, settings, today).await;
    assert!(started.elapsed() >= Duration::from_millis(1400), "{:?}", started.elapsed());
    assert!(first.lock_timeouts >= 1, "the DETACH was cancelled, its FINALIZE waited: {first:?}");
    release.await.expect("released");

    let dropped: Vec<(String, i64)> = first.dropped.iter().map(|x| (x.name.clone(), x.rows)).collect();
    let second = old.from.checked_add_months(Months::new(1)).expect("month");
    assert_eq!(
        dropped,
        [
            (partition_name(old.from, next_month(old.from)), 2),
            (partition_name(second, next_month(second)), 0)
        ]
    );
    assert!(again.dropped.is_empty() && again.created.is_empty(), "{again:?}");
    let left = db.partition_names().await;
    let first_kept = settings.window(today).from;
    assert_eq!(left.first(), Some(&partition_name(first_kept, next_month(first_kept))), "{left:?}");
}

/// With a day interval the same run makes the window a day at a time but leaves a month
/// made before the switch as it is, and its retention drops every day before the cutoff,
/// oldest first, each counted, and nothing after it.
#[tokio::test]
async fn a_day_interval_makes_days_keeps_a_month_made_before_and_drops_the_days_past_its_retention() {
    let (db, bouncer, pool) = maintainer_through_pooler().await;
    let today = Utc::now().date_naive();
    let settings =
        Settings { days_back: 45, months_ahead: 1, interval: Interval::Day, retention_months: Some(2) };
    let (cutoff, window) = (settings.cutoff(today).expect("a cutoff"), settings.window(today));
    // Two old months made a day at a time by an earlier run, the window's first month
    // made whole before the switch to days.
    let old = Window { from: cutoff.checked_sub_months(Months::new(2)).expect("month"), to: cutoff };
    let first_month = Window { from: window.from, to: next_month(window.from) };
    let mut client = pool.get().await.expect("connection");
    store::partitions::ensure(&mut client, old, Interval::Day).await.expect("old days");
    store::partitions::ensure(&mut client, first_month, Interval::Month).await.expect("the month before");
    drop(client);
    let last_old_day = cutoff.pred_opt().expect("a day");
    db.connect()
        .await
        .execute(
            "INSERT INTO login_data.user_logins (sqs_message_id, create_date)
             VALUES ('first', $1), ('last', $2), ('last', $1), ('kept', $3)",
            &[&old.from, &last_old_day, &window.from],
        )
        .await
        .expect("rows");

    let [first, again] = twice(&pool, &bouncer, settings, today).await;

    let days = |from: chrono::NaiveDate, to: chrono::NaiveDate| -> Vec<String> {
        from.iter_days()
            .take_while(|day| *day < to)
            .map(|day| partition_name(day, day.succ_opt().expect("a day")))
            .collect()
    };
    assert_eq!(first.created, days(first_month.to, window.to));
    assert!(again.created.is_empty() && again.dropped.is_empty(), "{again:?}");
    let dropped: Vec<(String, i64)> = first.dropped.iter().map(|x| (x.name.clone(), x.rows)).collect();
    let expected: Vec<(String, i64)> = days(old.from, old.to)
        .into_iter()
        .map(|name| {
            let rows = if name == partition_name(old.from, old.from.succ_opt().expect("day")) {
                2
            } else {
                i64::from(name == partition_name(last_old_day, cutoff))
            };
            (name, rows)
        })
        .collect();
    assert_eq!(dropped, expected);
    let left = db.partition_names().await;
    let mut made = vec![partition_name(first_month.from, first_month.to)];
    made.extend(days(first_month.to, window.to));
    made.sort();
    assert_eq!(left, made);
    assert_eq!(db.texts("SELECT sqs_message_id FROM login_data.user_logins", &[]).await, ["kept"]);
}

/// The function's start refuses a bad setting before it reads any secret or database, and
/// says which.
#[test]
fn the_function_refuses_bad_settings_at_start() {
    for (var, value, says) in [
        ("USER_LOGINS_RETENTION_MONTHS", "-1", "USER_LOGINS_RETENTION_MONTHS"),
        ("USER_LOGINS_RETENTION_MONTHS", "2", "would drop months inside PARTITION_DAYS_BACK"),
        ("PARTITION_DAYS_BACK", "30", "shorter than the oldest date a message can still carry"),
        ("PARTITION_INTERVAL", "week", "expected month or day"),
    ] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_partition-maintenance"))
            .env_clear()
            .env(var, value)
            .output()
            .expect("runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{var}={value} started");
        assert!(stderr.contains(var) && stderr.contains(says), "{var}={value}: {stderr}");
    }
}
