//! The audit journal. A request is recorded ([`Journal::request`]) in a transaction of its
//! own, committed before the service authorizes, checks, reads or computes anything; its
//! outcome is recorded afterwards ([`Journal::outcome`]). Today the outcome is written into
//! the request's row (the table lets an outcome be added once and nothing else change);
//! when it becomes a row of its own, only this file changes.

use deadpool_postgres::Pool;

use crate::{RequestContext, ServiceError};
use login_etl_core::crypto::{BlindIndex, PiiField};
use login_etl_core::error::DbError;
use pii_vault_protocol::Outcome;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Find,
    Reveal,
    Forget,
    Audit,
    InitKeys,
    RotateKey,
    Reencrypt,
    QuarantineList,
    QuarantineShow,
    QuarantineReplay,
    QuarantineImportDlq,
    QuarantinePurge,
    /// A request that did not parse far enough to name an operation (or named none).
    Request,
}

/// What a quarantine show costs of the daily budget: a body holds both values of a login
/// (ip and device id), which a reveal by message id would charge one unit each.
pub const SHOW_UNITS: i64 = PiiField::ALL.len() as i64;

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Find => "find",
            Action::Reveal => "reveal",
            Action::Forget => "forget",
            Action::Audit => "audit",
            Action::InitKeys => "init-keys",
            Action::RotateKey => "rotate-key",
            Action::Reencrypt => "reencrypt",
            Action::QuarantineList => "quarantine-list",
            Action::QuarantineShow => "quarantine-show",
            Action::QuarantineReplay => "quarantine-replay",
            Action::QuarantineImportDlq => "quarantine-import-dlq",
            Action::QuarantinePurge => "quarantine-purge",
            Action::Request => "request",
        }
    }

    /// The action of a request's `op` (the protocol's tag is the action's name); `None`
    /// for an op the service does not have.
    pub fn of_op(op: &str) -> Option<Action> {
        const OPS: [Action; 12] = [
            Action::Find,
            Action::Reveal,
            Action::Forget,
            Action::Audit,
            Action::InitKeys,
            Action::RotateKey,
            Action::Reencrypt,
            Action::QuarantineList,
            Action::QuarantineShow,
            Action::QuarantineReplay,
            Action::QuarantineImportDlq,
            Action::QuarantinePurge,
        ];
        OPS.into_iter().find(|action| action.as_str() == op)
    }

    /// Admin actions (key creation, rotation and re-encryption) need the key-admin role;
    /// the others the staff role (the quarantine's included: the key administrator acts on
    /// keys, never on data).
    pub fn is_admin(self) -> bool {
        matches!(self, Action::InitKeys | Action::RotateKey | Action::Reencrypt)
    }

    /// Rows of these actions spend the caller's daily budget ([`RequestRow::budget_units`]).
    pub fn spends_budget(self) -> bool {
        matches!(self, Action::Find | Action::Reveal | Action::QuarantineShow)
    }

    /// A reveal, an erasure, a show or a replay needs a reason (and the table refuses a
    /// pending reveal or erasure without).
    pub fn needs_reason(self) -> bool {
        matches!(self, Action::Reveal | Action::Forget | Action::QuarantineShow | Action::QuarantineReplay)
    }
}

/// What a recorded row says about the request.
#[derive(Debug, Clone)]
pub struct RequestRow {
    pub action: Action,
    pub field: Option<PiiField>,
    pub blind_index: Option<BlindIndex>,
    /// `user_id:…` or `message_id:…` for a reveal by those.
    pub target: Option<String>,
    /// Only a reason that passed the rules (`audit_reason`).
    pub reason: Option<String>,
}

impl RequestRow {
    pub fn new(action: Action) -> RequestRow {
        RequestRow { action, field: None, blind_index: None, target: None, reason: None }
    }

    /// Units of the daily budget this row spends: a find's or a reveal's row that names a
    /// field one; a quarantine show [`SHOW_UNITS`]. ([`USED`] counts them back the same way.)
    pub fn budget_units(&self) -> i64 {
        match self.action {
            Action::Find | Action::Reveal if self.field.is_some() => 1,
            Action::QuarantineShow => SHOW_UNITS,
            _ => 0,
        }
    }
}

/// The units a caller spent in the last 24 hours, counted as [`RequestRow::budget_units`]
/// counts them (refused requests spend nothing).
const USED: &str = "
    SELECT coalesce(sum(CASE WHEN action = 'quarantine-show' THEN $2::int8 ELSE 1 END), 0)::int8
      FROM pii_audit
     WHERE caller = $1 AND ((action IN ('reveal', 'find') AND field IS NOT NULL) OR action = 'quarantine-show')
       AND at > now() - interval '24 hours' AND outcome IS DISTINCT FROM 'refused'";

/// The id of a recorded row, to add its outcome to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditId(i64);

const INSERT: &str = "
    INSERT INTO pii_audit (caller, action, field, blind_index, target, reason, request_id, outcome,
                           outcome_at, detail)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, CASE WHEN $8::text IS NULL THEN NULL ELSE clock_timestamp() END, $9)
    RETURNING id";

/// The journal, on the service's pool.
#[derive(Debug, Clone, Copy)]
pub struct Journal<'a> {
    pool: &'a Pool,
}

impl<'a> Journal<'a> {
    pub fn new(pool: &'a Pool) -> Journal<'a> {
        Journal { pool }
    }

    /// Records one request, committed. With a `budget` (units of reveals, finds and shows
    /// per caller per 24 hours) the caller's use is counted first, under a per-caller lock,
    /// in the same transaction: over budget, the request is recorded refused and `Budget`
    /// returned.
    pub async fn request(
        self,
        context: &RequestContext,
        row: &RequestRow,
        budget: Option<u32>,
    ) -> Result<AuditId, ServiceError> {
        let mut client = self.pool.get().await.map_err(unavailable)?;
        let tx = client.transaction().await.map_err(unavailable)?;
        let refused = spend(&tx, context, std::slice::from_ref(row), budget).await?;
        let id = insert(&tx, context, row, refusal(&refused)).await?;
        tx.commit().await.map_err(unavailable)?;
        refused.map_or(Ok(id), Err)
    }

    /// Records several rows (the values of one reveal) in one committed transaction, under
    /// the budget as [`Journal::request`] does.
    pub async fn values(
        self,
        context: &RequestContext,
        rows: &[RequestRow],
        budget: Option<u32>,
    ) -> Result<Vec<AuditId>, ServiceError> {
        let mut client = self.pool.get().await.map_err(unavailable)?;
        let tx = client.transaction().await.map_err(unavailable)?;
        let refused = spend(&tx, context, rows, budget).await?;
        let mut ids = Vec::with_capacity(rows.len());
        for row in rows {
            ids.push(insert(&tx, context, row, refusal(&refused)).await?);
        }
        tx.commit().await.map_err(unavailable)?;
        refused.map_or(Ok(ids), Err)
    }

    /// Records a request together with its refusal, for a request refused before it has a
    /// row: one the table cannot hold pending (a reveal or erasure without a usable
    /// reason), a malformed one, one from a caller in no role, an anonymous knock. Beyond
    /// [`REFUSAL_ROWS_PER_MINUTE`] refused rows of the caller, the refusal is counted in
    /// `pii_audit_refusals_over_limit` instead, so refusals cannot flood the audit.
    pub async fn refused(
        self,
        context: &RequestContext,
        row: &RequestRow,
        detail: &str,
    ) -> Result<(), ServiceError> {
        let mut client = self.pool.get().await.map_err(unavailable)?;
        let tx = client.transaction().await.map_err(unavailable)?;
        if over_refusal_limit(&tx, context).await? {
            tx.execute(COUNT_OVER_LIMIT, &[&context.caller]).await.map_err(unavailable)?;
        } else {
            insert(&tx, context, row, Some((Outcome::Refused, detail.to_owned()))).await?;
        }
        tx.commit().await.map_err(unavailable)
    }

    /// Records the outcome of a recorded request (and its mask, when that was computed
    /// after the request was recorded).
    pub async fn outcome(
        self,
        id: AuditId,
        outcome: Outcome,
        blind_index: Option<&BlindIndex>,
        detail: Option<&str>,
    ) -> Result<(), ServiceError> {
        let client = self.pool.get().await.map_err(unavailable)?;
        client
            .execute(
                "UPDATE pii_audit SET outcome = $2, outcome_at = clock_timestamp(),
                        blind_index = coalesce(blind_index, $3), detail = coalesce($4, detail)
                  WHERE id = $1 AND outcome IS NULL",
                &[&id.0, &outcome.as_str(), &blind_index.map(BlindIndex::as_str), &detail],
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}

/// Counts the caller's budget for `rows`, under a per-caller lock held until `tx` ends:
/// `Budget` if they would exceed it, so they are recorded refused.
async fn spend(
    tx: &deadpool_postgres::Transaction<'_>,
    context: &RequestContext,
    rows: &[RequestRow],
    budget: Option<u32>,
) -> Result<Option<ServiceError>, ServiceError> {
    let wanted: i64 = rows.iter().map(RequestRow::budget_units).sum();
    let Some(budget) = budget.filter(|_| wanted > 0) else { return Ok(None) };
    // Serializes one caller's concurrent requests, so two cannot both take the last unit.
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('pii-vault-budget:' || $1, 0))",
        &[&context.caller],
    )
    .await
    .map_err(unavailable)?;
    let used: i64 = tx.query_one(USED, &[&context.caller, &SHOW_UNITS]).await.map_err(unavailable)?.get(0);
    Ok((used + wanted > i64::from(budget))
        .then(|| ServiceError::Budget { budget, used: u64::try_from(used).unwrap_or_default() }))
}

/// Refused rows a caller leaves in the audit per minute (sliding); the refusals beyond are
/// counted per caller and minute in `pii_audit_refusals_over_limit`. The one place the
/// limit lives.
pub const REFUSAL_ROWS_PER_MINUTE: i64 = 30;

const COUNT_OVER_LIMIT: &str = "
    INSERT INTO pii_audit_refusals_over_limit (caller, minute, refused)
    VALUES ($1, date_trunc('minute', now()), 1)
    ON CONFLICT (caller, minute) DO UPDATE SET refused = pii_audit_refusals_over_limit.refused + 1";

/// Whether the caller has left [`REFUSAL_ROWS_PER_MINUTE`] refused rows in the last minute,
/// under a per-caller lock held until `tx` ends (so concurrent refusals cannot all pass).
async fn over_refusal_limit(
    tx: &deadpool_postgres::Transaction<'_>,
    context: &RequestContext,
) -> Result<bool, ServiceError> {
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('pii-vault-refusals:' || $1, 0))",
        &[&context.caller],
    )
    .await
    .map_err(unavailable)?;
    let recent: i64 = tx
        .query_one(
            "SELECT count(*) FROM pii_audit
              WHERE caller = $1 AND outcome = 'refused' AND at > now() - interval '1 minute'",
            &[&context.caller],
        )
        .await
        .map_err(unavailable)?
        .get(0);
    Ok(recent >= REFUSAL_ROWS_PER_MINUTE)
}

/// The outcome a row is inserted with: none, or refused for the budget.
fn refusal(refused: &Option<ServiceError>) -> Option<(Outcome, String)> {
    refused.as_ref().map(|error| (Outcome::Refused, error.to_string()))
}

async fn insert(
    tx: &deadpool_postgres::Transaction<'_>,
    context: &RequestContext,
    row: &RequestRow,
    outcome: Option<(Outcome, String)>,
) -> Result<AuditId, ServiceError> {
    let (outcome, detail) = outcome.unzip();
    let inserted = tx
        .query_one(
            INSERT,
            &[
                &context.caller,
                &row.action.as_str(),
                &row.field.map(PiiField::as_str),
                &row.blind_index.as_ref().map(BlindIndex::as_str),
                &row.target,
                &row.reason,
                &context.request_id,
                &outcome.map(Outcome::as_str),
                &detail,
            ],
        )
        .await
        .map_err(unavailable)?;
    Ok(AuditId(inserted.get(0)))
}

fn unavailable(error: impl Into<DbError>) -> ServiceError {
    ServiceError::AuditUnavailable(error.into())
}
