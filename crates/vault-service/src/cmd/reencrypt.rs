//! `reencrypt` (admin): every vault row and every quarantined body of an older data-key
//! version re-encrypted under the newest, in batches, each its own transaction (`FOR
//! UPDATE SKIP LOCKED`): resumable, and safe beside the function and a replay (a row
//! another session holds is left for the next run). Masks are untouched. Then the
//! erasures of versions before 10 (vault tombstones that kept the raw mask) are converted,
//! each as `forget` erases a value today ([`super::forget::erase_value`]): a migration
//! cannot, the markers need the erasure key.

use crate::audit::Action;
use crate::operation::{Described, Done, Operation, Work};
use crate::{RequestContext, ServiceError, VaultService};
use login_etl_core::crypto::{BlindIndex, PiiField, SealError, SealedValue};
use login_etl_core::store::quarantine::LOGIN_QUARANTINE;
use login_etl_core::store::{self, typed::typed};
use pii_vault_protocol::Outcome;

struct Reencrypt {
    batch_size: i64,
}

/// Rows re-encrypted, by table, and older erasures converted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reencrypted {
    pub vault: u64,
    pub quarantine: u64,
    /// Vault tombstones of versions before 10, now erasures that unlink.
    pub tombstones: u64,
}

impl Operation for Reencrypt {
    const ACTION: Action = Action::Reencrypt;
    /// Rows per transaction.
    type Valid = i64;
    type Output = Reencrypted;

    fn describe(&self) -> Described {
        Described::default()
    }

    fn validate(self) -> Result<i64, ServiceError> {
        if !(1..=10_000).contains(&self.batch_size) {
            return Err(ServiceError::BadRequest("batch size must be 1 to 10000".into()));
        }
        Ok(self.batch_size)
    }

    async fn work(batch_size: i64, work: &mut Work<'_>) -> Result<Done<Reencrypted>, ServiceError> {
        let mut client = work.client().await?;
        let newest = super::newest_data_key_version(&mut client).await?;
        let mut done = 0u64;
        loop {
            let tx = store::begin(&mut client).await?;
            let rows = tx
                .query_typed(
                    "SELECT field, blind_index, key_version, nonce, ciphertext FROM vault.pii_vault
                      WHERE key_version < $1 LIMIT $2 FOR UPDATE SKIP LOCKED",
                    &[typed(&newest), typed(&batch_size)],
                )
                .await?;
            if rows.is_empty() {
                break;
            }
            let (mut fields, mut indexes, mut nonces, mut ciphertexts) = (vec![], vec![], vec![], vec![]);
            let mut keys = work.data_keys().await;
            for row in &rows {
                let field = PiiField::from_db(row.get(0)).ok_or(SealError::Unauthentic)?;
                let index = BlindIndex::parse(row.get(1)).ok_or(SealError::Unauthentic)?;
                let sealed = SealedValue::from_stored(row.get(2), row.get::<_, &[u8]>(3), row.get(4))?;
                let value =
                    keys.get(&*tx, work.kms(), sealed.key_version).await?.open(field, &index, &sealed)?;
                let resealed = keys.get(&*tx, work.kms(), newest).await?.seal(field, &index, &value)?;
                fields.push(field.as_str());
                indexes.push(index.as_str().to_owned());
                nonces.push(resealed.nonce.to_vec());
                ciphertexts.push(resealed.ciphertext);
            }
            drop(keys);
            tx.execute_typed(
                "UPDATE vault.pii_vault v SET key_version = $1, nonce = n.nonce, ciphertext = n.ciphertext
                   FROM UNNEST($2::text[], $3::text[], $4::bytea[], $5::bytea[])
                        AS n(field, blind_index, nonce, ciphertext)
                  WHERE (v.field, v.blind_index) = (n.field, n.blind_index)",
                &[typed(&newest), typed(&fields), typed(&indexes), typed(&nonces), typed(&ciphertexts)],
            )
            .await?;
            tx.commit().await?;
            done += rows.len() as u64;
        }
        let quarantine = reencrypt_quarantine(work, &mut client, newest, batch_size).await?;
        let tombstones = convert_tombstones(work, &mut client, batch_size).await?;
        let detail = format!(
            "{done} vault row(s) and {quarantine} quarantined bod(ies) under data key version {newest}, \
             {tombstones} older erasure(s) converted"
        );
        Ok(Done::new(Reencrypted { vault: done, quarantine, tombstones }, Outcome::Done).detail(detail))
    }
}

/// The quarantined bodies of older versions, re-sealed as the vault rows are (erased
/// bodies have no version, so they are never picked).
async fn reencrypt_quarantine(
    work: &Work<'_>,
    client: &mut deadpool_postgres::Object,
    newest: i32,
    batch_size: i64,
) -> Result<u64, ServiceError> {
    let mut done = 0u64;
    loop {
        let tx = store::begin(client).await?;
        let rows = tx
            .query_typed(
                &format!(
                    "SELECT message_id, attempt, key_version, nonce, ciphertext FROM {}
                      WHERE key_version < $1 ORDER BY message_id, attempt LIMIT $2 FOR UPDATE SKIP LOCKED",
                    LOGIN_QUARANTINE.name
                ),
                &[typed(&newest), typed(&batch_size)],
            )
            .await?;
        if rows.is_empty() {
            break;
        }
        let (mut ids, mut attempts, mut nonces, mut ciphertexts) = (vec![], vec![], vec![], vec![]);
        let mut keys = work.data_keys().await;
        for row in &rows {
            let (id, attempt): (String, i32) = (row.get(0), row.get(1));
            let sealed = SealedValue::from_stored(row.get(2), row.get::<_, &[u8]>(3), row.get(4))?;
            let body =
                keys.get(&*tx, work.kms(), sealed.key_version).await?.open_body(&id, attempt, &sealed)?;
            let resealed = keys.get(&*tx, work.kms(), newest).await?.seal_body(&id, attempt, &body)?;
            ids.push(id);
            attempts.push(attempt);
            nonces.push(resealed.nonce.to_vec());
            ciphertexts.push(resealed.ciphertext);
        }
        drop(keys);
        tx.execute_typed(
            &format!(
                "UPDATE {} q SET key_version = $1, nonce = n.nonce, ciphertext = n.ciphertext
                   FROM UNNEST($2::text[], $3::int4[], $4::bytea[], $5::bytea[])
                        AS n(message_id, attempt, nonce, ciphertext)
                  WHERE (q.message_id, q.attempt) = (n.message_id, n.attempt)",
                LOGIN_QUARANTINE.name
            ),
            &[typed(&newest), typed(&ids), typed(&attempts), typed(&nonces), typed(&ciphertexts)],
        )
        .await?;
        tx.commit().await?;
        done += rows.len() as u64;
    }
    Ok(done)
}

/// The vault tombstones older versions kept (the raw mask, no ciphertext), each erased
/// again as `forget` erases now: a token over its rows' masks, a marker, the row gone.
/// `batch_size` values a transaction; each holds the erasure lock only that long.
async fn convert_tombstones(
    work: &Work<'_>,
    client: &mut deadpool_postgres::Object,
    batch_size: i64,
) -> Result<u64, ServiceError> {
    let mut done = 0u64;
    loop {
        let tx = store::begin(client).await?;
        let rows = tx
            .query_typed(
                "SELECT field, blind_index FROM vault.pii_vault WHERE erased_at IS NOT NULL
                  ORDER BY field, blind_index LIMIT $1",
                &[typed(&batch_size)],
            )
            .await?;
        if rows.is_empty() {
            break;
        }
        let erasure_key = work.erasure_key().await?;
        for row in &rows {
            let field = PiiField::from_db(row.get(0)).ok_or(SealError::Unauthentic)?;
            let index = BlindIndex::parse(row.get(1)).ok_or(SealError::Unauthentic)?;
            super::forget::erase_value(&tx, erasure_key, field, &index).await?;
        }
        tx.commit().await?;
        done += rows.len() as u64;
    }
    Ok(done)
}

impl VaultService {
    /// Re-encrypts older vault rows and quarantined bodies under the newest data key. Admin only.
    pub async fn reencrypt(
        &self,
        context: &RequestContext,
        batch_size: i64,
    ) -> Result<Reencrypted, ServiceError> {
        self.run(context, Reencrypt { batch_size }).await
    }
}
