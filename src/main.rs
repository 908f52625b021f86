//! The `login-etl` Lambda function: configuration at init (no database, no KMS), then one
//! call per batch (see `function.rs` for the resources and the failure path).
#![forbid(unsafe_code)]

use std::time::Instant;

use aws_lambda_events::sqs::SqsEvent;
use lambda_runtime::{Context, Error, LambdaEvent, service_fn};
use login_etl::Function;
use login_etl_core::error::report;
use login_etl_core::{config, telemetry};

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init();
    let function = init().await.inspect_err(|error| {
        tracing::error!(error = %report(&**error), "init failed");
    })?;
    let function = &function;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        function.invoke(event.payload, deadline(&event.context)).await
    }))
    .await
}

async fn init() -> Result<Function, Error> {
    let sdk = config::aws_sdk_config().await?;
    Ok(Function::from_env(&sdk).await?)
}

/// The invocation's deadline as an `Instant`.
fn deadline(context: &Context) -> Instant {
    Instant::now() + config::invocation_time_left(context.deadline)
}
