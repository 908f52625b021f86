//! SQS events: the repository's event files, the exercise's messages, and events made here.

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use serde_json::{Value, json};

use crate::repo_path;

/// When the first record of an [`event`] was sent (then one second apart).
pub const FIRST_SENT_MS: i64 = 1_763_625_600_000;

/// An event file of the repository (`events/…`).
pub fn load_event(path: &str) -> SqsEvent {
    let full = repo_path(path);
    let text = std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()));
    serde_json::from_str(&text).expect("event parses")
}

/// The exercise's 100 message bodies, in queue order.
pub fn sample_messages() -> Vec<Value> {
    let path = repo_path("tests/fixtures/login-queue-messages.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("fixture parses")
}

/// An SQS event with the given (message id, body) records, sent one second apart.
pub fn event(records: &[(String, String)]) -> SqsEvent {
    event_sent_at(records, FIRST_SENT_MS)
}

/// [`event`], its first record sent at `first_sent_ms` (ms since the epoch: the logins'
/// `create_date` is its UTC date).
pub fn event_sent_at(records: &[(String, String)], first_sent_ms: i64) -> SqsEvent {
    let records: Vec<Value> = records
        .iter()
        .enumerate()
        .map(|(i, (id, body))| {
            json!({
                "messageId": id,
                "receiptHandle": format!("handle-{id}"),
                "body": body,
                "attributes": {
                    "ApproximateReceiveCount": "1",
                    "SentTimestamp": (first_sent_ms + i as i64 * 1000).to_string(),
                },
                "messageAttributes": {},
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:login-queue",
                "awsRegion": "us-east-1",
            })
        })
        .collect();
    serde_json::from_value(json!({ "Records": records })).expect("event shape")
}

/// `n` valid logins with ids `{tag}-00000`…, their ips and device ids repeating every 7.
pub fn many_logins(n: usize, tag: &str) -> Vec<(String, String)> {
    (0..n)
        .map(|i| {
            let id = format!("{tag}-{i:05}");
            let body = login_body(&id, &format!("198.51.100.{}", i % 7), &format!("dev-{}", i % 7));
            (id, body)
        })
        .collect()
}

/// A valid login body with the given ip and device id.
pub fn login_body(user: &str, ip: &str, device_id: &str) -> String {
    json!({
        "user_id": user, "app_version": "1.2.3", "device_type": "ios",
        "ip": ip, "locale": "DE", "device_id": device_id,
    })
    .to_string()
}

/// A body the function rejects (its app version) whose ip and device id it can read: it is
/// quarantined with the masks of both.
pub fn rejected_login_body(user: &str, ip: &str, device_id: &str) -> String {
    json!({
        "user_id": user, "app_version": "not-a-version", "device_type": "ios",
        "ip": ip, "locale": "DE", "device_id": device_id,
    })
    .to_string()
}

/// The ids the response reports as failed, sorted.
pub fn failed_ids(response: &SqsBatchResponse) -> Vec<String> {
    let mut ids: Vec<String> =
        response.batch_item_failures.iter().map(|f| f.item_identifier.clone()).collect();
    ids.sort();
    ids
}
