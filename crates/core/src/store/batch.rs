//! The batch write: a prepared batch in one transaction, in lock order, never a statement
//! per row. Login rows go in one set-based INSERT generated from the table description
//! ([`super::table`]), vault rows in another. A transient error runs the same rows again
//! ([`super::retry`]).
//!
//! No binary `COPY`: `user_logins` is partitioned (V13), and a `COPY` into a partitioned
//! table buffers its rows partition by partition, so a batch spanning two months would
//! take their key locks out of the lock order below; one `INSERT … ORDER BY` routes the
//! rows one by one, in key order. The `COPY` this path had until then ran only against a
//! plain table, from 1,000 rows, which the template's batch size (100) never reaches
//! (BENCHMARKS.md, "Login rows by INSERT and by COPY").

use chrono::{DateTime, Utc};

use deadpool_postgres::{Pool, Transaction};
use tokio_postgres::GenericClient;
use tokio_postgres::types::{ToSql, Type};

use super::erasure::{self, Erased, MarkedValue};
use super::quarantine::{
    INSERT_QUARANTINE, INSERT_QUARANTINE_MASKS, LOGIN_QUARANTINE, LOGIN_QUARANTINE_MASKS, QuarantineMask,
    QuarantineRow,
};
use super::table::{INSERT_LOGINS, Table, USER_LOGINS};
use super::{RetryPolicy, StoreError};
use crate::crypto::{BlindIndex, ErasureKey, PiiField, SealedValue};
use crate::event::LoginDetails;

/// One `user_logins` row, PII already masked. Its columns are read by [`USER_LOGINS`].
#[derive(Debug, Clone)]
pub struct LoginRow {
    /// The idempotency key: SQS delivers at least once.
    pub sqs_message_id: String,
    /// SQS `SentTimestamp`; `create_date` is its UTC date.
    pub sent_at: DateTime<Utc>,
    /// What the message says, apart from its PII.
    pub details: LoginDetails,
    pub masked_ip: BlindIndex,
    pub masked_device_id: BlindIndex,
    pub index_key_version: i32,
}

/// One `pii_vault` row.
#[derive(Debug, Clone)]
pub struct VaultRow {
    pub field: PiiField,
    pub blind_index: BlindIndex,
    pub sealed: SealedValue,
}

impl VaultRow {
    /// The vault's key, as the store orders it.
    pub fn key(&self) -> (&str, &str) {
        (self.field.as_str(), self.blind_index.as_str())
    }
}

/// The rows of one batch, in the order the store writes them (its lock order, below):
/// login rows by message id, quarantined messages by (message id, attempt), vault rows by
/// (field, blind index), each value once; and the erasure marker of every value it masks.
#[derive(Debug, Default)]
pub struct PreparedBatch {
    logins: Vec<LoginRow>,
    quarantine: Vec<QuarantineRow>,
    quarantine_masks: Vec<QuarantineMask>,
    vault: Vec<VaultRow>,
    marked: Vec<MarkedValue>,
}

impl PreparedBatch {
    /// Puts the rows in lock order (bytewise, as the statements' "C" collation orders),
    /// keeps each vault value once, and marks every masked value under the erasure key
    /// (the write looks the markers up: an erased value is written as its token).
    pub fn new(
        mut logins: Vec<LoginRow>,
        mut quarantine: Vec<QuarantineRow>,
        mut vault: Vec<VaultRow>,
        erasure_key: &ErasureKey,
    ) -> PreparedBatch {
        logins.sort_by(|a, b| a.sqs_message_id.cmp(&b.sqs_message_id));
        quarantine.sort_by(|a, b| a.key().cmp(&b.key()));
        let mut quarantine_masks: Vec<QuarantineMask> =
            quarantine.iter().flat_map(QuarantineRow::mask_rows).collect();
        quarantine_masks.sort_by(|a, b| a.key().cmp(&b.key()));
        quarantine_masks.dedup();
        vault.sort_by(|a, b| a.key().cmp(&b.key()));
        vault.dedup_by(|a, b| a.key() == b.key());
        let marked = erasure::mark(
            erasure_key,
            logins
                .iter()
                .flat_map(|l| [(PiiField::Ip, &l.masked_ip), (PiiField::DeviceId, &l.masked_device_id)])
                .chain(quarantine_masks.iter().map(|m| (m.field, &m.blind_index)))
                .chain(vault.iter().map(|v| (v.field, &v.blind_index))),
        );
        PreparedBatch { logins, quarantine, quarantine_masks, vault, marked }
    }

    /// The batch as it is written when some of its values were erased: their masks
    /// replaced by their tokens, their vault rows dropped (an erased value is never
    /// vaulted again). Rare: built only then, the common batch is written as it is.
    fn erasing(&self, erased: &Erased) -> PreparedBatch {
        let logins = self
            .logins
            .iter()
            .map(|l| LoginRow {
                masked_ip: erased.masked(PiiField::Ip, &l.masked_ip),
                masked_device_id: erased.masked(PiiField::DeviceId, &l.masked_device_id),
                ..l.clone()
            })
            .collect();
        let mut quarantine_masks: Vec<QuarantineMask> = self
            .quarantine_masks
            .iter()
            .map(|m| QuarantineMask { blind_index: erased.masked(m.field, &m.blind_index), ..m.clone() })
            .collect();
        quarantine_masks.sort_by(|a, b| a.key().cmp(&b.key()));
        let vault =
            self.vault.iter().filter(|v| erased.token(v.field, &v.blind_index).is_none()).cloned().collect();
        PreparedBatch {
            logins,
            quarantine: self.quarantine.clone(),
            quarantine_masks,
            vault,
            marked: Vec::new(),
        }
    }

    pub fn logins(&self) -> &[LoginRow] {
        &self.logins
    }

    pub fn quarantine(&self) -> &[QuarantineRow] {
        &self.quarantine
    }

    pub fn vault(&self) -> &[VaultRow] {
        &self.vault
    }

    pub fn is_empty(&self) -> bool {
        self.logins.is_empty() && self.quarantine.is_empty() && self.vault.is_empty()
    }
}

/// What a batch write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriteOutcome {
    pub logins_inserted: u64,
    /// Quarantine rows added (a re-delivered rejected message adds none).
    pub quarantined: u64,
    pub vault_inserted: u64,
    /// Attempts that failed with a transient error and were made again.
    pub retries: u32,
}

// Lock order. First the erasure lock, shared ([`erasure`]; a forget holds it exclusive,
// and takes row locks only after it). Then the rows: `INSERT … ON CONFLICT DO NOTHING`
// takes each row's unique-key lock in the order the rows arrive; two batches holding the
// same values (one carrier-NAT ip, one family's device, one message delivered twice) in
// different orders would wait on each other until Postgres kills one (deadlock, 40P01). Every batch therefore writes its login
// rows sorted by message id, then its quarantine rows sorted by (message id, attempt) and
// their masks by (message id, attempt, field, blind index), then its vault rows sorted by
// (field, blind index), bytewise
// ("C" collation): all transactions take the locks they share in one global order, so none
// waits on another in a cycle. The statements sort too (ORDER BY), so the order holds
// whatever the caller hands in; `PreparedBatch::new` sorts too (dedup, and a retry's rows).
const INSERT_VAULT: &str = r#"
    INSERT INTO vault.pii_vault (field, blind_index, key_version, nonce, ciphertext)
    SELECT v.* FROM UNNEST($1::text[], $2::text[], $3::int4[], $4::bytea[], $5::bytea[])
        AS v(field, blind_index, key_version, nonce, ciphertext)
    ORDER BY v.field COLLATE "C", v.blind_index COLLATE "C"
    ON CONFLICT DO NOTHING"#;

/// Writes the batch in one transaction. Rows whose message id (or vault key) already exists
/// are skipped: re-delivery adds nothing. Transient errors are retried as `retry` allows:
/// the same rows, in a new transaction on another connection.
pub async fn write_batch(
    pool: &Pool,
    batch: &PreparedBatch,
    retry: &RetryPolicy,
) -> Result<WriteOutcome, StoreError> {
    if batch.is_empty() {
        return Ok(WriteOutcome::default());
    }
    let mut attempts = retry.start();
    loop {
        match write_once(pool, batch).await {
            Ok(outcome) => return Ok(WriteOutcome { retries: attempts.retries(), ..outcome }),
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

/// One attempt on a connection of the pool. A connection an attempt failed on leaves the
/// pool: it may be dead without knowing it yet, and would fail the retry too.
async fn write_once(pool: &Pool, batch: &PreparedBatch) -> Result<WriteOutcome, StoreError> {
    let mut client = pool.get().await?;
    let written = write_on(&mut client, batch).await;
    if written.is_err() {
        drop(deadpool_postgres::Object::take(client));
    }
    written
}

/// The erasures of the batch's values (under the erasure lock, held to the commit), the
/// login rows, the quarantined messages, the vault rows, then COMMIT.
async fn write_on(
    client: &mut deadpool_postgres::Client,
    batch: &PreparedBatch,
) -> Result<WriteOutcome, StoreError> {
    let tx = client.transaction().await?;
    // The transaction's bounds, pipelined with the erasure lock and lookup: sent first
    // (`biased`: polled in order, and each request is sent on its first poll), so they
    // bound those too, and cost no round trip of their own.
    let (limits, erased) = tokio::join!(
        biased;
        tx.batch_execute(&super::TRANSACTION_LIMITS),
        erasure::erased(&*tx, &batch.marked)
    );
    limits?;
    let erased = erased?;
    let erasing;
    let batch = if erased.is_empty() {
        batch
    } else {
        erasing = batch.erasing(&erased);
        &erasing
    };
    let logins = insert_logins(&tx, &batch.logins).await?;
    let quarantined = insert_rows(&*tx, &LOGIN_QUARANTINE, &INSERT_QUARANTINE, &batch.quarantine).await?;
    insert_rows(&*tx, &LOGIN_QUARANTINE_MASKS, &INSERT_QUARANTINE_MASKS, &batch.quarantine_masks).await?;
    let vault = insert_vault(&tx, &batch.vault).await?;
    tx.commit().await?;
    Ok(WriteOutcome { logins_inserted: logins, quarantined, vault_inserted: vault, retries: 0 })
}

/// One set-based INSERT of `rows` into `table` (its generated `insert_sql`), as the unnamed
/// statement: the ingest's batch and the service's dead-letter import.
pub(super) async fn insert_rows<R>(
    tx: &impl GenericClient,
    table: &Table<R>,
    insert_sql: &str,
    rows: &[R],
) -> Result<u64, StoreError> {
    if rows.is_empty() {
        return Ok(0);
    }
    let arrays = table.column_arrays(rows);
    let params: Vec<(&(dyn ToSql + Sync), Type)> =
        arrays.iter().zip(table.array_types()).map(|(a, t)| (a as &(dyn ToSql + Sync), t)).collect();
    Ok(tx.execute_typed(insert_sql, &params).await?)
}

async fn insert_logins(tx: &Transaction<'_>, rows: &[LoginRow]) -> Result<u64, StoreError> {
    insert_rows(&**tx, &USER_LOGINS, &INSERT_LOGINS, rows).await
}

async fn insert_vault(tx: &Transaction<'_>, rows: &[VaultRow]) -> Result<u64, StoreError> {
    if rows.is_empty() {
        return Ok(0);
    }
    let c = VaultColumns::new(rows);
    Ok(tx
        .execute_typed(
            INSERT_VAULT,
            &[
                (&c.fields, Type::TEXT_ARRAY),
                (&c.indexes, Type::TEXT_ARRAY),
                (&c.versions, Type::INT4_ARRAY),
                (&c.nonces, Type::BYTEA_ARRAY),
                (&c.ciphertexts, Type::BYTEA_ARRAY),
            ],
        )
        .await?)
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
