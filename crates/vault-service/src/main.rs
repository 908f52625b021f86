//! `pii-vault-service`: the vault service as a Lambda function behind a function URL with
//! IAM auth (see `pii_vault_service`). Resources once at init, then one call per
//! request; every operation is audited before it runs.
#![forbid(unsafe_code)]

use aws_lambda_events::lambda_function_urls::LambdaFunctionUrlRequest;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use login_etl_core::config::{self, Config};
use login_etl_core::error::report;
use login_etl_core::keys::Kms;
use login_etl_core::{store, telemetry};
use pii_vault_service::http::{self, Access};
use pii_vault_service::{self as vault_service, QuarantineSettings, VaultService};

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init();
    let (service, access) = init().await.inspect_err(|error| {
        tracing::error!(error = %report(&**error), "init failed");
    })?;
    if access.local_identity.is_some() {
        tracing::warn!(
            "PII_VAULT_LOCAL_IDENTITY is set: requests without an IAM identity are taken as that caller (local stack only)"
        );
    }
    let (service, access) = (&service, &access);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<LambdaFunctionUrlRequest>| async move {
        Ok::<_, Error>(http::handle(service, access, event.payload, &event.context.request_id).await)
    }))
    .await
}

async fn init() -> Result<(VaultService, Access), Error> {
    let sdk = config::aws_sdk_config().await?;
    let config = Config::from_env(&sdk).await?;
    let pool = store::pool(config.database, config.pool_size)?;
    let kms = Kms::new(aws_sdk_kms::Client::new(&sdk), config.kms_key_id);
    let limits = vault_service::budget::Limits::from_env()?;
    let quarantine = QuarantineSettings::from_env(&sdk)?;
    if quarantine.queues.replay_queue_url().is_err() || quarantine.queues.dead_letter_queue_url().is_err() {
        tracing::warn!(
            "REPLAY_QUEUE_URL or DEAD_LETTER_QUEUE_URL is not set: quarantine replay / import-dlq are refused"
        );
    }
    Ok((
        VaultService::new(pool, kms, limits.reveals_per_person)
            .with_limits(limits)
            .with_quarantine(quarantine),
        Access::from_env(),
    ))
}
