//! `reveal`: the values behind masks. By mask, the request's own row is the value's (it
//! spent the budget as it was recorded); by user id or message id, the masks are looked
//! up, then each value gets a row of its own, committed (and counted against the budget)
//! before anything is decrypted.

use login_etl_core::store::{self, typed::typed};
use std::collections::BTreeSet;

use zeroize::Zeroizing;

use super::{MAX_ID_CHARS, parse_mask, row_id};
use crate::audit::Action;
use crate::operation::{Described, Done, Operation, RecordedValue, Work};
use crate::{RequestContext, ServiceError, VaultService};
use login_etl_core::crypto::{BlindIndex, PiiField, SealedValue};
use login_etl_core::store::table::USER_LOGINS;
use pii_vault_protocol::{Outcome, Plaintext, RevealTarget, Revealed};

struct Reveal<'a> {
    target: &'a RevealTarget,
    reason: Option<&'a str>,
}

enum Target {
    Mask(PiiField, BlindIndex),
    /// The `user_logins` column and its value.
    Rows {
        column: &'static str,
        value: String,
    },
}

impl Operation for Reveal<'_> {
    const ACTION: Action = Action::Reveal;
    type Valid = Target;
    type Output = Vec<Revealed>;

    fn describe(&self) -> Described {
        match self.target {
            RevealTarget::Mask { field, mask } => {
                Described { field: Some(*field), blind_index: BlindIndex::parse(mask), target: None }
            }
            // Only an id a `user_logins` row could hold; the raw text of any other is never
            // recorded (the row is written before the caller is authorized).
            RevealTarget::UserId(id) => {
                Described { target: row_id(id).map(|id| format!("user_id:{id}")), ..Described::default() }
            }
            RevealTarget::MessageId(id) => {
                Described { target: row_id(id).map(|id| format!("message_id:{id}")), ..Described::default() }
            }
        }
    }

    fn reason(&self) -> Option<&str> {
        self.reason
    }

    fn validate(self) -> Result<Target, ServiceError> {
        Ok(match self.target {
            RevealTarget::Mask { field, mask } => Target::Mask(*field, parse_mask(mask)?),
            RevealTarget::UserId(id) | RevealTarget::MessageId(id) if row_id(id).is_none() => {
                return Err(ServiceError::BadRequest(format!(
                    "an id is 1 to {MAX_ID_CHARS} characters, without control or invisible characters"
                )));
            }
            RevealTarget::UserId(id) => Target::Rows { column: "user_id", value: id.clone() },
            RevealTarget::MessageId(id) => Target::Rows { column: "sqs_message_id", value: id.clone() },
        })
    }

    async fn work(target: Target, work: &mut Work<'_>) -> Result<Done<Vec<Revealed>>, ServiceError> {
        match target {
            Target::Mask(field, index) => {
                // The request's row names this value and is committed: decrypt.
                let (outcome, value) = open(work, field, &index).await?;
                Ok(Done::new(vec![revealed(field, &index, outcome, value)], outcome))
            }
            Target::Rows { column, value } => {
                let masks = masks_of(work, column, &value).await?;
                if masks.is_empty() {
                    return Err(ServiceError::Unknown(column.trim_start_matches("sqs_").replace('_', " ")));
                }
                let detail = format!("{} value(s)", masks.len());
                let values = work.record_values(masks).await?;
                let mut answers = Vec::with_capacity(values.len());
                for recorded in &values {
                    let (outcome, value) = open_recorded(work, recorded).await?;
                    work.value_outcome(recorded, outcome).await?;
                    answers.push(revealed(recorded.field, &recorded.index, outcome, value));
                }
                Ok(Done::new(answers, Outcome::Done).detail(detail))
            }
        }
    }
}

fn revealed(
    field: PiiField,
    index: &BlindIndex,
    outcome: Outcome,
    value: Option<Zeroizing<String>>,
) -> Revealed {
    Revealed {
        field,
        mask: index.as_str().to_owned(),
        outcome,
        value: value.map(|v| Plaintext::new(v.as_str())),
    }
}

/// The (field, mask) pairs of the rows with `column = value`, in a stable order.
async fn masks_of(
    work: &Work<'_>,
    column: &str,
    value: &str,
) -> Result<Vec<(PiiField, BlindIndex)>, ServiceError> {
    let [ip_column, device_id_column] = PiiField::ALL.map(PiiField::mask_column);
    let mut client = work.client().await?;
    let tx = store::begin(&mut client).await?;
    let rows = tx
        .query_typed(
            &format!(
                "SELECT DISTINCT {ip_column}, {device_id_column} FROM {} WHERE {column} = $1",
                USER_LOGINS.name
            ),
            &[typed(&value)],
        )
        .await?;
    tx.commit().await?;
    let mut masks = BTreeSet::new();
    for row in rows {
        for (position, field) in PiiField::ALL.into_iter().enumerate() {
            let mask: Option<String> = row.get(position);
            if let Some(index) = mask.as_deref().and_then(BlindIndex::parse) {
                masks.insert((field, index));
            }
        }
    }
    Ok(masks.into_iter().collect())
}

/// Decrypts a value whose row is on the record.
async fn open_recorded(
    work: &Work<'_>,
    value: &RecordedValue,
) -> Result<(Outcome, Option<Zeroizing<String>>), ServiceError> {
    open(work, value.field, &value.index).await
}

/// Decrypts one vault row: erasure is checked first.
async fn open(
    work: &Work<'_>,
    field: PiiField,
    index: &BlindIndex,
) -> Result<(Outcome, Option<Zeroizing<String>>), ServiceError> {
    let erasure_key = work.erasure_key().await?;
    let mut client = work.client().await?;
    let tx = store::begin(&mut client).await?;
    let row = tx
        .query_typed_opt(
            // A row's mask may be an erased value's token (docs/security.md, "Erasure"):
            // erased, and nothing of the value is left to reveal. The raw mask of an
            // erased value has no row at all: unknown, as a value never seen.
            // A vault row of an erased value (one a writer put back, bypassing the
            // ingest's lookup) is never opened: its marker says erased.
            "SELECT erased_at IS NOT NULL, key_version, nonce, ciphertext FROM vault.pii_vault
              WHERE field = $1 AND blind_index = $2
                AND NOT EXISTS (SELECT 1 FROM vault.pii_erasures WHERE field = $1 AND marker = $3)
             UNION ALL
             SELECT true, NULL, NULL, NULL FROM vault.pii_erasures WHERE field = $1 AND token = $2
             LIMIT 1",
            &[
                typed(&field.as_str()),
                typed(&index.as_str()),
                typed(&erasure_key.marker(field, index).as_str()),
            ],
        )
        .await?;
    let Some(row) = row else { return Ok((Outcome::Unknown, None)) };
    if row.get::<_, bool>(0) {
        return Ok((Outcome::Erased, None));
    }
    let sealed = SealedValue::from_stored(row.get(1), row.get::<_, &[u8]>(2), row.get(3))?;
    let mut keys = work.data_keys().await;
    // A data key's first use in the process reads and unwraps it in this transaction.
    let key = keys.get(&*tx, work.kms(), sealed.key_version).await?;
    tx.commit().await?;
    Ok((Outcome::Revealed, Some(key.open(field, index, &sealed)?)))
}

impl VaultService {
    /// Reveals the values behind masks, each on the record before it is decrypted.
    pub async fn reveal(
        &self,
        context: &RequestContext,
        target: &RevealTarget,
        reason: Option<&str>,
    ) -> Result<Vec<Revealed>, ServiceError> {
        self.run(context, Reveal { target, reason }).await
    }
}
