//! `login_data.user_logins`'s partitions (sql/V13__user_logins_partitioned.sql): a month
//! each, or a day each ([`Interval`], `PARTITION_INTERVAL`).
//!
//! - [`PartitionMap`]: which dates have a partition, read from the catalog. The function
//!   keeps one and quarantines a message whose date has none (reason `no_partition`)
//!   instead of failing its batch.
//! - [`ensure`]: the maintenance. Makes the partitions a [`Window`] of months lacks (a
//!   partition per month, or per day, as the [`Interval`] says), each a
//!   standalone table then `ATTACH PARTITION` (SHARE UPDATE EXCLUSIVE on the parent, which
//!   INSERTs and reads do not conflict with; `CREATE TABLE … PARTITION OF` would take
//!   ACCESS EXCLUSIVE), every DDL transaction waiting at most [`DDL_LOCK_TIMEOUT`] for a
//!   lock and tried again up to [`DDL_TRIES`] times: no step holds ingest back for longer.
//!   Idempotent. The one code path that makes partitions: the scheduled
//!   `partition-maintenance` function, `migrate` (`make run`) and the tests call it.
//! - [`expire`]: retention. Drops every partition whose whole range ends at or before a
//!   cutoff: `DETACH PARTITION … CONCURRENTLY` (SHARE UPDATE EXCLUSIVE on the parent, then
//!   ACCESS EXCLUSIVE on the old partition only: INSERTs into the parent are never queued),
//!   its rows counted, `DROP TABLE`; a detach left pending by an interrupted run finished
//!   with `DETACH PARTITION … FINALIZE`. Under the same lock bound and retries as [`ensure`].
//!
//! Every statement is free of session state (simple protocol or the unnamed statement;
//! `SET LOCAL` in its transaction), as the function's are. `DETACH … CONCURRENTLY` cannot
//! run in a transaction, so cannot take a `SET LOCAL lock_timeout`, and a session `SET`
//! would stay on a pooled server connection (PgBouncer in transaction mode hands the next
//! statement to another one): its wait is bounded from the client instead, by a cancel
//! request after [`DDL_LOCK_TIMEOUT`] ([`Cancel`]), which reaches the statement's own
//! backend, through PgBouncer too (docs/operations.md, "Retention").

use std::time::Duration;

use chrono::{Datelike, Months, NaiveDate};
use tokio_postgres::GenericClient;
use tokio_postgres::error::SqlState;

use super::StoreError;

mod retention;

pub use retention::{
    AwaitClose, Cancel, DROP_STATEMENT_TIMEOUT, MAX_RETENTION_MONTHS, expire, least_retention_months,
    retention_cutoff, retention_months,
};

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
/// How the maintenance cuts the months of its [`Window`] into partitions
/// (`PARTITION_INTERVAL`). A partition's indexes take a batch's inserts at random pages, so
/// the smaller the current partition, the less of it a batch touches: at 50 M logins a year
/// a month's partition (4.2 M rows) costs a batch of 8,000 about 80 ms more than an empty
/// one, a day's 9 ms (BENCHMARKS.md, "Growth"). A day's partitions are 30 times as many
/// tables, which a lookup that names no date plans and probes one by one: days pay above
/// about 10 million logins a year, months below (docs/operations.md, "Partition interval").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Interval {
    #[default]
    Month,
    Day,
}

impl Interval {
    /// `PARTITION_INTERVAL`: `month` or `day` (unset or blank: `month`).
    pub fn from_setting(value: Option<&str>) -> Result<Interval, crate::config::ConfigError> {
        match value.map(str::trim).filter(|v| !v.is_empty()) {
            None | Some("month") => Ok(Interval::Month),
            Some("day") => Ok(Interval::Day),
            Some(_) => Err(crate::config::ConfigError::Malformed {
                var: "PARTITION_INTERVAL",
                reason: "expected month or day".into(),
            }),
        }
    }

    /// The pieces `range` is made as: itself (a month), or one per day.
    fn cut(self, range: DateRange) -> Vec<DateRange> {
        match (self, range.from, range.to) {
            (Interval::Day, Some(from), Some(to)) => from
                .iter_days()
                .take_while(|day| *day < to)
                .map(|day| DateRange { from: Some(day), to: day.succ_opt().map(|next| next.min(to)) })
                .collect(),
            _ => vec![range],
        }
    }
}

/// How far back partitions are made when `PARTITION_DAYS_BACK` is not set: the oldest
/// date a message can still carry. The template's defaults: 7 days on the login queue, 14
/// in its dead-letter queue (a body imported into the quarantine from there keeps its
/// `SentTimestamp`), 14 in the quarantine (`QUARANTINE_RETENTION_DAYS`), 7 on the replay
/// queue: 42 days; rounded up to 60. The outage ride-out happens within the queue's 7 days.
pub const DEFAULT_DAYS_BACK: u32 = 60;
pub const MAX_DAYS_BACK: u32 = 3650;

/// Days a message may wait on `login-queue` (template.yaml, `MessageRetentionPeriod`).
pub const LOGIN_QUEUE_DAYS: u32 = 7;
/// Days in `login-queue-dlq`: a body imported from there into the quarantine keeps its
/// `SentTimestamp`.
pub const DEAD_LETTER_QUEUE_DAYS: u32 = 14;
/// Days on `login-replay-queue`: a replayed message keeps its `SentTimestamp` too.
pub const REPLAY_QUEUE_DAYS: u32 = 7;

/// How many days back a message can still be dated: the queues' retentions and the
/// quarantine's (`QUARANTINE_RETENTION_DAYS`). `PARTITION_DAYS_BACK` may not be shorter.
pub fn oldest_reachable_days(quarantine_retention_days: u32) -> u32 {
    LOGIN_QUEUE_DAYS + DEAD_LETTER_QUEUE_DAYS + quarantine_retention_days + REPLAY_QUEUE_DAYS
}

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
    /// Partitions pending detach (a `DETACH … CONCURRENTLY` interrupted): they take no row
    /// any more (an INSERT for their dates finds no partition), so they cover nothing.
    detaching: Vec<(String, DateRange)>,
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
                         b.bound = 'DEFAULT',
                         i.inhdetachpending
                    FROM pg_catalog.pg_inherits i
                    JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid,
                         LATERAL (SELECT pg_catalog.pg_get_expr(c.relpartbound, c.oid) AS bound) b
                   WHERE i.inhparent = pg_catalog.to_regclass('login_data.user_logins')
                  UNION ALL
                  SELECT c.relname::text, NULL, NULL, true, false
                    FROM pg_catalog.pg_class c
                   WHERE c.oid = pg_catalog.to_regclass('login_data.user_logins') AND c.relkind = 'r'
                   ORDER BY 2 NULLS FIRST",
                &[],
            )
            .await?;
        let mut map = PartitionMap::default();
        for row in &rows {
            // No bound: the partition was detached or dropped while the catalog was read (a
            // retention run beside this one); it takes no row any more.
            let Some(unbounded) = row.get::<_, Option<bool>>(3) else { continue };
            let range = if unbounded {
                DateRange { from: None, to: None }
            } else {
                DateRange { from: row.get(1), to: row.get(2) }
            };
            let list = if row.get::<_, bool>(4) { &mut map.detaching } else { &mut map.partitions };
            list.push((row.get(0), range));
        }
        Ok(map)
    }

    /// A map that covers every date (one unbounded partition): for preparing batches
    /// without a database (unit tests, the fuzzer, the benchmark's prepared batches).
    pub fn everything() -> PartitionMap {
        PartitionMap {
            partitions: vec![("everything".into(), DateRange { from: None, to: None })],
            detaching: Vec::new(),
        }
    }

    /// Whether a row dated `date` has a partition. Asked for every message, of a map that
    /// holds hundreds of partitions with a day interval: a binary search. The catalog keeps
    /// ranges apart and [`PartitionMap::load`] sorts them by their start (unbounded first),
    /// so only the last one starting on or before `date` can hold it, or one unbounded at
    /// both ends (a table not yet partitioned, or a DEFAULT partition).
    pub fn covers(&self, date: NaiveDate) -> bool {
        let after = self.partitions.partition_point(|(_, range)| range.from.is_none_or(|from| from <= date));
        let last_started = after.checked_sub(1).and_then(|i| self.partitions.get(i));
        last_started.is_some_and(|(_, range)| range.contains(date))
            || self
                .partitions
                .iter()
                .take_while(|(_, range)| range.from.is_none())
                .any(|(_, range)| range.to.is_none())
    }

    /// The partitions' names and ranges, oldest first.
    pub fn partitions(&self) -> &[(String, DateRange)] {
        &self.partitions
    }

    /// The partitions pending detach, oldest first.
    pub fn detaching(&self) -> &[(String, DateRange)] {
        &self.detaching
    }

    /// The partitions whose every date is before `cutoff`, oldest first.
    fn expired(&self, cutoff: NaiveDate) -> Vec<(String, DateRange)> {
        self.partitions.iter().filter(|(_, range)| range.to.is_some_and(|to| to <= cutoff)).cloned().collect()
    }

    /// The pieces of each month of `window` no partition covers, cut by `interval`: the
    /// partitions to make. A month already made stays as it is whatever the interval.
    fn missing(&self, window: Window, interval: Interval) -> Vec<DateRange> {
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
                        missing.extend(interval.cut(DateRange { from: Some(start), to: Some(stop) }));
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
    /// The partitions dropped, oldest first.
    pub dropped: Vec<Dropped>,
    /// DDL transactions that waited [`DDL_LOCK_TIMEOUT`] for a lock in vain and were
    /// tried again.
    pub lock_timeouts: u32,
    /// The partitions not made because a table that is not a partition holds their name
    /// (planted or left by hand): every other partition is made, and the caller reports
    /// these as a failure, every run, until someone moves the table.
    pub blocked: Vec<String>,
}

/// One partition retention dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    pub name: String,
    pub range: DateRange,
    /// Its rows when it was dropped (counted after the detach, in the DROP's transaction).
    pub rows: i64,
}

/// Makes every partition `window` lacks, a month or a day each as `interval` says (see the
/// module's documentation). `client` must be a member of [`OWNER_ROLE`] (the maintenance's
/// login, or the migrating role).
pub async fn ensure(
    client: &mut tokio_postgres::Client,
    window: Window,
    interval: Interval,
) -> Result<Maintenance, StoreError> {
    let mut outcome = Maintenance::default();
    let map = PartitionMap::load(&*client).await?;
    for range in map.missing(window, interval) {
        let (Some(from), Some(to)) = (range.from, range.to) else { continue };
        let name = partition_name(from, to);
        match create_partition(client, &name, from, to, &mut outcome).await? {
            Created::Now => {
                tracing::info!(partition = %name, %from, %to, "user_logins partition created");
                outcome.created.push(name);
            }
            Created::ByAnotherRun => {}
            Created::NameTaken => {
                tracing::error!(
                    partition = %name, %from, %to,
                    "a table that is not a partition holds this partition's name; not made (rename or drop it)"
                );
                outcome.blocked.push(name);
            }
        }
    }
    Ok(outcome)
}

/// What became of one partition [`ensure`] set out to make.
enum Created {
    Now,
    ByAnotherRun,
    /// A table that is not a partition of the range has the name.
    NameTaken,
}

/// `user_logins_YYYY_MM` for a whole month, `user_logins_YYYY_MM_DD` for a day or another
/// piece of one (named by its first day: partitions never overlap, so names never clash).
pub fn partition_name(from: NaiveDate, to: NaiveDate) -> String {
    if from.day() == 1 && to == next_month(from) {
        format!("user_logins_{}", from.format("%Y_%m"))
    } else {
        format!("user_logins_{}", from.format("%Y_%m_%d"))
    }
}

/// One partition: created standalone, attached, in one transaction, as the owner.
async fn create_partition(
    client: &mut tokio_postgres::Client,
    name: &str,
    from: NaiveDate,
    to: NaiveDate,
    outcome: &mut Maintenance,
) -> Result<Created, StoreError> {
    // Names and dates are the code's own (digits and underscores), never input.
    let ddl = format!(
        "SET LOCAL lock_timeout = {lock}; SET LOCAL statement_timeout = 60000; SET LOCAL ROLE {OWNER_ROLE};
         CREATE TABLE login_data.{name} (LIKE {PARENT} INCLUDING DEFAULTS INCLUDING STORAGE);
         ALTER TABLE {PARENT} ATTACH PARTITION login_data.{name} FOR VALUES FROM ('{from}') TO ('{to}');",
        lock = DDL_LOCK_TIMEOUT.as_millis(),
        from = from.format("%Y-%m-%d"),
        to = to.format("%Y-%m-%d"),
    );
    let mut retry = LockRetry::new(name);
    loop {
        let done = {
            let tx = client.transaction().await?;
            match tx.batch_execute(&ddl).await {
                Ok(()) => tx.commit().await,
                // Dropping the transaction rolls it back.
                Err(error) => Err(error),
            }
        };
        match done {
            Ok(()) => return Ok(Created::Now),
            Err(error) if retry.again(is_lock_timeout(&error), outcome).await => {}
            // The name is taken: by another run meanwhile (which committed first: 42P07, or
            // 42710 for the table's row type; or whose CREATE this one waited for: 23505 on
            // the catalog's type names), or by a table that is not the range's partition.
            Err(error)
                if [SqlState::DUPLICATE_TABLE, SqlState::DUPLICATE_OBJECT, SqlState::UNIQUE_VIOLATION]
                    .iter()
                    .any(|code| error.code() == Some(code)) =>
            {
                return Ok(if PartitionMap::load(&*client).await?.covers(from) {
                    Created::ByAnotherRun
                } else {
                    Created::NameTaken
                });
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// The one retry policy of every DDL step whose lock was not granted in time: up to
/// [`DDL_TRIES`] tries, pausing [`DDL_PAUSE`] times the try's number (capped at 2 s).
struct LockRetry<'a> {
    partition: &'a str,
    tries: u32,
}

impl<'a> LockRetry<'a> {
    fn new(partition: &'a str) -> LockRetry<'a> {
        LockRetry { partition, tries: 0 }
    }

    /// After a failed try: whether to try again (after the pause). Only a try that
    /// `timed_out` waiting for a lock is tried again, and only [`DDL_TRIES`] times in all.
    async fn again(&mut self, timed_out: bool, outcome: &mut Maintenance) -> bool {
        self.tries += 1;
        if !timed_out || self.tries >= DDL_TRIES {
            return false;
        }
        outcome.lock_timeouts += 1;
        tracing::warn!(partition = %self.partition, tries = self.tries, "lock not granted in time; trying again");
        tokio::time::sleep((DDL_PAUSE * self.tries).min(Duration::from_secs(2))).await;
        true
    }
}

fn is_lock_timeout(error: &tokio_postgres::Error) -> bool {
    error.code() == Some(&SqlState::LOCK_NOT_AVAILABLE)
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

/// The first day of the month after `month`'s first day.
pub fn next_month(month: NaiveDate) -> NaiveDate {
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
            detaching: Vec::new(),
        };
        let window = Window { from: d("2026-10-01"), to: d("2027-04-01") };
        assert_eq!(
            map.missing(window, Interval::Month),
            vec![
                DateRange { from: Some(d("2026-12-15")), to: Some(d("2027-01-01")) },
                DateRange { from: Some(d("2027-01-01")), to: Some(d("2027-02-01")) },
                DateRange { from: Some(d("2027-03-01")), to: Some(d("2027-04-01")) },
            ]
        );
        assert!(map.covers(d("1970-01-01")) && !map.covers(d("2026-12-15")) && map.covers(d("2027-02-28")));
        assert_eq!(partition_name(d("2026-12-15"), d("2027-01-01")), "user_logins_2026_12_15");
        assert_eq!(partition_name(d("2027-01-01"), d("2027-02-01")), "user_logins_2027_01");
        assert_eq!(partition_name(d("2027-01-01"), d("2027-01-02")), "user_logins_2027_01_01");
        assert_eq!(partition_name(d("2027-01-01"), d("2027-01-15")), "user_logins_2027_01_01");
    }

    #[test]
    fn a_day_interval_makes_a_partition_per_uncovered_day_and_leaves_made_months_alone() {
        let map = PartitionMap {
            partitions: vec![
                (
                    "user_logins_2027_01".into(),
                    DateRange { from: Some(d("2027-01-01")), to: Some(d("2027-02-01")) },
                ),
                (
                    "user_logins_2027_02_10".into(),
                    DateRange { from: Some(d("2027-02-10")), to: Some(d("2027-02-11")) },
                ),
            ],
            detaching: Vec::new(),
        };
        let missing = map.missing(Window { from: d("2026-12-01"), to: d("2027-03-01") }, Interval::Day);
        // December's 31 days, January as made, February's 28 days but the 10th.
        assert_eq!(missing.len(), 31 + 27);
        assert_eq!(missing[0], DateRange { from: Some(d("2026-12-01")), to: Some(d("2026-12-02")) });
        assert_eq!(missing[30], DateRange { from: Some(d("2026-12-31")), to: Some(d("2027-01-01")) });
        assert_eq!(missing[31], DateRange { from: Some(d("2027-02-01")), to: Some(d("2027-02-02")) });
        assert!(missing.iter().all(|r| r.to == r.from.and_then(|f| f.succ_opt())), "{missing:?}");
        assert!(!missing.iter().any(|r| r.contains(d("2027-01-15")) || r.contains(d("2027-02-10"))));
        // Every date of the window is then covered exactly once.
        let mut after = map.clone();
        after.partitions.extend(missing.iter().map(|r| (String::new(), *r)));
        for day in d("2026-12-01").iter_days().take_while(|day| *day < d("2027-03-01")) {
            assert_eq!(after.partitions.iter().filter(|(_, r)| r.contains(day)).count(), 1, "{day}");
        }
        // A month still lacking is made whole when the interval is months again.
        assert_eq!(
            map.missing(Window { from: d("2027-03-01"), to: d("2027-04-01") }, Interval::Month),
            vec![DateRange { from: Some(d("2027-03-01")), to: Some(d("2027-04-01")) }]
        );
    }

    proptest::proptest! {
        /// The binary search answers as a scan of every partition would, for maps made of
        /// months and days with gaps, with and without a partition unbounded below.
        #[test]
        fn covers_answers_as_a_scan_of_every_partition(
            pieces in proptest::collection::vec((0u32..3, 1u32..40), 0..60),
            unbounded_below in 0u32..3,
            probes in proptest::collection::vec(0i64..1500, 1..50),
        ) {
            let start = d("2024-01-01");
            let mut partitions = Vec::new();
            if unbounded_below > 0 {
                partitions.push(("before".to_owned(), DateRange { from: None, to: Some(start) }));
            }
            let mut from = start;
            for (gap, days) in pieces {
                from = from + chrono::Days::new(u64::from(gap));
                let to = from + chrono::Days::new(u64::from(days));
                partitions.push((partition_name(from, to), DateRange { from: Some(from), to: Some(to) }));
                from = to;
            }
            let map = PartitionMap { partitions, detaching: Vec::new() };
            for probe in probes {
                let date = d("2023-10-01") + chrono::TimeDelta::days(probe);
                let scanned = map.partitions.iter().any(|(_, range)| range.contains(date));
                proptest::prop_assert_eq!(map.covers(date), scanned, "{}", date);
            }
        }
    }

    #[test]
    fn a_map_unbounded_at_both_ends_covers_every_date() {
        assert!(
            PartitionMap::everything().covers(d("1970-01-01"))
                && PartitionMap::everything().covers(d("2999-12-31"))
        );
        assert!(!PartitionMap::default().covers(d("2026-12-07")));
    }

    #[test]
    fn the_interval_setting_is_month_or_day() {
        assert_eq!(Interval::from_setting(None).expect("unset"), Interval::Month);
        assert_eq!(Interval::from_setting(Some(" ")).expect("blank"), Interval::Month);
        assert_eq!(Interval::from_setting(Some("month")).expect("month"), Interval::Month);
        assert_eq!(Interval::from_setting(Some("day")).expect("day"), Interval::Day);
        for bad in ["week", "Day", "days", "1", "month;"] {
            let error = Interval::from_setting(Some(bad)).expect_err(bad).to_string();
            assert_eq!(error, "PARTITION_INTERVAL is malformed: expected month or day", "{bad}");
        }
    }
}
