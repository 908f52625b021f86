//! The vault service (`pii-vault-service`): the only place outside the ingest function
//! where index keys and data keys are unwrapped, and the only reader of `pii_vault`.
//!
//! - [`audit`]: the journal (a request recorded and committed, then its outcome);
//! - `operation`: the one path every operation takes: record the request, authorize,
//!   validate, work, record the outcome;
//! - `cmd`: one file per operation (its checks, its SQL, its answer);
//! - [`http`]: the function URL front;
//! - [`function`]: the Lambda function's life (init, then one request per invocation);
//! - [`queues`]: the replay queue and the dead-letter queue (the quarantine's operations);
//! - [`expiry`]: vault values unseen for `VAULT_RETENTION_DAYS` (`expire`), and the
//!   scheduled `vault-expiry` binary's run (`src/bin/vault-expiry.rs`);
//! - here: the service's resources, the caller's context, and each error's code and HTTP
//!   status.
//!
//! Finds, reveals, forgets and shows spend a budget per person and per role per 24 hours,
//! erasures of a user a quota of their own ([`budget`]). The caller is the IAM principal
//! the transport proved (SigV4 on the function URL), never a name the caller typed. The wire types are `pii-vault-protocol`'s.

pub mod audit;
pub mod budget;
mod cmd;
pub mod expiry;
pub mod function;
pub mod http;
mod operation;
mod principal;
pub mod queues;

use deadpool_postgres::Pool;
use tokio::sync::{Mutex, OnceCell};

use budget::Limits;
pub use cmd::{Found, Imported, Link, Purged, QuarantineFilter, Reencrypted, Shown, UserErased};
use login_etl_core::crypto::{BlindIndexer, ErasureKey, KeyPurpose, PiiField, SealError};
use login_etl_core::error::DbError;
use login_etl_core::event::text::ReasonError;
use login_etl_core::keys::{self, DataKeyCache, KeyError, Kms};
use pii_vault_protocol::{ErrorCode, Request, Response};
use queues::{QueueError, Queues};

/// What the quarantine's operations need besides the database and KMS.
#[derive(Debug, Clone)]
pub struct QuarantineSettings {
    pub queues: Queues,
    /// `QUARANTINE_RETENTION_DAYS`: `quarantine purge` erases bodies older than this.
    pub retention_days: u32,
}

impl Default for QuarantineSettings {
    fn default() -> Self {
        QuarantineSettings {
            queues: Queues::default(),
            retention_days: login_etl_core::store::quarantine::DEFAULT_RETENTION_DAYS,
        }
    }
}

impl QuarantineSettings {
    /// `REPLAY_QUEUE_URL`, `DEAD_LETTER_QUEUE_URL` (each optional) and
    /// `QUARANTINE_RETENTION_DAYS` (default 14).
    pub fn from_env(
        sdk: &aws_config::SdkConfig,
    ) -> Result<QuarantineSettings, login_etl_core::config::ConfigError> {
        let retention = std::env::var("QUARANTINE_RETENTION_DAYS").ok();
        Ok(QuarantineSettings {
            queues: Queues::from_env(sdk),
            retention_days: login_etl_core::store::quarantine::retention_days(retention.as_deref())?,
        })
    }
}

/// Who asks, as the transport proved it, and what the caller may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestContext {
    /// The IAM principal's ARN.
    pub caller: String,
    /// The Lambda request id, recorded with each audit row.
    pub request_id: String,
    /// Whether the caller may find, reveal, forget and list the audit.
    pub staff: bool,
    /// Whether the caller may create, rotate and re-encrypt keys.
    pub key_admin: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Reason(#[from] ReasonError),
    #[error("{0}")]
    BadRequest(String),
    #[error("the request carries no IAM identity")]
    NoIdentity,
    #[error("{caller} may not {action}")]
    NotAllowed { caller: String, action: &'static str },
    #[error(
        "daily budget of {budget} units (a reveal, find or forget 1, a quarantine show 2) is spent ({used} used in the last 24 hours)"
    )]
    Budget { budget: u32, used: u64 },
    #[error(
        "the staff role's daily budget of {budget} units, shared by all its sessions, is spent ({used} used in the last 24 hours)"
    )]
    RoleBudget { budget: u32, used: u64 },
    #[error("daily erasure quota of {quota} users is spent ({used} erased in the last 24 hours)")]
    ErasureQuota { quota: u32, used: u64 },
    #[error("another request held your budget longer than the lock timeout; nothing was done, try again")]
    BudgetBusy(#[source] DbError),
    #[error("no vault entry and no row for that {0}")]
    Unknown(String),
    #[error("the {0} value was erased (crypto-shredded); it cannot be revealed")]
    Erased(PiiField),
    #[error("the audit could not be recorded, so nothing was done")]
    AuditUnavailable(#[source] DbError),
    #[error("keys")]
    Keys(#[source] KeyError),
    #[error("database")]
    Db(#[source] DbError),
    #[error("vault row")]
    Seal(#[from] SealError),
    #[error("rotation raced with another rotation to version {0}; run it again")]
    RotationRace(i32),
    #[error("queue")]
    Queue(#[from] QueueError),
}

impl ServiceError {
    /// The stable code the answer carries (the CLI's exit code derives from it).
    pub fn code(&self) -> ErrorCode {
        match self {
            ServiceError::Reason(_) => ErrorCode::BadReason,
            ServiceError::BadRequest(_) => ErrorCode::BadRequest,
            ServiceError::NoIdentity => ErrorCode::NoIdentity,
            ServiceError::NotAllowed { .. } => ErrorCode::NotAllowed,
            ServiceError::Budget { .. }
            | ServiceError::RoleBudget { .. }
            | ServiceError::ErasureQuota { .. } => ErrorCode::BudgetExhausted,
            ServiceError::BudgetBusy(_) => ErrorCode::Database,
            ServiceError::Unknown(_) => ErrorCode::Unknown,
            ServiceError::Erased(_) => ErrorCode::Erased,
            ServiceError::AuditUnavailable(_) => ErrorCode::AuditUnavailable,
            ServiceError::Keys(_) => ErrorCode::Keys,
            ServiceError::Db(_) => ErrorCode::Database,
            ServiceError::Seal(_) => ErrorCode::Unauthentic,
            ServiceError::RotationRace(_) => ErrorCode::RotationRace,
            ServiceError::Queue(QueueError::NotConfigured(_)) => ErrorCode::NotConfigured,
            ServiceError::Queue(QueueError::Sqs { .. }) => ErrorCode::Queue,
        }
    }

    /// The HTTP status of the function URL's answer.
    pub fn http_status(&self) -> u16 {
        match self.code() {
            ErrorCode::BadReason | ErrorCode::BadRequest => 400,
            ErrorCode::NoIdentity => 401,
            ErrorCode::NotAllowed => 403,
            ErrorCode::Unknown => 404,
            ErrorCode::RotationRace => 409,
            ErrorCode::Erased => 410,
            ErrorCode::BudgetExhausted => 429,
            ErrorCode::Unauthentic | ErrorCode::Other => 500,
            ErrorCode::Keys | ErrorCode::Queue => 502,
            ErrorCode::NotConfigured => 501,
            ErrorCode::Database | ErrorCode::AuditUnavailable => 503,
        }
    }

    /// A refusal of the request (as opposed to a failure while doing it).
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            ServiceError::Reason(_)
                | ServiceError::BadRequest(_)
                | ServiceError::NoIdentity
                | ServiceError::NotAllowed { .. }
                | ServiceError::Budget { .. }
                | ServiceError::RoleBudget { .. }
                | ServiceError::ErasureQuota { .. }
        )
    }
}

impl From<KeyError> for ServiceError {
    fn from(error: KeyError) -> Self {
        match error {
            KeyError::Db(db) => ServiceError::Db(db),
            other => ServiceError::Keys(other),
        }
    }
}

impl From<tokio_postgres::Error> for ServiceError {
    fn from(error: tokio_postgres::Error) -> Self {
        ServiceError::Db(DbError::from(error))
    }
}

impl From<login_etl_core::store::StoreError> for ServiceError {
    fn from(error: login_etl_core::store::StoreError) -> Self {
        match error {
            login_etl_core::store::StoreError::Db(db) => ServiceError::Db(db),
            other => ServiceError::Db(DbError::other(login_etl_core::error::report(&other))),
        }
    }
}

impl From<deadpool_postgres::PoolError> for ServiceError {
    fn from(error: deadpool_postgres::PoolError) -> Self {
        ServiceError::Db(DbError::from(error))
    }
}

#[derive(Debug)]
pub struct VaultService {
    pool: Pool,
    kms: Kms,
    limits: Limits,
    indexer: OnceCell<BlindIndexer>,
    erasure_key: OnceCell<ErasureKey>,
    data_keys: Mutex<DataKeyCache>,
    audit_key: audit::AuditKeyCell,
    quarantine: QuarantineSettings,
    /// `VAULT_RETENTION_DAYS`, for `expire`.
    vault_retention: expiry::Retention,
}

impl VaultService {
    /// `pool` connects as a login in `login_etl_vault_service`; the other limits are
    /// their defaults ([`VaultService::with_limits`]).
    pub fn new(pool: Pool, kms: Kms, reveal_budget_per_day: u32) -> VaultService {
        VaultService {
            pool,
            kms,
            limits: Limits::per_person(reveal_budget_per_day),
            indexer: OnceCell::new(),
            erasure_key: OnceCell::new(),
            data_keys: Mutex::new(DataKeyCache::new()),
            audit_key: audit::AuditKeyCell::default(),
            quarantine: QuarantineSettings::default(),
            vault_retention: expiry::Retention::FOREVER,
        }
    }

    /// The scheduled expiry's service (`vault-expiry`): `pool` connects as a login in
    /// `login_etl_vault_expiry`; it records under the audit key and never creates one.
    pub fn for_schedule(pool: Pool, kms: Kms, vault_retention: expiry::Retention) -> VaultService {
        VaultService {
            audit_key: audit::AuditKeyCell::load_only(),
            ..VaultService::new(pool, kms, 1).with_vault_retention(vault_retention)
        }
    }

    /// `VAULT_RETENTION_DAYS` (without: forever).
    pub fn with_vault_retention(self, vault_retention: expiry::Retention) -> VaultService {
        VaultService { vault_retention, ..self }
    }

    /// The queues and retention the quarantine's operations use (without: replay and
    /// import-dlq are refused `not_configured`, purge keeps 14 days).
    pub fn with_quarantine(self, quarantine: QuarantineSettings) -> VaultService {
        VaultService { quarantine, ..self }
    }

    /// The daily budgets and the erasure quota.
    pub fn with_limits(self, limits: Limits) -> VaultService {
        VaultService { limits, ..self }
    }

    /// Runs one request for the caller `context` names.
    pub async fn handle(&self, context: &RequestContext, request: Request) -> Result<Response, ServiceError> {
        Ok(match request {
            Request::Find { field, value, reason } => {
                let found = self.find_rows(context, field, value.expose(), reason.as_deref()).await?;
                Response::Find {
                    field,
                    mask: found.mask.as_str().to_owned(),
                    rows: found.rows,
                    total: found.total,
                }
            }
            Request::Reveal { target, reason } => {
                Response::Reveal { values: self.reveal(context, &target, reason.as_deref()).await? }
            }
            Request::Forget { field, target, reason } => Response::Forget {
                field,
                outcome: self.forget(context, field, &target, reason.as_deref()).await?,
            },
            Request::ForgetUser { user_id, reason } => {
                let done = self.forget_user(context, &user_id, reason.as_deref()).await?;
                Response::ForgetUser { user_id, erased: done.erased, shared: done.shared }
            }
            Request::Audit { since, after, limit } => {
                let (entries, next) = self.audit(context, since, after, limit).await?;
                Response::Audit { entries, next }
            }
            Request::AuditVerify { after, head } => {
                Response::AuditVerify(self.audit_verify(context, after, head).await?)
            }
            Request::InitKeys => Response::InitKeys {
                created: self.init_keys(context).await?.iter().map(|p| p.as_str().to_owned()).collect(),
            },
            Request::RotateKey => Response::RotateKey { version: self.rotate_key(context).await? },
            Request::Reencrypt { batch_size } => {
                let done = self.reencrypt(context, batch_size).await?;
                Response::Reencrypt { reencrypted: done.vault, quarantine_reencrypted: done.quarantine }
            }
            Request::Expire { batch_size } => {
                let batch = self.expire(context, batch_size).await?;
                Response::Expire {
                    expired: batch.expired,
                    scanned: batch.scanned,
                    done: batch.done,
                    retention_days: self.vault_retention.as_days(),
                }
            }
            Request::QuarantineList { since, reason_code, after, limit } => {
                let filter = QuarantineFilter { since, reason_code, after, limit };
                let (rows, next) = self.quarantine_list(context, &filter).await?;
                Response::QuarantineList { rows, next }
            }
            Request::QuarantineShow { message_id, attempt, reason } => {
                let shown = self.quarantine_show(context, &message_id, attempt, reason.as_deref()).await?;
                Response::QuarantineShow {
                    message_id: shown.message_id,
                    attempt: shown.attempt,
                    outcome: shown.outcome,
                    body: shown.body.map(|body| pii_vault_protocol::Plaintext::new(body.as_str())),
                }
            }
            Request::QuarantineReplay { selection, reason } => {
                let (rows, next) = self.quarantine_replay(context, &selection, reason.as_deref()).await?;
                Response::QuarantineReplay { rows, next }
            }
            Request::QuarantineImportDlq { max } => {
                let done = self.quarantine_import_dlq(context, max).await?;
                Response::QuarantineImportDlq {
                    imported: done.imported,
                    already_quarantined: done.already_quarantined,
                    left_on_queue: done.left_on_queue,
                    more: done.more,
                }
            }
            Request::QuarantinePurge => {
                let done = self.quarantine_purge(context).await?;
                Response::QuarantinePurge {
                    purged: done.purged,
                    retention_days: done.retention_days,
                    more: done.more,
                }
            }
        })
    }

    /// The erasure key (the markers of erased values), unwrapped once per process.
    pub(crate) async fn erasure_key(&self) -> Result<&ErasureKey, ServiceError> {
        self.erasure_key
            .get_or_try_init(|| async {
                // Once per process, in one bounded transaction (the KMS call in it too).
                let mut client = self.pool.get().await?;
                let tx = login_etl_core::store::begin(&mut client).await?;
                let key = keys::load_key(&*tx, &self.kms, KeyPurpose::Erasure).await?;
                tx.commit().await?;
                Ok::<_, ServiceError>(ErasureKey::new(&key))
            })
            .await
    }

    /// The digest of request bodies under the audit key, unwrapped once per process.
    /// The audit key (the journal's), for digests of what the audit must not keep.
    pub(crate) async fn audit_key(&self) -> Result<&login_etl_core::crypto::AuditKey, ServiceError> {
        self.audit_key.get(&self.pool, &self.kms).await
    }

    /// The service's database pool (its login is in `login_etl_vault_service`).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }
}
