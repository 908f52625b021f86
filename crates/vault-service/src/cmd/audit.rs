//! `audit`: the audit, listed (the listing itself on the record).

use chrono::{DateTime, Utc};

use crate::audit::Action;
use crate::operation::{Described, Done, Operation, Work};
use crate::{RequestContext, ServiceError, VaultService};
use pii_vault_protocol::{AuditRow, Outcome};

struct Audit {
    since: Option<DateTime<Utc>>,
}

impl Operation for Audit {
    const ACTION: Action = Action::Audit;
    type Valid = Option<DateTime<Utc>>;
    type Output = Vec<AuditRow>;

    fn describe(&self) -> Described {
        Described::default()
    }

    fn validate(self) -> Result<Self::Valid, ServiceError> {
        Ok(self.since)
    }

    async fn work(since: Self::Valid, work: &mut Work<'_>) -> Result<Done<Self::Output>, ServiceError> {
        let rows = work
            .client()
            .await?
            .query(
                "SELECT id, at, caller, action, field, blind_index, target, reason, request_id, outcome, detail
                   FROM pii_audit WHERE $1::timestamptz IS NULL OR at >= $1 ORDER BY id",
                &[&since],
            )
            .await?;
        let rows: Vec<AuditRow> = rows
            .iter()
            .map(|r| AuditRow {
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
            })
            .collect();
        let detail = format!("{} row(s)", rows.len());
        Ok(Done::new(rows, Outcome::Listed).detail(detail))
    }
}

impl VaultService {
    /// The audit since `since` (all of it without).
    pub async fn audit(
        &self,
        context: &RequestContext,
        since: Option<DateTime<Utc>>,
    ) -> Result<Vec<AuditRow>, ServiceError> {
        self.run(context, Audit { since }).await
    }
}
