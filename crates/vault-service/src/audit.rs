//! The audit journal. Every act of the vault service is recorded here, in a transaction
//! of its own that is committed before the act reads the vault or computes anything; the
//! outcome is added to the row afterwards (the table lets nothing else of a row change).

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;

use super::{RequestContext, ServiceError};
use login_etl_core::crypto::{BlindIndex, PiiField};
use login_etl_core::error::DbError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Find,
    Reveal,
    Forget,
    Audit,
    InitKeys,
    RotateKey,
    Reencrypt,
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
        }
    }

    /// Admin actions: key creation, rotation and re-encryption.
    pub fn is_admin(self) -> bool {
        matches!(self, Action::InitKeys | Action::RotateKey | Action::Reencrypt)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Revealed,
    Erased,
    Unknown,
    Forgotten,
    Refused,
    Found,
    Listed,
    Created,
    Failed,
    Done,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Revealed => "revealed",
            Outcome::Erased => "erased",
            Outcome::Unknown => "unknown",
            Outcome::Forgotten => "forgotten",
            Outcome::Refused => "refused",
            Outcome::Found => "found",
            Outcome::Listed => "listed",
            Outcome::Created => "created",
            Outcome::Failed => "failed",
            Outcome::Done => "done",
        }
    }
}

/// One row to record.
#[derive(Debug, Clone)]
pub struct Entry {
    pub action: Action,
    pub field: Option<PiiField>,
    pub blind_index: Option<BlindIndex>,
    /// `user_id:…` or `message_id:…` for a reveal by those.
    pub target: Option<String>,
    pub reason: Option<String>,
    /// Set only for an act refused before it started.
    pub outcome: Option<Outcome>,
    pub detail: Option<String>,
}

impl Entry {
    pub fn new(action: Action) -> Entry {
        Entry {
            action,
            field: None,
            blind_index: None,
            target: None,
            reason: None,
            outcome: None,
            detail: None,
        }
    }
}

/// The id of a recorded row, to add its outcome to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditId(pub i64);

const INSERT: &str = "
    INSERT INTO pii_audit (caller, action, field, blind_index, target, reason, request_id, outcome,
                           outcome_at, detail)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, CASE WHEN $8::text IS NULL THEN NULL ELSE clock_timestamp() END, $9)
    RETURNING id";

/// Records `entries` in one committed transaction. With a `budget` (reveals and finds per
/// caller per 24 hours), the caller's use is counted under a per-caller lock first; if the
/// entries would exceed it they are recorded as refused instead, and `Budget` returned.
pub async fn record(
    pool: &Pool,
    context: &RequestContext,
    entries: &[Entry],
    budget: Option<u32>,
) -> Result<Vec<AuditId>, ServiceError> {
    let unavailable = |e: tokio_postgres::Error| ServiceError::AuditUnavailable(DbError::from(e));
    let mut client = pool.get().await.map_err(|e| ServiceError::AuditUnavailable(DbError::from(e)))?;
    let tx = client.transaction().await.map_err(unavailable)?;
    let mut refused = None;
    if let Some(budget) = budget {
        // Serializes one caller's concurrent requests, so two cannot both take the last unit.
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('pii-vault-budget:' || $1, 0))",
            &[&context.caller],
        )
        .await
        .map_err(unavailable)?;
        let used: i64 = tx
            .query_one(
                "SELECT count(*) FROM pii_audit
                  WHERE caller = $1 AND action IN ('reveal', 'find') AND field IS NOT NULL
                    AND at > now() - interval '24 hours' AND outcome IS DISTINCT FROM 'refused'",
                &[&context.caller],
            )
            .await
            .map_err(unavailable)?
            .get(0);
        let wanted = entries.iter().filter(|e| e.field.is_some()).count() as i64;
        if used + wanted > i64::from(budget) {
            refused = Some(ServiceError::Budget { budget, used: used as u64 });
        }
    }
    let mut ids = Vec::with_capacity(entries.len());
    for entry in entries {
        let (outcome, detail) = match &refused {
            Some(error) => (Some(Outcome::Refused), Some(error.to_string())),
            None => (entry.outcome, entry.detail.clone()),
        };
        let row = tx
            .query_one(
                INSERT,
                &[
                    &context.caller,
                    &entry.action.as_str(),
                    &entry.field.map(PiiField::as_str),
                    &entry.blind_index.as_ref().map(BlindIndex::as_str),
                    &entry.target,
                    &entry.reason,
                    &context.request_id,
                    &outcome.map(Outcome::as_str),
                    &detail,
                ],
            )
            .await
            .map_err(unavailable)?;
        ids.push(AuditId(row.get(0)));
    }
    tx.commit().await.map_err(unavailable)?;
    match refused {
        Some(error) => Err(error),
        None => Ok(ids),
    }
}

/// Adds the outcome (and the mask, when it was computed after the row was written).
pub async fn close(
    pool: &Pool,
    id: AuditId,
    outcome: Outcome,
    blind_index: Option<&BlindIndex>,
    detail: Option<&str>,
) -> Result<(), ServiceError> {
    let client = pool.get().await.map_err(|e| ServiceError::AuditUnavailable(DbError::from(e)))?;
    client
        .execute(
            "UPDATE pii_audit SET outcome = $2, outcome_at = clock_timestamp(),
                    blind_index = coalesce(blind_index, $3), detail = coalesce($4, detail)
              WHERE id = $1 AND outcome IS NULL",
            &[&id.0, &outcome.as_str(), &blind_index.map(BlindIndex::as_str), &detail],
        )
        .await
        .map_err(|e| ServiceError::AuditUnavailable(DbError::from(e)))?;
    Ok(())
}

/// A row as the `audit` listing shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuditRow {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub caller: String,
    pub action: String,
    pub field: Option<String>,
    pub blind_index: Option<String>,
    pub target: Option<String>,
    pub reason: Option<String>,
    pub request_id: Option<String>,
    pub outcome: Option<String>,
    pub detail: Option<String>,
}

pub async fn list(pool: &Pool, since: Option<DateTime<Utc>>) -> Result<Vec<AuditRow>, ServiceError> {
    let client = pool.get().await.map_err(|e| ServiceError::Db(DbError::from(e)))?;
    let rows = client
        .query(
            "SELECT id, at, caller, action, field, blind_index, target, reason, request_id, outcome, detail
               FROM pii_audit WHERE $1::timestamptz IS NULL OR at >= $1 ORDER BY id",
            &[&since],
        )
        .await
        .map_err(|e| ServiceError::Db(DbError::from(e)))?;
    Ok(rows
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
        .collect())
}
