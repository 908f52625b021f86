//! Vault expiry: data minimisation (issue 19, item 4; docs/security.md, "Expiry"). A vault
//! row (field, mask) is deleted, no marker left, when its mask has not appeared in
//! `user_logins` since `VAULT_RETENTION_DAYS` days before today (UTC) and the row itself is
//! older than that (a value just vaulted by a late or replayed old-dated login is kept for
//! the period). Unset, the retention is forever: only a value that is in no `user_logins`
//! row at all (its partitions dropped) expires. A value seen again is vaulted again by the
//! ingest (`INSERT … ON CONFLICT DO NOTHING` finds no row): expiry is not `forget`.
//!
//! "Last seen" is read from `user_logins` itself, through its per-partition mask indexes
//! (`NOT EXISTS` with `create_date >=` the cutoff, so older partitions are pruned): the
//! writer stays INSERT-only.
//!
//! A pass goes through `pii_vault` in the order its rows were vaulted (created_at, field,
//! mask: an index whose inserts land at its end, V18), [`BATCH_ROWS`] rows a batch, each
//! batch its own short transaction ([`expire_batch`]) that takes the erasure lock
//! exclusive first: no ingest batch is then between its logins and its vault insert while
//! the batch decides (a batch that wrote a login of the value has committed, or waits and re-vaults
//! it after). Ingest waits for that transaction, so it is bounded: the lock is waited for
//! at most [`LOCK_WAIT`] (tried again [`LOCK_TRIES`] times), each statement runs at most
//! [`STATEMENT_LIMIT`] (a batch that times out is tried again at half the rows). Where the
//! pass stands is kept in `vault.pii_vault_expiry`, moved by each batch's commit, so an
//! interrupted run resumes there.
//!
//! Both ways in run the same operation, audited as every operation is (`cmd/expire.rs`):
//! `pii-vault admin expire` through the service, and the scheduled `vault-expiry` function
//! ([`run_scheduled`]) with a login and a caller of its own ([`SCHEDULE_CALLER`]).

use std::time::{Duration, Instant};

use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};

use crate::{RequestContext, ServiceError, VaultService};
use login_etl_core::config::ConfigError;
use login_etl_core::store::{StoreError, erasure};

/// The setting's name.
pub const RETENTION_VAR: &str = "VAULT_RETENTION_DAYS";
/// The longest retention a setting may name (ten years); longer is "forever": unset.
pub const MAX_RETENTION_DAYS: u32 = 3650;
/// Vault rows a batch decides by default, and at most.
pub const BATCH_ROWS: i64 = 1000;
pub const MAX_BATCH_ROWS: i64 = 10_000;
/// How long a batch waits for the erasure lock (new ingest batches queue behind the wait),
/// and how often it tries.
pub const LOCK_WAIT: Duration = Duration::from_millis(500);
pub const LOCK_TRIES: u32 = 5;
/// The bound on each statement of a batch: with [`LOCK_WAIT`], ingest waits at most about 2 s.
pub const STATEMENT_LIMIT: Duration = Duration::from_millis(1500);
/// The caller the scheduled function records.
pub const SCHEDULE_CALLER: &str = "schedule:vault-expiry";

/// `VAULT_RETENTION_DAYS`: days a value is kept after its last login; `None` is forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention(Option<u32>);

impl Retention {
    pub const FOREVER: Retention = Retention(None);

    /// A retention of `days` (1 to [`MAX_RETENTION_DAYS`]).
    pub fn days(days: u32) -> Result<Retention, ConfigError> {
        if (1..=MAX_RETENTION_DAYS).contains(&days) { Ok(Retention(Some(days))) } else { Err(malformed()) }
    }

    /// The setting as given: unset or blank is forever; anything but a whole number of days
    /// from 1 to [`MAX_RETENTION_DAYS`] is refused (at start: the service and the scheduled
    /// function do not start with it).
    pub fn parse(value: Option<&str>) -> Result<Retention, ConfigError> {
        match value.map(str::trim).filter(|v| !v.is_empty()) {
            None => Ok(Retention::FOREVER),
            Some(text) => text.parse().map_err(|_| malformed()).and_then(Retention::days),
        }
    }

    pub fn from_env() -> Result<Retention, ConfigError> {
        Retention::parse(std::env::var(RETENTION_VAR).ok().as_deref())
    }

    /// The days, `None` for forever.
    pub fn as_days(self) -> Option<u32> {
        self.0
    }
}

fn malformed() -> ConfigError {
    ConfigError::Malformed {
        var: RETENTION_VAR,
        reason: format!(
            "expected whole days from 1 to {MAX_RETENTION_DAYS}, or unset to keep values forever"
        ),
    }
}

/// What one batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Batch {
    /// Vault rows decided.
    pub scanned: u64,
    /// Of those, deleted.
    pub expired: u64,
    /// Whether the pass reached the end of the vault (the next batch starts at the beginning).
    pub done: bool,
}

/// Bounds of a batch's transaction (`SET LOCAL`: nothing stays on a pooled connection), and
/// the date style the cursor's `created_at` goes out and back in as text: ISO writes the
/// offset in figures, where another style (a login may set its own) writes the zone's
/// abbreviation, which the server may read back as another zone's ("IST": India's written,
/// Israel's read), moving the cursor on or back by hours.
static BATCH_LIMITS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SET LOCAL lock_timeout = {}; SET LOCAL statement_timeout = {}; SET LOCAL DateStyle = 'ISO, YMD'",
        LOCK_WAIT.as_millis(),
        STATEMENT_LIMIT.as_millis()
    )
});

/// The rows of one batch after the cursor ($5, $1, $2: the order rows were vaulted in, which
/// `pii_vault_vaulted_order` keeps; NULL: from the beginning), at most $3,
/// and of those the ones deleted: not an erasure tombstone of older versions (`erased_at`,
/// converted by `admin reencrypt`), vaulted before the cutoff, and whose mask no login
/// dated on or after the cutoff holds ($4 days; NULL: forever, no login at all). The dates
/// are UTC, as `create_date` is. One statement: its own snapshot, after the lock.
const EXPIRE_BATCH: &str = "
    WITH batch AS (
        SELECT v.field, v.blind_index, v.created_at, v.erased_at
          FROM vault.pii_vault v
         WHERE (v.created_at, v.field, v.blind_index) > (COALESCE($5::timestamptz, '-infinity'), COALESCE($1, ''), COALESCE($2, ''))
         ORDER BY v.created_at, v.field, v.blind_index
         LIMIT $3
    ), unseen AS (
        SELECT b.field, b.blind_index
          FROM batch b
         WHERE b.erased_at IS NULL
           AND b.created_at < COALESCE(now() - make_interval(days => $4), 'infinity')
           AND NOT CASE b.field
               WHEN 'ip' THEN EXISTS (
                   SELECT 1 FROM login_data.user_logins u
                    WHERE u.masked_ip = b.blind_index
                      AND u.create_date >= COALESCE((now() AT TIME ZONE 'UTC')::date - $4, '-infinity'))
               ELSE EXISTS (
                   SELECT 1 FROM login_data.user_logins u
                    WHERE u.masked_device_id = b.blind_index
                      AND u.create_date >= COALESCE((now() AT TIME ZONE 'UTC')::date - $4, '-infinity'))
           END
    ), gone AS (
        DELETE FROM vault.pii_vault v USING unseen x
         WHERE v.field = x.field AND v.blind_index = x.blind_index
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM batch), (SELECT count(*) FROM gone), last.field, last.blind_index::text,
           last.created_at::text
      FROM (SELECT 1) AS one
      LEFT JOIN (SELECT created_at, field, blind_index FROM batch
                  ORDER BY created_at DESC, field DESC, blind_index DESC LIMIT 1) last
        ON true";

/// Decides one batch after the pass's cursor and moves the cursor, in one transaction (see
/// the module's comment for its bounds). A lock wait in vain is tried again
/// [`LOCK_TRIES`] times; a batch over the statement limit again at half the rows.
pub async fn expire_batch(
    client: &mut deadpool_postgres::Object,
    retention: Retention,
    rows: i64,
) -> Result<Batch, ServiceError> {
    let (mut rows, mut lock_tries) = (rows.clamp(1, MAX_BATCH_ROWS), 0);
    loop {
        match try_batch(client, retention, rows).await {
            Ok(batch) => return Ok(batch),
            Err(StoreError::Db(db))
                if db.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) && lock_tries < LOCK_TRIES =>
            {
                lock_tries += 1;
                tracing::warn!(tries = lock_tries, "vault expiry: the erasure lock was held; trying again");
                tokio::time::sleep(LOCK_WAIT).await;
            }
            Err(StoreError::Db(db)) if db.code() == Some(&SqlState::QUERY_CANCELED) && rows > 1 => {
                rows /= 2;
                tracing::warn!(rows, "vault expiry: a batch ran over its statement limit; trying fewer rows");
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// Where a pass stands: the last row decided (field, blind index, when it was vaulted; as
/// the server writes it, so that it goes back exactly as it came).
type Cursor = (Option<String>, Option<String>, Option<String>);

async fn try_batch(
    client: &mut deadpool_postgres::Object,
    retention: Retention,
    rows: i64,
) -> Result<Batch, StoreError> {
    let tx = login_etl_core::store::begin_bounded(client, &BATCH_LIMITS).await?;
    // First the lock (ingest's batches in flight commit first; new ones wait), then the
    // cursor (one pass at a time), then the decision in a snapshot taken after both.
    erasure::lock_exclusive(&*tx).await?;
    let cursor = tx
        .query_typed(
            "SELECT field, blind_index::text, created_at::text FROM vault.pii_vault_expiry FOR UPDATE",
            &[],
        )
        .await?;
    let (field, index, vaulted): Cursor =
        cursor.first().map(|row| (row.get(0), row.get(1), row.get(2))).unwrap_or_default();
    let days = retention.as_days().and_then(|d| i32::try_from(d).ok());
    let params: [(&(dyn ToSql + Sync), Type); 5] = [
        (&field, Type::TEXT),
        (&index, Type::TEXT),
        (&rows, Type::INT8),
        (&days, Type::INT4),
        (&vaulted, Type::TEXT),
    ];
    let answer = tx.query_typed(EXPIRE_BATCH, &params).await?;
    let row =
        answer.first().ok_or_else(|| StoreError::Db(login_etl_core::error::DbError::other("no answer")))?;
    let (scanned, expired): (i64, i64) = (row.get(0), row.get(1));
    let done = scanned < rows;
    // At the end, the next batch starts a new pass.
    let (next_field, next_index, next_vaulted): Cursor =
        if done { (None, None, None) } else { (row.get(2), row.get(3), row.get(4)) };
    tx.execute_typed(
        "UPDATE vault.pii_vault_expiry SET field = $1, blind_index = $2, created_at = $3::timestamptz, updated_at = now()",
        &[(&next_field, Type::TEXT), (&next_index, Type::TEXT), (&next_vaulted, Type::TEXT)],
    )
    .await?;
    tx.commit().await?;
    Ok(Batch { scanned: scanned.unsigned_abs(), expired: expired.unsigned_abs(), done })
}

/// The scheduled function's request context: a fixed caller in the key-admin role (the
/// expiry is an admin operation), its invocation's request id.
pub fn schedule_context(request_id: &str) -> RequestContext {
    RequestContext {
        caller: SCHEDULE_CALLER.to_owned(),
        request_id: request_id.to_owned(),
        staff: false,
        key_admin: true,
    }
}

/// What a scheduled run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Run {
    pub batches: u32,
    pub scanned: u64,
    pub expired: u64,
    /// Whether the pass reached the end (else the time ran out; the next run goes on).
    pub done: bool,
}

/// Batches of [`BATCH_ROWS`], each an audited request of `context`, until the pass ends or
/// `budget` is spent (the next run resumes at the cursor).
pub async fn run_scheduled(
    service: &VaultService,
    context: &RequestContext,
    budget: Duration,
) -> Result<Run, ServiceError> {
    let started = Instant::now();
    let mut run = Run::default();
    loop {
        let batch = service.expire(context, BATCH_ROWS).await?;
        run.batches += 1;
        run.scanned += batch.scanned;
        run.expired += batch.expired;
        if batch.done {
            run.done = true;
            return Ok(run);
        }
        if started.elapsed() >= budget {
            return Ok(run);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_retention_is_forever_unset_and_refuses_what_is_not_a_bounded_whole_number() {
        assert_eq!(Retention::parse(None).expect("unset"), Retention::FOREVER);
        assert_eq!(Retention::parse(Some(" ")).expect("blank"), Retention::FOREVER);
        assert_eq!(Retention::parse(Some("30")).expect("30").as_days(), Some(30));
        assert_eq!(Retention::parse(Some("3650")).expect("max").as_days(), Some(3650));
        for bad in ["0", "-1", "-30", "3651", "99999999999", "30.5", "thirty", "1e3"] {
            let error = Retention::parse(Some(bad)).expect_err(bad);
            assert!(error.to_string().starts_with("VAULT_RETENTION_DAYS is malformed"), "{error}");
        }
    }
}
