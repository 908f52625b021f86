//! The function as Lambda runs it (the real binary polling a runtime API), with logging
//! switched to TRACE as one console click does: its whole output holds no ip or device id.

use std::collections::HashSet;

use serde_json::Value;
use testkit::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_trace_the_function_logs_no_ip_or_device_id() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    init_keys(&db, &kms).await;
    let output = std::env::temp_dir().join(format!("login-etl-trace-{}.log", unique_suffix()));
    let env = [
        ("DATABASE_URL", url_of(&db.config)),
        ("KMS_KEY_ID", kms.key_id().to_owned()),
        ("RUST_LOG", "trace".to_owned()),
        ("AWS_LAMBDA_LOG_LEVEL", "TRACE".to_owned()),
    ];
    let function = LocalLambda::start(env!("CARGO_BIN_EXE_login-etl"), &env, Some(&output)).await;

    let events = ["events/login-queue-100.json", "events/mixed-batch.json", "events/duplicates.json"];
    for path in events {
        let bytes =
            std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).expect("event");
        let answer: Value = serde_json::from_slice(&function.invoke(&bytes).await).expect("JSON answer");
        assert!(answer["batchItemFailures"].is_array(), "{answer}");
    }
    assert_eq!(db.count("SELECT count(*) FROM login_data.user_logins").await, 99 + 10 + 6);
    drop(function);

    let logs = std::fs::read_to_string(&output).expect("function output");
    let _ = std::fs::remove_file(&output);
    // TRACE was on, and the lines are there: JSON, with the request id.
    assert!(logs.contains("\"level\":\"DEBUG\""), "{logs}");
    assert!(logs.contains("\"requestId\""), "{logs}");
    assert!(logs.contains("batch processed"), "{logs}");
    assert!(!logs.contains("raw JSON event"), "the runtime's payload log is capped");

    // One CloudWatch EMF line of counts per batch, and one per rejection reason.
    let emf: Vec<Value> = logs
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line.get("_aws").is_some())
        .collect();
    let batches: Vec<&Value> = emf.iter().filter(|line| line.get("Received").is_some()).collect();
    let counts = |line: &Value| {
        ["Received", "Written", "AlreadyPresent", "Rejected", "Quarantined"].map(|name| line[name].as_f64())
    };
    assert_eq!(batches.len(), 3);
    assert_eq!(counts(batches[0]), [Some(100.0), Some(99.0), Some(0.0), Some(1.0), Some(1.0)]);
    assert_eq!(counts(batches[1]), [Some(20.0), Some(10.0), Some(0.0), Some(10.0), Some(10.0)]);
    assert_eq!(counts(batches[2]), [Some(6.0), Some(6.0), Some(0.0), Some(0.0), Some(0.0)]);
    assert!(batches.iter().all(|line| line["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "login-etl"));
    assert!(batches.iter().all(|line| line["BatchDuration"].as_f64().is_some_and(|ms| ms > 0.0)));
    let by_reason: Vec<(&str, f64)> = emf
        .iter()
        .filter_map(|line| Some((line.get("Reason")?.as_str()?, line["RejectedByReason"].as_f64()?)))
        .collect();
    assert_eq!(by_reason.iter().map(|(_, n)| n).sum::<f64>(), 11.0);
    assert!(
        by_reason.contains(&("missing_field", 1.0)) || by_reason.iter().any(|(r, _)| *r == "missing_field")
    );
    let mut secrets = HashSet::new();
    for path in events {
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
    assert!(secrets.len() >= 198);
    for secret in &secrets {
        assert!(
            !logs.contains(secret.as_str()),
            "a plaintext value of {} characters is in the output",
            secret.len()
        );
    }
}
