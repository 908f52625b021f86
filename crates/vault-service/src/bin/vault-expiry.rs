//! The `vault-expiry` Lambda function, run on a schedule (template.yaml): the vault's
//! expiry ([`pii_vault_service::expiry`]) with a database login and a role of its own, the
//! caller `schedule:vault-expiry` in the audit. It never invokes the vault service (a
//! direct invoke could carry any identity): it runs the same operation on its own
//! connection, audited the same way. The schedule's event carries nothing it uses.
#![forbid(unsafe_code)]

use lambda_runtime::{Error, LambdaEvent, service_fn};
use login_etl_core::config::{self, Config};
use login_etl_core::error::report;
use login_etl_core::keys::Kms;
use login_etl_core::{metrics, store, telemetry};
use pii_vault_service::VaultService;
use pii_vault_service::expiry::{self, Retention};

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init();
    // A bad setting stops the start, before anything is connected.
    let retention =
        Retention::from_env().inspect_err(|error| tracing::error!(error = %report(error), "init failed"))?;
    let sdk = config::aws_sdk_config().await?;
    let config = Config::from_env(&sdk).await?;
    // Two connections: the audit's and the batch's.
    let pool = store::stateless_pool(config.database, 2)?;
    let kms = Kms::new(aws_sdk_kms::Client::new(&sdk), config.kms_key_id);
    let service = VaultService::for_schedule(pool, kms, retention);
    let service = &service;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| async move {
        let left = config::invocation_time_left(event.context.deadline);
        let context = expiry::schedule_context(&event.context.request_id);
        // Half the invocation's time: one more batch then still fits.
        let run = expiry::run_scheduled(service, &context, left / 2)
            .await
            .inspect_err(|error| tracing::error!(error = %report(error), "vault expiry failed"))?;
        tracing::info!(
            batches = run.batches,
            scanned = run.scanned,
            expired = run.expired,
            done = run.done,
            retention_days = retention.as_days(),
            "vault expiry done"
        );
        println!(
            "{}",
            metrics::line(
                &[("Function", "vault-expiry")],
                &[("VaultValuesExpired", run.expired as f64, "Count")],
                chrono::Utc::now().timestamp_millis(),
            )
        );
        Ok::<_, Error>(
            serde_json::json!({ "expired": run.expired, "scanned": run.scanned, "complete": run.done }),
        )
    }))
    .await
}
