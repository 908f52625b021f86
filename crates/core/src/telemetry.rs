//! Structured JSON logs through `tracing`. Only message ids, reason codes, counts and
//! durations are ever recorded: no field of a message body is passed to a log macro.
//!
//! Every line carries the spans it was logged in (`spans`): inside an invocation that is
//! the Lambda runtime's `Lambda runtime invoke` span with `requestId` (and `xrayTraceId`
//! when X-Ray is on), so each line can be tied to its request.
//!
//! Libraries that log payloads below INFO (the runtime's raw event at TRACE, HTTP and SQS
//! bodies, SigV4 canonical requests, SQL parameters) are capped at INFO whatever
//! `RUST_LOG` or `AWS_LAMBDA_LOG_LEVEL` asks for: see [`PAYLOAD_TARGETS`].

use tracing::Level;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{FilterExt, filter_fn};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;

/// Log targets (prefixes) whose DEBUG and TRACE events can carry PII: message bodies,
/// HTTP requests and responses, query parameters. Never logged below INFO.
pub const PAYLOAD_TARGETS: &[&str] = &[
    "lambda_runtime",
    "aws_lambda_events",
    "aws_smithy",
    "aws_sdk",
    "aws_sigv4",
    "aws_config",
    "aws_runtime",
    "hyper",
    "h2",
    "reqwest",
    "rustls",
    "tower",
    "tokio_postgres",
    "postgres_protocol",
    "deadpool",
    "refinery",
];

/// Whether an event of `target` at `level` may be logged at all.
pub fn allowed(target: &str, level: &Level) -> bool {
    *level <= Level::INFO || !PAYLOAD_TARGETS.iter().any(|prefix| target.starts_with(prefix))
}

/// The subscriber every binary uses: one JSON object per line, level from `RUST_LOG`
/// (or Lambda's `AWS_LAMBDA_LOG_LEVEL`), `info` by default, payload targets capped.
pub fn json_subscriber<W>(writer: W) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let requested = std::env::var("RUST_LOG")
        .or_else(|_| std::env::var("AWS_LAMBDA_LOG_LEVEL").map(|level| level.to_lowercase()))
        .ok()
        .and_then(|directives| EnvFilter::try_new(directives).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let capped = filter_fn(|metadata| allowed(metadata.target(), metadata.level()));
    let layer = tracing_subscriber::fmt::layer()
        .json()
        .with_current_span(false)
        .with_span_list(true)
        .with_target(false)
        .with_writer(writer)
        .with_filter(requested.and(capped));
    tracing_subscriber::registry().with(layer)
}

/// Installs the JSON subscriber on stdout for the whole process.
pub fn init() {
    // A second init (tests, embedding) keeps the first subscriber.
    let _ = tracing::subscriber::set_global_default(json_subscriber(std::io::stdout));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_targets_are_capped_at_info_and_ours_are_not() {
        assert!(!allowed("lambda_runtime::layers::api_response", &Level::TRACE));
        assert!(!allowed("aws_smithy_runtime::client::orchestrator", &Level::DEBUG));
        assert!(!allowed("tokio_postgres::query", &Level::DEBUG));
        assert!(allowed("lambda_runtime::runtime", &Level::INFO));
        assert!(allowed("hyper", &Level::WARN));
        assert!(allowed("login_etl::handler", &Level::TRACE));
    }
}
