//! Postgres: the connection pool, the migrations in `sql/`, the keys table and the
//! set-based batch write. One transaction per batch; one statement per table per batch
//! (UNNEST of arrays), never a statement per row.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use crate::keys::{KeyPurpose, WrappedKey};
use crate::masking::{BlindIndex, PiiField};
use crate::vault::SealedValue;

mod embedded {
    refinery::embed_migrations!("sql");
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {}", describe(.0))]
    Db(#[from] tokio_postgres::Error),
    #[error("database pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("database pool setup: {0}")]
    Build(#[from] deadpool_postgres::BuildError),
    #[error("migration: {0}")]
    Migration(#[from] refinery::Error),
    #[error("pii_keys holds an unknown purpose {0:?}")]
    UnknownPurpose(String),
}

/// tokio-postgres' Display of a server error omits its detail; keep the message and code.
/// Server messages here never carry plaintext PII: the tables hold only masks and
/// ciphertext.
fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => error.to_string(),
    }
}

/// How long the function waits for a connection before failing the invocation (so SQS
/// retries) instead of running into the Lambda timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Parses a libpq-style URL or key=value string, naming no secret in the error.
pub fn parse_database_url(url: &str) -> Result<tokio_postgres::Config, String> {
    let config = tokio_postgres::Config::from_str(url).map_err(|e| e.to_string())?;
    if config.get_hosts().is_empty() {
        return Err("no host".into());
    }
    Ok(with_defaults(config))
}

/// A connect timeout and an application name, unless the settings give their own.
pub fn with_defaults(mut config: tokio_postgres::Config) -> tokio_postgres::Config {
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("login-etl");
    }
    config
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

/// The newest wrapped key of every purpose present.
pub async fn latest_wrapped_keys(db: &tokio_postgres::Client) -> Result<Vec<WrappedKey>, StoreError> {
    let rows = db
        .query(
            "SELECT DISTINCT ON (purpose) purpose, version, kms_key_id, wrapped_key
               FROM pii_keys ORDER BY purpose, version DESC",
            &[],
        )
        .await?;
    rows.iter()
        .map(|row| {
            let purpose: String = row.try_get(0)?;
            Ok(WrappedKey {
                purpose: KeyPurpose::from_db(&purpose).ok_or(StoreError::UnknownPurpose(purpose))?,
                version: row.try_get(1)?,
                kms_key_id: row.try_get(2)?,
                blob: row.try_get(3)?,
            })
        })
        .collect()
}

/// One stored key, if present.
pub async fn wrapped_key(
    db: &impl tokio_postgres::GenericClient,
    purpose: KeyPurpose,
    version: i32,
) -> Result<Option<WrappedKey>, StoreError> {
    let row = db
        .query_opt(
            "SELECT kms_key_id, wrapped_key FROM pii_keys WHERE purpose = $1 AND version = $2",
            &[&purpose.as_str(), &version],
        )
        .await?;
    Ok(match row {
        Some(row) => {
            Some(WrappedKey { purpose, version, kms_key_id: row.try_get(0)?, blob: row.try_get(1)? })
        }
        None => None,
    })
}

/// Stores a wrapped key unless that (purpose, version) exists; true if this one won.
pub async fn insert_wrapped_key(db: &tokio_postgres::Client, key: &WrappedKey) -> Result<bool, StoreError> {
    let inserted = db
        .execute(
            "INSERT INTO pii_keys (purpose, version, kms_key_id, wrapped_key)
             VALUES ($1, $2, $3, $4) ON CONFLICT (purpose, version) DO NOTHING",
            &[&key.purpose.as_str(), &key.version, &key.kms_key_id, &key.blob],
        )
        .await?;
    Ok(inserted == 1)
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
