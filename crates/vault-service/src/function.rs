//! The Lambda function's life, one definition for the deployed binary (`main.rs`) and the
//! local stack's (`pii-vault-service-local`, crates/local-tools): resources once at init
//! from the environment, then one [`http::handle`] per invocation. `front` sees each
//! request first; the deployed binary's does nothing.

use aws_lambda_events::lambda_function_urls::LambdaFunctionUrlRequest;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use login_etl_core::config::{self, Config};
use login_etl_core::error::report;
use login_etl_core::keys::Kms;
use login_etl_core::{store, telemetry};

use crate::http::{self, Access};
use crate::{QuarantineSettings, VaultService};

/// Serves invocations until the runtime stops, as `access` allows.
pub async fn run(
    access: Access,
    front: impl Fn(&mut LambdaFunctionUrlRequest) + Copy + Send + Sync + 'static,
) -> Result<(), Error> {
    telemetry::init();
    let service = init().await.inspect_err(|error| {
        tracing::error!(error = %report(&**error), "init failed");
    })?;
    let (service, access) = (&service, &access);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<LambdaFunctionUrlRequest>| async move {
        let mut request = event.payload;
        front(&mut request);
        // Boxed: the operations' futures nest deeper than the layout query allows inline.
        Ok::<_, Error>(Box::pin(http::handle(service, access, request, &event.context.request_id)).await)
    }))
    .await
}

async fn init() -> Result<VaultService, Error> {
    let sdk = config::aws_sdk_config().await?;
    let config = Config::from_env(&sdk).await?;
    let pool = store::stateless_pool(config.database, config.pool_size)?;
    let kms = Kms::new(aws_sdk_kms::Client::new(&sdk), config.kms_key_id);
    let limits = crate::budget::Limits::from_env()?;
    let quarantine = QuarantineSettings::from_env(&sdk)?;
    if quarantine.queues.replay_queue_url().is_err() || quarantine.queues.dead_letter_queue_url().is_err() {
        tracing::warn!(
            "REPLAY_QUEUE_URL or DEAD_LETTER_QUEUE_URL is not set: quarantine replay / import-dlq are refused"
        );
    }
    let vault_retention = crate::expiry::Retention::from_env()?;
    Ok(VaultService::new(pool, kms, limits.reveals_per_person)
        .with_limits(limits)
        .with_quarantine(quarantine)
        .with_vault_retention(vault_retention))
}
