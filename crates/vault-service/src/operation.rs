//! The one path every operation takes ([`VaultService::run`]):
//!
//! 1. authorize (the caller's role for the action);
//! 2. validate (the reason rules, then the operation's own checks); both pure, and a
//!    refusal of either is recorded, request and refusal in one entry, within the refusal
//!    limit (`audit::REFUSAL_ROWS_PER_MINUTE`), before it is answered;
//! 3. record the request (an audit row, committed, before anything is read; finds,
//!    reveals, forgets and shows spend the caller's budget in that same transaction);
//! 4. work;
//! 5. record the outcome.
//!
//! An operation ([`Operation`]) only says what its request row records, checks its
//! arguments and does its work; it never sees the service itself, only the [`Work`] handle
//! the combinator gives it after step 3, so it cannot skip or reorder a step.

use login_etl_core::store;
use std::future::Future;

use deadpool_postgres::Object;
use tokio::sync::MutexGuard;

use crate::audit::{Action, AuditId, Journal, RequestRow};
use crate::queues::Queues;
use crate::{RequestContext, ServiceError, VaultService};
use login_etl_core::crypto::{AuditKey, BlindIndex, BlindIndexer, ErasureKey, PiiField};
use login_etl_core::event::text::{ReasonError, audit_reason};
use login_etl_core::keys::{self, DataKeyCache, Kms};
use pii_vault_protocol::Outcome;

/// What the request row of an operation records before anything is checked.
#[derive(Debug, Clone, Default)]
pub struct Described {
    pub field: Option<PiiField>,
    /// Only a mask that parsed; the raw text is never recorded.
    pub blind_index: Option<BlindIndex>,
    pub target: Option<String>,
}

/// An operation of the service. Implementations live in `cmd/`, one a file.
pub trait Operation: Sized + Send {
    const ACTION: Action;
    /// The checked arguments.
    type Valid: Send;
    type Output: Send;

    /// What the request's audit entry says (steps 2 and 3). Pure; nothing secret.
    fn describe(&self) -> Described;

    /// The reason as the caller gave it; the combinator applies the rules.
    fn reason(&self) -> Option<&str> {
        None
    }

    /// The operation's own checks (step 2), after the reason rules. Pure.
    fn validate(self) -> Result<Self::Valid, ServiceError>;

    /// The work (step 4), with what the combinator hands over.
    fn work(
        valid: Self::Valid,
        work: &mut Work<'_>,
    ) -> impl Future<Output = Result<Done<Self::Output>, ServiceError>> + Send;
}

/// A finished operation's answer and what its request row's outcome says.
#[derive(Debug)]
pub struct Done<T> {
    pub value: T,
    pub outcome: Outcome,
    /// The mask, when the work computed it (a find or forget by plaintext).
    pub blind_index: Option<BlindIndex>,
    pub detail: Option<String>,
}

impl<T> Done<T> {
    pub fn new(value: T, outcome: Outcome) -> Done<T> {
        Done { value, outcome, blind_index: None, detail: None }
    }

    pub fn detail(self, detail: impl Into<String>) -> Done<T> {
        Done { detail: Some(detail.into()), ..self }
    }

    pub fn mask(self, blind_index: BlindIndex) -> Done<T> {
        Done { blind_index: Some(blind_index), ..self }
    }
}

/// A value row of a reveal, recorded and committed; only [`Work::record_values`] makes one,
/// so holding one proves the row is on the record.
#[derive(Debug)]
pub struct RecordedValue {
    id: AuditId,
    pub field: PiiField,
    pub index: BlindIndex,
}

/// What an operation may use while it works: connections, keys, and the journal for the
/// value rows of its own request (stamped with its caller, action and reason).
pub struct Work<'a> {
    service: &'a VaultService,
    context: &'a RequestContext,
    action: Action,
    reason: Option<String>,
    /// Value rows recorded and not yet given an outcome.
    open: Vec<AuditId>,
}

impl Work<'_> {
    /// A connection of the service's pool. It carries no session state (it may be a
    /// transaction pooler's): every statement on it goes in a transaction begun by
    /// `store::begin`, as the unnamed statement (docs/operations.md, "Connection poolers").
    pub async fn client(&self) -> Result<Object, ServiceError> {
        Ok(self.service.pool.get().await?)
    }

    /// The blind indexer, its keys unwrapped once per process.
    pub async fn indexer(&self) -> Result<&BlindIndexer, ServiceError> {
        let service = self.service;
        service
            .indexer
            .get_or_try_init(|| async {
                // Once per process, in one bounded transaction (the KMS calls in it too).
                let mut client = service.pool.get().await?;
                let tx = store::begin(&mut client).await?;
                let indexer = keys::load_indexer(&*tx, &service.kms).await?;
                tx.commit().await?;
                Ok::<_, ServiceError>(indexer)
            })
            .await
    }

    /// The erasure key (the markers of erased values), unwrapped once per process.
    pub async fn erasure_key(&self) -> Result<&ErasureKey, ServiceError> {
        self.service.erasure_key().await
    }

    /// The audit key (`audit verify` recomputes the chain with it).
    pub async fn audit_key(&self) -> Result<&AuditKey, ServiceError> {
        self.service.audit_key.get(&self.service.pool, &self.service.kms).await
    }

    pub fn kms(&self) -> &Kms {
        &self.service.kms
    }

    /// The replay and dead-letter queues (either may be unset).
    pub fn queues(&self) -> &Queues {
        &self.service.quarantine.queues
    }

    /// `QUARANTINE_RETENTION_DAYS`.
    pub fn retention_days(&self) -> u32 {
        self.service.quarantine.retention_days
    }

    /// `VAULT_RETENTION_DAYS`.
    pub fn vault_retention(&self) -> crate::expiry::Retention {
        self.service.vault_retention
    }

    /// The data keys by version, each unwrapped once per process.
    pub async fn data_keys(&self) -> MutexGuard<'_, DataKeyCache> {
        self.service.data_keys.lock().await
    }

    /// Records one row per value, in one committed transaction that spends the budget for
    /// them, before anything is decrypted; over budget, they are recorded refused.
    pub async fn record_values(
        &mut self,
        values: Vec<(PiiField, BlindIndex)>,
    ) -> Result<Vec<RecordedValue>, ServiceError> {
        let rows: Vec<RequestRow> = values
            .iter()
            .map(|(field, index)| RequestRow {
                field: Some(*field),
                blind_index: Some(index.clone()),
                reason: self.reason.clone(),
                ..RequestRow::new(self.action)
            })
            .collect();
        let budget = self.action.spends_budget().then_some(self.service.limits);
        let ids = Journal::new(self.service).values(self.context, &rows, budget).await?;
        self.open.extend(&ids);
        Ok(ids
            .into_iter()
            .zip(values)
            .map(|(id, (field, index))| RecordedValue { id, field, index })
            .collect())
    }

    /// Records a value row's outcome.
    pub async fn value_outcome(
        &mut self,
        value: &RecordedValue,
        outcome: Outcome,
    ) -> Result<(), ServiceError> {
        Journal::new(self.service).outcome(value.id, outcome, None, None).await?;
        self.open.retain(|id| *id != value.id);
        Ok(())
    }
}

impl VaultService {
    /// Runs `op` through the five steps. The only way an operation runs.
    pub(crate) async fn run<Op: Operation>(
        &self,
        context: &RequestContext,
        op: Op,
    ) -> Result<Op::Output, ServiceError> {
        let action = Op::ACTION;
        let journal = Journal::new(self);
        let reason = reason_of(action, op.reason());
        let described = op.describe();
        let row = RequestRow {
            action,
            field: described.field,
            blind_index: described.blind_index,
            target: described.target,
            reason: reason.clone().ok().flatten(),
        };

        // 1 and 2. Authorized, then valid (both pure: nothing runs before the record). A
        // refusal is recorded with its request in one entry, within the refusal limit, so
        // malformed requests cannot flood the audit.
        let checked = authorize(context, action)
            .and_then(|()| reason.map_err(ServiceError::from))
            .and_then(|_| op.validate());
        let valid = match checked {
            Ok(valid) => valid,
            Err(error) => {
                journal.refused(context, &row, &error.to_string()).await?;
                return Err(error);
            }
        };

        // 3. The request, on the record (over budget: recorded refused, and answered so).
        let id = journal.request(context, &row, action.spends_budget().then_some(self.limits)).await?;

        // 4. The work.
        let mut work = Work { service: self, context, action, reason: row.reason.clone(), open: Vec::new() };
        let result = Op::work(valid, &mut work).await;

        // 5. The outcome: of any value row the work left open, then of the request.
        let (outcome, blind_index, detail) = match &result {
            Ok(done) => (done.outcome, done.blind_index.as_ref(), done.detail.clone()),
            Err(error) => (outcome_of(error), None, Some(detail_of(error))),
        };
        for value in std::mem::take(&mut work.open) {
            let (outcome, detail) = match &result {
                Ok(_) => (Outcome::Failed, "no outcome recorded".to_owned()),
                Err(error) => (outcome_of(error), detail_of(error)),
            };
            journal.outcome(value, outcome, None, Some(&detail)).await?;
        }
        journal.outcome(id, outcome, blind_index, detail.as_deref()).await?;
        result.map(|done| done.value)
    }
}

/// The caller's role for the action, or the refusal.
pub(crate) fn authorize(context: &RequestContext, action: Action) -> Result<(), ServiceError> {
    let allowed = if action.is_admin() { context.key_admin } else { context.staff };
    if allowed {
        Ok(())
    } else {
        Err(ServiceError::NotAllowed { caller: context.caller.clone(), action: action.as_str() })
    }
}

/// The reason as the audit records it: required for reveals and erasures, checked when
/// given for the rest.
fn reason_of(action: Action, reason: Option<&str>) -> Result<Option<String>, ReasonError> {
    match reason {
        None if !action.needs_reason() => Ok(None),
        reason => audit_reason(reason).map(|r| Some(r.to_owned())),
    }
}

fn outcome_of(error: &ServiceError) -> Outcome {
    match error {
        ServiceError::Unknown(_) => Outcome::Unknown,
        error if error.is_refusal() => Outcome::Refused,
        _ => Outcome::Failed,
    }
}

/// A refusal's message (it names no value), or a failure's code (its causes are logged).
fn detail_of(error: &ServiceError) -> String {
    if error.is_refusal() { error.to_string() } else { error.code().as_str().to_owned() }
}
