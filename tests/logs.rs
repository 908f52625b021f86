//! The logs of a full run over the sample data: useful, JSON, and free of PII. In a test
//! binary of its own because it installs the process-wide log subscriber.

use std::collections::HashSet;

use login_etl::handler;
use serde_json::Value;
use testkit::*;
use tracing::Instrument;

#[tokio::test]
async fn no_plaintext_pii_in_the_logs_of_a_full_run() {
    let db = TestDb::new().await;
    let app = cold_start(&db, &new_kms().await).await;
    let capture = LogCapture::default();
    let writer = capture.clone();
    let subscriber = login_etl_core::telemetry::json_subscriber(move || writer.clone());
    // Process-wide, so no thread's first use of a log call site can miss it.
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber of this test binary");

    for (n, path) in ["events/login-queue-100.json", "events/mixed-batch.json", "events/duplicates.json"]
        .iter()
        .enumerate()
    {
        // Inside the span the Lambda runtime opens for each invocation.
        let mut context = lambda_runtime::Context::default();
        context.request_id = format!("req-{n}");
        context.xray_trace_id = Some(format!("Root=1-00000000-00000000000000000000000{n}"));
        let span = lambda_runtime::layers::trace::request_span(&context);
        handler::handle(&app, load_event(path)).instrument(span).await.expect("batch");
    }

    let logs = capture.text();
    // The logs are there and useful: JSON lines with message ids and reason codes.
    assert!(logs.contains("\"reason\":\"missing_field\""), "{logs}");
    assert!(logs.contains("mixed-bad-ip-invalid"), "{logs}");
    assert!(logs.contains("\"written\":99"), "{logs}");
    let mut lines_per_request = [0; 3];
    for line in logs.lines() {
        let line: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        // Every line of an invocation names its request and its X-Ray trace.
        let span = &line["spans"][0];
        let request = span["requestId"].as_str().unwrap_or_else(|| panic!("no requestId: {line}"));
        let n: usize = request.trim_start_matches("req-").parse().expect("request id");
        assert!(span["xrayTraceId"].as_str().is_some_and(|t| t.ends_with(&n.to_string())), "{line}");
        lines_per_request[n] += 1;
    }
    assert!(lines_per_request.iter().all(|&n| n > 0), "{lines_per_request:?}");
    let mut secrets = HashSet::new();
    for path in ["events/login-queue-100.json", "events/mixed-batch.json", "events/duplicates.json"] {
        for record in load_event(path).records {
            if let Ok(Value::Object(body)) = serde_json::from_str(record.body.as_deref().unwrap_or_default())
            {
                for name in ["ip", "device_id"] {
                    if let Some(Value::String(value)) = body.get(name) {
                        secrets.insert(value.clone());
                    }
                }
            }
        }
    }
    assert!(secrets.len() >= 198, "every sample ip and device id is checked");
    for secret in secrets {
        assert!(!logs.contains(&secret), "a plaintext {} value appears in the logs", secret.len());
    }
}
