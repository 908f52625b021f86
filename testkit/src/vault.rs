//! The keys, a cold start of the function, the vault service in process, and its callers.

use aws_lambda_events::lambda_function_urls::LambdaFunctionUrlRequest;
use login_etl::{App, Function, handler};
use login_etl_core::config::outage::OutagePolicy;
use login_etl_core::crypto::BlindIndex;
use login_etl_core::keys::Kms;
use login_etl_core::store;
use pii_vault_service::http::Access;
use pii_vault_service::{QuarantineSettings, RequestContext, VaultService};

use crate::{TestDb, TestQueues, load_event, unique_suffix};

/// What `pii-vault admin init-keys` does: the keys, created once (idempotent).
pub async fn init_keys(db: &TestDb, kms: &Kms) {
    login_etl_core::keys::create_missing_keys(&db.connect().await, kms).await.expect("init keys");
}

/// A cold start against this database and key (the keys created first if missing).
pub async fn cold_start(db: &TestDb, kms: &Kms) -> App {
    init_keys(db, kms).await;
    App::init(&db.app_config(), kms).await.expect("init")
}

/// The function as Lambda runs it: configuration only, resources on its first batch, the
/// failure path hiding batches on their queue as `outage` says. The keys are created first.
pub async fn function(
    db: &TestDb,
    kms: &Kms,
    database: tokio_postgres::Config,
    outage: OutagePolicy,
) -> Function {
    init_keys(db, kms).await;
    let mut config = db.app_config();
    config.database = database.into();
    config.outage = outage;
    Function::new(
        config,
        kms.clone(),
        aws_sdk_sqs::Client::new(&crate::sdk_config(&crate::aws_endpoint()).await),
    )
}

/// The vault service, connected as a login in `login_etl_vault_service`.
pub async fn vault_service(db: &TestDb, kms: &Kms, reveal_budget_per_day: u32) -> VaultService {
    vault_service_on(db.login_in("login_etl_vault_service").await, 4, kms, reveal_budget_per_day)
}

/// The vault service on its deployed pool of `pool_size` connections to `database` (a
/// login in `login_etl_vault_service`, directly or through a pooler).
pub fn vault_service_on(
    database: tokio_postgres::Config,
    pool_size: usize,
    kms: &Kms,
    reveal_budget_per_day: u32,
) -> VaultService {
    let pool = store::stateless_pool(database.into(), pool_size).expect("pool");
    VaultService::new(pool, kms.clone(), reveal_budget_per_day)
}

/// The vault service with the queues' replay queue and dead-letter queue, and the default
/// retention (14 days).
pub async fn quarantine_service(
    db: &TestDb,
    kms: &Kms,
    reveal_budget_per_day: u32,
    queues: &TestQueues,
) -> VaultService {
    vault_service(db, kms, reveal_budget_per_day).await.with_quarantine(QuarantineSettings {
        queues: queues.for_vault_service(),
        ..QuarantineSettings::default()
    })
}

/// The function as Lambda runs it, as a login in the writer role, honouring replays from
/// `replay_queue_arn` (what `REPLAY_QUEUE_ARN` configures). The keys are created first.
pub async fn replaying_function(db: &TestDb, kms: &Kms, replay_queue_arn: &str) -> Function {
    init_keys(db, kms).await;
    let mut config = db.app_config();
    config.database = db.login_in("login_etl_writer").await.into();
    config.replay_queue_arn = Some(replay_queue_arn.to_owned());
    Function::new(
        config,
        kms.clone(),
        aws_sdk_sqs::Client::new(&crate::sdk_config(&crate::aws_endpoint()).await),
    )
}

/// A reason the vault service accepts.
pub const REASON: &str = "ticket SEC-4711";

/// The function after its cold start as a login in the writer role (the keys created first).
pub async fn writer_app(db: &TestDb, kms: &Kms) -> App {
    init_keys(db, kms).await;
    let mut config = db.app_config();
    config.database = db.login_in("login_etl_writer").await.into();
    App::init(&config, kms).await.expect("the writer loads the keys")
}

/// The function, running as a login in the writer role, loads the exercise's queue.
pub async fn loaded_by_writer(db: &TestDb, kms: &Kms) -> App {
    let app = writer_app(db, kms).await;
    let (response, stats) =
        handler::handle_with_stats(&app, load_event("events/login-queue-100.json")).await.expect("batch");
    assert!(response.batch_item_failures.is_empty());
    assert_eq!((stats.written, stats.quarantined), (99, 1), "the malformed message is quarantined");
    app
}

/// A staff member's request, as SigV4 on the function URL proves it.
pub fn staff(name: &str) -> RequestContext {
    RequestContext {
        caller: format!("arn:aws:sts::123456789012:assumed-role/pii-vault-staff/{name}"),
        request_id: format!("req-{}", unique_suffix()),
        staff: true,
        key_admin: false,
    }
}

/// The key administrator's request.
pub fn key_admin() -> RequestContext {
    RequestContext {
        caller: "arn:aws:sts::123456789012:assumed-role/pii-vault-key-admin/admin".into(),
        request_id: format!("req-{}", unique_suffix()),
        staff: false,
        key_admin: true,
    }
}

/// What the audit records for `mask` of `field`: its keyed digest under the audit key.
pub async fn audit_digest(
    db: &TestDb,
    kms: &Kms,
    field: login_etl_core::crypto::PiiField,
    mask: &BlindIndex,
) -> String {
    let key =
        login_etl_core::keys::load_key(&db.connect().await, kms, login_etl_core::crypto::KeyPurpose::Audit)
            .await
            .expect("the audit key");
    login_etl_core::crypto::AuditKey::new(&key).mask_digest(Some(field), mask.as_str())
}

/// The function URL's event for `body` POSTed by `user_arn`, as SigV4 proves it.
pub fn url_request(user_arn: &str, body: &str) -> LambdaFunctionUrlRequest {
    serde_json::from_value(serde_json::json!({
        "version": "2.0", "rawPath": "/", "rawQueryString": "", "headers": {},
        "requestContext": {"requestId": "r", "timeEpoch": 0, "http": {"method": "POST", "path": "/"},
                           "authorizer": {"iam": {"userArn": user_arn}}},
        "body": body, "isBase64Encoded": false,
    }))
    .expect("function URL event")
}

/// The roles of [`staff`] and [`key_admin`], as the service's environment names them.
pub fn staff_and_key_admin_roles() -> Access {
    Access {
        staff_role: Some("arn:aws:iam::123456789012:role/pii-vault-staff".into()),
        key_admin_role: Some("arn:aws:iam::123456789012:role/pii-vault-key-admin".into()),
    }
}
