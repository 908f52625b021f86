//! `forget`: crypto-shreds one value in place. The row stays, without ciphertext, so the
//! value can never be vaulted again. A value never seen gets such a row too (outcome
//! `unknown`), so it is refused should it arrive later. In the same transaction, every
//! quarantined body whose blind index of that field is the value's is erased too
//! (`erased_by = 'forget'`): a rejected message holding the value can then never be shown
//! or replayed.

use zeroize::Zeroizing;

use super::{normalize, parse_mask};
use crate::audit::Action;
use crate::operation::{Described, Done, Operation, Work};
use crate::{RequestContext, ServiceError, VaultService};
use login_etl_core::crypto::{BlindIndex, PiiField};
use pii_vault_protocol::{ForgetTarget, Outcome};

struct Forget<'a> {
    field: PiiField,
    target: &'a ForgetTarget,
    reason: Option<&'a str>,
}

enum Target {
    Mask(BlindIndex),
    /// Normalized; its mask needs the index key.
    Plaintext(Zeroizing<String>),
}

impl Operation for Forget<'_> {
    const ACTION: Action = Action::Forget;
    type Valid = (PiiField, Target);
    type Output = (BlindIndex, Outcome);

    fn describe(&self) -> Described {
        let blind_index = match self.target {
            ForgetTarget::Mask(mask) => BlindIndex::parse(mask),
            ForgetTarget::Plaintext(_) => None,
        };
        Described { field: Some(self.field), blind_index, target: None }
    }

    fn reason(&self) -> Option<&str> {
        self.reason
    }

    fn validate(self) -> Result<Self::Valid, ServiceError> {
        let target = match self.target {
            ForgetTarget::Mask(mask) => Target::Mask(parse_mask(mask)?),
            ForgetTarget::Plaintext(text) => {
                Target::Plaintext(Zeroizing::new(normalize(self.field, text.expose())?))
            }
        };
        Ok((self.field, target))
    }

    async fn work(
        (field, target): Self::Valid,
        work: &mut Work<'_>,
    ) -> Result<Done<Self::Output>, ServiceError> {
        let index = match target {
            Target::Mask(index) => index,
            Target::Plaintext(normalized) => work.indexer().await?.index(field, &normalized),
        };
        let mut client = work.client().await?;
        let tx = client.transaction().await?;
        let erased = erase_value(&tx, field, &index).await?;
        tx.commit().await?;
        let detail = format!("{} quarantined bod(ies) erased", erased.quarantined);
        let outcome = erased.outcome;
        Ok(Done::new((index.clone(), outcome), outcome).mask(index).detail(detail))
    }
}

/// What erasing one value found.
pub(super) struct Erased {
    /// `Unknown` (never vaulted), `Forgotten` (sealed until now) or `Erased` (already).
    pub outcome: Outcome,
    /// Quarantined bodies erased with it.
    pub quarantined: u64,
}

/// Erases one value inside `tx`: the vault row loses its ciphertext (or a tombstone is
/// made for a value never seen), and every quarantined body that holds it is erased.
pub(super) async fn erase_value(
    tx: &deadpool_postgres::Transaction<'_>,
    field: PiiField,
    index: &BlindIndex,
) -> Result<Erased, ServiceError> {
    let row = tx
        .query_one(
            // The upsert sees the newest committed row (it waits for a batch that
            // holds the key), so it tells what it found: nothing (inserted), a sealed
            // value (erased now), or an erased one (its erasure time kept).
            "WITH now AS (SELECT clock_timestamp() AS t)
                 INSERT INTO pii_vault (field, blind_index, erased_at) VALUES ($1, $2, (SELECT t FROM now))
                 ON CONFLICT (field, blind_index) DO UPDATE
                     SET key_version = NULL, nonce = NULL, ciphertext = NULL,
                         erased_at = coalesce(pii_vault.erased_at, EXCLUDED.erased_at)
                 RETURNING xmax = 0, erased_at = (SELECT t FROM now)",
            &[&field.as_str(), &index.as_str()],
        )
        .await?;
    // Every quarantined body that holds the value, by the masks kept beside it.
    let quarantined = tx
        .execute(
            "UPDATE login_quarantine q
                    SET key_version = NULL, nonce = NULL, ciphertext = NULL,
                        erased_at = clock_timestamp(), erased_by = 'forget'
                  WHERE q.erased_at IS NULL
                    AND EXISTS (SELECT 1 FROM login_quarantine_masks m
                                 WHERE m.message_id = q.message_id AND m.attempt = q.attempt
                                   AND m.field = $1 AND m.blind_index = $2)",
            &[&field.as_str(), &index.as_str()],
        )
        .await?;
    let outcome = match (row.get::<_, bool>(0), row.get::<_, bool>(1)) {
        (true, _) => Outcome::Unknown,
        (false, true) => Outcome::Forgotten,
        (false, false) => Outcome::Erased,
    };
    Ok(Erased { outcome, quarantined })
}

impl VaultService {
    /// Erases one value for good.
    pub async fn forget(
        &self,
        context: &RequestContext,
        field: PiiField,
        target: &ForgetTarget,
        reason: Option<&str>,
    ) -> Result<(BlindIndex, Outcome), ServiceError> {
        self.run(context, Forget { field, target, reason }).await
    }
}
