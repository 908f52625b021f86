//! The batch write: one transaction per batch, fed part by part while the rest of the batch
//! is still being parsed and sealed, so the database and the crypto work at the same time.
//! Login rows go in one streamed `COPY` (or set-based INSERTs), vault rows in one set-based
//! INSERT (UNNEST of column arrays); never a statement per row.

use chrono::{DateTime, NaiveDate, Utc};
use std::sync::LazyLock;

use deadpool_postgres::{Pool, Transaction};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_postgres::Statement;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;

use super::{RetryPolicy, StoreError};
use crate::crypto::{BlindIndex, PiiField, SealedValue};

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

/// What the producer of a batch sends the writer, in lock order (below): every `Logins`
/// part, then the `Vault` part(s), then `Complete`. Without `Complete` nothing is committed.
#[derive(Debug)]
pub enum BatchPart {
    Logins(Vec<LoginRow>),
    Vault(Vec<VaultRow>),
    /// The batch is whole: commit.
    Complete,
}

/// What a batch write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteOutcome {
    pub logins_inserted: u64,
    pub vault_inserted: u64,
    /// Attempts that failed with a transient error and were made again.
    pub retries: u32,
}

// Lock order. `INSERT … ON CONFLICT DO NOTHING` and `COPY` take each row's unique-key lock
// in the order the rows arrive; two batches holding the same values (one carrier-NAT ip, one
// family's device, one message delivered twice) in different orders would wait on each
// other until Postgres kills one (deadlock, 40P01). Every batch therefore inserts its login
// rows sorted by message id, then its vault rows sorted by (field, blind index), in bytewise
// order ("C" collation), across all its parts: all transactions take the locks they share in
// one global order, so none waits on another in a cycle. Login rows come first because they
// need only the masks, which are cheap; the vault rows are sealed meanwhile.
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

/// A batch whose first login part has at least this many rows loads its login rows with
/// one binary `COPY` (the database's bulk path), streamed part by part as they arrive,
/// rather than `INSERT … ON CONFLICT` (speculative insertion, about a third slower a row;
/// BENCHMARKS.md). `COPY` cannot skip a row already present, so it runs after a savepoint:
/// if a message id is already there (a re-delivery), the login rows go again from the
/// savepoint with `INSERT … ON CONFLICT DO NOTHING`. Smaller batches keep the one
/// statement, which is fewer round trips.
pub const COPY_MIN_ROWS: usize = 256;

/// The login columns `COPY` sends, with the binary type of each. Binary `COPY` does not
/// convert: the table's columns must have these types (varchar columns may be text).
pub const LOGIN_COLUMNS: [(&str, Type); 11] = [
    ("sqs_message_id", Type::VARCHAR),
    ("user_id", Type::VARCHAR),
    ("device_type", Type::VARCHAR),
    ("masked_ip", Type::VARCHAR),
    ("masked_device_id", Type::VARCHAR),
    ("locale", Type::VARCHAR),
    ("app_version", Type::INT4),
    ("app_version_raw", Type::VARCHAR),
    ("create_date", Type::DATE),
    ("sent_at", Type::TIMESTAMPTZ),
    ("index_key_version", Type::INT4),
];

static COPY_LOGINS: LazyLock<String> = LazyLock::new(|| {
    let columns: Vec<&str> = LOGIN_COLUMNS.iter().map(|(name, _)| *name).collect();
    format!("COPY user_logins ({}) FROM STDIN (FORMAT binary)", columns.join(", "))
});

/// How a batch's login rows are loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginLoad {
    /// One binary `COPY` when the batch is large enough (see [`COPY_MIN_ROWS`]).
    Copy,
    /// `INSERT … ON CONFLICT DO NOTHING` only: the table cannot take the `COPY`, or the
    /// batch holds re-deliveries (its ids may be there already; a `COPY` would be undone).
    Insert,
}

/// Whether `user_logins` takes the `COPY`: a plain table (a partitioned one would take the
/// rows partition by partition, not in the lock order) whose columns have the types the
/// `COPY` sends (a table kept from the exercise's own setup may not). When not, says why.
pub async fn login_load(client: &tokio_postgres::Client) -> Result<(LoginLoad, Option<String>), StoreError> {
    let rows = client
        .query(
            "SELECT c.relkind::text, a.attname::text, t.typname::text
               FROM pg_class c
               JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
               JOIN pg_type t ON t.oid = a.atttypid
              WHERE c.oid = 'user_logins'::regclass",
            &[],
        )
        .await?;
    if let Some(row) = rows.first()
        && row.get::<_, &str>(0) != "r"
    {
        return Ok((LoginLoad::Insert, Some("user_logins is not a plain table (partitioned?)".to_owned())));
    }
    for (name, sent) in &LOGIN_COLUMNS {
        let found = rows.iter().find(|row| row.get::<_, &str>(1) == *name).map(|row| row.get::<_, &str>(2));
        let fits = found == Some(sent.name()) || (*sent == Type::VARCHAR && found == Some("text"));
        if !fits {
            return Ok((
                LoginLoad::Insert,
                Some(format!("user_logins.{name} is {}, not {}", found.unwrap_or("missing"), sent.name())),
            ));
        }
    }
    Ok((LoginLoad::Copy, None))
}

/// Writes a batch as its parts arrive, in one transaction, and commits once `Complete`
/// arrives. Rows whose message id (or vault key) already exists are skipped: re-delivery
/// adds nothing. Transient errors are retried as `retry` allows (see [`super::retry`]):
/// the parts received so far are kept and sent again, the rest still streams in.
pub async fn write_batch(
    pool: &Pool,
    parts: UnboundedReceiver<BatchPart>,
    retry: &RetryPolicy,
    load: LoginLoad,
) -> Result<WriteOutcome, StoreError> {
    let mut batch = Batch { parts, received: Vec::new(), complete: false, load };
    // A batch of rejections only: no transaction at all.
    if !batch.has(0).await? {
        return Ok(WriteOutcome { logins_inserted: 0, vault_inserted: 0, retries: 0 });
    }
    let mut attempts = retry.start();
    loop {
        match batch.write_once(pool).await {
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

/// A batch being written: its parts as they arrive, and those already received (kept, so
/// that a retry sends them again).
struct Batch {
    parts: UnboundedReceiver<BatchPart>,
    received: Vec<BatchPart>,
    complete: bool,
    /// `Insert` from the start, or once a `COPY` met a message id already written.
    load: LoginLoad,
}

struct Statements {
    logins: Statement,
    vault: Statement,
    copy_logins: Statement,
}

impl Batch {
    /// One attempt on a connection of the pool. A connection an attempt failed on leaves
    /// the pool: it may be dead without knowing it yet, and would fail the retry too.
    async fn write_once(&mut self, pool: &Pool) -> Result<(u64, u64), StoreError> {
        let mut client = pool.get().await?;
        let written = self.write_on(&mut client).await;
        if written.is_err() {
            drop(deadpool_postgres::Object::take(client));
        }
        written
    }

    /// The login parts (one `COPY` for them all, or one INSERT each), then the vault
    /// parts, each as soon as it is there, then COMMIT.
    async fn write_on(&mut self, client: &mut deadpool_postgres::Client) -> Result<(u64, u64), StoreError> {
        let tx = client.transaction().await?;
        let statements = Statements {
            logins: tx.prepare_cached(INSERT_LOGINS).await?,
            vault: tx.prepare_cached(INSERT_VAULT).await?,
            copy_logins: tx.prepare_cached(&COPY_LOGINS).await?,
        };
        let (mut logins, mut vault) = (0, 0);
        let mut index = 0;
        let copy = self.load == LoginLoad::Copy
            && self.has(index).await?
            && matches!(&self.received[index], BatchPart::Logins(rows) if rows.len() >= COPY_MIN_ROWS);
        if copy {
            tx.batch_execute("SAVEPOINT logins").await?;
            match self.copy_logins(&tx, &statements, &mut index).await {
                Ok(copied) => logins = copied,
                Err(error) if is_unique_violation(&error) => {
                    // A re-delivery: undo the copied rows, send them all again below.
                    tx.batch_execute("ROLLBACK TO SAVEPOINT logins").await?;
                    self.load = LoginLoad::Insert;
                    index = 0;
                }
                Err(error) => return Err(error),
            }
        }
        while self.has(index).await? {
            match &self.received[index] {
                BatchPart::Logins(rows) => logins += insert_logins(&tx, &statements, rows).await?,
                BatchPart::Vault(rows) => {
                    let c = VaultColumns::new(rows);
                    vault += tx
                        .execute(
                            &statements.vault,
                            &[&c.fields, &c.indexes, &c.versions, &c.nonces, &c.ciphertexts],
                        )
                        .await?;
                }
                BatchPart::Complete => {}
            }
            index += 1;
        }
        tx.commit().await?;
        Ok((logins, vault))
    }

    /// Whether part `index` exists, waiting for it if the batch is not complete yet. The
    /// producer stopping without `Complete` is an error: nothing may be committed.
    async fn has(&mut self, index: usize) -> Result<bool, StoreError> {
        while self.received.len() <= index && !self.complete {
            match self.parts.recv().await {
                Some(BatchPart::Complete) => self.complete = true,
                // Kept before it is sent, so that a retry sends it again.
                Some(part) => self.received.push(part),
                None => return Err(StoreError::Incomplete),
            }
        }
        Ok(self.received.len() > index)
    }

    /// Streams every login part from `index` on into one `COPY`, as they arrive; leaves
    /// `index` at the first part that is not a login part.
    async fn copy_logins(
        &mut self,
        tx: &Transaction<'_>,
        statements: &Statements,
        index: &mut usize,
    ) -> Result<u64, StoreError> {
        let sink = tx.copy_in(&statements.copy_logins).await?;
        let types: Vec<Type> = LOGIN_COLUMNS.iter().map(|(_, sent)| sent.clone()).collect();
        let mut writer = std::pin::pin!(BinaryCopyInWriter::new(sink, &types));
        while self.has(*index).await? {
            let BatchPart::Logins(rows) = &self.received[*index] else { break };
            for r in rows {
                writer
                    .as_mut()
                    .write(&[
                        &r.sqs_message_id.as_str(),
                        &r.user_id.as_str(),
                        &r.device_type.as_str(),
                        &r.masked_ip.as_str(),
                        &r.masked_device_id.as_str(),
                        &r.locale.as_deref(),
                        &r.app_version,
                        &r.app_version_raw.as_str(),
                        &r.create_date,
                        &r.sent_at,
                        &r.index_key_version,
                    ])
                    .await?;
            }
            *index += 1;
        }
        Ok(writer.finish().await?)
    }
}

async fn insert_logins(
    tx: &Transaction<'_>,
    statements: &Statements,
    rows: &[LoginRow],
) -> Result<u64, tokio_postgres::Error> {
    let c = LoginColumns::new(rows);
    tx.execute(
        &statements.logins,
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
    .await
}

fn is_unique_violation(error: &StoreError) -> bool {
    matches!(error, StoreError::Db(db) if db.code() == Some(&SqlState::UNIQUE_VIOLATION))
}

/// Login rows as the column arrays the statement binds.
struct LoginColumns<'a> {
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

impl<'a> LoginColumns<'a> {
    fn new(rows: &'a [LoginRow]) -> Self {
        let text = |f: fn(&LoginRow) -> &str| rows.iter().map(f).collect::<Vec<&str>>();
        LoginColumns {
            message_ids: text(|r| &r.sqs_message_id),
            user_ids: text(|r| &r.user_id),
            device_types: text(|r| &r.device_type),
            masked_ips: text(|r| r.masked_ip.as_str()),
            masked_device_ids: text(|r| r.masked_device_id.as_str()),
            locales: rows.iter().map(|r| r.locale.as_deref()).collect(),
            app_versions: rows.iter().map(|r| r.app_version).collect(),
            app_versions_raw: text(|r| &r.app_version_raw),
            create_dates: rows.iter().map(|r| r.create_date).collect(),
            sent_ats: rows.iter().map(|r| r.sent_at).collect(),
            index_versions: rows.iter().map(|r| r.index_key_version).collect(),
        }
    }
}

/// Vault rows as the column arrays the statement binds.
struct VaultColumns<'a> {
    fields: Vec<&'a str>,
    indexes: Vec<&'a str>,
    versions: Vec<i32>,
    nonces: Vec<&'a [u8]>,
    ciphertexts: Vec<&'a [u8]>,
}

impl<'a> VaultColumns<'a> {
    fn new(rows: &'a [VaultRow]) -> Self {
        VaultColumns {
            fields: rows.iter().map(|v| v.field.as_str()).collect(),
            indexes: rows.iter().map(|v| v.blind_index.as_str()).collect(),
            versions: rows.iter().map(|v| v.sealed.key_version).collect(),
            nonces: rows.iter().map(|v| v.sealed.nonce.as_slice()).collect(),
            ciphertexts: rows.iter().map(|v| v.sealed.ciphertext.as_slice()).collect(),
        }
    }
}
