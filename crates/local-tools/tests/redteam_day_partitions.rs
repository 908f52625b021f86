//! Red team of `PARTITION_INTERVAL` (commit c4b720c) as `migrate`, the binary, reads it:
//! exactly `month` or `day` (surrounding blanks trimmed), unset or blank meaning `month`;
//! anything else refused before the database is touched (no migration applied, no
//! partition made).

use testkit::*;

/// `migrate` on a new database with `PARTITION_INTERVAL` set to `value` (`None`: unset),
/// a window of this month only; whether it succeeded, and its stderr.
fn migrate(db: &TestDb, value: Option<&str>) -> (bool, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_migrate"));
    command
        .env_remove("PARTITION_INTERVAL")
        .env("DATABASE_URL", url_of(&db.config))
        .env("PARTITION_DAYS_BACK", "0")
        .env("PARTITION_MONTHS_AHEAD", "0");
    if let Some(value) = value {
        command.env("PARTITION_INTERVAL", value);
    }
    let output = command.output().expect("run migrate");
    (output.status.success(), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[tokio::test]
async fn migrate_refuses_a_malformed_interval_before_touching_the_database() {
    for value in ["Day", "DAY", "Month", "daily", "days", "monthly", "week", "d", "1", "day;", "day month"] {
        let db = TestDb::empty().await;
        let (ok, stderr) = migrate(&db, Some(value));
        assert!(!ok, "{value:?} accepted");
        assert!(
            stderr.contains("PARTITION_INTERVAL is malformed: expected month or day"),
            "{value:?}: {stderr}"
        );
        let applied =
            db.count("SELECT count(*) FROM pg_class WHERE relname = 'refinery_schema_history'").await;
        assert_eq!(applied, 0, "{value:?}: migrations applied before the setting was refused");
    }
}

#[tokio::test]
async fn migrate_takes_unset_or_blank_as_month_and_day_trimmed_as_day() {
    let today = chrono::Utc::now().date_naive();
    let month = format!("user_logins_{}", today.format("%Y_%m"));
    let first_day = format!("user_logins_{}_01", today.format("%Y_%m"));
    for (value, day) in [
        (None, false),
        (Some(""), false),
        (Some("  "), false),
        (Some("month"), false),
        (Some(" day "), true),
        (Some("day"), true),
    ] {
        let db = TestDb::empty().await;
        let (ok, stderr) = migrate(&db, value);
        assert!(ok, "{value:?}: {stderr}");
        let made = db.partition_names().await;
        if day {
            assert_eq!(made.first(), Some(&first_day), "{value:?}");
            assert!(
                made.len() >= 28 && made.iter().all(|name| name.len() == month.len() + 3),
                "{value:?}: {made:?}"
            );
        } else {
            assert_eq!(made, std::slice::from_ref(&month), "{value:?}");
        }
    }
}

/// A table that is not a partition holding one day's name: `migrate` makes every other day
/// of the window, then fails naming the one it could not make; the table is left alone.
#[tokio::test]
async fn migrate_makes_every_other_day_and_fails_naming_a_day_whose_name_a_stray_table_holds() {
    let db = TestDb::empty().await;
    let (ok, stderr) = migrate(&db, Some("month"));
    assert!(ok, "{stderr}");
    let today = chrono::Utc::now().date_naive();
    let month = format!("user_logins_{}", today.format("%Y_%m"));
    // Move this month's partition out of the way, and leave a stray table under its first
    // day's name.
    let stray = format!("{month}_01");
    db.connect()
        .await
        .batch_execute(&format!(
            "ALTER TABLE login_data.user_logins DETACH PARTITION login_data.{month}; DROP TABLE login_data.{month};
             CREATE TABLE login_data.{stray} (note text); INSERT INTO login_data.{stray} VALUES ('kept')"
        ))
        .await
        .expect("stray table");

    let (ok, stderr) = migrate(&db, Some("day"));

    assert!(!ok, "a blocked day went unreported");
    assert!(
        stderr.contains("a table that is not a partition holds their names") && stderr.contains(&stray),
        "{stderr}"
    );
    let made = db.partition_names().await;
    let first = today - chrono::Days::new(u64::from(chrono::Datelike::day(&today)) - 1);
    let days_in_month = (first.checked_add_months(chrono::Months::new(1)).expect("month") - first).num_days();
    assert_eq!(i64::try_from(made.len()).expect("count"), days_in_month - 1, "{made:?}");
    assert!(!made.contains(&stray), "{made:?}");
    assert_eq!(db.count(&format!("SELECT count(*) FROM login_data.{stray}")).await, 1);
}
