//! `forget`: crypto-shreds one value in place. The row stays, without ciphertext, so the
//! value can never be vaulted again. A value never seen gets such a row too, so it is
//! refused should it arrive later. In the same transaction, every quarantined body whose
//! blind index of that field is the value's is erased too (`erased_by = 'forget'`): a
//! rejected message holding the value can then never be shown or replayed.
//!
//! A forget of a value spends one reveal unit, like a find, and its answer and its audit
//! row are the same whether or not the value was there (no mask computed from a plaintext,
//! no found/unknown, no count of quarantined bodies): with or without budget it is no
//! oracle for guesses. `forget --user-id` erases every value of one user's rows
//! ([`ForgetUser`]) and spends the erasure quota instead.

use zeroize::Zeroizing;

use super::{normalize, parse_mask, row_id};
use crate::audit::Action;
use crate::operation::{Described, Done, Operation, Work};
use crate::{RequestContext, ServiceError, VaultService};
use login_etl_core::crypto::{BlindIndex, PiiField};
use login_etl_core::error::DbError;
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
    type Output = Outcome;

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
        // What it found (and the mask of a plaintext) stays here: the answer and the audit
        // row say the same for a value that was there and one that never was.
        erase_value(&tx, field, &index).await?;
        tx.commit().await?;
        Ok(Done::new(Outcome::Forgotten, Outcome::Forgotten))
    }
}

/// `forget --user-id`: every value of one user's rows.
struct ForgetUser<'a> {
    user_id: &'a str,
    reason: Option<&'a str>,
}

/// What `forget --user-id` erased.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserErased {
    /// Distinct values of the user's rows, each erased (already erased ones included).
    pub erased: u64,
    /// Of those, the values other users' rows hold too.
    pub shared: u64,
}

impl Operation for ForgetUser<'_> {
    const ACTION: Action = Action::Forget;
    type Valid = String;
    type Output = UserErased;

    fn describe(&self) -> Described {
        // The target is what spends the erasure quota; an id no row can hold is refused.
        let target = row_id(self.user_id).map(|id| format!("user_id:{id}"));
        Described { target, ..Described::default() }
    }

    fn reason(&self) -> Option<&str> {
        self.reason
    }

    fn validate(self) -> Result<Self::Valid, ServiceError> {
        row_id(self.user_id).map(str::to_owned).ok_or_else(|| {
            ServiceError::BadRequest(
                "a user id is 1 to 128 characters, none of them control or invisible".into(),
            )
        })
    }

    /// A value other users share is erased too: it is one vault entry, and the person's
    /// erasure wins. Their rows keep their masks (they still link those rows to each
    /// other) but the value can no longer be revealed for them either.
    async fn work(user_id: Self::Valid, work: &mut Work<'_>) -> Result<Done<Self::Output>, ServiceError> {
        let mut client = work.client().await?;
        let tx = client.transaction().await?;
        let mut done = UserErased { erased: 0, shared: 0 };
        let (mut before, mut quarantined) = (0u64, 0u64);
        for field in PiiField::ALL {
            let column = field.mask_column();
            let table = USER_LOGINS.name;
            let masks = tx
                .query(
                    &format!(
                        "SELECT u.{column}, EXISTS (SELECT 1 FROM {table} o
                                                     WHERE o.{column} = u.{column} AND o.user_id <> $1)
                           FROM (SELECT DISTINCT {column} FROM {table}
                                  WHERE user_id = $1 AND {column} IS NOT NULL) u"
                    ),
                    &[&user_id],
                )
                .await?;
            for row in masks {
                let mask: String = row.get(0);
                let index = BlindIndex::parse(&mask).ok_or_else(|| {
                    ServiceError::Db(DbError::other(format!("a {column} of {table} is no mask")))
                })?;
                let erased = erase_value(&tx, field, &index).await?;
                before += u64::from(erased.outcome == Outcome::Erased);
                quarantined += erased.quarantined;
                done.erased += 1;
                done.shared += u64::from(row.get::<_, bool>(1));
            }
        }
        tx.commit().await?;
        let detail = format!(
            "{} value(s) erased ({before} already), {} shared with other users, {quarantined} quarantined bod(ies)",
            done.erased, done.shared
        );
        Ok(Done::new(done, Outcome::Forgotten).detail(detail))
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
    /// Erases one value for good. Answers `forgotten` whatever it found.
    pub async fn forget(
        &self,
        context: &RequestContext,
        field: PiiField,
        target: &ForgetTarget,
        reason: Option<&str>,
    ) -> Result<Outcome, ServiceError> {
        self.run(context, Forget { field, target, reason }).await
    }

    /// Erases every ip and device id of `user_id`'s rows.
    pub async fn forget_user(
        &self,
        context: &RequestContext,
        user_id: &str,
        reason: Option<&str>,
    ) -> Result<UserErased, ServiceError> {
        self.run(context, ForgetUser { user_id, reason }).await
    }
}
