//! The logs of a full run over the sample data: useful, JSON, and free of PII. In a test
//! binary of its own because it installs the process-wide log subscriber.

mod common;

use std::collections::HashSet;

use common::*;
use login_etl::handler;
use serde_json::Value;

#[tokio::test]
async fn no_plaintext_pii_in_the_logs_of_a_full_run() {
    let db = TestDb::new().await;
    let app = cold_start(&db, &new_kms().await).await;
    let capture = LogCapture::default();
    let writer = capture.clone();
    let subscriber = login_etl::telemetry::json_subscriber(move || writer.clone());
    // Process-wide, so no thread's first use of a log call site can miss it.
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber of this test binary");

    for path in ["events/login-queue-100.json", "events/mixed-batch.json", "events/duplicates.json"] {
        handler::handle(&app, load_event(path)).await.expect("batch");
    }

    let logs = capture.text();
    // The logs are there and useful: JSON lines with message ids and reason codes.
    assert!(logs.contains("\"reason\":\"missing_field\""), "{logs}");
    assert!(logs.contains("mixed-bad-ip-invalid"), "{logs}");
    assert!(logs.contains("\"written\":99"), "{logs}");
    for line in logs.lines() {
        serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    }
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
