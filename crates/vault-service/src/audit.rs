//! The audit journal. A request is recorded ([`Journal::request`]) in a transaction of its
//! own, committed before the service authorizes, checks, reads or computes anything; its
//! outcome is recorded afterwards ([`Journal::outcome`]) as an entry of its own that refers
//! to the request's. Entries are never changed: each is chained ([`Entry::canonical`],
//! `pii_audit_entries.chain`) under the audit key, in the order a one-row head table
//! serializes, and each committed link is logged ([`CHAIN_LOG_MESSAGE`]) to the service's
//! log stream, so that `audit verify` can tell a rewritten, inserted, deleted or truncated
//! entry (docs/security.md, "The audit"). A mask is recorded as its keyed digest
//! ([`AuditKey::mask_digest`]), never in clear.

use chrono::{DateTime, Utc};
use tokio::sync::OnceCell;
use tokio_postgres::Row;

use crate::budget::{self, Kind, Limits, SHOW_UNITS};
use crate::{RequestContext, ServiceError, VaultService};
use login_etl_core::crypto::{AuditKey, BlindIndex, Canonical, ChainValue, ErasureKey, KeyPurpose, PiiField};
use login_etl_core::error::{DbError, report};
use login_etl_core::keys::{self, KeyError, Kms};
use login_etl_core::store::{self, typed::typed};
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
    AuditVerify,
    /// One batch of the vault's expiry (`crate::expiry`).
    Expire,
    /// A request that did not parse far enough to name an operation (or named none).
    Request,
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
            Action::AuditVerify => "audit-verify",
            Action::Expire => "expire",
            Action::Request => "request",
        }
    }

    /// The action of a request's `op` (the protocol's tag; `forget-user` is a forget);
    /// `None` for an op the service does not have. Every op of the protocol has one (a
    /// test serializes each [`pii_vault_protocol::Request`]).
    pub fn of_op(op: &str) -> Option<Action> {
        const OPS: [Action; 14] = [
            Action::Find,
            Action::Reveal,
            Action::Forget,
            Action::Audit,
            Action::AuditVerify,
            Action::InitKeys,
            Action::RotateKey,
            Action::Reencrypt,
            Action::Expire,
            Action::QuarantineList,
            Action::QuarantineShow,
            Action::QuarantineReplay,
            Action::QuarantineImportDlq,
            Action::QuarantinePurge,
        ];
        // `forget-user` is the one op recorded under another action's name.
        let op = if op == "forget-user" { Action::Forget.as_str() } else { op };
        OPS.into_iter().find(|action| action.as_str() == op)
    }

    /// Admin actions (key creation, rotation, re-encryption, the vault's expiry) need the key-admin role;
    /// the others the staff role (the quarantine's included: the key administrator acts on
    /// keys, never on data).
    pub fn is_admin(self) -> bool {
        matches!(self, Action::InitKeys | Action::RotateKey | Action::Reencrypt | Action::Expire)
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

/// The id of a recorded request entry, to add its outcome to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditId(i64);

/// The message of the log line each committed entry writes (fields `seq` and `chain`): the
/// service's log stream (CloudWatch Logs; locally `.stack/vault-service.log`) holds every
/// link of the chain, outside the database's trust.
pub const CHAIN_LOG_MESSAGE: &str = "audit chain";

/// The audit key, unwrapped once per process; the service creates it on first use if
/// `init-keys` has not run since the purpose was added (its own entry needs it). A
/// [`AuditKeyCell::load_only`] cell never creates one (the scheduled expiry: its role may
/// only unwrap the audit key).
#[derive(Debug, Default)]
pub struct AuditKeyCell {
    key: OnceCell<AuditKey>,
    load_only: bool,
}

impl AuditKeyCell {
    pub fn load_only() -> AuditKeyCell {
        AuditKeyCell { key: OnceCell::new(), load_only: true }
    }

    pub(crate) async fn get(
        &self,
        pool: &deadpool_postgres::Pool,
        kms: &Kms,
    ) -> Result<&AuditKey, ServiceError> {
        self.key
            .get_or_try_init(|| async {
                // Once per process, in one bounded transaction (the KMS calls in it too).
                let mut client = pool.get().await.map_err(unavailable)?;
                let tx = begin(&mut client).await?;
                let key = match keys::load_key(&*tx, kms, KeyPurpose::Audit).await {
                    Err(KeyError::NotInitialized(_)) if !self.load_only => {
                        let (_, wrapped) =
                            kms.generate(KeyPurpose::Audit, 1).await.map_err(key_unavailable)?;
                        keys::insert_wrapped_key(&*tx, &wrapped).await.map_err(key_unavailable)?;
                        // The winner of a race is the key.
                        keys::load_key(&*tx, kms, KeyPurpose::Audit).await
                    }
                    other => other,
                }
                .map_err(key_unavailable)?;
                tx.commit().await.map_err(unavailable)?;
                Ok(AuditKey::new(&key))
            })
            .await
    }
}

/// Every column of an entry of `pii_audit_entries`, as stored; the chain covers them all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub seq: i64,
    pub id: i64,
    pub at: DateTime<Utc>,
    pub db_user: String,
    pub caller: String,
    pub action: String,
    pub field: Option<String>,
    /// A chained entry holds the mask's keyed digest here, never the mask.
    pub blind_index: Option<String>,
    pub target: Option<String>,
    pub reason: Option<String>,
    pub request_id: Option<String>,
    pub outcome: Option<String>,
    pub outcome_at: Option<DateTime<Utc>>,
    pub detail: Option<String>,
    /// For an outcome entry, the id of its request's entry.
    pub outcome_of: Option<i64>,
}

/// The columns [`Entry::from_row`] reads, in its order.
pub const ENTRY_COLUMNS: &str = "seq, id, at, db_user, caller, action, field, blind_index, target, reason, \
     request_id, outcome, outcome_at, detail, outcome_of";

impl Entry {
    /// The bytes the chain covers: every column, in [`ENTRY_COLUMNS`] order, times in
    /// microseconds (PostgreSQL's precision).
    pub fn canonical(&self) -> Canonical {
        Canonical::new()
            .int(self.seq)
            .int(self.id)
            .int(self.at.timestamp_micros())
            .text(Some(&self.db_user))
            .text(Some(&self.caller))
            .text(Some(&self.action))
            .text(self.field.as_deref())
            .text(self.blind_index.as_deref())
            .text(self.target.as_deref())
            .text(self.reason.as_deref())
            .text(self.request_id.as_deref())
            .text(self.outcome.as_deref())
            .opt_int(self.outcome_at.map(|t| t.timestamp_micros()))
            .text(self.detail.as_deref())
            .opt_int(self.outcome_of)
    }

    /// A row selected as [`ENTRY_COLUMNS`]; `None` for a row the chain does not cover.
    pub fn from_row(row: &Row) -> Result<Option<Entry>, tokio_postgres::Error> {
        let Some(seq) = row.try_get::<_, Option<i64>>(0)? else { return Ok(None) };
        Ok(Some(Entry {
            seq,
            id: row.try_get(1)?,
            at: row.try_get(2)?,
            db_user: row.try_get(3)?,
            caller: row.try_get(4)?,
            action: row.try_get(5)?,
            field: row.try_get(6)?,
            blind_index: row.try_get(7)?,
            target: row.try_get(8)?,
            reason: row.try_get(9)?,
            request_id: row.try_get(10)?,
            outcome: row.try_get(11)?,
            outcome_at: row.try_get(12)?,
            detail: row.try_get(13)?,
            outcome_of: row.try_get(14)?,
        }))
    }
}

/// A committed link: logged once its transaction commits.
#[derive(Debug, Clone, Copy)]
struct Link {
    seq: i64,
    chain: ChainValue,
}

/// The journal, on the service's pool, chaining under the service's audit key.
#[derive(Debug, Clone, Copy)]
pub struct Journal<'a> {
    service: &'a VaultService,
}

impl<'a> Journal<'a> {
    pub fn new(service: &'a VaultService) -> Journal<'a> {
        Journal { service }
    }

    async fn key(self) -> Result<&'a AuditKey, ServiceError> {
        self.service.audit_key.get(&self.service.pool, &self.service.kms).await
    }

    /// What an entry records of a mask: its keyed digest, equal for equal masks. For an
    /// erased value (its marker is in `pii_erasures`) the digest of its marker instead: the
    /// same for every later request naming the value, never what was recorded of it before
    /// the erasure, and in the listing indistinguishable from the digest of a value never
    /// seen. So a find (or a reveal or forget by mask) of an erased value links it to
    /// nothing the audit recorded beside its rows (docs/security.md, "Erasure").
    /// `erasure_key` is [`Journal::erasure_key`]'s, taken before the transaction began.
    async fn digest(
        tx: &deadpool_postgres::Transaction<'_>,
        key: &AuditKey,
        erasure_key: Option<&ErasureKey>,
        field: Option<PiiField>,
        mask: Option<&BlindIndex>,
    ) -> Result<Option<String>, ServiceError> {
        let Some(mask) = mask else { return Ok(None) };
        let (Some(field), Some(erasure_key)) = (field, erasure_key) else {
            return Ok(Some(key.mask_digest(field, mask.as_str())));
        };
        let marker = erasure_key.marker(field, mask);
        let erased = tx
            .query_typed_opt(
                "SELECT 1 FROM vault.pii_erasures WHERE field = $1 AND marker = $2",
                &[typed(&field.as_str()), typed(&marker.as_str())],
            )
            .await
            .map_err(unavailable)?
            .is_some();
        let recorded = if erased { marker.as_str() } else { mask.as_str() };
        Ok(Some(key.mask_digest(Some(field), recorded)))
    }

    /// The erasure key, when an entry to be written names a mask: loaded (once per process)
    /// before the journal takes a connection, never while it holds one and budget locks.
    async fn erasure_key(self, masks: bool) -> Result<Option<&'a ErasureKey>, ServiceError> {
        if masks { self.service.erasure_key().await.map(Some) } else { Ok(None) }
    }

    /// Records one request, committed. With `budget` limits the caller's use is counted
    /// first, under the caller's budget locks, in the same transaction ([`budget`]): over a
    /// limit, the request is recorded refused (beyond [`REFUSAL_ROWS_PER_MINUTE`], only
    /// counted, as [`Journal::refused`] does) and the refusal returned.
    pub async fn request(
        self,
        context: &RequestContext,
        row: &RequestRow,
        budget: Option<Limits>,
    ) -> Result<AuditId, ServiceError> {
        self.values(context, std::slice::from_ref(row), budget).await.map(|ids| ids[0])
    }

    /// Records several rows (the values of one reveal) in one committed transaction, under
    /// the budget as [`Journal::request`] does.
    pub async fn values(
        self,
        context: &RequestContext,
        rows: &[RequestRow],
        budget: Option<Limits>,
    ) -> Result<Vec<AuditId>, ServiceError> {
        let key = self.key().await?;
        let erasure_key = self.erasure_key(rows.iter().any(|row| row.blind_index.is_some())).await?;
        let mut client = self.service.pool.get().await.map_err(unavailable)?;
        let tx = begin(&mut client).await?;
        let mut digests = Vec::with_capacity(rows.len());
        for row in rows {
            digests.push(Self::digest(&tx, key, erasure_key, row.field, row.blind_index.as_ref()).await?);
        }
        let costs: Vec<_> = rows.iter().map(RequestRow::cost).collect();
        let refused = budget::check(&tx, context, &costs, budget).await?;
        if refused.is_some() && over_refusal_limit(&tx, context).await? {
            // Over budget and over the refusal limit: only counted, as any refusal beyond it.
            tx.execute_typed(COUNT_OVER_LIMIT, &[typed(&context.caller)]).await.map_err(unavailable)?;
            tx.commit().await.map_err(unavailable)?;
            return refused.map_or(Ok(Vec::new()), Err);
        }
        let mut links = Vec::with_capacity(rows.len());
        for (row, digest) in rows.iter().zip(digests) {
            let entry = request_entry(context, row, digest, refusal(&refused));
            links.push(append(&tx, key, entry).await?);
        }
        // Only a request that spends touches the budgets (the scheduled expiry's login may not).
        if refused.is_none() && costs.iter().any(Option::is_some) {
            budget::record(&tx, context, &costs, &links.iter().map(|(id, _)| id.0).collect::<Vec<_>>())
                .await?;
        }
        tx.commit().await.map_err(unavailable)?;
        logged(&links);
        refused.map_or(Ok(links.iter().map(|(id, _)| *id).collect()), Err)
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
        let key = self.key().await?;
        let erasure_key = self.erasure_key(row.blind_index.is_some()).await?;
        let mut client = self.service.pool.get().await.map_err(unavailable)?;
        let tx = begin(&mut client).await?;
        let over = over_refusal_limit(&tx, context).await?;
        let link = if over {
            tx.execute_typed(COUNT_OVER_LIMIT, &[typed(&context.caller)]).await.map_err(unavailable)?;
            None
        } else {
            let digest = Self::digest(&tx, key, erasure_key, row.field, row.blind_index.as_ref()).await?;
            let entry = request_entry(context, row, digest, Some((Outcome::Refused, detail.to_owned())));
            Some(append(&tx, key, entry).await?)
        };
        tx.commit().await.map_err(unavailable)?;
        logged(link.as_slice());
        Ok(())
    }

    /// Records the outcome of a recorded request (and its mask's digest, when the mask was
    /// computed after the request was recorded): an entry of its own, naming the request's
    /// caller, action and request id. A request has at most one (a unique index).
    pub async fn outcome(
        self,
        id: AuditId,
        outcome: Outcome,
        blind_index: Option<&BlindIndex>,
        detail: Option<&str>,
    ) -> Result<(), ServiceError> {
        let key = self.key().await?;
        let erasure_key = self.erasure_key(blind_index.is_some()).await?;
        let mut client = self.service.pool.get().await.map_err(unavailable)?;
        let tx = begin(&mut client).await?;
        let request = tx
            .query_typed_one(
                "SELECT caller, action, field, request_id FROM pii_audit_log.pii_audit_entries WHERE id = $1",
                &[typed(&id.0)],
            )
            .await
            .map_err(unavailable)?;
        let field: Option<String> = request.get(2);
        let field_of = field.as_deref().and_then(PiiField::from_db);
        let digest = Self::digest(&tx, key, erasure_key, field_of, blind_index).await?;
        let entry = Pending {
            caller: request.get(0),
            action: request.get(1),
            blind_index: digest,
            field,
            target: None,
            reason: None,
            request_id: request.get(3),
            outcome: Some(outcome.as_str().to_owned()),
            detail: detail.map(str::to_owned),
            outcome_of: Some(id.0),
        };
        let link = append(&tx, key, entry).await?;
        // A request refused after it was recorded spends nothing.
        if outcome == Outcome::Refused {
            budget::refund(&tx, id.0).await?;
        }
        tx.commit().await.map_err(unavailable)?;
        logged(&[link]);
        Ok(())
    }
}

/// What an entry says before the journal gives it its place (seq, id, time, login).
struct Pending {
    caller: String,
    action: String,
    field: Option<String>,
    blind_index: Option<String>,
    target: Option<String>,
    reason: Option<String>,
    request_id: Option<String>,
    outcome: Option<String>,
    detail: Option<String>,
    outcome_of: Option<i64>,
}

/// A request's entry, `digest` being what [`Journal::digest`] records of its mask.
fn request_entry(
    context: &RequestContext,
    row: &RequestRow,
    digest: Option<String>,
    outcome: Option<(Outcome, String)>,
) -> Pending {
    let (outcome, detail) = outcome.unzip();
    Pending {
        caller: context.caller.clone(),
        action: row.action.as_str().to_owned(),
        field: row.field.map(|f| f.as_str().to_owned()),
        blind_index: digest,
        target: row.target.clone(),
        reason: row.reason.clone(),
        request_id: Some(context.request_id.clone()),
        outcome: outcome.map(|o| o.as_str().to_owned()),
        detail,
        outcome_of: None,
    }
}

/// Appends one entry at the chain's head: the head row stays locked until `tx` ends, so
/// entries are chained in commit order and numbered without gaps.
async fn append(
    tx: &deadpool_postgres::Transaction<'_>,
    key: &AuditKey,
    pending: Pending,
) -> Result<(AuditId, Link), ServiceError> {
    let head = tx
        .query_typed_one("SELECT seq, chain FROM pii_audit_log.pii_audit_chain_head FOR UPDATE", &[])
        .await
        .map_err(unavailable)?;
    let prev = match head.get::<_, Option<Vec<u8>>>(1) {
        None => ChainValue::GENESIS,
        Some(bytes) => ChainValue::from_slice(&bytes).ok_or_else(|| {
            ServiceError::AuditUnavailable(DbError::other("the chain head is not 32 bytes"))
        })?,
    };
    let place = tx
        .query_typed_one(
            "SELECT nextval(pg_get_serial_sequence('pii_audit_log.pii_audit_entries', 'id')), clock_timestamp(), session_user::text",
            &[],
        )
        .await
        .map_err(unavailable)?;
    let at: DateTime<Utc> = place.get(1);
    let entry = Entry {
        seq: head.get::<_, i64>(0) + 1,
        id: place.get(0),
        at,
        db_user: place.get(2),
        caller: pending.caller,
        action: pending.action,
        field: pending.field,
        blind_index: pending.blind_index,
        target: pending.target,
        reason: pending.reason,
        request_id: pending.request_id,
        outcome_at: pending.outcome.as_ref().map(|_| at),
        outcome: pending.outcome,
        detail: pending.detail,
        outcome_of: pending.outcome_of,
    };
    let chain = key.chain_step(&prev, &entry.canonical());
    tx.execute_typed(
        "INSERT INTO pii_audit_log.pii_audit_entries (seq, id, at, db_user, caller, action, field, blind_index, target,
                                        reason, request_id, outcome, outcome_at, detail, outcome_of, chain)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
        &[
            typed(&entry.seq),
            typed(&entry.id),
            typed(&entry.at),
            typed(&entry.db_user),
            typed(&entry.caller),
            typed(&entry.action),
            typed(&entry.field),
            typed(&entry.blind_index),
            typed(&entry.target),
            typed(&entry.reason),
            typed(&entry.request_id),
            typed(&entry.outcome),
            typed(&entry.outcome_at),
            typed(&entry.detail),
            typed(&entry.outcome_of),
            typed(&chain.as_bytes().as_slice()),
        ],
    )
    .await
    .map_err(unavailable)?;
    tx.execute_typed(
        "UPDATE pii_audit_log.pii_audit_chain_head SET seq = $1, chain = $2",
        &[typed(&entry.seq), typed(&chain.as_bytes().as_slice())],
    )
    .await
    .map_err(unavailable)?;
    Ok((AuditId(entry.id), Link { seq: entry.seq, chain }))
}

/// Writes committed links to the log stream (after the commit: a logged link exists).
fn logged(links: &[(AuditId, Link)]) {
    for (_, link) in links {
        tracing::info!(seq = link.seq, chain = %link.chain, "{CHAIN_LOG_MESSAGE}");
    }
}

/// Refused rows a caller leaves in the audit per minute (sliding); the refusals beyond are
/// counted per caller and minute in `pii_audit_refusals_over_limit`. The one place the
/// limit lives.
pub const REFUSAL_ROWS_PER_MINUTE: i64 = 30;

const COUNT_OVER_LIMIT: &str = "
    INSERT INTO pii_audit_log.pii_audit_refusals_over_limit (caller, minute, refused)
    VALUES ($1, date_trunc('minute', now()), 1)
    ON CONFLICT (caller, minute) DO UPDATE SET refused = pii_audit_refusals_over_limit.refused + 1";

/// Whether the caller's scope has left [`REFUSAL_ROWS_PER_MINUTE`] refused entries in the
/// last minute: a person of the staff or key-admin role, or every session of any other
/// assumed role as one (a new session name is no new limit; `principal::refusal_scope`). Under the chain head's row lock, held until
/// `tx` ends, which every audit write takes anyway (so concurrent refusals cannot all
/// pass, and no other login can take it).
async fn over_refusal_limit(
    tx: &deadpool_postgres::Transaction<'_>,
    context: &RequestContext,
) -> Result<bool, ServiceError> {
    tx.execute_typed("SELECT 1 FROM pii_audit_log.pii_audit_chain_head FOR UPDATE", &[])
        .await
        .map_err(unavailable)?;
    let recent: i64 = tx
        .query_typed_one(
            "SELECT count(*) FROM pii_audit_log.pii_audit_entries
              WHERE caller ILIKE $1 ESCAPE '\\' AND outcome = 'refused' AND at > now() - interval '1 minute'",
            &[typed(&crate::principal::refusal_scope(&context.caller, context.staff || context.key_admin))],
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

/// A bounded transaction ([`store::begin`]) for the journal: failing to begin it is the
/// audit's unavailability.
async fn begin(
    client: &mut deadpool_postgres::Client,
) -> Result<deadpool_postgres::Transaction<'_>, ServiceError> {
    store::begin(client).await.map_err(|error| match error {
        store::StoreError::Db(db) => unavailable(db),
        other => unavailable(DbError::other(report(&other))),
    })
}

fn unavailable(error: impl Into<DbError>) -> ServiceError {
    ServiceError::AuditUnavailable(error.into())
}

/// The audit key could not be had: nothing can be recorded, so nothing is done.
fn key_unavailable(error: KeyError) -> ServiceError {
    ServiceError::AuditUnavailable(DbError::other(report(&error)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each request of the protocol, as the front reads its op, is recorded under its
    /// action: the match below fails to compile when the protocol gains a request.
    #[test]
    fn every_op_of_the_protocol_has_its_action() {
        use pii_vault_protocol::{ForgetTarget, Plaintext, ReplaySelection, Request, RevealTarget};
        let samples = [
            Request::Find { field: PiiField::Ip, value: Plaintext::new("192.0.2.1"), reason: None },
            Request::Reveal { target: RevealTarget::UserId("u".into()), reason: None },
            Request::Forget { field: PiiField::Ip, target: ForgetTarget::Mask("m".into()), reason: None },
            Request::ForgetUser { user_id: "u".into(), reason: None },
            Request::Audit { since: None, after: None, limit: None },
            Request::AuditVerify { after: None, head: None },
            Request::InitKeys,
            Request::RotateKey,
            Request::Reencrypt { batch_size: 1 },
            Request::Expire { batch_size: 1 },
            Request::QuarantineList { since: None, reason_code: None, after: None, limit: None },
            Request::QuarantineShow { message_id: "m".into(), attempt: None, reason: None },
            Request::QuarantineReplay { selection: ReplaySelection::MessageIds(vec![]), reason: None },
            Request::QuarantineImportDlq { max: None },
            Request::QuarantinePurge,
        ];
        for request in &samples {
            let expected = match request {
                Request::Find { .. } => Action::Find,
                Request::Reveal { .. } => Action::Reveal,
                Request::Forget { .. } | Request::ForgetUser { .. } => Action::Forget,
                Request::Audit { .. } => Action::Audit,
                Request::AuditVerify { .. } => Action::AuditVerify,
                Request::InitKeys => Action::InitKeys,
                Request::RotateKey => Action::RotateKey,
                Request::Reencrypt { .. } => Action::Reencrypt,
                Request::Expire { .. } => Action::Expire,
                Request::QuarantineList { .. } => Action::QuarantineList,
                Request::QuarantineShow { .. } => Action::QuarantineShow,
                Request::QuarantineReplay { .. } => Action::QuarantineReplay,
                Request::QuarantineImportDlq { .. } => Action::QuarantineImportDlq,
                Request::QuarantinePurge => Action::QuarantinePurge,
            };
            let json = serde_json::to_value(request).expect("serializes");
            let op = json["op"].as_str().expect("an op");
            assert_eq!(Action::of_op(op), Some(expected), "{op}");
        }
        assert_eq!(Action::of_op("request"), None);
    }
}
