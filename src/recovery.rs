//! PII recovery, the staff side of the vault: find rows by plaintext (blind index only),
//! reveal and forget through the audited SECURITY DEFINER functions, list the audit,
//! rotate the data key and re-encrypt the vault under the newest version. The `pii-vault`
//! binary is its command line.

use std::collections::BTreeSet;

use chrono::{DateTime, NaiveDate, Utc};
use tokio_postgres::error::SqlState;
use zeroize::Zeroizing;

use crate::config::ConfigError;
use crate::crypto::{BlindIndex, BlindIndexer, KeyPurpose, PiiField, SealError, SealedValue};
use crate::error::DbError;
use crate::keys::{self, DataKeyCache, KeyError, Kms};

#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error("a reason is required: every reveal and erasure is audited with who, when, what and why")]
    NoReason,
    #[error("no vault entry and no row for that {0}")]
    Unknown(String),
    #[error("the {0} value was erased (crypto-shredded); it cannot be revealed")]
    Erased(PiiField),
    #[error("permission denied for this database role: {0}")]
    PermissionDenied(String),
    #[error("configuration")]
    Config(#[from] ConfigError),
    #[error("keys")]
    Keys(#[source] KeyError),
    #[error("database")]
    Db(#[source] DbError),
    #[error("vault row")]
    Seal(#[from] SealError),
    #[error("rotation raced with another rotation to version {0}; run it again")]
    RotationRace(i32),
}

impl RecoveryError {
    /// The process exit code `pii-vault --help` documents.
    pub fn exit_code(&self) -> i32 {
        match self {
            RecoveryError::NoReason | RecoveryError::Config(_) => 2,
            RecoveryError::Unknown(_) => 3,
            RecoveryError::Erased(_) => 4,
            RecoveryError::PermissionDenied(_) => 5,
            RecoveryError::Keys(_) => 6,
            RecoveryError::Db(_) => 7,
            RecoveryError::Seal(_) | RecoveryError::RotationRace(_) => 1,
        }
    }
}

impl From<DbError> for RecoveryError {
    fn from(error: DbError) -> Self {
        match error.inner().as_db_error() {
            Some(db) if db.code() == &SqlState::INSUFFICIENT_PRIVILEGE => {
                RecoveryError::PermissionDenied(db.message().to_owned())
            }
            _ => RecoveryError::Db(error),
        }
    }
}

impl From<tokio_postgres::Error> for RecoveryError {
    fn from(error: tokio_postgres::Error) -> Self {
        RecoveryError::from(DbError::from(error))
    }
}

impl From<KeyError> for RecoveryError {
    fn from(error: KeyError) -> Self {
        match error {
            KeyError::Db(db) => RecoveryError::from(db),
            other => RecoveryError::Keys(other),
        }
    }
}

/// A reason that is present and not blank.
pub fn require_reason(reason: Option<&str>) -> Result<&str, RecoveryError> {
    reason.map(str::trim).filter(|r| !r.is_empty()).ok_or(RecoveryError::NoReason)
}

/// A `user_logins` row as `find` shows it (no PII: masks only).
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoginMatch {
    pub sqs_message_id: Option<String>,
    pub user_id: Option<String>,
    pub device_type: Option<String>,
    pub locale: Option<String>,
    pub app_version_raw: Option<String>,
    pub create_date: Option<NaiveDate>,
    pub masked_ip: Option<String>,
    pub masked_device_id: Option<String>,
}

/// Rows whose mask for `field` is that of `plaintext` (normalized as the function does).
pub async fn find(
    db: &tokio_postgres::Client,
    indexer: &BlindIndexer,
    field: PiiField,
    normalized: &str,
) -> Result<(BlindIndex, Vec<LoginMatch>), RecoveryError> {
    let index = indexer.index(field, normalized);
    let column = field.mask_column();
    let rows = db
        .query(
            &format!(
                "SELECT sqs_message_id, user_id, device_type, locale, app_version_raw, create_date,
                        masked_ip, masked_device_id
                   FROM user_logins WHERE {column} = $1 ORDER BY sent_at, sqs_message_id"
            ),
            &[&index.as_str()],
        )
        .await?;
    let matches = rows
        .iter()
        .map(|r| LoginMatch {
            sqs_message_id: r.get(0),
            user_id: r.get(1),
            device_type: r.get(2),
            locale: r.get(3),
            app_version_raw: r.get(4),
            create_date: r.get(5),
            masked_ip: r.get(6),
            masked_device_id: r.get(7),
        })
        .collect();
    Ok((index, matches))
}

/// The (field, mask) pairs of a user's rows.
pub async fn masks_of_user(
    db: &tokio_postgres::Client,
    user_id: &str,
) -> Result<Vec<(PiiField, BlindIndex)>, RecoveryError> {
    let [ip_column, device_id_column] = PiiField::ALL.map(PiiField::mask_column);
    let rows = db
        .query(
            &format!("SELECT {ip_column}, {device_id_column} FROM user_logins WHERE user_id = $1"),
            &[&user_id],
        )
        .await?;
    let mut targets = BTreeSet::new();
    for row in rows {
        for (column, field) in PiiField::ALL.into_iter().enumerate() {
            let mask: Option<String> = row.get(column);
            if let Some(index) = mask.as_deref().and_then(BlindIndex::parse) {
                targets.insert((field, index));
            }
        }
    }
    if targets.is_empty() {
        return Err(RecoveryError::Unknown("user id".into()));
    }
    Ok(targets.into_iter().collect())
}

/// One revealed value.
pub struct Revealed {
    pub field: PiiField,
    pub blind_index: BlindIndex,
    pub value: Zeroizing<String>,
}

/// Reveals one value: the audit row is written by `pii_reveal` before it returns the
/// ciphertext, in this statement's transaction; a failed audit shows nothing.
pub async fn reveal(
    db: &tokio_postgres::Client,
    kms: &Kms,
    keys: &mut DataKeyCache,
    field: PiiField,
    index: &BlindIndex,
    reason: &str,
    actor: &str,
) -> Result<Revealed, RecoveryError> {
    let row = db
        .query_one(
            "SELECT outcome, key_version, nonce, ciphertext FROM pii_reveal($1, $2, $3, $4)",
            &[&field.as_str(), &index.as_str(), &reason, &actor],
        )
        .await?;
    let outcome: String = row.get(0);
    match outcome.as_str() {
        "erased" => return Err(RecoveryError::Erased(field)),
        "unknown" => return Err(RecoveryError::Unknown(format!("masked {field}"))),
        _ => {}
    }
    let sealed = SealedValue::from_stored(row.get(1), row.get(2), row.get(3))?;
    let key = keys.get(db, kms, sealed.key_version).await?;
    let value = key.open(field, index, &sealed)?;
    Ok(Revealed { field, blind_index: index.clone(), value })
}

/// Crypto-shreds one value; returns `forgotten`, or `erased` if it already was.
pub async fn forget(
    db: &tokio_postgres::Client,
    field: PiiField,
    index: &BlindIndex,
    reason: &str,
    actor: &str,
) -> Result<String, RecoveryError> {
    let row = db
        .query_one("SELECT pii_forget($1, $2, $3, $4)", &[&field.as_str(), &index.as_str(), &reason, &actor])
        .await?;
    let outcome: String = row.get(0);
    if outcome == "unknown" {
        return Err(RecoveryError::Unknown(format!("masked {field}")));
    }
    Ok(outcome)
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditEntry {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub db_user: String,
    pub actor: String,
    pub action: String,
    pub field: String,
    pub blind_index: String,
    pub reason: String,
    pub outcome: String,
}

pub async fn audit(
    db: &tokio_postgres::Client,
    since: Option<DateTime<Utc>>,
) -> Result<Vec<AuditEntry>, RecoveryError> {
    let rows = db
        .query(
            "SELECT id, at, db_user, actor, action, field, blind_index, reason, outcome
               FROM pii_audit WHERE $1::timestamptz IS NULL OR at >= $1 ORDER BY id",
            &[&since],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| AuditEntry {
            id: r.get(0),
            at: r.get(1),
            db_user: r.get(2),
            actor: r.get(3),
            action: r.get(4),
            field: r.get(5),
            blind_index: r.get(6),
            reason: r.get(7),
            outcome: r.get(8),
        })
        .collect())
}

/// Creates data key version newest+1; new cold starts of the function seal with it.
pub async fn rotate_data_key(db: &tokio_postgres::Client, kms: &Kms) -> Result<i32, RecoveryError> {
    let newest = keys::newest_data_key_version(db).await?;
    let version = newest.unwrap_or(0) + 1;
    let (_material, wrapped) = kms.generate(KeyPurpose::Data, version).await?;
    if !keys::insert_wrapped_key(db, &wrapped).await? {
        return Err(RecoveryError::RotationRace(version));
    }
    Ok(version)
}

/// Re-encrypts, batch by batch, every vault row sealed under an older data-key version
/// with the newest one. Each batch is its own transaction (rows locked, others skipped),
/// so it can be stopped and resumed, and runs beside the function. Masks are untouched.
pub async fn reencrypt(
    db: &mut tokio_postgres::Client,
    kms: &Kms,
    keys: &mut DataKeyCache,
    batch_size: i64,
    mut progress: impl FnMut(u64, i64),
) -> Result<u64, RecoveryError> {
    let newest =
        keys::newest_data_key_version(&*db).await?.ok_or_else(|| KeyError::Missing("data".into()))?;
    let mut done = 0u64;
    loop {
        let remaining: i64 =
            db.query_one("SELECT count(*) FROM pii_vault WHERE key_version < $1", &[&newest]).await?.get(0);
        progress(done, remaining);
        let tx = db.transaction().await?;
        let rows = tx
            .query(
                "SELECT field, blind_index, key_version, nonce, ciphertext FROM pii_vault
                  WHERE key_version < $1 ORDER BY field, blind_index LIMIT $2 FOR UPDATE SKIP LOCKED",
                &[&newest, &batch_size],
            )
            .await?;
        if rows.is_empty() {
            break;
        }
        let (mut fields, mut indexes, mut nonces, mut ciphertexts) = (vec![], vec![], vec![], vec![]);
        for row in &rows {
            let field_name: String = row.get(0);
            let field = PiiField::from_db(&field_name).ok_or(SealError::Unauthentic)?;
            let index = BlindIndex::parse(row.get(1)).ok_or(SealError::Unauthentic)?;
            let sealed = SealedValue::from_stored(row.get(2), row.get(3), row.get(4))?;
            let value = keys.get(&tx, kms, sealed.key_version).await?.open(field, &index, &sealed)?;
            let resealed = keys.get(&tx, kms, newest).await?.seal(field, &index, &value)?;
            fields.push(field_name);
            indexes.push(index.as_str().to_owned());
            nonces.push(resealed.nonce.to_vec());
            ciphertexts.push(resealed.ciphertext);
        }
        tx.execute(
            "UPDATE pii_vault v SET key_version = $1, nonce = n.nonce, ciphertext = n.ciphertext
               FROM UNNEST($2::text[], $3::text[], $4::bytea[], $5::bytea[]) AS n(field, blind_index, nonce, ciphertext)
              WHERE (v.field, v.blind_index) = (n.field, n.blind_index)",
            &[&newest, &fields, &indexes, &nonces, &ciphertexts],
        )
        .await?;
        tx.commit().await?;
        done += rows.len() as u64;
    }
    Ok(done)
}
