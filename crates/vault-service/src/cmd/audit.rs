//! `audit`: one page of the audit, oldest first (the listing itself on the record). A page
//! holds at most `limit` requests (default [`DEFAULT_PAGE_ROWS`], at most
//! [`MAX_PAGE_ROWS`]) and at most [`AUDIT_PAGE_BYTES`] of JSON, so no answer nears the
//! function URL's 6 MB; `next` is the cursor of the following page.

use chrono::{DateTime, Utc};
use login_etl_core::store::{self, typed::typed};

use crate::audit::Action;
use crate::operation::{Described, Done, Operation, Work};
use crate::{RequestContext, ServiceError, VaultService};
use pii_vault_protocol::{AUDIT_PAGE_BYTES, AuditRow, Outcome};

pub const DEFAULT_PAGE_ROWS: u32 = 1000;
pub const MAX_PAGE_ROWS: u32 = 5000;

struct Audit {
    since: Option<DateTime<Utc>>,
    after: Option<i64>,
    limit: Option<u32>,
}

struct Valid {
    since: Option<DateTime<Utc>>,
    after: Option<i64>,
    limit: u32,
}

impl Operation for Audit {
    const ACTION: Action = Action::Audit;
    type Valid = Valid;
    type Output = (Vec<AuditRow>, Option<i64>);

    fn describe(&self) -> Described {
        Described::default()
    }

    fn validate(self) -> Result<Valid, ServiceError> {
        let limit = self.limit.unwrap_or(DEFAULT_PAGE_ROWS);
        if !(1..=MAX_PAGE_ROWS).contains(&limit) {
            return Err(ServiceError::BadRequest(format!("a page is 1 to {MAX_PAGE_ROWS} rows")));
        }
        Ok(Valid { since: self.since, after: self.after, limit })
    }

    async fn work(valid: Valid, work: &mut Work<'_>) -> Result<Done<Self::Output>, ServiceError> {
        // One row more than the page, to know whether another page follows.
        let mut client = work.client().await?;
        let tx = store::begin(&mut client).await?;
        let rows = tx
            .query_typed(
                "SELECT id, at, caller, action, field, blind_index, target, reason, request_id, outcome, detail
                   FROM pii_audit_log.pii_audit
                  WHERE ($1::timestamptz IS NULL OR at >= $1) AND ($2::int8 IS NULL OR id > $2)
                  ORDER BY id LIMIT $3",
                &[typed(&valid.since), typed(&valid.after), typed(&(i64::from(valid.limit) + 1))],
            )
            .await?;
        tx.commit().await?;
        let mut page = Vec::with_capacity(rows.len().min(valid.limit as usize));
        let mut bytes = 0;
        let mut full = rows.len() > valid.limit as usize;
        for r in rows.iter().take(valid.limit as usize) {
            let row = AuditRow {
                id: r.get(0),
                at: r.get(1),
                caller: r.get(2),
                action: r.get(3),
                field: r.get(4),
                blind_index: r.get(5),
                target: r.get(6),
                reason: r.get(7),
                request_id: r.get(8),
                outcome: r.get(9),
                detail: r.get(10),
            };
            // Each row's columns are bounded, so one row always fits.
            bytes += serde_json::to_vec(&row).map_or(0, |json| json.len() + 1);
            if bytes > AUDIT_PAGE_BYTES && !page.is_empty() {
                full = true;
                break;
            }
            page.push(row);
        }
        let next = full.then(|| page.last().map(|row: &AuditRow| row.id)).flatten();
        let detail = format!("{} row(s)", page.len());
        Ok(Done::new((page, next), Outcome::Listed).detail(detail))
    }
}

impl VaultService {
    /// One page of the audit: requests at or after `since`, after the cursor `after`, at
    /// most `limit`; and the cursor of the next page.
    pub async fn audit(
        &self,
        context: &RequestContext,
        since: Option<DateTime<Utc>>,
        after: Option<i64>,
        limit: Option<u32>,
    ) -> Result<(Vec<AuditRow>, Option<i64>), ServiceError> {
        self.run(context, Audit { since, after, limit }).await
    }
}
