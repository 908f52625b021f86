//! Structured JSON logs through `tracing`. Only message ids, reason codes, counts and
//! durations are ever recorded: no field of a message body is passed to a log macro.
//!
//! Every line carries the spans it was logged in (`spans`): inside an invocation that is
//! the Lambda runtime's `Lambda runtime invoke` span with `requestId` (and `xrayTraceId`
//! when X-Ray is on), so each line can be tied to its request.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// The subscriber every binary uses: one JSON object per line, level from `RUST_LOG`
/// (or Lambda's `AWS_LAMBDA_LOG_LEVEL`), `info` by default.
pub fn json_subscriber<W>(writer: W) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = std::env::var("RUST_LOG")
        .or_else(|_| std::env::var("AWS_LAMBDA_LOG_LEVEL").map(|level| level.to_lowercase()))
        .ok()
        .and_then(|directives| EnvFilter::try_new(directives).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .with_span_list(true)
        .with_target(false)
        .with_writer(writer)
        .finish()
}

/// Installs the JSON subscriber on stdout for the whole process.
pub fn init() {
    // A second init (tests, embedding) keeps the first subscriber.
    let _ = tracing::subscriber::set_global_default(json_subscriber(std::io::stdout));
}
