//! `forget`: erases one value so that nothing a person can reach links it to its rows
//! ([`erase_value`]; docs/security.md, "Erasure"). A value never seen is marked too
//! (outcome `unknown`), so it is refused should it arrive later. In the same transaction,
//! every quarantined body that holds the value is erased (`erased_by = 'forget'`): a
//! rejected message holding it can then never be shown or replayed.

use zeroize::Zeroizing;

use super::{normalize, parse_mask};
use crate::audit::Action;
use crate::operation::{Described, Done, Operation, Work};
use crate::{RequestContext, ServiceError, VaultService};
use login_etl_core::crypto::erasure::new_token;
use login_etl_core::crypto::{BlindIndex, ErasureKey, PiiField};
use login_etl_core::store::erasure;
use login_etl_core::store::table::USER_LOGINS;
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
        let erased = erase_value(&tx, work.erasure_key().await?, field, &index).await?;
        tx.commit().await?;
        let detail = format!(
            "{} login row(s) unlinked, {} quarantined bod(ies) erased",
            erased.logins, erased.quarantined
        );
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
    /// `user_logins` rows whose mask became the value's token.
    pub logins: u64,
}

/// Erases one value inside `tx`, so that nothing a person can reach links it to its rows
/// (docs/security.md, "Erasure"): under the erasure lock (exclusive: no batch is between
/// its lookup and its commit), the value's token (drawn at its first erasure) replaces its
/// mask in `user_logins` and `login_quarantine_masks`, its marker keeps the ingest from
/// writing the mask or vaulting the value again, its vault row (sealed, or a tombstone of
/// an older version) is deleted, and every quarantined body that holds it is erased.
pub(super) async fn erase_value(
    tx: &deadpool_postgres::Transaction<'_>,
    erasure_key: &ErasureKey,
    field: PiiField,
    index: &BlindIndex,
) -> Result<Erased, ServiceError> {
    erasure::lock_exclusive(&**tx).await?;
    let (field_name, mask) = (field.as_str(), index.as_str());
    // A token given as a mask (a reveal answers it) is an erasure already: erasing it as a
    // value would give its rows a second token, apart from the later logins of the value.
    let is_token = tx
        .query_opt("SELECT 1 FROM pii_erasures WHERE field = $1 AND token = $2", &[&field_name, &mask])
        .await?
        .is_some();
    if is_token {
        return Ok(Erased { outcome: Outcome::Erased, quarantined: 0, logins: 0 });
    }
    let marker = erasure_key.marker(field, index);
    let existing = tx
        .query_opt(
            "SELECT token FROM pii_erasures WHERE field = $1 AND marker = $2",
            &[&field_name, &marker.as_str()],
        )
        .await?;
    let already = existing.is_some();
    let token = match existing {
        Some(row) => row.get::<_, String>(0),
        None => {
            let token = new_token();
            tx.execute(
                "INSERT INTO pii_erasures (field, marker, token) VALUES ($1, $2, $3)",
                &[&field_name, &marker.as_str(), &token.as_str()],
            )
            .await?;
            token.as_str().to_owned()
        }
    };
    // Sealed (true), a tombstone kept by an older version with the raw mask (false), none.
    let vaulted = tx
        .query_opt(
            "DELETE FROM pii_vault WHERE field = $1 AND blind_index = $2 RETURNING erased_at IS NULL",
            &[&field_name, &mask],
        )
        .await?
        .map(|row| row.get::<_, bool>(0));
    // Every quarantined body that holds the value, by the masks kept beside it (a body
    // quarantined after an earlier erasure carries the token).
    let quarantined = tx
        .execute(
            "UPDATE login_quarantine q
                    SET key_version = NULL, nonce = NULL, ciphertext = NULL,
                        erased_at = clock_timestamp(), erased_by = 'forget'
                  WHERE q.erased_at IS NULL
                    AND EXISTS (SELECT 1 FROM login_quarantine_masks m
                                 WHERE m.message_id = q.message_id AND m.attempt = q.attempt
                                   AND m.field = $1 AND m.blind_index IN ($2, $3))",
            &[&field_name, &mask, &token],
        )
        .await?;
    tx.execute(
        "UPDATE login_quarantine_masks SET blind_index = $3 WHERE field = $1 AND blind_index = $2",
        &[&field_name, &mask, &token],
    )
    .await?;
    let column = field.mask_column();
    let logins = tx
        .execute(
            &format!("UPDATE {} SET {column} = $2 WHERE {column} = $1", USER_LOGINS.name),
            &[&mask, &token],
        )
        .await?;
    let outcome = match (already, vaulted) {
        (true, _) | (false, Some(false)) => Outcome::Erased,
        (false, Some(true)) => Outcome::Forgotten,
        (false, None) => Outcome::Unknown,
    };
    Ok(Erased { outcome, quarantined, logins })
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
