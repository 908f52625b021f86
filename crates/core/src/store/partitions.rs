//! `login_data.user_logins`'s monthly partitions (sql/V13__user_logins_partitioned.sql).
//!
//! - [`PartitionMap`]: which dates have a partition, read from the catalog. The function
//!   keeps one and quarantines a message whose date has none (reason `no_partition`)
//!   instead of failing its batch.
//! - [`ensure`]: the maintenance. Makes the partitions a [`Window`] of months lacks, each a
//!   standalone table then `ATTACH PARTITION` (SHARE UPDATE EXCLUSIVE on the parent, which
//!   INSERTs and reads do not conflict with; `CREATE TABLE … PARTITION OF` would take
//!   ACCESS EXCLUSIVE), every DDL transaction waiting at most [`DDL_LOCK_TIMEOUT`] for a
//!   lock and tried again up to [`DDL_TRIES`] times: no step holds ingest back for longer.
//!   Idempotent. The one code path that makes partitions: the scheduled
//!   `partition-maintenance` function, `migrate` (`make run`) and the tests call it.
//!
//! Every statement is free of session state (simple protocol or the unnamed statement;
//! `SET LOCAL` in its transaction), as the function's are.

use std::time::Duration;

use chrono::{Datelike, Months, NaiveDate};
use tokio_postgres::GenericClient;
use tokio_postgres::error::SqlState;

use super::StoreError;

/// The partitioned table.
pub const PARENT: &str = "login_data.user_logins";
/// The NOLOGIN role that owns it and its partitions; the maintenance acts as it.
pub const OWNER_ROLE: &str = "login_etl_partition_owner";
/// How long one DDL statement may wait for a lock (and so hold back the statements queued
/// behind its request) before its transaction gives up and is tried again.
pub const DDL_LOCK_TIMEOUT: Duration = Duration::from_millis(500);
/// Months made ahead of the current one when `PARTITION_MONTHS_AHEAD` is not set.
pub const DEFAULT_MONTHS_AHEAD: u32 = 2;
pub const MAX_MONTHS_AHEAD: u32 = 24;
/// How far back partitions are made when `PARTITION_DAYS_BACK` is not set: the oldest
/// date a message can still carry. The template's defaults: 7 days on the login queue, 14
/// in its dead-letter queue (a body imported into the quarantine from there keeps its
/// `SentTimestamp`), 14 in the quarantine (`QUARANTINE_RETENTION_DAYS`), 7 on the replay
/// queue: 42 days; rounded up to 60. The outage ride-out happens within the queue's 7 days.
pub const DEFAULT_DAYS_BACK: u32 = 60;
pub const MAX_DAYS_BACK: u32 = 3650;

/// `PARTITION_MONTHS_AHEAD` (0 to 24; unset or blank: 2).
pub fn months_ahead(value: Option<&str>) -> Result<u32, crate::config::ConfigError> {
    bounded_setting("PARTITION_MONTHS_AHEAD", value, DEFAULT_MONTHS_AHEAD, MAX_MONTHS_AHEAD)
}

/// `PARTITION_DAYS_BACK` (0 to 3650; unset or blank: 60).
pub fn days_back(value: Option<&str>) -> Result<u32, crate::config::ConfigError> {
    bounded_setting("PARTITION_DAYS_BACK", value, DEFAULT_DAYS_BACK, MAX_DAYS_BACK)
}

fn bounded_setting(
    var: &'static str,
    value: Option<&str>,
    default: u32,
    max: u32,
) -> Result<u32, crate::config::ConfigError> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(default),
        Some(text) => {
            text.parse().ok().filter(|n| *n <= max).ok_or_else(|| crate::config::ConfigError::Malformed {
                var,
                reason: format!("expected whole numbers from 0 to {max}"),
            })
        }
    }
}

/// How often a partition's DDL is tried before the run fails (the next run goes on).
pub const DDL_TRIES: u32 = 20;
/// The pause after a try that timed out, times the try's number (capped at 2 s).
const DDL_PAUSE: Duration = Duration::from_millis(200);

/// One partition's dates: `from` inclusive, `to` exclusive; `None` is unbounded
/// (`MINVALUE`, `MAXVALUE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateRange {
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
}

impl DateRange {
    pub fn contains(&self, date: NaiveDate) -> bool {
        self.from.is_none_or(|from| from <= date) && self.to.is_none_or(|to| date < to)
    }
}

/// The partitions of `user_logins` as the catalog lists them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionMap {
    partitions: Vec<(String, DateRange)>,
}

impl PartitionMap {
    /// Reads the partitions' bounds. The bound's text is cast back to `date` in the same
    /// statement, so the session's DateStyle reads what it wrote. A table not (yet)
    /// partitioned (before V13) takes every date: one unbounded entry.
    pub async fn load(client: &impl GenericClient) -> Result<PartitionMap, StoreError> {
        let rows = client
            .query_typed(
                r"SELECT c.relname::text,
                         (pg_catalog.regexp_match(b.bound, 'FROM \(''([^'']*)''\)'))[1]::date,
                         (pg_catalog.regexp_match(b.bound, 'TO \(''([^'']*)''\)'))[1]::date,
                         b.bound = 'DEFAULT'
                    FROM pg_catalog.pg_inherits i
                    JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid,
                         LATERAL (SELECT pg_catalog.pg_get_expr(c.relpartbound, c.oid) AS bound) b
                   WHERE i.inhparent = pg_catalog.to_regclass('login_data.user_logins')
                  UNION ALL
                  SELECT c.relname::text, NULL, NULL, true
                    FROM pg_catalog.pg_class c
                   WHERE c.oid = pg_catalog.to_regclass('login_data.user_logins') AND c.relkind = 'r'
                   ORDER BY 2 NULLS FIRST",
                &[],
            )
            .await?;
        Ok(PartitionMap {
            partitions: rows
                .iter()
                .map(|row| {
                    let range = if row.get::<_, bool>(3) {
                        DateRange { from: None, to: None }
                    } else {
                        DateRange { from: row.get(1), to: row.get(2) }
                    };
                    (row.get(0), range)
                })
                .collect(),
        })
    }

    /// A map that covers every date (one unbounded partition): for preparing batches
    /// without a database (unit tests, the fuzzer, the benchmark's prepared batches).
    pub fn everything() -> PartitionMap {
        PartitionMap { partitions: vec![("everything".into(), DateRange { from: None, to: None })] }
    }

    /// Whether a row dated `date` has a partition.
    pub fn covers(&self, date: NaiveDate) -> bool {
        self.partitions.iter().any(|(_, range)| range.contains(date))
    }

    /// The partitions' names and ranges, oldest first.
    pub fn partitions(&self) -> &[(String, DateRange)] {
        &self.partitions
    }

    /// The pieces of each month of `window` no partition covers, as the partitions to make.
    fn missing(&self, window: Window) -> Vec<DateRange> {
        let mut missing = Vec::new();
        let mut month = window.from;
        while month < window.to {
            let end = next_month(month);
            let mut start = month;
            // Walk the month's days past each partition that covers them.
            while start < end {
                match self.partitions.iter().find(|(_, r)| r.contains(start)) {
                    Some((_, r)) => start = r.to.map_or(end, |to| to.min(end)),
                    None => {
                        let stop = self
                            .partitions
                            .iter()
                            .filter_map(|(_, r)| r.from)
                            .filter(|from| *from > start && *from < end)
                            .min()
                            .unwrap_or(end);
                        missing.push(DateRange { from: Some(start), to: Some(stop) });
                        start = stop;
                    }
                }
            }
            month = end;
        }
        missing
    }
}

/// The months that must have a partition: from the month of the oldest date a message can
/// still carry to the last month ahead, each whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// The first day of the first month.
    pub from: NaiveDate,
    /// The first day of the month after the last (exclusive).
    pub to: NaiveDate,
}

impl Window {
    /// `days_back` before `today` (its month, whole) to `months_ahead` months after
    /// `today`'s month.
    pub fn around(today: NaiveDate, days_back: u32, months_ahead: u32) -> Window {
        let oldest =
            today.checked_sub_days(chrono::Days::new(u64::from(days_back))).unwrap_or(NaiveDate::MIN);
        let last = month_start(today).checked_add_months(Months::new(months_ahead)).unwrap_or(NaiveDate::MAX);
        Window { from: month_start(oldest), to: next_month(last) }
    }
}

/// What one maintenance run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Maintenance {
    /// The partitions made, oldest first.
    pub created: Vec<String>,
    /// DDL transactions that waited [`DDL_LOCK_TIMEOUT`] for a lock in vain and were
    /// tried again.
    pub lock_timeouts: u32,
}

/// Makes every partition `window` lacks (see the module's documentation). `client` must
/// be a member of [`OWNER_ROLE`] (the maintenance's login, or the migrating role).
pub async fn ensure(client: &mut tokio_postgres::Client, window: Window) -> Result<Maintenance, StoreError> {
    let mut outcome = Maintenance::default();
    let map = PartitionMap::load(&*client).await?;
    for range in map.missing(window) {
        let (Some(from), Some(to)) = (range.from, range.to) else { continue };
        let name = partition_name(from);
        if create_partition(client, &name, from, to, &mut outcome).await? {
            tracing::info!(partition = %name, %from, %to, "user_logins partition created");
            outcome.created.push(name);
        }
    }
    Ok(outcome)
}

/// `user_logins_YYYY_MM` for a whole month, `user_logins_YYYY_MM_DD` for a piece of one.
pub fn partition_name(from: NaiveDate) -> String {
    if from.day() == 1 {
        format!("user_logins_{}", from.format("%Y_%m"))
    } else {
        format!("user_logins_{}", from.format("%Y_%m_%d"))
    }
}

/// One partition: created standalone, attached, in one transaction, as the owner. False
/// when another run made it meanwhile.
async fn create_partition(
    client: &mut tokio_postgres::Client,
    name: &str,
    from: NaiveDate,
    to: NaiveDate,
    outcome: &mut Maintenance,
) -> Result<bool, StoreError> {
    // Names and dates are the code's own (digits and underscores), never input.
    let ddl = format!(
        "SET LOCAL lock_timeout = {lock}; SET LOCAL statement_timeout = 60000; SET LOCAL ROLE {OWNER_ROLE};
         CREATE TABLE login_data.{name} (LIKE {PARENT} INCLUDING DEFAULTS INCLUDING STORAGE);
         ALTER TABLE {PARENT} ATTACH PARTITION login_data.{name} FOR VALUES FROM ('{from}') TO ('{to}');",
        lock = DDL_LOCK_TIMEOUT.as_millis(),
        from = from.format("%Y-%m-%d"),
        to = to.format("%Y-%m-%d"),
    );
    let mut tries = 0;
    loop {
        tries += 1;
        let done = {
            let tx = client.transaction().await?;
            match tx.batch_execute(&ddl).await {
                Ok(()) => tx.commit().await,
                // Dropping the transaction rolls it back.
                Err(error) => Err(error),
            }
        };
        match done {
            Ok(()) => return Ok(true),
            Err(error) => match error.code() {
                Some(code) if *code == SqlState::LOCK_NOT_AVAILABLE && tries < DDL_TRIES => {
                    outcome.lock_timeouts += 1;
                    tracing::warn!(partition = %name, tries, "lock not granted in time; trying again");
                    tokio::time::sleep((DDL_PAUSE * tries).min(Duration::from_secs(2))).await;
                }
                // Made by another run meanwhile (the table's name, or a partition of the range).
                Some(code)
                    if *code == SqlState::DUPLICATE_TABLE
                        && PartitionMap::load(&*client).await?.covers(from) =>
                {
                    return Ok(false);
                }
                _ => return Err(error.into()),
            },
        }
    }
}

/// Whether a write failed because no partition took one of its rows (SQLSTATE 23514,
/// "no partition of relation … found for row"; a CHECK violation has the same code).
pub fn is_no_partition(error: &StoreError) -> bool {
    matches!(error, StoreError::Db(db) if db.code() == Some(&SqlState::CHECK_VIOLATION)
        && db.postgres().and_then(|e| e.as_db_error()).is_some_and(|e| e.message().starts_with("no partition of relation")))
}

fn month_start(date: NaiveDate) -> NaiveDate {
    date.with_day(1).unwrap_or(date)
}

fn next_month(month: NaiveDate) -> NaiveDate {
    month.checked_add_months(Months::new(1)).unwrap_or(NaiveDate::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(text: &str) -> NaiveDate {
        text.parse().expect("date")
    }

    #[test]
    fn the_window_takes_whole_months_from_the_oldest_reachable_date_to_months_ahead() {
        let window = Window::around(d("2026-12-06"), 60, 2);
        assert_eq!(window, Window { from: d("2026-10-01"), to: d("2027-03-01") });
        assert_eq!(
            Window::around(d("2026-12-31"), 0, 0),
            Window { from: d("2026-12-01"), to: d("2027-01-01") }
        );
    }

    #[test]
    fn missing_months_skip_what_partitions_cover_and_fill_the_rest_of_a_month() {
        let map = PartitionMap {
            partitions: vec![
                ("user_logins_before_2026_12_15".into(), DateRange { from: None, to: Some(d("2026-12-15")) }),
                (
                    "user_logins_2027_02".into(),
                    DateRange { from: Some(d("2027-02-01")), to: Some(d("2027-03-01")) },
                ),
            ],
        };
        let window = Window { from: d("2026-10-01"), to: d("2027-04-01") };
        assert_eq!(
            map.missing(window),
            vec![
                DateRange { from: Some(d("2026-12-15")), to: Some(d("2027-01-01")) },
                DateRange { from: Some(d("2027-01-01")), to: Some(d("2027-02-01")) },
                DateRange { from: Some(d("2027-03-01")), to: Some(d("2027-04-01")) },
            ]
        );
        assert!(map.covers(d("1970-01-01")) && !map.covers(d("2026-12-15")) && map.covers(d("2027-02-28")));
        assert_eq!(partition_name(d("2026-12-15")), "user_logins_2026_12_15");
        assert_eq!(partition_name(d("2027-01-01")), "user_logins_2027_01");
    }
}
