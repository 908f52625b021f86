//! `quarantine list`: one page of the quarantine, oldest first: keys, reasons, dates and
//! what became of each row. Never a body or a mask. A page holds at most
//! [`MAX_PAGE_ROWS`] rows (each a few hundred bytes of JSON: far inside 6 MB) and is one
//! indexed query; the answer's `next` cursor asks for the following page, each page a
//! request of its own on the record.

use chrono::{DateTime, Utc};
use login_etl_core::store::{self, typed::typed};

use super::{Cursor, describe_filter, reason_code, since};
use crate::audit::Action;
use crate::operation::{Described, Done, Operation, Work};
use crate::{RequestContext, ServiceError, VaultService};
use login_etl_core::store::quarantine::LOGIN_QUARANTINE;
use pii_vault_protocol::{Outcome, QuarantinedMessage};

pub const DEFAULT_PAGE_ROWS: u32 = 500;
pub const MAX_PAGE_ROWS: u32 = 1000;

/// A list request as the caller sent it (text: checked in `validate`).
#[derive(Debug, Clone, Default)]
pub struct QuarantineFilter {
    pub since: Option<String>,
    pub reason_code: Option<String>,
    /// The cursor of the previous page.
    pub after: Option<String>,
    /// Rows per page (1 to 1000; default 500).
    pub limit: Option<u32>,
}

struct List<'a>(&'a QuarantineFilter);

struct Valid {
    since: Option<DateTime<Utc>>,
    reason_code: Option<&'static str>,
    after: Option<Cursor>,
    limit: u32,
}

impl Operation for List<'_> {
    const ACTION: Action = Action::QuarantineList;
    type Valid = Valid;
    type Output = (Vec<QuarantinedMessage>, Option<String>);

    fn describe(&self) -> Described {
        Described {
            target: describe_filter(self.0.since.as_deref(), self.0.reason_code.as_deref()),
            ..Described::default()
        }
    }

    fn validate(self) -> Result<Valid, ServiceError> {
        let limit = self.0.limit.unwrap_or(DEFAULT_PAGE_ROWS);
        if !(1..=MAX_PAGE_ROWS).contains(&limit) {
            return Err(ServiceError::BadRequest(format!("a page is 1 to {MAX_PAGE_ROWS} rows")));
        }
        Ok(Valid {
            since: self.0.since.as_deref().map(since).transpose()?,
            reason_code: self.0.reason_code.as_deref().map(reason_code).transpose()?,
            after: self.0.after.as_deref().map(Cursor::decode).transpose()?,
            limit,
        })
    }

    async fn work(valid: Valid, work: &mut Work<'_>) -> Result<Done<Self::Output>, ServiceError> {
        let (after_at, after_id, after_attempt) = match &valid.after {
            Some(c) => (Some(c.quarantined_at), Some(c.message_id.as_str()), Some(c.attempt)),
            None => (None, None, None),
        };
        // One row more than the page, to know whether another page follows.
        let fetch = i64::from(valid.limit) + 1;
        let mut client = work.client().await?;
        let tx = store::begin(&mut client).await?;
        let rows = tx
            .query_typed(
                &format!(
                    "SELECT message_id, attempt, source, reason_code, field, receive_count, sent_at,
                        quarantined_at, erased_at, erased_by, replayed_at, replay_attempt
                   FROM {}
                  WHERE ($1::timestamptz IS NULL OR quarantined_at >= $1)
                    AND ($2::text IS NULL OR reason_code = $2)
                    AND ($3::timestamptz IS NULL OR (quarantined_at, message_id, attempt) > ($3, $4, $5))
                  ORDER BY quarantined_at, message_id, attempt
                  LIMIT $6",
                    LOGIN_QUARANTINE.name
                ),
                &[
                    typed(&valid.since),
                    typed(&valid.reason_code),
                    typed(&after_at),
                    typed(&after_id),
                    typed(&after_attempt),
                    typed(&fetch),
                ],
            )
            .await?;
        tx.commit().await?;
        let mut page: Vec<QuarantinedMessage> = rows
            .iter()
            .map(|r| QuarantinedMessage {
                message_id: r.get(0),
                attempt: r.get(1),
                source: r.get(2),
                reason_code: r.get(3),
                field: r.get(4),
                receive_count: r.get(5),
                sent_at: r.get(6),
                quarantined_at: r.get(7),
                erased_at: r.get(8),
                erased_by: r.get(9),
                replayed_at: r.get(10),
                replay_attempt: r.get(11),
            })
            .collect();
        let more = page.len() > valid.limit as usize;
        page.truncate(valid.limit as usize);
        let next = page.last().filter(|_| more).map(|last| {
            Cursor {
                quarantined_at: last.quarantined_at,
                message_id: last.message_id.clone(),
                attempt: last.attempt,
            }
            .encode()
        });
        let detail = format!("{} row(s){}", page.len(), if more { ", more follow" } else { "" });
        Ok(Done::new((page, next), Outcome::Listed).detail(detail))
    }
}

impl VaultService {
    /// One page of the quarantine, and the cursor of the next.
    pub async fn quarantine_list(
        &self,
        context: &RequestContext,
        filter: &QuarantineFilter,
    ) -> Result<(Vec<QuarantinedMessage>, Option<String>), ServiceError> {
        self.run(context, List(filter)).await
    }
}
