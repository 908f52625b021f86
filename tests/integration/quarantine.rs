//! The quarantine as the roles see it, and replays: attributes honoured only from the
//! replay queue, keeping the original id and date; from anywhere else ignored.

use aws_lambda_events::sqs::SqsEvent;
use chrono::{DateTime, NaiveDate};
use login_etl::handler;
use login_etl_core::replay::{ORIGINAL_MESSAGE_ID, ORIGINAL_SENT_TIMESTAMP, REPLAY_ATTEMPT};
use serde_json::{Value, json};
use testkit::*;
use tokio_postgres::error::SqlState;

const REPLAY_QUEUE: &str = "arn:aws:sqs:us-east-1:000000000000:login-replay-queue";
const LOGIN_QUEUE: &str = "arn:aws:sqs:us-east-1:000000000000:login-queue";
/// 2025-01-02T03:04:05.678Z, long before the records' own SentTimestamp.
const ORIGINAL_SENT_MS: i64 = 1_735_787_045_678;

async fn refused(config: &tokio_postgres::Config, sql: &str) {
    let error = connect(config).await.batch_execute(sql).await.expect_err(sql);
    assert_eq!(error.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{sql}: {error}");
}

#[tokio::test]
async fn only_the_vault_service_reads_the_quarantine_and_the_writer_only_adds_to_it() {
    let db = TestDb::new().await;
    let _writer_app = loaded_by_writer(&db, &new_kms().await).await;
    assert_eq!(
        db.count("SELECT count(*) FROM login_data.login_quarantine").await,
        1,
        "the writer quarantined"
    );

    let writer = db.login_in("login_etl_writer").await;
    for sql in [
        "SELECT count(*) FROM login_data.login_quarantine",
        "SELECT ciphertext FROM login_data.login_quarantine",
        "UPDATE login_data.login_quarantine SET reason_code = 'x'",
        "UPDATE login_data.login_quarantine SET ciphertext = NULL",
        "DELETE FROM login_data.login_quarantine",
        "SELECT count(*) FROM login_data.login_quarantine_masks",
        "DELETE FROM login_data.login_quarantine_masks",
        // With a conflict target, the insert would need SELECT: the writer's has none.
        "INSERT INTO login_data.login_quarantine (message_id, attempt, source, reason_code, key_version, nonce, ciphertext)
         VALUES ('m', 0, 'queue', 'not_json', 1, '\\x000000000000000000000000', '\\x00')
         ON CONFLICT (message_id, attempt) DO NOTHING",
    ] {
        refused(&writer, sql).await;
    }
    for group in ["login_etl_analyst", "login_etl_vault_reader", "login_etl_auditor"] {
        let person = db.login_in(group).await;
        refused(&person, "SELECT count(*) FROM login_data.login_quarantine").await;
        refused(&person, "SELECT message_id, reason_code FROM login_data.login_quarantine").await;
        refused(&person, "INSERT INTO login_data.login_quarantine (message_id) VALUES ('m')").await;
        refused(&person, "SELECT * FROM login_data.login_quarantine_masks").await;
    }
    // The purge's login may not use the quarantine's schema: it calls the purge's function.
    let purge = db.login_in("login_etl_quarantine_purge").await;
    refused(&purge, "SELECT message_id, attempt, quarantined_at FROM login_data.login_quarantine").await;
    refused(&purge, "UPDATE login_data.login_quarantine SET erased_by = 'purge'").await;
    refused(&purge, "SELECT ciphertext FROM login_data.login_quarantine").await;
    refused(&purge, "SELECT reason_code FROM login_data.login_quarantine").await;
    refused(&purge, "SELECT * FROM login_data.login_quarantine_masks").await;
    refused(&purge, "UPDATE login_data.login_quarantine SET replayed_at = now(), replay_attempt = 1").await;
    refused(&purge, "DELETE FROM login_data.login_quarantine").await;
    refused(&purge, "SELECT count(*) FROM login_data.user_logins").await;
    refused(&purge, "SELECT count(*) FROM vault.pii_vault").await;
    // A body quarantined a moment ago is not the purge's business; one two days old is.
    let purged = |days: i32| {
        let purge = &purge;
        async move {
            connect(purge)
                .await
                .query_one("SELECT public.purge_expired_quarantine($1, 100)", &[&days])
                .await
                .expect("the purge")
                .get::<_, i64>(0)
        }
    };
    assert_eq!(purged(1).await, 0, "a body quarantined a moment ago was purged");
    db.connect()
        .await
        .batch_execute("UPDATE login_data.login_quarantine SET quarantined_at = now() - interval '2 days'")
        .await
        .expect("age the row");
    assert_eq!(purged(1).await, 1);
    // The service reads it (to list, show, replay).
    let service = db.login_in("login_etl_vault_service").await;
    connect(&service)
        .await
        .batch_execute("SELECT ciphertext FROM login_data.login_quarantine")
        .await
        .expect("service reads");
}

/// A record as SQS delivers it from `queue`, with replay attributes if given.
fn record(id: &str, body: &str, queue: &str, attributes: &[(&str, String)]) -> Value {
    let attributes: serde_json::Map<String, Value> = attributes
        .iter()
        .map(|(name, value)| {
            (name.to_string(), json!({"stringValue": value, "dataType": "String", "stringListValues": [], "binaryListValues": []}))
        })
        .collect();
    json!({
        "messageId": id, "receiptHandle": format!("handle-{id}"), "body": body,
        "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": FIRST_SENT_MS.to_string()},
        "messageAttributes": attributes, "eventSource": "aws:sqs", "eventSourceARN": queue, "awsRegion": "us-east-1",
    })
}

fn origin(id: &str, attempt: u32) -> Vec<(&'static str, String)> {
    vec![
        (ORIGINAL_MESSAGE_ID, id.to_owned()),
        (ORIGINAL_SENT_TIMESTAMP, ORIGINAL_SENT_MS.to_string()),
        (REPLAY_ATTEMPT, attempt.to_string()),
    ]
}

fn batch(records: Vec<Value>) -> SqsEvent {
    serde_json::from_value(json!({ "Records": records })).expect("event")
}

async fn rows(db: &TestDb) -> Vec<(String, NaiveDate, i64)> {
    db.connect()
        .await
        .query(
            "SELECT sqs_message_id, create_date, (extract(epoch FROM sent_at) * 1000)::int8
               FROM login_data.user_logins ORDER BY sqs_message_id",
            &[],
        )
        .await
        .expect("rows")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

#[tokio::test]
async fn a_replay_from_the_replay_queue_keeps_its_id_and_date_and_twice_adds_nothing() {
    let db = TestDb::new().await;
    let mut app = cold_start(&db, &new_kms().await).await;
    app.replay_queue = Some(REPLAY_QUEUE.to_owned());
    let original_date = DateTime::from_timestamp_millis(ORIGINAL_SENT_MS).expect("ms").date_naive();
    let body = login_body("u-replayed", "203.0.113.70", "dev-70");

    let replay = || batch(vec![record("sqs-new-id-1", &body, REPLAY_QUEUE, &origin("orig-1", 1))]);
    let (_, stats) = handler::handle_with_stats(&app, replay()).await.expect("replay");
    assert_eq!((stats.written, stats.replays), (1, 1));
    assert_eq!(rows(&db).await, vec![("orig-1".to_owned(), original_date, ORIGINAL_SENT_MS)]);

    // The same replay again (sent twice, or redelivered under yet another SQS id): nothing.
    let again = batch(vec![record("sqs-new-id-2", &body, REPLAY_QUEUE, &origin("orig-1", 1))]);
    let (_, stats) = handler::handle_with_stats(&app, again).await.expect("replay again");
    assert_eq!((stats.written, stats.already_present), (0, 1));
    assert_eq!(rows(&db).await.len(), 1);

    // Rejected again: a quarantine row of its own, keyed by the original id and the attempt.
    let broken =
        batch(vec![record("sqs-new-id-3", "{\"still\": \"broken\"}", REPLAY_QUEUE, &origin("orig-2", 3))]);
    handler::handle_with_stats(&app, broken).await.expect("replay rejected");
    let quarantined = db
        .connect()
        .await
        .query_one("SELECT message_id, attempt, source, (extract(epoch FROM sent_at) * 1000)::int8 FROM login_data.login_quarantine", &[])
        .await
        .expect("row");
    assert_eq!(quarantined.get::<_, &str>(0), "orig-2");
    assert_eq!((quarantined.get::<_, i32>(1), quarantined.get::<_, &str>(2)), (3, "replay"));
    assert_eq!(quarantined.get::<_, i64>(3), ORIGINAL_SENT_MS);

    // From the replay queue without usable attributes: quarantined under its own id.
    let mut bad_attributes = origin("orig-3", 1);
    bad_attributes[1].1 = "yesterday".into();
    let unusable = batch(vec![record("sqs-new-id-4", &body, REPLAY_QUEUE, &bad_attributes)]);
    let (_, stats) = handler::handle_with_stats(&app, unusable).await.expect("batch");
    assert_eq!(stats.rejected_by_reason.get("invalid_replay_attributes"), Some(&1));
    assert_eq!(quarantined_ids(&db).await, vec!["orig-2".to_owned(), "sqs-new-id-4".to_owned()]);
}

#[tokio::test]
async fn replay_attributes_from_anywhere_else_neither_suppress_nor_backdate_a_row() {
    let db = TestDb::new().await;
    let mut app = cold_start(&db, &new_kms().await).await;
    app.replay_queue = Some(REPLAY_QUEUE.to_owned());
    let own_date = DateTime::from_timestamp_millis(FIRST_SENT_MS).expect("ms").date_naive();
    handler::handle_with_stats(
        &app,
        batch(vec![record("victim", &login_body("u-1", "203.0.113.1", "d-1"), LOGIN_QUEUE, &[])]),
    )
    .await
    .expect("a first login");

    // A producer (or anyone who may send to login-queue) forges the attributes: to suppress
    // the victim's id, to backdate, to pose as a replay. All ignored.
    let forged = batch(vec![
        record("forger-1", &login_body("u-2", "203.0.113.2", "d-2"), LOGIN_QUEUE, &origin("victim", 1)),
        record("forger-2", &login_body("u-3", "203.0.113.3", "d-3"), LOGIN_QUEUE, &origin("never-sent", 1)),
    ]);
    let (_, stats) = handler::handle_with_stats(&app, forged).await.expect("batch");
    assert_eq!((stats.written, stats.replays, stats.replay_attributes_ignored), (2, 0, 2));
    assert_eq!(
        rows(&db).await,
        vec![
            ("forger-1".to_owned(), own_date, FIRST_SENT_MS),
            ("forger-2".to_owned(), own_date, FIRST_SENT_MS),
            ("victim".to_owned(), own_date, FIRST_SENT_MS),
        ]
    );
    // And an instance configured with no replay queue honours no replay at all.
    app.replay_queue = None;
    let (_, stats) = handler::handle_with_stats(
        &app,
        batch(vec![record(
            "sqs-x",
            &login_body("u-4", "203.0.113.4", "d-4"),
            REPLAY_QUEUE,
            &origin("orig-x", 1),
        )]),
    )
    .await
    .expect("batch");
    assert_eq!((stats.written, stats.replays), (1, 0));
    assert!(rows(&db).await.iter().any(|(id, _, _)| id == "sqs-x"));
}
