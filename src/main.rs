//! The `login-etl` Lambda function: resources once at init, then one call per batch.
#![forbid(unsafe_code)]

use aws_lambda_events::sqs::SqsEvent;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use login_etl::{App, handler};
use login_etl_core::error::report;
use login_etl_core::{config, telemetry};

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init();
    let app = init().await.inspect_err(|error| {
        tracing::error!(error = %report(&**error), "init failed");
    })?;
    let app = &app;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        handler::handle(app, event.payload).await
    }))
    .await
}

async fn init() -> Result<App, Error> {
    let sdk = config::aws_sdk_config().await?;
    Ok(App::from_env(&sdk).await?)
}
