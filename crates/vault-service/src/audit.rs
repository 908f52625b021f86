//! The audit journal. A request is recorded ([`Journal::request`]) in a transaction of its
//! own, committed before the service authorizes, checks, reads or computes anything; its
//! outcome is recorded afterwards ([`Journal::outcome`]). Today the outcome is written into
//! the request's row (the table lets an outcome be added once and nothing else change);
//! when it becomes a row of its own, only this file changes.

use deadpool_postgres::Pool;

use crate::budget::{self, Kind, Limits, SHOW_UNITS};
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
}

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
        }
    }

    /// Admin actions (key creation, rotation and re-encryption) need the key-admin role;
    /// the others the staff role (the quarantine's included: the key administrator acts on
    /// keys, never on data).
    pub fn is_admin(self) -> bool {
        matches!(self, Action::InitKeys | Action::RotateKey | Action::Reencrypt)
    }

    /// Rows of these actions spend the caller's budgets ([`RequestRow::cost`]).
    pub fn spends_budget(self) -> bool {
        matches!(self, Action::Find | Action::Reveal | Action::Forget | Action::QuarantineShow)
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

    /// What recording this row spends ([`budget`]): a find's, a reveal's or a forget's row
    /// that names a field one reveal unit; a show [`SHOW_UNITS`]; a forget of a user one
    /// erasure.
    pub fn cost(&self) -> budget::Cost {
        match self.action {
            Action::Find | Action::Reveal | Action::Forget if self.field.is_some() => Some((Kind::Reveal, 1)),
            Action::Forget if self.target.is_some() => Some((Kind::Erasure, 1)),
            Action::QuarantineShow => Some((Kind::Reveal, SHOW_UNITS)),
            _ => None,
        }
    }
}

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

    /// Records one request, committed. With `budget` limits the caller's use is counted
    /// first, under the caller's budget locks, in the same transaction ([`budget`]): over a
    /// limit, the request is recorded refused and the refusal returned.
    pub async fn request(
        self,
        context: &RequestContext,
        row: &RequestRow,
        budget: Option<Limits>,
    ) -> Result<AuditId, ServiceError> {
        let mut client = self.pool.get().await.map_err(unavailable)?;
        let tx = client.transaction().await.map_err(unavailable)?;
        let cost = [row.cost()];
        let refused = budget::check(&tx, context, &cost, budget).await?;
        let id = insert(&tx, context, row, refusal(&refused)).await?;
        if refused.is_none() {
            budget::record(&tx, context, &cost, &[id.0]).await?;
        }
        tx.commit().await.map_err(unavailable)?;
        refused.map_or(Ok(id), Err)
    }

    /// Records several rows (the values of one reveal) in one committed transaction, under
    /// the budget as [`Journal::request`] does.
    pub async fn values(
        self,
        context: &RequestContext,
        rows: &[RequestRow],
        budget: Option<Limits>,
    ) -> Result<Vec<AuditId>, ServiceError> {
        let mut client = self.pool.get().await.map_err(unavailable)?;
        let tx = client.transaction().await.map_err(unavailable)?;
        let costs: Vec<_> = rows.iter().map(RequestRow::cost).collect();
        let refused = budget::check(&tx, context, &costs, budget).await?;
        let mut ids = Vec::with_capacity(rows.len());
        for row in rows {
            ids.push(insert(&tx, context, row, refusal(&refused)).await?);
        }
        if refused.is_none() {
            budget::record(&tx, context, &costs, &ids.iter().map(|id| id.0).collect::<Vec<_>>()).await?;
        }
        tx.commit().await.map_err(unavailable)?;
        refused.map_or(Ok(ids), Err)
    }

    /// Records a request together with its refusal, for a request the table cannot hold
    /// pending (a reveal or erasure without a usable reason) and for an anonymous knock.
    pub async fn refused(
        self,
        context: &RequestContext,
        row: &RequestRow,
        detail: &str,
    ) -> Result<(), ServiceError> {
        let mut client = self.pool.get().await.map_err(unavailable)?;
        let tx = client.transaction().await.map_err(unavailable)?;
        insert(&tx, context, row, Some((Outcome::Refused, detail.to_owned()))).await?;
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
        if outcome == Outcome::Refused {
            budget::refund(&client, id.0).await?;
        }
        Ok(())
    }
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
