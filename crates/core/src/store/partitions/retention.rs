//! Retention of `user_logins`'s partitions ([`expire`], `USER_LOGINS_RETENTION_MONTHS`):
//! the months past it detached without holding ingest back, counted and dropped, each
//! drop logged (the module above describes the lock bound: a cancel request, [`Cancel`]).

use std::time::Duration;

use chrono::{Months, NaiveDate};
use tokio_postgres::GenericClient;
use tokio_postgres::error::SqlState;
use tokio_postgres::tls::MakeTlsConnect;

use super::super::StoreError;
use super::{
    DDL_LOCK_TIMEOUT, DateRange, Dropped, LockRetry, Maintenance, OWNER_ROLE, PARENT, PartitionMap,
    is_lock_timeout, month_start, next_month,
};

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
        let finalized = finalize(client, name, &mut outcome).await;
        if unless_gone(client, name, finalized).await?.is_none() {
            continue;
        }
        match cutoff.filter(|_| expired(range)) {
            Some(cutoff) => {
                let dropped = drop_detached(client, name, *range, cutoff, &mut outcome).await;
                unless_gone(client, name, dropped).await?;
            }
            None => {
                tracing::warn!(partition = %name, "a pending detach finished; the table is kept (not past the retention)")
            }
        }
    }
    for (name, range) in leftovers(&*client).await? {
        if let Some(cutoff) = cutoff.filter(|_| expired(&range)) {
            let dropped = drop_detached(client, &name, range, cutoff, &mut outcome).await;
            unless_gone(client, &name, dropped).await?;
        }
    }
    let Some(cutoff) = cutoff else { return Ok(outcome) };
    for (name, range) in map.expired(cutoff) {
        let detached = detach(client, cancel, &name, &mut outcome).await;
        if unless_gone(client, &name, detached).await?.is_some() {
            let dropped = drop_detached(client, &name, range, cutoff, &mut outcome).await;
            unless_gone(client, &name, dropped).await?;
        }
    }
    Ok(outcome)
}

/// A step's result, `None` when another run took its partition meanwhile, which then
/// counts it; not an error: 42P01 (the table, or it as a partition, is gone), or 55000 with
/// the partition no longer attached as it was (its detach under way or done in the other
/// run). A 55000 with the partition still attached (a DEFAULT partition refusing `DETACH …
/// CONCURRENTLY`, say) stays an error.
async fn unless_gone<V>(
    client: &tokio_postgres::Client,
    name: &str,
    result: Result<V, StoreError>,
) -> Result<Option<V>, StoreError> {
    let gone = match &result {
        Err(StoreError::Db(db)) if db.code() == Some(&SqlState::UNDEFINED_TABLE) => true,
        Err(StoreError::Db(db)) if db.code() == Some(&SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE) => {
            !PartitionMap::load(client).await?.partitions().iter().any(|(attached, _)| attached == name)
        }
        _ => false,
    };
    if gone {
        tracing::info!(partition = %name, "already detached or dropped by another run");
        return Ok(None);
    }
    result.map(Some)
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
/// owner in `login_data` that are neither the parent nor a partition and have the login
/// rows' `create_date` (a table of another shape is not the maintenance's), with the range
/// their name says ([`partition_name`], or `user_logins_before_YYYY_MM` of the upgrade).
async fn leftovers(client: &impl GenericClient) -> Result<Vec<(String, DateRange)>, StoreError> {
    let rows = client
        .query_typed(
            r"SELECT c.relname::text FROM pg_catalog.pg_class c
               WHERE c.relnamespace = pg_catalog.to_regnamespace('login_data') AND c.relkind = 'r'
                 AND NOT c.relispartition AND c.relname LIKE 'user\_logins\_%'
                 AND c.relowner = pg_catalog.to_regrole('login_etl_partition_owner')
                 AND EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                              WHERE a.attrelid = c.oid AND a.attname = 'create_date' AND NOT a.attisdropped
                                AND a.atttypid = 'pg_catalog.date'::pg_catalog.regtype)
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
/// `user_logins_YYYY_MM_DD` (a day or a piece of a month: at most to the month's end, which
/// is what is taken, the drop's cutoff being the first of a month), `user_logins_before_YYYY_MM`
/// (every date before the month).
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

#[cfg(test)]
mod tests {
    use super::super::oldest_reachable_days;
    use super::*;

    fn d(text: &str) -> NaiveDate {
        text.parse().expect("date")
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
