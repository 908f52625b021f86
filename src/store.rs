//! Postgres for the function: the connection pool, the migrations in `sql/` and the
//! set-based batch write. One transaction per batch; one statement per table per batch
//! (UNNEST of arrays), never a statement per row.

use chrono::{DateTime, NaiveDate, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use crate::config::database::CONNECT_TIMEOUT;
use crate::crypto::{BlindIndex, PiiField, SealedValue};
use crate::error::DbError;

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

pub fn pool(config: tokio_postgres::Config, max_size: usize) -> Result<Pool, StoreError> {
    let manager =
        Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
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
}

const INSERT_VAULT: &str = "
    INSERT INTO pii_vault (field, blind_index, key_version, nonce, ciphertext)
    SELECT * FROM UNNEST($1::text[], $2::text[], $3::int4[], $4::bytea[], $5::bytea[])
        AS v(field, blind_index, key_version, nonce, ciphertext)
    WHERE NOT EXISTS (SELECT 1 FROM pii_erasures e WHERE (e.field, e.blind_index) = (v.field, v.blind_index))
    ON CONFLICT DO NOTHING";

const INSERT_LOGINS: &str = "
    INSERT INTO user_logins (sqs_message_id, user_id, device_type, masked_ip, masked_device_id,
                             locale, app_version, app_version_raw, create_date, sent_at,
                             index_key_version)
    SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                         $6::text[], $7::int4[], $8::text[], $9::date[], $10::timestamptz[],
                         $11::int4[])
    ON CONFLICT DO NOTHING";

/// Writes the vault rows and the login rows of one batch in one transaction. Rows whose
/// message id (or vault key) already exists are skipped: re-delivery adds nothing.
pub async fn write_batch(
    pool: &Pool,
    logins: &[LoginRow],
    vault: &[VaultRow],
) -> Result<WriteOutcome, StoreError> {
    if logins.is_empty() && vault.is_empty() {
        return Ok(WriteOutcome { logins_inserted: 0, vault_inserted: 0 });
    }
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;

    let fields: Vec<&str> = vault.iter().map(|v| v.field.as_str()).collect();
    let indexes: Vec<&str> = vault.iter().map(|v| v.blind_index.as_str()).collect();
    let versions: Vec<i32> = vault.iter().map(|v| v.sealed.key_version).collect();
    let nonces: Vec<&[u8]> = vault.iter().map(|v| v.sealed.nonce.as_slice()).collect();
    let ciphertexts: Vec<&[u8]> = vault.iter().map(|v| v.sealed.ciphertext.as_slice()).collect();
    let vault_inserted =
        tx.execute(INSERT_VAULT, &[&fields, &indexes, &versions, &nonces, &ciphertexts]).await?;

    let column = |f: fn(&LoginRow) -> &str| logins.iter().map(f).collect::<Vec<&str>>();
    let message_ids = column(|r| &r.sqs_message_id);
    let user_ids = column(|r| &r.user_id);
    let device_types = column(|r| &r.device_type);
    let masked_ips = column(|r| r.masked_ip.as_str());
    let masked_device_ids = column(|r| r.masked_device_id.as_str());
    let app_versions_raw = column(|r| &r.app_version_raw);
    let locales: Vec<Option<&str>> = logins.iter().map(|r| r.locale.as_deref()).collect();
    let app_versions: Vec<i32> = logins.iter().map(|r| r.app_version).collect();
    let create_dates: Vec<NaiveDate> = logins.iter().map(|r| r.create_date).collect();
    let sent_ats: Vec<DateTime<Utc>> = logins.iter().map(|r| r.sent_at).collect();
    let index_versions: Vec<i32> = logins.iter().map(|r| r.index_key_version).collect();
    let logins_inserted = tx
        .execute(
            INSERT_LOGINS,
            &[
                &message_ids,
                &user_ids,
                &device_types,
                &masked_ips,
                &masked_device_ids,
                &locales,
                &app_versions,
                &app_versions_raw,
                &create_dates,
                &sent_ats,
                &index_versions,
            ],
        )
        .await?;

    tx.commit().await?;
    Ok(WriteOutcome { logins_inserted, vault_inserted })
}
