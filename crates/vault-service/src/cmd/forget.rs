//! `forget`: erases one value so that nothing a person can reach links it to its rows
//! ([`erase_value`]; docs/security.md, "Erasure"). A value never seen is marked too
//! (answered `forgotten` like the rest), so it is refused should it arrive later. In the same transaction,
//! every quarantined body that holds the value is erased (`erased_by = 'forget'`): a
//! rejected message holding it can then never be shown or replayed.
//!
//! A forget of a value spends one reveal unit, like a find, and its answer and its audit
//! row are the same whether or not the value was there (no mask computed from a plaintext,
//! no found/unknown, no counts): with or without budget it is no oracle for guesses.
//! `forget --user-id` erases every value of one user's rows ([`ForgetUser`]) and spends
//! the erasure quota instead.

use login_etl_core::store::typed::typed;
use zeroize::Zeroizing;

use super::{normalize, parse_mask, row_id};
use crate::audit::Action;
use crate::operation::{Described, Done, Operation, Work};
use crate::{RequestContext, ServiceError, VaultService};
use login_etl_core::crypto::erasure::new_token;
use login_etl_core::crypto::{BlindIndex, ErasureKey, PiiField};
use login_etl_core::error::DbError;
use login_etl_core::store::quarantine::{LOGIN_QUARANTINE, LOGIN_QUARANTINE_MASKS};
use login_etl_core::store::table::USER_LOGINS;
use login_etl_core::store::{self, erasure};
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
        let erasure_key = work.erasure_key().await?;
        let mut client = work.client().await?;
        let tx = store::begin(&mut client).await?;
        // What it found (and the mask of a plaintext) stays here: the answer and the audit
        // row say the same for a value that was there and one that never was.
        erase_value(&tx, erasure_key, field, &index).await?;
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

    /// A value other users share is erased too: it is one value, and the person's erasure
    /// wins. Their rows get the value's token as well (so they still share it with each
    /// other, and with nothing else) and the value can no longer be revealed for them.
    async fn work(user_id: Self::Valid, work: &mut Work<'_>) -> Result<Done<Self::Output>, ServiceError> {
        let erasure_key = work.erasure_key().await?;
        let mut client = work.client().await?;
        let tx = store::begin(&mut client).await?;
        let mut done = UserErased { erased: 0, shared: 0 };
        let (mut before, mut quarantined, mut logins) = (0u64, 0u64, 0u64);
        for field in PiiField::ALL {
            let column = field.mask_column();
            let table = USER_LOGINS.name;
            // Read before any erasure: erasing a value rewrites its masks to its token.
            let masks = tx
                .query_typed(
                    &format!(
                        "SELECT u.{column}, EXISTS (SELECT 1 FROM {table} o
                                                     WHERE o.{column} = u.{column} AND o.user_id <> $1)
                           FROM (SELECT DISTINCT {column} FROM {table}
                                  WHERE user_id = $1 AND {column} IS NOT NULL) u"
                    ),
                    &[typed(&user_id)],
                )
                .await?;
            for row in masks {
                let mask: String = row.get(0);
                let index = BlindIndex::parse(&mask).ok_or_else(|| {
                    ServiceError::Db(DbError::other(format!("a {column} of {table} is no mask")))
                })?;
                let erased = erase_value(&tx, erasure_key, field, &index).await?;
                before += u64::from(erased.outcome == Outcome::Erased);
                quarantined += erased.quarantined;
                logins += erased.logins;
                done.erased += 1;
                done.shared += u64::from(row.get::<_, bool>(1));
            }
        }
        tx.commit().await?;
        let detail = format!(
            "{} value(s) erased ({before} already), {} shared with other users, {logins} login row(s) unlinked, \
             {quarantined} quarantined bod(ies)",
            done.erased, done.shared
        );
        Ok(Done::new(done, Outcome::Forgotten).detail(detail))
    }
}

/// SQL: a forget's erasure of the quarantined bodies that hold the value ($1 field, $2
/// mask, $3 token; by the masks kept beside them, since a body quarantined after an earlier
/// erasure carries the token), among those `which` picks.
fn erase_bodies(which: &str) -> String {
    let (bodies, masks) = (LOGIN_QUARANTINE.name, LOGIN_QUARANTINE_MASKS.name);
    format!(
        "UPDATE {bodies} SET key_version = NULL, nonce = NULL, ciphertext = NULL,
                erased_at = clock_timestamp(), erased_by = 'forget'
          WHERE (message_id, attempt) IN (
                SELECT q.message_id, q.attempt FROM {bodies} q
                 WHERE q.erased_at IS NULL
                   AND EXISTS (SELECT 1 FROM {masks} m
                                WHERE m.message_id = q.message_id AND m.attempt = q.attempt
                                  AND m.field = $1 AND m.blind_index IN ($2, $3))
                   {which})"
    )
}

/// Bodies younger than a day: only the function and this service can lock them (the
/// purge's function, `purge_expired_quarantine` in sql/V12, erases nothing younger), so
/// a forget waits for them.
const YOUNG_BODIES: &str = "AND q.quarantined_at >= now() - interval '1 day'";

/// Bodies a day old or older are what the purge erases, so its login may hold them (an
/// open transaction). Waiting for them would let that login hold back every forget of
/// their values; a held one is skipped instead: its masks become the token below (no
/// purge login may lock those), so show and replay treat it as erased and erase it, and
/// the purge, the one thing holding it, erases it when it commits, or else at its next run.
const OLD_BODIES_NOT_HELD: &str =
    "AND q.quarantined_at < now() - interval '1 day' FOR UPDATE OF q SKIP LOCKED";

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
        .query_typed_opt(
            "SELECT 1 FROM vault.pii_erasures WHERE field = $1 AND token = $2",
            &[typed(&field_name), typed(&mask)],
        )
        .await?
        .is_some();
    if is_token {
        return Ok(Erased { outcome: Outcome::Erased, quarantined: 0, logins: 0 });
    }
    let marker = erasure_key.marker(field, index);
    let existing = tx
        .query_typed_opt(
            "SELECT token FROM vault.pii_erasures WHERE field = $1 AND marker = $2",
            &[typed(&field_name), typed(&marker.as_str())],
        )
        .await?;
    let already = existing.is_some();
    let token = match existing {
        Some(row) => row.get::<_, String>(0),
        None => {
            let token = new_token();
            tx.execute_typed(
                "INSERT INTO vault.pii_erasures (field, marker, token) VALUES ($1, $2, $3)",
                &[typed(&field_name), typed(&marker.as_str()), typed(&token.as_str())],
            )
            .await?;
            token.as_str().to_owned()
        }
    };
    // Sealed (true), a tombstone kept by an older version with the raw mask (false), none.
    let vaulted = tx
        .query_typed_opt(
            "DELETE FROM vault.pii_vault WHERE field = $1 AND blind_index = $2 RETURNING erased_at IS NULL",
            &[typed(&field_name), typed(&mask)],
        )
        .await?
        .map(|row| row.get::<_, bool>(0));
    // Every quarantined body that holds the value, but one the purge holds.
    let mut quarantined = 0;
    for which in [YOUNG_BODIES, OLD_BODIES_NOT_HELD] {
        quarantined += tx
            .execute_typed(&erase_bodies(which), &[typed(&field_name), typed(&mask), typed(&token)])
            .await?;
    }
    tx.execute_typed(
        &format!(
            "UPDATE {} SET blind_index = $3 WHERE field = $1 AND blind_index = $2",
            LOGIN_QUARANTINE_MASKS.name
        ),
        &[typed(&field_name), typed(&mask), typed(&token)],
    )
    .await?;
    let logins = rewrite_logins(tx, field, mask, &token).await?;
    let outcome = match (already, vaulted) {
        (true, _) | (false, Some(false)) => Outcome::Erased,
        (false, Some(true)) => Outcome::Forgotten,
        (false, None) => Outcome::Unknown,
    };
    Ok(Erased { outcome, quarantined, logins })
}

/// `user_logins` rows rewritten per statement. A value can be in very many rows (an
/// egress ip: 10^5 and more), and one UPDATE of them all could outlast the transaction's
/// `statement_timeout`; so many take about half a second on a loaded machine.
const LOGINS_PER_STATEMENT: i64 = 5000;

/// Writes `token` over `mask` in every `user_logins` row, in statements of
/// [`LOGINS_PER_STATEMENT`] rows: each rewrites, by ctid, the first rows that still carry
/// the mask (the rows it rewrote carry the token, so the next finds the next ones), until
/// one finds none. A last statement takes any row a batch missed (one changed meanwhile by
/// the table's owner). Every statement is the unnamed one (no portal, which tokio-postgres
/// binds only to a named statement).
async fn rewrite_logins(
    tx: &deadpool_postgres::Transaction<'_>,
    field: PiiField,
    mask: &str,
    token: &str,
) -> Result<u64, ServiceError> {
    let (table, column) = (USER_LOGINS.name, field.mask_column());
    let batch = format!(
        "UPDATE {table} SET {column} = $2
          WHERE ctid = ANY(ARRAY(SELECT ctid FROM {table} WHERE {column} = $1 LIMIT $3)) AND {column} = $1"
    );
    let mut rewritten = 0;
    loop {
        let n =
            tx.execute_typed(&batch, &[typed(&mask), typed(&token), typed(&LOGINS_PER_STATEMENT)]).await?;
        if n == 0 {
            break;
        }
        rewritten += n;
    }
    rewritten += tx
        .execute_typed(
            &format!("UPDATE {table} SET {column} = $2 WHERE {column} = $1"),
            &[typed(&mask), typed(&token)],
        )
        .await?;
    Ok(rewritten)
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
