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
use tokio_postgres::tls::MakeTlsConnect;

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

/// The longest `USER_LOGINS_RETENTION_MONTHS` (a century).
pub const MAX_RETENTION_MONTHS: u32 = 1200;

/// `USER_LOGINS_RETENTION_MONTHS` (1 to 1200; unset or blank: `None`, kept forever).
pub fn retention_months(value: Option<&str>) -> Result<Option<u32>, crate::config::ConfigError> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(text) => {
            text.parse().ok().filter(|n| (1..=MAX_RETENTION_MONTHS).contains(n)).map(Some).ok_or_else(|| {
                crate::config::ConfigError::Malformed {
                    var: "USER_LOGINS_RETENTION_MONTHS",
                    reason: format!(
                        "expected whole months from 1 to {MAX_RETENTION_MONTHS}, or unset to keep every month"
                    ),
                }
            })
        }
    }
}

/// The fewest months of retention that never reach into a window of `days_back` days: a
/// month has at least 28 days, so `days_back` days before the first of a month fall at
/// most `ceil(days_back / 28)` months before it.
pub fn least_retention_months(days_back: u32) -> u32 {
    days_back.div_ceil(28).max(1)
}

/// The first date kept with `months` of retention on `today`: the first day of the month
/// `months` months before `today`'s. A partition whose range ends at or before it goes.
pub fn retention_cutoff(today: NaiveDate, months: u32) -> NaiveDate {
    month_start(today).checked_sub_months(Months::new(months)).unwrap_or(NaiveDate::MIN)
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
            let range = if row.get::<_, bool>(3) {
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

    /// Whether a row dated `date` has a partition.
    pub fn covers(&self, date: NaiveDate) -> bool {
        self.partitions.iter().any(|(_, range)| range.contains(date))
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
    /// The partitions dropped, oldest first.
    pub dropped: Vec<Dropped>,
    /// DDL transactions that waited [`DDL_LOCK_TIMEOUT`] for a lock in vain and were
    /// tried again.
    pub lock_timeouts: u32,
}

/// One partition retention dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    pub name: String,
    pub range: DateRange,
    /// Its rows when it was dropped (counted after the detach, in the DROP's transaction).
    pub rows: i64,
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
            Ok(()) => return Ok(true),
            Err(error) if retry.again(is_lock_timeout(&error), outcome).await => {}
            // Made by another run meanwhile (the table's name, or a partition of the range).
            Err(error)
                if error.code() == Some(&SqlState::DUPLICATE_TABLE)
                    && PartitionMap::load(&*client).await?.covers(from) =>
            {
                return Ok(false);
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

/// Retention: drops every partition of `user_logins` whose whole range ends at or before
/// `cutoff` (none when `None`: kept forever), first finishing a detach an interrupted run
/// left pending, and dropping a table an interrupted run detached but did not drop. Each
/// drop is logged with its range and row count. `cancel` says where the cancel requests
/// that bound `DETACH … CONCURRENTLY` go. `client` must be a member of [`OWNER_ROLE`].
pub async fn expire<T>(
    client: &mut tokio_postgres::Client,
    cancel: &Cancel<T>,
    cutoff: Option<NaiveDate>,
) -> Result<Maintenance, StoreError>
where
    T: MakeTlsConnect<AwaitClose> + Clone,
    T::Stream: Send,
{
    let mut outcome = Maintenance::default();
    let expired = |range: &DateRange| cutoff.is_some_and(|cutoff| range.to.is_some_and(|to| to <= cutoff));
    let map = PartitionMap::load(&*client).await?;
    for (name, range) in map.detaching() {
        finalize(client, name, &mut outcome).await?;
        match cutoff.filter(|_| expired(range)) {
            Some(cutoff) => drop_detached(client, name, *range, cutoff, &mut outcome).await?,
            None => {
                tracing::warn!(partition = %name, "a pending detach finished; the table is kept (not past the retention)")
            }
        }
    }
    for (name, range) in leftovers(&*client).await? {
        if let Some(cutoff) = cutoff.filter(|_| expired(&range)) {
            drop_detached(client, &name, range, cutoff, &mut outcome).await?;
        }
    }
    let Some(cutoff) = cutoff else { return Ok(outcome) };
    for (name, range) in map.expired(cutoff) {
        detach(client, cancel, &name, &mut outcome).await?;
        drop_detached(client, &name, range, cutoff, &mut outcome).await?;
    }
    Ok(outcome)
}

/// Where and how the maintenance sends a cancel request: the database's (or the pooler's)
/// first TCP address and the connection's TLS.
#[derive(Clone)]
pub struct Cancel<T> {
    address: Option<(String, u16)>,
    tls: T,
}

impl<T> Cancel<T>
where
    T: MakeTlsConnect<AwaitClose> + Clone,
    T::Stream: Send,
{
    /// For connections made with `config` and `tls`.
    pub fn new(config: &tokio_postgres::Config, tls: T) -> Cancel<T> {
        let host = config.get_hosts().iter().find_map(|host| match host {
            tokio_postgres::config::Host::Tcp(name) => Some(name.clone()),
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(_) => None,
        });
        let port = config.get_ports().first().copied().unwrap_or(5432);
        Cancel { address: host.map(|host| (host, port)), tls }
    }

    /// Sends `token`'s cancel request and waits (at most 2 s) until the server has taken
    /// it. A failure is only logged: the statement then runs on.
    async fn send(&self, token: &tokio_postgres::CancelToken, partition: &str) {
        let sent = async {
            let (host, port) = self.address.as_ref().ok_or("no TCP address to send it to")?;
            let stream =
                tokio::net::TcpStream::connect((host.as_str(), *port)).await.map_err(|e| e.to_string())?;
            let tls = self.tls.clone().make_tls_connect(host).map_err(|e| e.into().to_string())?;
            token.cancel_query_raw(AwaitClose(stream), tls).await.map_err(|e| crate::error::report(&e))
        };
        match tokio::time::timeout(Duration::from_secs(2), sent).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(partition = %partition, %error, "cancel request failed"),
            Err(_) => tracing::warn!(partition = %partition, "cancel request not taken within 2 s"),
        }
    }
}

/// A cancel request's connection whose shutdown waits for the server to close it.
/// tokio-postgres shuts its side down right after writing the request, and PgBouncer 1.18
/// drops a request whose client has gone before it was forwarded (measured: the statement
/// ran on); PostgreSQL and PgBouncer close the connection once they have acted on it.
pub struct AwaitClose(tokio::net::TcpStream);

impl tokio::io::AsyncRead for AwaitClose {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for AwaitClose {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        // Read (and discard) until the server closes.
        loop {
            let mut scratch = [0_u8; 256];
            let mut buf = tokio::io::ReadBuf::new(&mut scratch);
            match tokio::io::AsyncRead::poll_read(std::pin::Pin::new(&mut self.0), cx, &mut buf) {
                std::task::Poll::Ready(Ok(())) if buf.filled().is_empty() => {
                    return std::task::Poll::Ready(Ok(()));
                }
                std::task::Poll::Ready(Ok(())) => {}
                std::task::Poll::Ready(Err(error)) => return std::task::Poll::Ready(Err(error)),
                std::task::Poll::Pending => return std::task::Poll::Pending,
            }
        }
    }
}

/// `DETACH PARTITION … CONCURRENTLY`, alone (it cannot run in a transaction) in the simple
/// protocol, cancelled when it has waited [`DDL_LOCK_TIMEOUT`] (see the module's
/// documentation). Cancelled after its first transaction, the partition is pending detach
/// and [`finalize`] finishes it; cancelled before, nothing changed and it is tried again.
async fn detach<T>(
    client: &mut tokio_postgres::Client,
    cancel: &Cancel<T>,
    name: &str,
    outcome: &mut Maintenance,
) -> Result<(), StoreError>
where
    T: MakeTlsConnect<AwaitClose> + Clone,
    T::Stream: Send,
{
    let sql = format!("ALTER TABLE {PARENT} DETACH PARTITION login_data.{name} CONCURRENTLY");
    let mut retry = LockRetry::new(name);
    loop {
        let token = client.cancel_token();
        let (result, cancelled) = {
            let statement = client.batch_execute(&sql);
            tokio::pin!(statement);
            tokio::select! {
                result = &mut statement => (result, false),
                () = tokio::time::sleep(DDL_LOCK_TIMEOUT) => {
                    cancel.send(&token, name).await;
                    // Its own answer: cancelled, or done just before the request came.
                    (statement.await, true)
                }
            }
        };
        let Err(error) = result else { return Ok(()) };
        if PartitionMap::load(&*client).await?.detaching().iter().any(|(pending, _)| pending == name) {
            return finalize(client, name, outcome).await;
        }
        let timed_out =
            is_lock_timeout(&error) || (cancelled && error.code() == Some(&SqlState::QUERY_CANCELED));
        if !retry.again(timed_out, outcome).await {
            return Err(error.into());
        }
    }
}

/// `DETACH PARTITION … FINALIZE` of a partition pending detach: in a transaction, so
/// bounded by `SET LOCAL lock_timeout` (ACCESS EXCLUSIVE on that partition only).
async fn finalize(
    client: &mut tokio_postgres::Client,
    name: &str,
    outcome: &mut Maintenance,
) -> Result<(), StoreError> {
    let ddl = format!(
        "SET LOCAL lock_timeout = {lock}; SET LOCAL statement_timeout = 60000;
         ALTER TABLE {PARENT} DETACH PARTITION login_data.{name} FINALIZE",
        lock = DDL_LOCK_TIMEOUT.as_millis(),
    );
    in_transaction(client, name, &ddl, outcome).await.map(|_| ())
}

/// Counts the rows of a detached partition and drops it, in one transaction (the count is
/// what is dropped), and logs it. A table holding a login dated on or after `cutoff` is
/// kept, with a warning: a leftover's range is read from its name, and a name may say less
/// than the rows (an upgrade's legacy table bounded mid-month is named by its month).
async fn drop_detached(
    client: &mut tokio_postgres::Client,
    name: &str,
    range: DateRange,
    cutoff: NaiveDate,
    outcome: &mut Maintenance,
) -> Result<(), StoreError> {
    // A detached month is out of ingest's reach: its count may take a large month's scan.
    let ddl = format!(
        "SET LOCAL lock_timeout = {lock}; SET LOCAL statement_timeout = {count}; SET LOCAL ROLE {OWNER_ROLE};
         SELECT count(*)::text FROM login_data.{name};
         DO $$ BEGIN
             IF EXISTS (SELECT 1 FROM login_data.{name} WHERE create_date >= DATE '{cutoff}') THEN
                 RAISE EXCEPTION 'holds logins inside the retention' USING ERRCODE = '{KEPT_CODE}';
             END IF;
         END $$;
         DROP TABLE login_data.{name}",
        lock = DDL_LOCK_TIMEOUT.as_millis(),
        count = DROP_STATEMENT_TIMEOUT.as_millis(),
        cutoff = cutoff.format("%Y-%m-%d"),
    );
    let rows = match in_transaction(client, name, &ddl, outcome).await {
        Ok(rows) => rows,
        Err(StoreError::Db(db)) if db.code().is_some_and(|code| code.code() == KEPT_CODE) => {
            tracing::warn!(partition = %name, %cutoff, "a detached table holds logins dated inside the retention; kept");
            return Ok(());
        }
        Err(error) => return Err(error),
    };
    tracing::info!(
        partition = %name,
        from = %range.from.map_or("MINVALUE".to_owned(), |d| d.to_string()),
        to = %range.to.map_or("MAXVALUE".to_owned(), |d| d.to_string()),
        rows,
        "user_logins partition dropped (retention)"
    );
    outcome.dropped.push(Dropped { name: name.to_owned(), range, rows });
    Ok(())
}

/// The SQLSTATE of a detached table kept because it holds logins dated inside the retention.
const KEPT_CODE: &str = "LE19K";

/// How long the count and drop of one detached partition may take.
pub const DROP_STATEMENT_TIMEOUT: Duration = Duration::from_secs(600);

/// `statements` (simple protocol) in one transaction, tried again by [`LockRetry`]; the
/// first value a `SELECT` among them returned, as a number (0 when none).
async fn in_transaction(
    client: &mut tokio_postgres::Client,
    name: &str,
    statements: &str,
    outcome: &mut Maintenance,
) -> Result<i64, StoreError> {
    let mut retry = LockRetry::new(name);
    loop {
        let done = {
            let tx = client.transaction().await?;
            match tx.simple_query(statements).await {
                Ok(messages) => tx.commit().await.map(|()| messages),
                Err(error) => Err(error),
            }
        };
        match done {
            Ok(messages) => {
                let value = messages.iter().find_map(|message| match message {
                    tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).and_then(|v| v.parse().ok()),
                    _ => None,
                });
                return Ok(value.unwrap_or(0));
            }
            Err(error) if retry.again(is_lock_timeout(&error), outcome).await => {}
            Err(error) => return Err(error.into()),
        }
    }
}

/// Tables an interrupted run detached but did not drop: `user_logins_…` tables of the
/// owner in `login_data` that are neither the parent nor a partition, with the range their
/// name says ([`partition_name`], or `user_logins_before_YYYY_MM` of the upgrade).
async fn leftovers(client: &impl GenericClient) -> Result<Vec<(String, DateRange)>, StoreError> {
    let rows = client
        .query_typed(
            r"SELECT c.relname::text FROM pg_catalog.pg_class c
               WHERE c.relnamespace = pg_catalog.to_regnamespace('login_data') AND c.relkind = 'r'
                 AND NOT c.relispartition AND c.relname LIKE 'user\_logins\_%'
                 AND c.relowner = pg_catalog.to_regrole('login_etl_partition_owner')
               ORDER BY 1",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .filter_map(|row| {
            let name: String = row.get(0);
            range_of_name(&name).map(|range| (name, range))
        })
        .collect())
}

/// The range a partition's name says: `user_logins_YYYY_MM` (the month),
/// `user_logins_YYYY_MM_DD` (to the month's end), `user_logins_before_YYYY_MM` (every date
/// before the month).
fn range_of_name(name: &str) -> Option<DateRange> {
    let rest = name.strip_prefix("user_logins_")?;
    if let Some(month) = rest.strip_prefix("before_") {
        let to = NaiveDate::parse_from_str(&format!("{month}_01"), "%Y_%m_%d").ok()?;
        return Some(DateRange { from: None, to: Some(to) });
    }
    let from = match rest.len() {
        7 => NaiveDate::parse_from_str(&format!("{rest}_01"), "%Y_%m_%d").ok()?,
        10 => NaiveDate::parse_from_str(rest, "%Y_%m_%d").ok()?,
        _ => return None,
    };
    Some(DateRange { from: Some(from), to: Some(next_month(month_start(from))) })
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
            detaching: Vec::new(),
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

    #[test]
    fn retention_takes_the_partitions_wholly_before_the_cutoff_and_names_say_their_ranges() {
        let before = DateRange { from: None, to: Some(d("2025-02-01")) };
        let month = |from: &str, to: &str| DateRange { from: Some(d(from)), to: Some(d(to)) };
        let map = PartitionMap {
            partitions: vec![
                ("user_logins_before_2025_02".into(), before),
                ("user_logins_2025_02".into(), month("2025-02-01", "2025-03-01")),
                ("user_logins_2025_03".into(), month("2025-03-01", "2025-04-01")),
            ],
            detaching: Vec::new(),
        };
        assert!(
            map.expired(d("2025-02-01")).iter().map(|(n, _)| n.as_str()).eq(["user_logins_before_2025_02"])
        );
        assert_eq!(map.expired(d("2025-03-01")).len(), 2);
        assert!(map.expired(d("2025-01-31")).is_empty(), "the partition holding 2025-01-31 stays");
        assert_eq!(retention_cutoff(d("2026-12-06"), 3), d("2026-09-01"));
        assert_eq!(retention_cutoff(d("2026-12-01"), 12), d("2025-12-01"));
        assert_eq!(range_of_name("user_logins_before_2025_02"), Some(before));
        assert_eq!(range_of_name("user_logins_2025_02"), Some(month("2025-02-01", "2025-03-01")));
        assert_eq!(range_of_name("user_logins_2026_12_15"), Some(month("2026-12-15", "2027-01-01")));
        for name in ["user_logins_2025_13", "user_logins_x", "user_logins", "other_2025_02"] {
            assert_eq!(range_of_name(name), None, "{name}");
        }
        assert_eq!(oldest_reachable_days(14), 42);
        assert_eq!(retention_months(Some(" ")).expect("blank"), None);
        assert_eq!(retention_months(Some("1200")).expect("max"), Some(1200));
    }
}
