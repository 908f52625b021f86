//! The `partition-maintenance` Lambda function, run on a schedule (template.yaml): makes
//! `user_logins`'s partitions (a month or a day each) ahead (and back as far as a message
//! can still be dated), and drops those past `USER_LOGINS_RETENTION_MONTHS`. The
//! schedule's event carries nothing it uses.
#![forbid(unsafe_code)]

use lambda_runtime::{Error, LambdaEvent, service_fn};
use login_etl_core::error::report;
use login_etl_core::store::partitions::Cancel;
use login_etl_core::{config, metrics, store, telemetry};
use login_etl_housekeeping::partitions::{self, Settings};

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init();
    // First: a bad setting stops the start before any secret or database is read, said as
    // the setting's message (not the error's Debug form).
    let settings = Settings::from_vars(|name| std::env::var(name).ok()).inspect_err(|error| {
        tracing::error!(error = %report(error), "partition maintenance refused to start");
        eprintln!("partition-maintenance: {}", report(error));
    })?;
    let sdk = config::aws_sdk_config().await?;
    let database = config::database_from_env(&sdk).await?;
    // The cancel requests that bound a DETACH … CONCURRENTLY go as the connection goes.
    let cancel = Cancel::new(&database.config, database.tls.connector().map_err(store::StoreError::from)?);
    // Nothing set on the session: each DDL transaction bounds itself (SET LOCAL).
    let pool = store::stateless_pool(database, 1)?;
    let (pool, cancel) = (&pool, &cancel);
    lambda_runtime::run(service_fn(move |_: LambdaEvent<serde_json::Value>| async move {
        let mut client = pool.get().await.map_err(store::StoreError::from)?;
        let outcome = partitions::run(&mut client, cancel, settings, chrono::Utc::now().date_naive())
            .await
            .inspect_err(
            |error| tracing::error!(error = %report(error), "partition maintenance failed"),
        )?;
        tracing::info!(
            created = ?outcome.created,
            dropped = ?outcome.dropped.iter().map(|dropped| &dropped.name).collect::<Vec<_>>(),
            blocked = ?outcome.blocked,
            lock_timeouts = outcome.lock_timeouts,
            days_back = settings.days_back,
            months_ahead = settings.months_ahead,
            retention_months = ?settings.retention_months,
            "partition maintenance done"
        );
        println!(
            "{}",
            metrics::line(
                &[("Function", "partition-maintenance")],
                &[
                    ("PartitionsCreated", outcome.created.len() as f64, "Count"),
                    ("PartitionsDropped", outcome.dropped.len() as f64, "Count"),
                    ("PartitionLockTimeouts", f64::from(outcome.lock_timeouts), "Count"),
                ],
                chrono::Utc::now().timestamp_millis(),
            )
        );
        // Every other partition made and the retention run: now fail (the errors alarm),
        // every run, until the table holding the name is moved.
        if !outcome.blocked.is_empty() {
            return Err(Error::from(format!(
                "partitions not made, a table that is not a partition holds their names: {}",
                outcome.blocked.join(", ")
            )));
        }
        Ok::<_, Error>(serde_json::json!({
            "created": outcome.created,
            "dropped": outcome.dropped.iter().map(|dropped| &dropped.name).collect::<Vec<_>>(),
        }))
    }))
    .await
}
