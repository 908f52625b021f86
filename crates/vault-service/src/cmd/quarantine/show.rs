//! `quarantine show`: one quarantined body, opened. Audited first as a reveal is: the
//! request row is committed, and the caller's daily budget charged for it
//! ([`crate::budget::SHOW_UNITS`]: a body holds both values of a login), before the row is
//! read or a key unwrapped. An erased body answers `erased`, a key never quarantined
//! `unknown`; both spend the units, as a reveal of an unknown mask does (an answer is an
//! answer). A body that holds a value `forget` erased (quarantined after the forget) is
//! erased now and answers `erased`.

use login_etl_core::store::{self, typed::typed};
use zeroize::Zeroizing;

use super::{ERASE_FORGOTTEN, HOLDS_FORGOTTEN_VALUE, attempt, audit_id, message_id};
use crate::audit::Action;
use crate::operation::{Described, Done, Operation, Work};
use crate::{RequestContext, ServiceError, VaultService};
use login_etl_core::crypto::SealedValue;
use login_etl_core::store::quarantine::LOGIN_QUARANTINE;
use pii_vault_protocol::Outcome;

struct Show<'a> {
    message_id: &'a str,
    attempt: Option<i64>,
    reason: Option<&'a str>,
}

/// A show's answer: the key of the row read (the newest attempt when none was asked for).
#[derive(Debug)]
pub struct Shown {
    pub message_id: String,
    pub attempt: Option<i32>,
    pub outcome: Outcome,
    /// For `shown` only; wiped on drop.
    pub body: Option<Zeroizing<String>>,
}

impl Operation for Show<'_> {
    const ACTION: Action = Action::QuarantineShow;
    type Valid = (String, Option<i32>);
    type Output = Shown;

    fn describe(&self) -> Described {
        // Only an id a row could hold is recorded (the row is written before any check).
        let target = audit_id(self.message_id).map(|id| match self.attempt.map(attempt) {
            Some(Ok(n)) => format!("attempt:{n} message_id:{id}"),
            _ => format!("message_id:{id}"),
        });
        Described { target, ..Described::default() }
    }

    fn reason(&self) -> Option<&str> {
        self.reason
    }

    fn validate(self) -> Result<Self::Valid, ServiceError> {
        Ok((message_id(self.message_id)?.to_owned(), self.attempt.map(attempt).transpose()?))
    }

    async fn work((id, wanted): Self::Valid, work: &mut Work<'_>) -> Result<Done<Shown>, ServiceError> {
        let mut client = work.client().await?;
        let tx = store::begin(&mut client).await?;
        let row = tx
            .query_typed_opt(
                &format!(
                    "SELECT q.attempt, q.erased_at IS NOT NULL, q.key_version, q.nonce, q.ciphertext,
                            {}
                       FROM {} q
                      WHERE q.message_id = $1 AND ($2::int4 IS NULL OR q.attempt = $2)
                      ORDER BY q.attempt DESC LIMIT 1",
                    HOLDS_FORGOTTEN_VALUE.as_str(),
                    LOGIN_QUARANTINE.name
                ),
                &[typed(&id), typed(&wanted)],
            )
            .await?;
        let Some(row) = row else {
            let shown = Shown { message_id: id, attempt: wanted, outcome: Outcome::Unknown, body: None };
            return Ok(Done::new(shown, Outcome::Unknown));
        };
        let found: i32 = row.get(0);
        let detail = format!("attempt {found}");
        let forgotten = !row.get::<_, bool>(1) && row.get::<_, bool>(5);
        if forgotten {
            tx.execute_typed(ERASE_FORGOTTEN.as_str(), &[typed(&id), typed(&found)]).await?;
        }
        if row.get::<_, bool>(1) || forgotten {
            tx.commit().await?;
            let shown = Shown { message_id: id, attempt: Some(found), outcome: Outcome::Erased, body: None };
            let detail =
                if forgotten { format!("{detail}; holds a forgotten value: erased now") } else { detail };
            return Ok(Done::new(shown, Outcome::Erased).detail(detail));
        }
        let sealed = SealedValue::from_stored(row.get(2), row.get::<_, &[u8]>(3), row.get(4))?;
        let body = {
            let mut keys = work.data_keys().await;
            // A data key's first use in the process reads and unwraps it in this transaction.
            keys.get(&*tx, work.kms(), sealed.key_version).await?.open_body(&id, found, &sealed)?
        };
        tx.commit().await?;
        let shown = Shown { message_id: id, attempt: Some(found), outcome: Outcome::Shown, body: Some(body) };
        Ok(Done::new(shown, Outcome::Shown).detail(detail))
    }
}

impl VaultService {
    /// One quarantined body (the newest attempt without `attempt`), on the record and
    /// counted against the budget before it is read.
    pub async fn quarantine_show(
        &self,
        context: &RequestContext,
        message_id: &str,
        attempt: Option<i64>,
        reason: Option<&str>,
    ) -> Result<Shown, ServiceError> {
        self.run(context, Show { message_id, attempt, reason }).await
    }
}
