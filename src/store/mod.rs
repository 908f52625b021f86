//! Postgres for the function: the connection pool, the migrations in `sql/` and the
//! set-based batch write. One transaction per batch; one statement per table per batch
//! (UNNEST of arrays), never a statement per row.

use crate::config::database::{CONNECT_TIMEOUT, Database};
use crate::config::tls::TlsError;
use crate::crypto::{BlindIndex, PiiField, SealedValue};
use crate::error::DbError;
use chrono::{DateTime, NaiveDate, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};

pub mod retry;

pub use retry::RetryPolicy;

mod embedded {
    refinery::embed_migrations!("sql");
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database")]
    Db(#[from] DbError),
    #[error("database pool")]
    Pool(#[source] deadpool_postgres::PoolError),
    #[error("database pool setup")]
    Build(#[from] deadpool_postgres::BuildError),
    #[error("migration")]
    Migration(#[from] refinery::Error),
    #[error("database TLS")]
    Tls(#[from] TlsError),
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(error: tokio_postgres::Error) -> Self {
        StoreError::Db(DbError::from(error))
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(error: deadpool_postgres::PoolError) -> Self {
        // The pool's own message repeats its backend error; keep that one as the leaf.
        match error {
            deadpool_postgres::PoolError::Backend(db) => StoreError::Db(DbError::from(db)),
            other => StoreError::Pool(other),
        }
    }
}

/// The pool, its connections secured as `database.tls` says.
pub fn pool(database: Database, max_size: usize) -> Result<Pool, StoreError> {
    let connector = database.tls.connector()?;
    let manager = Manager::from_config(
        database.config,
        connector,
        ManagerConfig { recycling_method: RecyclingMethod::Fast },
    );
    Ok(Pool::builder(manager)
        .max_size(max_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(CONNECT_TIMEOUT))
        .create_timeout(Some(CONNECT_TIMEOUT))
        .recycle_timeout(Some(CONNECT_TIMEOUT))
        .build()?)
}

/// Applies the pending migrations of `sql/` (refinery keeps its version table,
/// `refinery_schema_history`); running it again is a no-op.
pub async fn migrate(client: &mut tokio_postgres::Client) -> Result<Vec<String>, StoreError> {
    let report = embedded::migrations::runner().run_async(client).await?;
    Ok(report.applied_migrations().iter().map(|m| format!("V{}__{}", m.version(), m.name())).collect())
}

/// One `user_logins` row, PII already masked.
#[derive(Debug, Clone)]
pub struct LoginRow {
    pub sqs_message_id: String,
    pub user_id: String,
    pub device_type: String,
    pub masked_ip: BlindIndex,
    pub masked_device_id: BlindIndex,
    pub locale: Option<String>,
    pub app_version: i32,
    pub app_version_raw: String,
    pub create_date: NaiveDate,
    pub sent_at: DateTime<Utc>,
    pub index_key_version: i32,
}

/// One `pii_vault` row.
#[derive(Debug, Clone)]
pub struct VaultRow {
    pub field: PiiField,
    pub blind_index: BlindIndex,
    pub sealed: SealedValue,
}

/// What a batch write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteOutcome {
    pub logins_inserted: u64,
    pub vault_inserted: u64,
    /// Attempts that failed with a transient error and were made again.
    pub retries: u32,
}

// Lock order. `INSERT … ON CONFLICT DO NOTHING` takes each row's unique-key lock in the
// order the rows arrive; two batches holding the same values (one carrier-NAT ip, one
// family's device) in different orders would wait on each other until Postgres kills one
// (deadlock, 40P01). Every batch therefore inserts its rows sorted by the unique key, in
// bytewise order ("C" collation), vault rows before login rows: all transactions take the
// locks they share in one global order, so none waits on another in a cycle.
const INSERT_VAULT: &str = r#"
    INSERT INTO pii_vault (field, blind_index, key_version, nonce, ciphertext)
    SELECT v.* FROM UNNEST($1::text[], $2::text[], $3::int4[], $4::bytea[], $5::bytea[])
        AS v(field, blind_index, key_version, nonce, ciphertext)
    ORDER BY v.field COLLATE "C", v.blind_index COLLATE "C"
    ON CONFLICT DO NOTHING"#;

const INSERT_LOGINS: &str = r#"
    INSERT INTO user_logins (sqs_message_id, user_id, device_type, masked_ip, masked_device_id,
                             locale, app_version, app_version_raw, create_date, sent_at,
                             index_key_version)
    SELECT l.* FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                           $6::text[], $7::int4[], $8::text[], $9::date[], $10::timestamptz[],
                           $11::int4[])
        AS l(sqs_message_id, user_id, device_type, masked_ip, masked_device_id, locale,
             app_version, app_version_raw, create_date, sent_at, index_key_version)
    ORDER BY l.sqs_message_id COLLATE "C"
    ON CONFLICT DO NOTHING"#;

/// A batch's rows as the column arrays the two statements bind.
struct BatchColumns<'a> {
    vault_fields: Vec<&'a str>,
    vault_indexes: Vec<&'a str>,
    vault_versions: Vec<i32>,
    vault_nonces: Vec<&'a [u8]>,
    vault_ciphertexts: Vec<&'a [u8]>,
    message_ids: Vec<&'a str>,
    user_ids: Vec<&'a str>,
    device_types: Vec<&'a str>,
    masked_ips: Vec<&'a str>,
    masked_device_ids: Vec<&'a str>,
    locales: Vec<Option<&'a str>>,
    app_versions: Vec<i32>,
    app_versions_raw: Vec<&'a str>,
    create_dates: Vec<NaiveDate>,
    sent_ats: Vec<DateTime<Utc>>,
    index_versions: Vec<i32>,
}

impl<'a> BatchColumns<'a> {
    fn new(logins: &'a [LoginRow], vault: &'a [VaultRow]) -> Self {
        let login_text = |f: fn(&LoginRow) -> &str| logins.iter().map(f).collect::<Vec<&str>>();
        BatchColumns {
            vault_fields: vault.iter().map(|v| v.field.as_str()).collect(),
            vault_indexes: vault.iter().map(|v| v.blind_index.as_str()).collect(),
            vault_versions: vault.iter().map(|v| v.sealed.key_version).collect(),
            vault_nonces: vault.iter().map(|v| v.sealed.nonce.as_slice()).collect(),
            vault_ciphertexts: vault.iter().map(|v| v.sealed.ciphertext.as_slice()).collect(),
            message_ids: login_text(|r| &r.sqs_message_id),
            user_ids: login_text(|r| &r.user_id),
            device_types: login_text(|r| &r.device_type),
            masked_ips: login_text(|r| r.masked_ip.as_str()),
            masked_device_ids: login_text(|r| r.masked_device_id.as_str()),
            locales: logins.iter().map(|r| r.locale.as_deref()).collect(),
            app_versions: logins.iter().map(|r| r.app_version).collect(),
            app_versions_raw: login_text(|r| &r.app_version_raw),
            create_dates: logins.iter().map(|r| r.create_date).collect(),
            sent_ats: logins.iter().map(|r| r.sent_at).collect(),
            index_versions: logins.iter().map(|r| r.index_key_version).collect(),
        }
    }
}

/// Writes the vault rows and the login rows of one batch in one transaction. Rows whose
/// message id (or vault key) already exists are skipped: re-delivery adds nothing.
/// Transient errors are retried as `retry` allows (see [`retry`]).
pub async fn write_batch(
    pool: &Pool,
    logins: &[LoginRow],
    vault: &[VaultRow],
    retry: &RetryPolicy,
) -> Result<WriteOutcome, StoreError> {
    if logins.is_empty() && vault.is_empty() {
        return Ok(WriteOutcome { logins_inserted: 0, vault_inserted: 0, retries: 0 });
    }
    let columns = BatchColumns::new(logins, vault);
    let mut attempts = retry.start();
    loop {
        match write_once(pool, &columns).await {
            Ok((logins_inserted, vault_inserted)) => {
                return Ok(WriteOutcome { logins_inserted, vault_inserted, retries: attempts.retries() });
            }
            Err(error) => {
                let Some((sqlstate, delay)) = attempts.backoff(&error) else { return Err(error) };
                tracing::warn!(
                    sqlstate,
                    retry = attempts.retries(),
                    delay_ms = delay.as_millis() as u64,
                    error = %crate::error::report(&error),
                    "transient database error; writing the batch again"
                );
                tokio::time::sleep(delay).await;
            }
        }
    }
}

async fn write_once(pool: &Pool, c: &BatchColumns<'_>) -> Result<(u64, u64), StoreError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let vault_inserted = tx
        .execute(
            INSERT_VAULT,
            &[&c.vault_fields, &c.vault_indexes, &c.vault_versions, &c.vault_nonces, &c.vault_ciphertexts],
        )
        .await?;
    let logins_inserted = tx
        .execute(
            INSERT_LOGINS,
            &[
                &c.message_ids,
                &c.user_ids,
                &c.device_types,
                &c.masked_ips,
                &c.masked_device_ids,
                &c.locales,
                &c.app_versions,
                &c.app_versions_raw,
                &c.create_dates,
                &c.sent_ats,
                &c.index_versions,
            ],
        )
        .await?;
    tx.commit().await?;
    Ok((logins_inserted, vault_inserted))
}
