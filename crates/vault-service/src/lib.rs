//! The vault service (`pii-vault-service`): the only place outside the ingest function
//! where index keys and data keys are unwrapped, and the only reader of `pii_vault`.
//! Every operation (find, reveal, forget, audit listing, key administration) first
//! commits its audit row in a transaction of its own ([`audit::record`]); if that fails,
//! nothing is read, computed or answered. Reveals and finds spend a per-caller budget per
//! 24 hours. The caller is the IAM principal the transport proved (SigV4 on the function
//! URL), never a name the caller typed.

pub mod audit;
pub mod http;

use chrono::{DateTime, NaiveDate, Utc};
use deadpool_postgres::Pool;
use tokio::sync::{Mutex, OnceCell};
use zeroize::Zeroizing;

use audit::{Action, AuditId, AuditRow, Entry, Outcome};
use login_etl_core::crypto::{BlindIndex, BlindIndexer, KeyPurpose, PiiField, SealError, SealedValue};
use login_etl_core::error::DbError;
use login_etl_core::event::text::{ReasonError, audit_reason};
use login_etl_core::event::{ClientIp, DeviceId};
use login_etl_core::keys::{self, DataKeyCache, KeyError, Kms};

/// Reveals and finds per caller per 24 hours, unless `REVEAL_BUDGET_PER_DAY` says otherwise.
pub const DEFAULT_REVEAL_BUDGET: u32 = 100;

/// `REVEAL_BUDGET_PER_DAY`, or the default.
pub fn reveal_budget_from_env() -> Result<u32, login_etl_core::config::ConfigError> {
    match std::env::var("REVEAL_BUDGET_PER_DAY") {
        Err(_) => Ok(DEFAULT_REVEAL_BUDGET),
        Ok(text) => text.trim().parse().map_err(|_| login_etl_core::config::ConfigError::Malformed {
            var: "REVEAL_BUDGET_PER_DAY",
            reason: "expected a whole number".into(),
        }),
    }
}

/// Who asks, as the transport proved it, and what the caller may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestContext {
    /// The IAM principal's ARN (or the local stack's configured identity).
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
    #[error("daily budget of {budget} reveals and finds is spent ({used} used in the last 24 hours)")]
    Budget { budget: u32, used: u64 },
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
}

impl ServiceError {
    /// A stable code for the JSON answer.
    pub fn code(&self) -> &'static str {
        match self {
            ServiceError::Reason(_) => "bad_reason",
            ServiceError::BadRequest(_) => "bad_request",
            ServiceError::NoIdentity => "no_identity",
            ServiceError::NotAllowed { .. } => "not_allowed",
            ServiceError::Budget { .. } => "budget_exhausted",
            ServiceError::Unknown(_) => "unknown",
            ServiceError::Erased(_) => "erased",
            ServiceError::AuditUnavailable(_) => "audit_unavailable",
            ServiceError::Keys(_) => "keys",
            ServiceError::Db(_) => "database",
            ServiceError::Seal(_) => "unauthentic",
            ServiceError::RotationRace(_) => "rotation_race",
        }
    }

    /// The `pii-vault` exit code (`pii-vault --help`).
    pub fn exit_code(&self) -> u8 {
        match self {
            ServiceError::Reason(_) | ServiceError::BadRequest(_) => 2,
            ServiceError::Unknown(_) => 3,
            ServiceError::Erased(_) => 4,
            ServiceError::NoIdentity | ServiceError::NotAllowed { .. } => 5,
            ServiceError::Keys(_) => 6,
            ServiceError::Db(_) | ServiceError::AuditUnavailable(_) => 7,
            ServiceError::Budget { .. } => 8,
            ServiceError::Seal(_) | ServiceError::RotationRace(_) => 1,
        }
    }

    /// The HTTP status of the function URL's answer.
    pub fn http_status(&self) -> u16 {
        match self {
            ServiceError::Reason(_) | ServiceError::BadRequest(_) => 400,
            ServiceError::NoIdentity => 401,
            ServiceError::NotAllowed { .. } => 403,
            ServiceError::Unknown(_) => 404,
            ServiceError::RotationRace(_) => 409,
            ServiceError::Erased(_) => 410,
            ServiceError::Budget { .. } => 429,
            ServiceError::Seal(_) => 500,
            ServiceError::Keys(_) => 502,
            ServiceError::Db(_) | ServiceError::AuditUnavailable(_) => 503,
        }
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

impl From<deadpool_postgres::PoolError> for ServiceError {
    fn from(error: deadpool_postgres::PoolError) -> Self {
        ServiceError::Db(DbError::from(error))
    }
}

/// What to reveal.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevealTarget {
    Mask { field: PiiField, mask: String },
    UserId(String),
    MessageId(String),
}

/// PII on its way to or from the service: never printed by `Debug`, wiped on drop.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Plaintext(Zeroizing<String>);

impl Plaintext {
    pub fn new(text: impl Into<String>) -> Plaintext {
        Plaintext(Zeroizing::new(text.into()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Plaintext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Plaintext(<redacted>)")
    }
}

/// One value's answer to a reveal.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Revealed {
    pub field: PiiField,
    pub mask: String,
    pub outcome: Outcome,
    /// The original value, for `revealed` only.
    pub value: Option<Plaintext>,
}

/// A request to the service, as the function URL receives it (JSON).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    Find { field: PiiField, value: Plaintext, reason: Option<String> },
    Reveal { target: RevealTarget, reason: Option<String> },
    Forget { field: PiiField, target: ForgetTarget, reason: Option<String> },
    Audit { since: Option<DateTime<Utc>> },
    InitKeys,
    RotateKey,
    Reencrypt { batch_size: i64 },
}

/// The service's answer to a [`Request`] that succeeded.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Response {
    Find { field: PiiField, mask: String, rows: Vec<LoginMatch> },
    Reveal { values: Vec<Revealed> },
    Forget { field: PiiField, mask: String, outcome: Outcome },
    Audit { entries: Vec<AuditRow> },
    InitKeys { created: Vec<String> },
    RotateKey { version: i32 },
    Reencrypt { reencrypted: u64 },
}

/// A `user_logins` row as `find` shows it (masks only, no PII).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LoginMatch {
    pub sqs_message_id: Option<String>,
    pub user_id: Option<String>,
    pub device_type: Option<String>,
    pub locale: Option<String>,
    pub app_version_raw: Option<String>,
    pub create_date: Option<NaiveDate>,
    pub masked_ip: Option<String>,
    pub masked_device_id: Option<String>,
}

#[derive(Debug)]
pub struct VaultService {
    pool: Pool,
    kms: Kms,
    budget: u32,
    indexer: OnceCell<BlindIndexer>,
    data_keys: Mutex<DataKeyCache>,
}

impl VaultService {
    /// `pool` connects as a login in `login_etl_vault_service`.
    pub fn new(pool: Pool, kms: Kms, reveal_budget_per_day: u32) -> VaultService {
        VaultService {
            pool,
            kms,
            budget: reveal_budget_per_day,
            indexer: OnceCell::new(),
            data_keys: Mutex::new(DataKeyCache::new()),
        }
    }

    /// Runs one request for the caller `context` names.
    pub async fn handle(&self, context: &RequestContext, request: Request) -> Result<Response, ServiceError> {
        Ok(match request {
            Request::Find { field, value, reason } => {
                let (mask, rows) = self.find(context, field, value.expose(), reason.as_deref()).await?;
                Response::Find { field, mask: mask.as_str().to_owned(), rows }
            }
            Request::Reveal { target, reason } => {
                Response::Reveal { values: self.reveal(context, &target, reason.as_deref()).await? }
            }
            Request::Forget { field, target, reason } => {
                let (mask, outcome) = self.forget(context, field, &target, reason.as_deref()).await?;
                Response::Forget { field, mask: mask.as_str().to_owned(), outcome }
            }
            Request::Audit { since } => Response::Audit { entries: self.audit(context, since).await? },
            Request::InitKeys => Response::InitKeys {
                created: self.init_keys(context).await?.iter().map(|p| p.as_str().to_owned()).collect(),
            },
            Request::RotateKey => Response::RotateKey { version: self.rotate_key(context).await? },
            Request::Reencrypt { batch_size } => {
                Response::Reencrypt { reencrypted: self.reencrypt(context, batch_size).await? }
            }
        })
    }

    /// The service's database pool (its login is in `login_etl_vault_service`).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    async fn indexer(&self) -> Result<&BlindIndexer, ServiceError> {
        self.indexer
            .get_or_try_init(|| async {
                let client = self.pool.get().await?;
                Ok::<_, ServiceError>(keys::load_indexer(&**client, &self.kms).await?)
            })
            .await
    }

    /// Refuses (and records the refusal of) an action the caller may not take.
    async fn authorize(&self, context: &RequestContext, action: Action) -> Result<(), ServiceError> {
        if if action.is_admin() { context.key_admin } else { context.staff } {
            return Ok(());
        }
        let error = ServiceError::NotAllowed { caller: context.caller.clone(), action: action.as_str() };
        let entry =
            Entry { outcome: Some(Outcome::Refused), detail: Some(error.to_string()), ..Entry::new(action) };
        audit::record(&self.pool, context, &[entry], None).await?;
        Err(error)
    }

    /// A reason that passes the rules, or the refusal recorded.
    async fn reason(
        &self,
        context: &RequestContext,
        action: Action,
        reason: Option<&str>,
    ) -> Result<String, ServiceError> {
        match audit_reason(reason) {
            Ok(reason) => Ok(reason.to_owned()),
            Err(error) => {
                let entry = Entry {
                    outcome: Some(Outcome::Refused),
                    detail: Some(error.to_string()),
                    ..Entry::new(action)
                };
                audit::record(&self.pool, context, &[entry], None).await?;
                Err(error.into())
            }
        }
    }

    /// `user_logins` rows whose mask of `field` is that of `plaintext` (normalized as the
    /// function does). Audited, and spends the budget: a find tests a guess.
    pub async fn find(
        &self,
        context: &RequestContext,
        field: PiiField,
        plaintext: &str,
        reason: Option<&str>,
    ) -> Result<(BlindIndex, Vec<LoginMatch>), ServiceError> {
        self.authorize(context, Action::Find).await?;
        let reason = match reason {
            Some(text) => Some(self.reason(context, Action::Find, Some(text)).await?),
            None => None,
        };
        let entry = Entry { field: Some(field), reason, ..Entry::new(Action::Find) };
        let [id] = one(audit::record(&self.pool, context, &[entry], Some(self.budget)).await?);
        let result = async {
            let normalized = normalize(field, plaintext)?;
            let index = self.indexer().await?.index(field, &normalized);
            let rows = self.logins_where(field.mask_column(), index.as_str()).await?;
            Ok::<_, ServiceError>((index, rows))
        }
        .await;
        match &result {
            Ok((index, rows)) => {
                let detail = format!("{} row(s)", rows.len());
                audit::close(&self.pool, id, Outcome::Found, Some(index), Some(&detail)).await?;
            }
            Err(error) => self.close_failed(id, error).await?,
        }
        result
    }

    /// Reveals the values behind masks. Each value is an audit row of its own, committed
    /// (and counted against the budget) before anything is decrypted.
    pub async fn reveal(
        &self,
        context: &RequestContext,
        target: &RevealTarget,
        reason: Option<&str>,
    ) -> Result<Vec<Revealed>, ServiceError> {
        self.authorize(context, Action::Reveal).await?;
        let reason = self.reason(context, Action::Reveal, reason).await?;
        let values = match target {
            RevealTarget::Mask { field, mask } => {
                let index = BlindIndex::parse(mask).ok_or_else(|| {
                    ServiceError::BadRequest("a mask is 64 hex characters, as in user_logins".into())
                })?;
                vec![(*field, index)]
            }
            RevealTarget::UserId(user_id) => {
                self.masks_of(context, &reason, "user_id", user_id, format!("user_id:{user_id}")).await?
            }
            RevealTarget::MessageId(id) => {
                self.masks_of(context, &reason, "sqs_message_id", id, format!("message_id:{id}")).await?
            }
        };
        let entries: Vec<Entry> = values
            .iter()
            .map(|(field, index)| Entry {
                field: Some(*field),
                blind_index: Some(index.clone()),
                reason: Some(reason.clone()),
                ..Entry::new(Action::Reveal)
            })
            .collect();
        let ids = audit::record(&self.pool, context, &entries, Some(self.budget)).await?;

        let mut answers = Vec::with_capacity(values.len());
        for ((field, index), id) in values.into_iter().zip(ids) {
            match self.open(field, &index).await {
                Ok((outcome, value)) => {
                    audit::close(&self.pool, id, outcome, None, None).await?;
                    answers.push(Revealed {
                        field,
                        mask: index.as_str().to_owned(),
                        outcome,
                        value: value.map(|v| Plaintext::new(v.as_str())),
                    });
                }
                Err(error) => {
                    self.close_failed(id, &error).await?;
                    return Err(error);
                }
            }
        }
        Ok(answers)
    }

    /// The (field, mask) pairs of the rows with `column = value`, the lookup itself audited.
    async fn masks_of(
        &self,
        context: &RequestContext,
        reason: &str,
        column: &str,
        value: &str,
        target: String,
    ) -> Result<Vec<(PiiField, BlindIndex)>, ServiceError> {
        let entry =
            Entry { target: Some(target), reason: Some(reason.to_owned()), ..Entry::new(Action::Reveal) };
        let [id] = one(audit::record(&self.pool, context, &[entry], None).await?);
        let [ip_column, device_id_column] = PiiField::ALL.map(PiiField::mask_column);
        let client = self.pool.get().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT DISTINCT {ip_column}, {device_id_column} FROM user_logins WHERE {column} = $1"
                ),
                &[&value],
            )
            .await?;
        let mut targets = std::collections::BTreeSet::new();
        for row in rows {
            for (position, field) in PiiField::ALL.into_iter().enumerate() {
                let mask: Option<String> = row.get(position);
                if let Some(index) = mask.as_deref().and_then(BlindIndex::parse) {
                    targets.insert((field, index));
                }
            }
        }
        let outcome = if targets.is_empty() { Outcome::Unknown } else { Outcome::Done };
        let detail = format!("{} value(s)", targets.len());
        audit::close(&self.pool, id, outcome, None, Some(&detail)).await?;
        if targets.is_empty() {
            return Err(ServiceError::Unknown(column.trim_start_matches("sqs_").replace('_', " ")));
        }
        Ok(targets.into_iter().collect())
    }

    /// Decrypts one vault row: erasure is checked first.
    async fn open(
        &self,
        field: PiiField,
        index: &BlindIndex,
    ) -> Result<(Outcome, Option<Zeroizing<String>>), ServiceError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                "SELECT erased_at IS NOT NULL, key_version, nonce, ciphertext FROM pii_vault
                  WHERE field = $1 AND blind_index = $2",
                &[&field.as_str(), &index.as_str()],
            )
            .await?;
        let Some(row) = row else { return Ok((Outcome::Unknown, None)) };
        if row.get::<_, bool>(0) {
            return Ok((Outcome::Erased, None));
        }
        let sealed = SealedValue::from_stored(row.get(1), row.get::<_, &[u8]>(2), row.get(3))?;
        let mut keys = self.data_keys.lock().await;
        let key = keys.get(&**client, &self.kms, sealed.key_version).await?;
        Ok((Outcome::Revealed, Some(key.open(field, index, &sealed)?)))
    }

    /// Crypto-shreds one value in place: the row stays, without ciphertext, so the value
    /// can never be vaulted again. A value never seen gets such a row too (outcome
    /// `unknown`), so it is refused should it arrive later.
    pub async fn forget(
        &self,
        context: &RequestContext,
        field: PiiField,
        target: &ForgetTarget,
        reason: Option<&str>,
    ) -> Result<(BlindIndex, Outcome), ServiceError> {
        self.authorize(context, Action::Forget).await?;
        let reason = self.reason(context, Action::Forget, reason).await?;
        let known_mask = match target {
            ForgetTarget::Mask(mask) => Some(BlindIndex::parse(mask).ok_or_else(|| {
                ServiceError::BadRequest("a mask is 64 hex characters, as in user_logins".into())
            })?),
            ForgetTarget::Plaintext(_) => None,
        };
        let entry = Entry {
            field: Some(field),
            blind_index: known_mask.clone(),
            reason: Some(reason),
            ..Entry::new(Action::Forget)
        };
        let [id] = one(audit::record(&self.pool, context, &[entry], None).await?);
        let result = async {
            let index = match (known_mask, target) {
                (Some(index), _) => index,
                (None, ForgetTarget::Plaintext(text)) => {
                    self.indexer().await?.index(field, &normalize(field, text.expose())?)
                }
                (None, ForgetTarget::Mask(_)) => unreachable!("a mask target was parsed above"),
            };
            let client = self.pool.get().await?;
            let row = client
                .query_one(
                    // The upsert sees the newest committed row (it waits for a batch that
                    // holds the key), so it tells what it found: nothing (inserted), a sealed
                    // value (erased now), or an erased one (its erasure time kept).
                    "WITH now AS (SELECT clock_timestamp() AS t)
                     INSERT INTO pii_vault (field, blind_index, erased_at) VALUES ($1, $2, (SELECT t FROM now))
                     ON CONFLICT (field, blind_index) DO UPDATE
                         SET key_version = NULL, nonce = NULL, ciphertext = NULL,
                             erased_at = coalesce(pii_vault.erased_at, EXCLUDED.erased_at)
                     RETURNING xmax = 0, erased_at = (SELECT t FROM now)",
                    &[&field.as_str(), &index.as_str()],
                )
                .await?;
            let outcome = match (row.get::<_, bool>(0), row.get::<_, bool>(1)) {
                (true, _) => Outcome::Unknown,
                (false, true) => Outcome::Forgotten,
                (false, false) => Outcome::Erased,
            };
            Ok::<_, ServiceError>((index, outcome))
        }
        .await;
        match &result {
            Ok((index, outcome)) => audit::close(&self.pool, id, *outcome, Some(index), None).await?,
            Err(error) => self.close_failed(id, error).await?,
        }
        result
    }

    /// The audit, listed (itself audited).
    pub async fn audit(
        &self,
        context: &RequestContext,
        since: Option<DateTime<Utc>>,
    ) -> Result<Vec<AuditRow>, ServiceError> {
        self.authorize(context, Action::Audit).await?;
        let [id] = one(audit::record(&self.pool, context, &[Entry::new(Action::Audit)], None).await?);
        let rows = audit::list(&self.pool, since).await?;
        audit::close(&self.pool, id, Outcome::Listed, None, Some(&format!("{} row(s)", rows.len()))).await?;
        Ok(rows)
    }

    /// Creates the keys that do not exist yet (idempotent). Admin only.
    pub async fn init_keys(&self, context: &RequestContext) -> Result<Vec<KeyPurpose>, ServiceError> {
        self.admin(context, Action::InitKeys, |client| async move {
            let created = keys::create_missing_keys(&**client, &self.kms).await?;
            let names: Vec<&str> = created.iter().map(|p| p.as_str()).collect();
            let detail = if names.is_empty() { "all keys existed".to_owned() } else { names.join(", ") };
            Ok((created, detail))
        })
        .await
    }

    /// A new data-key version; function instances seal with it from their next cold start.
    pub async fn rotate_key(&self, context: &RequestContext) -> Result<i32, ServiceError> {
        self.admin(context, Action::RotateKey, |client| async move {
            let version = keys::rotate_data_key(&**client, &self.kms).await?;
            let newest = keys::newest_data_key_version(&**client).await?.unwrap_or_default();
            let version = version.ok_or(ServiceError::RotationRace(newest))?;
            Ok((version, format!("data key version {version}")))
        })
        .await
    }

    /// Re-encrypts every vault row of an older data-key version under the newest, in
    /// batches of `batch_size` rows, each its own transaction (`FOR UPDATE SKIP LOCKED`):
    /// resumable, and safe beside the function. Masks are untouched. Admin only.
    pub async fn reencrypt(&self, context: &RequestContext, batch_size: i64) -> Result<u64, ServiceError> {
        if !(1..=10_000).contains(&batch_size) {
            return Err(ServiceError::BadRequest("batch size must be 1 to 10000".into()));
        }
        self.admin(context, Action::Reencrypt, |mut client| async move {
            let newest =
                keys::newest_data_key_version(&**client).await?.ok_or(KeyError::NotInitialized("data"))?;
            let mut done = 0u64;
            loop {
                let tx = client.transaction().await?;
                let rows = tx
                    .query(
                        "SELECT field, blind_index, key_version, nonce, ciphertext FROM pii_vault
                          WHERE key_version < $1 ORDER BY field, blind_index LIMIT $2 FOR UPDATE SKIP LOCKED",
                        &[&newest, &batch_size],
                    )
                    .await?;
                if rows.is_empty() {
                    break;
                }
                let (mut fields, mut indexes, mut nonces, mut ciphertexts) = (vec![], vec![], vec![], vec![]);
                let mut keys = self.data_keys.lock().await;
                for row in &rows {
                    let field = PiiField::from_db(row.get(0)).ok_or(SealError::Unauthentic)?;
                    let index = BlindIndex::parse(row.get(1)).ok_or(SealError::Unauthentic)?;
                    let sealed = SealedValue::from_stored(row.get(2), row.get::<_, &[u8]>(3), row.get(4))?;
                    let value =
                        keys.get(&*tx, &self.kms, sealed.key_version).await?.open(field, &index, &sealed)?;
                    let resealed = keys.get(&*tx, &self.kms, newest).await?.seal(field, &index, &value)?;
                    fields.push(field.as_str());
                    indexes.push(index.as_str().to_owned());
                    nonces.push(resealed.nonce.to_vec());
                    ciphertexts.push(resealed.ciphertext);
                }
                drop(keys);
                tx.execute(
                    "UPDATE pii_vault v SET key_version = $1, nonce = n.nonce, ciphertext = n.ciphertext
                       FROM UNNEST($2::text[], $3::text[], $4::bytea[], $5::bytea[])
                            AS n(field, blind_index, nonce, ciphertext)
                      WHERE (v.field, v.blind_index) = (n.field, n.blind_index)",
                    &[&newest, &fields, &indexes, &nonces, &ciphertexts],
                )
                .await?;
                tx.commit().await?;
                done += rows.len() as u64;
            }
            Ok((done, format!("{done} row(s) under data key version {newest}")))
        })
        .await
    }

    /// An admin operation: authorized, audited first, its outcome recorded.
    async fn admin<T, F, Fut>(
        &self,
        context: &RequestContext,
        action: Action,
        operation: F,
    ) -> Result<T, ServiceError>
    where
        F: FnOnce(deadpool_postgres::Object) -> Fut,
        Fut: std::future::Future<Output = Result<(T, String), ServiceError>>,
    {
        self.authorize(context, action).await?;
        let [id] = one(audit::record(&self.pool, context, &[Entry::new(action)], None).await?);
        let result = async { operation(self.pool.get().await?).await }.await;
        match result {
            Ok((value, detail)) => {
                audit::close(&self.pool, id, Outcome::Done, None, Some(&detail)).await?;
                Ok(value)
            }
            Err(error) => {
                self.close_failed(id, &error).await?;
                Err(error)
            }
        }
    }

    async fn close_failed(&self, id: AuditId, error: &ServiceError) -> Result<(), ServiceError> {
        let outcome = match error {
            ServiceError::Unknown(_) => Outcome::Unknown,
            _ => Outcome::Failed,
        };
        audit::close(&self.pool, id, outcome, None, Some(error.code())).await
    }

    async fn logins_where(&self, column: &str, value: &str) -> Result<Vec<LoginMatch>, ServiceError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT sqs_message_id, user_id, device_type, locale, app_version_raw, create_date,
                            masked_ip, masked_device_id
                       FROM user_logins WHERE {column} = $1 ORDER BY sent_at, sqs_message_id"
                ),
                &[&value],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| LoginMatch {
                sqs_message_id: r.get(0),
                user_id: r.get(1),
                device_type: r.get(2),
                locale: r.get(3),
                app_version_raw: r.get(4),
                create_date: r.get(5),
                masked_ip: r.get(6),
                masked_device_id: r.get(7),
            })
            .collect())
    }
}

/// What to erase: a mask from `user_logins`, or a plaintext value.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ForgetTarget {
    Mask(String),
    Plaintext(Plaintext),
}

/// Normalizes a plaintext as the function does, so any spelling finds the same mask.
fn normalize(field: PiiField, plaintext: &str) -> Result<String, ServiceError> {
    match field {
        PiiField::Ip => ClientIp::parse(plaintext)
            .map(|ip| ip.canonical())
            .map_err(|_| ServiceError::BadRequest("not an IPv4 or IPv6 address".into())),
        PiiField::DeviceId => DeviceId::parse(plaintext)
            .map(|id| id.canonical().to_owned())
            .map_err(|_| ServiceError::BadRequest("empty or invalid device id".into())),
    }
}

fn one(ids: Vec<AuditId>) -> [AuditId; 1] {
    match ids.as_slice() {
        [id] => [*id],
        _ => unreachable!("one entry recorded, one id returned"),
    }
}
