//! The `quarantine-purge` Lambda function, run on a schedule (template.yaml): erases the
//! quarantined bodies older than `QUARANTINE_RETENTION_DAYS`. The schedule's event carries
//! nothing it uses.
#![forbid(unsafe_code)]

use lambda_runtime::{Error, LambdaEvent, service_fn};
use login_etl_core::error::report;
use login_etl_core::{config, metrics, store, telemetry};
use login_etl_housekeeping::purge;

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init();
    let sdk = config::aws_sdk_config().await?;
    let database = config::database_from_env(&sdk).await?;
    let retention = purge::retention_days(std::env::var("QUARANTINE_RETENTION_DAYS").ok().as_deref())?;
    let pool = store::stateless_pool(database, 1)?;
    let pool = &pool;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| async move {
        let left = config::invocation_time_left(event.context.deadline);
        // Half the invocation's time: one more statement then still fits.
        let outcome = purge::run(pool, retention, left / 2).await.inspect_err(|error| {
            tracing::error!(error = %report(error), "quarantine purge failed");
        })?;
        tracing::info!(
            erased = outcome.erased,
            retention_days = retention,
            stopped_for_time = outcome.stopped_for_time,
            "quarantine purge done"
        );
        println!(
            "{}",
            metrics::line(
                &[("Function", "quarantine-purge")],
                &[("QuarantinePurged", outcome.erased as f64, "Count")],
                chrono::Utc::now().timestamp_millis(),
            )
        );
        Ok::<_, Error>(serde_json::json!({ "erased": outcome.erased, "complete": !outcome.stopped_for_time }))
    }))
    .await
}
