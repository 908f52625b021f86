//! Budgets per person and per role, per 24 hours (docs/security.md, "Budgets").
//!
//! - Reveal units: a find, a reveal's value, a forget of a value 1; a quarantine show
//!   [`SHOW_UNITS`]. Each person ([`Principal::person`]) has `reveals_per_person`; all the
//!   sessions of a role together have `reveals_per_role`.
//! - Erasure units: one per user a `forget --user-id` erases, `erasures_per_person` a
//!   day, apart from the reveal budget so a legitimate bulk erasure is never blocked by it.
//!
//! The journal calls [`check`] and [`record`] in the transaction that records a request,
//! with what each row costs (`RequestRow::cost`), and [`refund`] when a recorded request
//! is refused afterwards. Concurrent requests of one
//! person are serialized by row locks on `pii_budget_keys`, role first then person (one
//! order, so no deadlock); only the service's login may lock those rows (sql/V9).

use deadpool_postgres::Transaction;
use tokio_postgres::error::SqlState;

use crate::principal::Principal;
use crate::{RequestContext, ServiceError};
use login_etl_core::config::ConfigError;
use login_etl_core::crypto::PiiField;
use login_etl_core::error::DbError;
use login_etl_core::store::typed::typed;

/// What a quarantine show costs: a body holds both values of a login (ip and device id),
/// which a reveal by message id would charge one unit each.
pub const SHOW_UNITS: i64 = PiiField::ALL.len() as i64;

/// Reveal units per person per 24 hours, unless `REVEAL_BUDGET_PER_DAY` says otherwise.
pub const DEFAULT_REVEAL_BUDGET: u32 = 100;
/// Reveal units of all the sessions of one role together, unless
/// `REVEAL_BUDGET_PER_ROLE_PER_DAY` says otherwise.
pub const DEFAULT_ROLE_BUDGET: u32 = 500;
/// Users erased per person per 24 hours, unless `ERASURE_QUOTA_PER_DAY` says otherwise.
pub const DEFAULT_ERASURE_QUOTA: u32 = 1000;

/// The daily limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub reveals_per_person: u32,
    pub reveals_per_role: u32,
    pub erasures_per_person: u32,
}

impl Limits {
    /// `reveals_per_person`, and the defaults for the rest.
    pub fn per_person(reveals_per_person: u32) -> Limits {
        Limits {
            reveals_per_person,
            reveals_per_role: DEFAULT_ROLE_BUDGET,
            erasures_per_person: DEFAULT_ERASURE_QUOTA,
        }
    }

    /// `REVEAL_BUDGET_PER_DAY`, `REVEAL_BUDGET_PER_ROLE_PER_DAY`, `ERASURE_QUOTA_PER_DAY`
    /// (whole numbers), each defaulted when unset.
    pub fn from_env() -> Result<Limits, ConfigError> {
        let var = |name: &'static str, default: u32| match std::env::var(name) {
            Err(_) => Ok(default),
            Ok(text) => text
                .trim()
                .parse()
                .map_err(|_| ConfigError::Malformed { var: name, reason: "expected a whole number".into() }),
        };
        Ok(Limits {
            reveals_per_person: var("REVEAL_BUDGET_PER_DAY", DEFAULT_REVEAL_BUDGET)?,
            reveals_per_role: var("REVEAL_BUDGET_PER_ROLE_PER_DAY", DEFAULT_ROLE_BUDGET)?,
            erasures_per_person: var("ERASURE_QUOTA_PER_DAY", DEFAULT_ERASURE_QUOTA)?,
        })
    }
}

/// Which allowance a row spends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Reveal,
    Erasure,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Reveal => "reveal",
            Kind::Erasure => "erasure",
        }
    }
}

/// What one recorded row spends: which allowance, how many units.
pub type Cost = Option<(Kind, i64)>;

/// Locks the caller's budget rows (role, then person) until `tx` ends and counts what
/// rows of these `costs` would spend: the refusal if that exceeds a limit, so they are
/// recorded refused. Without `limits`, nothing is counted or locked.
pub async fn check(
    tx: &Transaction<'_>,
    context: &RequestContext,
    costs: &[Cost],
    limits: Option<Limits>,
) -> Result<Option<ServiceError>, ServiceError> {
    let Some(limits) = limits else { return Ok(None) };
    let wanted = |kind| costs.iter().flatten().filter(|(k, _)| *k == kind).map(|(_, n)| n).sum::<i64>();
    let (reveals, erasures) = (wanted(Kind::Reveal), wanted(Kind::Erasure));
    if reveals == 0 && erasures == 0 {
        return Ok(None);
    }
    let principal = Principal::of(&context.caller);
    for key in [&principal.role, &principal.person] {
        tx.execute_typed(
            "INSERT INTO pii_budget.pii_budget_keys (key) VALUES ($1) ON CONFLICT (key) DO UPDATE SET key = EXCLUDED.key",
            &[typed(key)],
        )
        .await
        .map_err(locked)?;
    }
    let spent = |used: i64| u64::try_from(used).unwrap_or_default();
    if reveals > 0 {
        let (person, role) = used(tx, &principal, Kind::Reveal).await?;
        if person + reveals > i64::from(limits.reveals_per_person) {
            return Ok(Some(ServiceError::Budget { budget: limits.reveals_per_person, used: spent(person) }));
        }
        if role + reveals > i64::from(limits.reveals_per_role) {
            return Ok(Some(ServiceError::RoleBudget { budget: limits.reveals_per_role, used: spent(role) }));
        }
    }
    if erasures > 0 {
        let (person, _) = used(tx, &principal, Kind::Erasure).await?;
        if person + erasures > i64::from(limits.erasures_per_person) {
            return Ok(Some(ServiceError::ErasureQuota {
                quota: limits.erasures_per_person,
                used: spent(person),
            }));
        }
    }
    Ok(None)
}

/// What the person and the role spent of `kind` in the last 24 hours.
async fn used(tx: &Transaction<'_>, principal: &Principal, kind: Kind) -> Result<(i64, i64), ServiceError> {
    let row = tx
        .query_typed_one(
            "SELECT coalesce(sum(units) FILTER (WHERE person = $1), 0)::int8,
                    coalesce(sum(units) FILTER (WHERE role = $2), 0)::int8
               FROM pii_budget.pii_budget_spent
              WHERE kind = $3 AND (person = $1 OR role = $2) AND at > now() - interval '24 hours'",
            &[typed(&principal.person), typed(&principal.role), typed(&kind.as_str())],
        )
        .await
        .map_err(locked)?;
    Ok((row.get(0), row.get(1)))
}

/// Records what the rows of audit ids `ids` (not refused) spent, in the transaction
/// [`check`] locked, and drops the person's entries too old to count.
pub async fn record(
    tx: &Transaction<'_>,
    context: &RequestContext,
    costs: &[Cost],
    ids: &[i64],
) -> Result<(), ServiceError> {
    let principal = Principal::of(&context.caller);
    for (cost, id) in costs.iter().zip(ids) {
        let Some((kind, units)) = cost else { continue };
        let units = i32::try_from(*units).unwrap_or(i32::MAX);
        tx.execute_typed(
            "INSERT INTO pii_budget.pii_budget_spent (audit_id, kind, person, role, units) VALUES ($1, $2, $3, $4, $5)",
            &[typed(id), typed(&kind.as_str()), typed(&principal.person), typed(&principal.role), typed(&units)],
        )
        .await
        .map_err(locked)?;
    }
    tx.execute_typed(
        "DELETE FROM pii_budget.pii_budget_spent WHERE person = $1 AND at < now() - interval '25 hours'",
        &[typed(&principal.person)],
    )
    .await
    .map_err(locked)?;
    Ok(())
}

/// Gives back what a recorded request spent, once it was refused (refusals spend nothing).
pub async fn refund(tx: &deadpool_postgres::Transaction<'_>, audit_id: i64) -> Result<(), ServiceError> {
    tx.execute_typed("DELETE FROM pii_budget.pii_budget_spent WHERE audit_id = $1", &[typed(&audit_id)])
        .await
        .map_err(locked)?;
    Ok(())
}

/// A budget row held longer than `lock_timeout` is [`ServiceError::BudgetBusy`]; any other
/// failure leaves the request unrecorded.
fn locked(error: tokio_postgres::Error) -> ServiceError {
    if error.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) {
        ServiceError::BudgetBusy(DbError::from(error))
    } else {
        ServiceError::AuditUnavailable(DbError::from(error))
    }
}
