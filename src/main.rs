//! The `login-etl` Lambda function: resources once at init, then one call per batch.

use aws_lambda_events::sqs::SqsEvent;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use login_etl::{App, handler, telemetry};

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init();
    let app = App::from_env().await.inspect_err(|error| {
        tracing::error!(error = %error, "init failed");
    })?;
    let app = &app;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        handler::handle(app, event.payload).await
    }))
    .await
}
