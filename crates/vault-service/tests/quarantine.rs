//! The quarantine through the vault service, on the real stack (Postgres logins in the
//! migrations' roles, moto SQS and KMS, the function's own code and esm-local): show is
//! audited first and spends the budget, bad input is refused on the record, a replay
//! keeps the original id and date (and is honoured only from the replay queue), forget and
//! purge erase bodies for good, import-dlq empties the dead-letter queue into the sealed
//! quarantine, reencrypt re-seals, list pages.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use aws_lambda_events::sqs::SqsEvent;
use aws_sdk_sqs::types::MessageAttributeValue;
use chrono::{DateTime, NaiveDate, Utc};
use login_etl::{Function, handler};
use login_etl_core::crypto::PiiField;
use login_etl_core::replay::{ORIGINAL_MESSAGE_ID, ORIGINAL_SENT_TIMESTAMP, REPLAY_ATTEMPT};
use login_etl_local_tools::esm::{self, DrainSummary, EsmOptions};
use pii_vault_protocol::{
    ErrorCode, ForgetTarget, Outcome, Plaintext, ReplayOutcome, ReplaySelection, ReplayedRow, RevealTarget,
};
use pii_vault_service::{QuarantineFilter, RequestContext, ServiceError, VaultService};
use serde_json::{Value, json};
use testkit::*;

/// The sample's one message that is no login (loaded_by_writer quarantines it).
const SAMPLE_BAD_ID: &str = "36a42109-7f8e-51c9-9335-882c07aaf72f";
const SAMPLE_BAD_BODY: &str = r#"{"foo": "oops_wrong_msg_type", "bar": "123"}"#;

/// A record as SQS delivers it from the queue `source_arn`, sent at `sent_ms`.
fn record(id: &str, body: &str, source_arn: &str, sent_ms: i64) -> Value {
    json!({
        "messageId": id, "receiptHandle": format!("handle-{id}"), "body": body,
        "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": sent_ms.to_string()},
        "messageAttributes": {}, "eventSource": "aws:sqs", "eventSourceARN": source_arn, "awsRegion": "us-east-1",
    })
}

fn batch(records: Vec<Value>) -> SqsEvent {
    serde_json::from_value(json!({ "Records": records })).expect("event")
}

fn drain_options(queue_url: &str) -> EsmOptions {
    EsmOptions {
        queue_url: queue_url.to_owned(),
        batch_size: 10,
        batching_window: Duration::from_millis(100),
        pollers: 1,
        wait_time_seconds: 1,
        until_empty: true,
        progress: false,
        function_timeout: Duration::from_secs(10),
    }
}

async fn drain(function: &Function, queues: &TestQueues, queue_url: &str) -> DrainSummary {
    esm::run(function, &queues.sqs, &drain_options(queue_url), Arc::new(AtomicBool::new(false)))
        .await
        .expect("drain")
}

async fn depth(queues: &TestQueues, url: &str) -> u64 {
    esm::queue_depth(&queues.sqs, url).await.expect("depth").total()
}

/// (action, target, reason, outcome, detail) of each audit row of one request.
type AuditRow = (String, Option<String>, Option<String>, Option<String>, Option<String>);

async fn rows_of(db: &TestDb, request_id: &str) -> Vec<AuditRow> {
    db.connect()
        .await
        .query(
            "SELECT action, target, reason, outcome, detail FROM pii_audit WHERE request_id = $1 ORDER BY id",
            &[&request_id],
        )
        .await
        .expect("audit rows")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect()
}

/// The quarantine's state, to show that a refused request changed nothing.
async fn quarantine_state(db: &TestDb) -> Vec<(String, i32, Option<i32>, bool, bool)> {
    db.connect()
        .await
        .query(
            "SELECT message_id, attempt, key_version, replayed_at IS NULL, erased_at IS NULL
               FROM login_data.login_quarantine ORDER BY message_id, attempt",
            &[],
        )
        .await
        .expect("quarantine")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect()
}

fn ids(ids: &[&str]) -> ReplaySelection {
    ReplaySelection::MessageIds(ids.iter().map(|id| id.to_string()).collect())
}

fn nobody() -> RequestContext {
    RequestContext {
        caller: "arn:aws:sts::123456789012:assumed-role/other/nobody".into(),
        request_id: format!("req-{}", unique_suffix()),
        staff: false,
        key_admin: false,
    }
}

fn mask(field: PiiField, index: &login_etl_core::crypto::BlindIndex) -> RevealTarget {
    RevealTarget::Mask { field, mask: index.as_str().to_owned() }
}

#[tokio::test]
async fn show_opens_a_body_on_the_record_and_spends_two_units_of_the_budget() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app = loaded_by_writer(&db, &kms).await;
    let service = vault_service(&db, &kms, 5).await;

    let una = staff("una");
    let shown = service.quarantine_show(&una, SAMPLE_BAD_ID, None, Some(REASON)).await.expect("show");
    assert_eq!((shown.outcome, shown.attempt), (Outcome::Shown, Some(0)));
    assert_eq!(shown.body.as_deref().map(String::as_str), Some(SAMPLE_BAD_BODY));
    assert_eq!(
        rows_of(&db, &una.request_id).await,
        vec![(
            "quarantine-show".into(),
            Some(format!("message_id:{SAMPLE_BAD_ID}")),
            Some(REASON.into()),
            Some("shown".into()),
            Some("attempt 0".into()),
        )]
    );
    // Shows and reveals draw on one budget: 2 + 1 + 2 = 5 units, then nothing more.
    let index = app.keyring.indexer.index(PiiField::Ip, "199.172.111.135");
    service.reveal(&staff("una"), &mask(PiiField::Ip, &index), Some(REASON)).await.expect("reveal");
    service.quarantine_show(&staff("una"), SAMPLE_BAD_ID, Some(0), Some(REASON)).await.expect("show");
    let error = service.find(&staff("una"), PiiField::Ip, "199.172.111.135", None).await.expect_err("spent");
    assert!(matches!(error, ServiceError::Budget { budget: 5, used: 5 }), "{error}");
    let una = staff("una");
    let error = service.quarantine_show(&una, SAMPLE_BAD_ID, None, Some(REASON)).await.expect_err("spent");
    assert!(matches!(error, ServiceError::Budget { .. }), "{error}");
    assert_eq!(error.code(), ErrorCode::BudgetExhausted);
    assert_eq!(rows_of(&db, &una.request_id).await[0].3.as_deref(), Some("refused"));

    // A show with one unit left is refused whole: a body is worth two.
    let service = vault_service(&db, &kms, 1).await;
    let error =
        service.quarantine_show(&staff("vic"), SAMPLE_BAD_ID, None, Some(REASON)).await.expect_err("2 > 1");
    assert!(matches!(error, ServiceError::Budget { budget: 1, used: 0 }), "{error}");

    // An unknown id is an answer too: it spends its units.
    let service = vault_service(&db, &kms, 2).await;
    let shown =
        service.quarantine_show(&staff("wes"), "no-such-id", None, Some(REASON)).await.expect("unknown");
    assert_eq!((shown.outcome, shown.body.is_none()), (Outcome::Unknown, true));
    let error =
        service.quarantine_show(&staff("wes"), SAMPLE_BAD_ID, None, Some(REASON)).await.expect_err("spent");
    assert!(matches!(error, ServiceError::Budget { .. }), "{error}");
}

#[tokio::test]
async fn show_is_refused_without_a_committed_audit_row() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    loaded_by_writer(&db, &kms).await;
    let service = vault_service(&db, &kms, 100).await;

    // The step after the audit fails (the quarantine cannot be read): the row is there.
    let owner = db.connect().await;
    owner
        .batch_execute("REVOKE SELECT ON login_data.login_quarantine FROM login_etl_vault_service")
        .await
        .expect("revoke");
    let xia = staff("xia");
    let error = service.quarantine_show(&xia, SAMPLE_BAD_ID, None, Some(REASON)).await.expect_err("fails");
    assert!(matches!(error, ServiceError::Db(_)), "{error}");
    assert_eq!(rows_of(&db, &xia.request_id).await[0].3.as_deref(), Some("failed"));
    owner
        .batch_execute("GRANT SELECT ON login_data.login_quarantine TO login_etl_vault_service")
        .await
        .expect("grant");

    // The audit cannot be written: nothing is read, nothing answered.
    db.fail_inserts_into("pii_audit_log.pii_audit_entries", "audit storage unavailable (simulated)").await;
    let xia = staff("xia");
    let error = service.quarantine_show(&xia, SAMPLE_BAD_ID, None, Some(REASON)).await.expect_err("no audit");
    assert!(matches!(error, ServiceError::AuditUnavailable(_)), "{error}");
    assert_eq!(error.code(), ErrorCode::AuditUnavailable);
    assert!(rows_of(&db, &xia.request_id).await.is_empty());
    // Nor is any other quarantine operation answered.
    let queues = TestQueues::new(3, 2).await;
    let service = quarantine_service(&db, &kms, 100, &queues).await;
    let results = [
        service.quarantine_list(&staff("xia"), &QuarantineFilter::default()).await.map(drop),
        service.quarantine_replay(&staff("xia"), &ids(&[SAMPLE_BAD_ID]), Some(REASON)).await.map(drop),
        service.quarantine_import_dlq(&staff("xia"), None).await.map(drop),
        service.quarantine_purge(&staff("xia")).await.map(drop),
    ];
    for result in results {
        assert!(matches!(result, Err(ServiceError::AuditUnavailable(_))), "{result:?}");
    }
    assert_eq!(depth(&queues, &queues.replay_queue_url).await, 0, "nothing replayed");
}

#[tokio::test]
async fn bad_ids_reasons_and_filters_are_refused_on_the_record_and_change_nothing() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    loaded_by_writer(&db, &kms).await;
    let queues = TestQueues::new(3, 2).await;
    let service = quarantine_service(&db, &kms, 2, &queues).await;
    let before = quarantine_state(&db).await;

    let long_id = "m".repeat(129);
    let huge = "x".repeat(100_000);
    let filter =
        |since: Option<&str>, code: Option<&str>, after: Option<&str>, limit: Option<u32>| QuarantineFilter {
            since: since.map(str::to_owned),
            reason_code: code.map(str::to_owned),
            after: after.map(str::to_owned),
            limit,
        };
    let lists = [
        filter(Some("yesterday"), None, None, None),
        filter(Some("2999-01-01T00:00:00Z"), None, None, None),
        filter(Some(&huge), None, None, None),
        filter(None, Some("nope"), None, None),
        filter(None, Some(&huge), None, None),
        filter(None, Some("INVALID_IP"), None, None),
        filter(None, None, Some("garbage"), None),
        filter(None, None, Some("q1.1.0.m\u{1b}[2J"), None),
        filter(None, None, None, Some(0)),
        filter(None, None, None, Some(1001)),
    ];
    let mut callers = Vec::new();
    for list in &lists {
        let caller = staff("yan");
        let error = service.quarantine_list(&caller, list).await.expect_err("refused");
        assert!(matches!(error, ServiceError::BadRequest(_)), "{list:?}: {error}");
        callers.push(caller);
    }
    let shows: [(&str, Option<i64>, Option<&str>); 9] = [
        ("", None, Some(REASON)),
        (&long_id, None, Some(REASON)),
        ("m\u{1b}[2J", None, Some(REASON)),
        ("m\u{0}", None, Some(REASON)),
        (SAMPLE_BAD_ID, Some(-1), Some(REASON)),
        (SAMPLE_BAD_ID, Some(1001), Some(REASON)),
        (SAMPLE_BAD_ID, None, None),
        (SAMPLE_BAD_ID, None, Some("short")),
        (SAMPLE_BAD_ID, None, Some("ticket\u{200B}4711")),
    ];
    for (id, attempt, reason) in shows {
        let caller = staff("yan");
        let error = service.quarantine_show(&caller, id, attempt, reason).await.expect_err("refused");
        assert!(matches!(error, ServiceError::BadRequest(_) | ServiceError::Reason(_)), "{id:?}: {error}");
        callers.push(caller);
    }
    let many: Vec<String> = (0..101).map(|i| format!("m-{i}")).collect();
    let replays = [
        (ReplaySelection::MessageIds(vec![]), Some(REASON)),
        (ReplaySelection::MessageIds(many), Some(REASON)),
        (ids(&[SAMPLE_BAD_ID, "bad\u{7}"]), Some(REASON)),
        (ids(&[&long_id]), Some(REASON)),
        (ReplaySelection::ReasonCode { code: "nope".into(), since: None, after: None }, Some(REASON)),
        (
            ReplaySelection::ReasonCode {
                code: "missing_field".into(),
                since: Some("bad".into()),
                after: None,
            },
            Some(REASON),
        ),
        (
            ReplaySelection::ReasonCode {
                code: "missing_field".into(),
                since: None,
                after: Some("q1".into()),
            },
            Some(REASON),
        ),
        (ids(&[SAMPLE_BAD_ID]), None),
        (ids(&[SAMPLE_BAD_ID]), Some("\u{202E}ticket 4711")),
    ];
    for (selection, reason) in &replays {
        let caller = staff("yan");
        let error = service.quarantine_replay(&caller, selection, *reason).await.expect_err("refused");
        assert!(
            matches!(error, ServiceError::BadRequest(_) | ServiceError::Reason(_)),
            "{selection:?}: {error}"
        );
        callers.push(caller);
    }
    let caller = staff("yan");
    let error = service.quarantine_import_dlq(&caller, Some(0)).await.expect_err("max");
    assert!(matches!(error, ServiceError::BadRequest(_)), "{error}");
    callers.push(caller);

    // Each on the record, refused, with nothing malformed written into the audit.
    for caller in &callers {
        let rows = rows_of(&db, &caller.request_id).await;
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0].3.as_deref(), Some("refused"), "{rows:?}");
        let target = rows[0].1.clone().unwrap_or_default();
        assert!(target.len() <= 256 && !target.chars().any(char::is_control), "{target:?}");
        assert!(!target.contains('\u{202E}') && !target.contains("2999"), "{target:?}");
    }
    // Nothing changed, nothing was sent, nothing spent: the 2-unit budget still shows one body.
    assert_eq!(quarantine_state(&db).await, before);
    assert_eq!(depth(&queues, &queues.replay_queue_url).await, 0);
    let shown =
        service.quarantine_show(&staff("yan"), SAMPLE_BAD_ID, None, Some(REASON)).await.expect("budget");
    assert_eq!(shown.outcome, Outcome::Shown);
}

#[tokio::test]
async fn a_replay_keeps_the_original_id_and_date_and_twice_adds_nothing() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let queues = TestQueues::new(3, 2).await;
    let function = replaying_function(&db, &kms, &queues.replay_queue_arn).await;
    let original_date = DateTime::from_timestamp_millis(FIRST_SENT_MS).expect("ms").date_naive();

    // A login quarantined by the function itself: it came from the replay queue without a
    // replay's attributes (a broken replay), so the function keyed it by its own id and
    // SentTimestamp, long ago. Once the attributes are fixed, it should be taken.
    let body = login_body("u-replayed", "203.0.113.80", "dev-80");
    let event = batch(vec![record("first-id", &body, &queues.replay_queue_arn, FIRST_SENT_MS)]);
    let (_, stats) = function
        .handle(event, Instant::now() + Duration::from_secs(10))
        .await
        .expect("the function quarantines");
    assert_eq!(stats.rejected_by_reason.get("invalid_replay_attributes"), Some(&1));
    assert_eq!(db.count("SELECT count(*) FROM login_data.user_logins").await, 0);

    let service = quarantine_service(&db, &kms, 100, &queues).await;
    let zoe = staff("zoe");
    let (rows, next) =
        service.quarantine_replay(&zoe, &ids(&["first-id"]), Some(REASON)).await.expect("replay");
    let sent = ReplayedRow {
        message_id: "first-id".into(),
        attempt: Some(0),
        outcome: ReplayOutcome::Replayed,
        replay_attempt: Some(1),
    };
    assert_eq!((rows, next), (vec![sent], None));
    let audit = rows_of(&db, &zoe.request_id).await;
    assert_eq!(audit[0].0, "quarantine-replay");
    assert_eq!(
        (audit[0].1.as_deref(), audit[0].3.as_deref()),
        (Some("message_id:first-id"), Some("replayed"))
    );
    assert_eq!(audit[0].4.as_deref(), Some("1 replayed; sent first-id#1"));

    // The function drains the replay queue (its REPLAY_QUEUE_ARN is that queue's).
    let summary = drain(&function, &queues, &queues.replay_queue_url).await;
    assert_eq!((summary.written, summary.quarantined), (1, 0), "{summary:?}");
    let logins: Vec<(String, NaiveDate, i64)> = db
        .connect()
        .await
        .query(
            "SELECT sqs_message_id, create_date, (extract(epoch FROM sent_at) * 1000)::int8 FROM login_data.user_logins",
            &[],
        )
        .await
        .expect("rows")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(logins, vec![("first-id".to_owned(), original_date, FIRST_SENT_MS)]);
    assert_eq!(
        db.count(
            "SELECT count(*) FROM login_data.login_quarantine WHERE replay_attempt = 1 AND replayed_at IS NOT NULL"
        )
        .await,
        1
    );

    // Again: nothing is sent, nothing is added.
    let (rows, _) =
        service.quarantine_replay(&staff("zoe"), &ids(&["first-id"]), Some(REASON)).await.expect("again");
    assert_eq!((rows[0].outcome, rows[0].replay_attempt), (ReplayOutcome::AlreadyReplayed, Some(1)));
    assert_eq!(depth(&queues, &queues.replay_queue_url).await, 0, "no second send");
    let summary = drain(&function, &queues, &queues.replay_queue_url).await;
    assert_eq!(summary.received, 0);
    assert_eq!(db.count("SELECT count(*) FROM login_data.user_logins").await, 1);
    // And by reason code: the same row, already replayed.
    let selection =
        ReplaySelection::ReasonCode { code: "invalid_replay_attributes".into(), since: None, after: None };
    let (rows, next) =
        service.quarantine_replay(&staff("zoe"), &selection, Some(REASON)).await.expect("by code");
    assert_eq!((rows.len(), rows[0].outcome, next), (1, ReplayOutcome::AlreadyReplayed, None));
    assert_eq!(depth(&queues, &queues.replay_queue_url).await, 0);
}

#[tokio::test]
async fn replay_attributes_sent_straight_to_the_login_queue_are_ignored() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let queues = TestQueues::new(3, 2).await;
    let function = replaying_function(&db, &kms, &queues.replay_queue_arn).await;
    let login_queue_arn = queues.replay_queue_arn.trim_end_matches("-replay").to_owned();

    // A login of the victim's, written long ago.
    let victim = batch(vec![record(
        "victim-id",
        &login_body("u-victim", "203.0.113.1", "d-1"),
        &login_queue_arn,
        FIRST_SENT_MS,
    )]);
    function.handle(victim, Instant::now() + Duration::from_secs(10)).await.expect("victim");

    // Anyone who may send to login-queue forges a replay: to suppress the victim's id and
    // to backdate a login of their own. Through the real queue and esm-local.
    let forged_at = 1_735_787_045_678_i64; // 2025-01-02
    let attribute = |value: &str, data_type: &str| {
        MessageAttributeValue::builder().data_type(data_type).string_value(value).build().expect("attribute")
    };
    let mut forged_ids = Vec::new();
    for original in ["victim-id", "never-sent"] {
        let sent = queues
            .sqs
            .send_message()
            .queue_url(&queues.queue_url)
            .message_body(login_body(&format!("u-forger-{original}"), "203.0.113.66", "d-66"))
            .message_attributes(ORIGINAL_MESSAGE_ID, attribute(original, "String"))
            .message_attributes(ORIGINAL_SENT_TIMESTAMP, attribute(&forged_at.to_string(), "Number"))
            .message_attributes(REPLAY_ATTEMPT, attribute("1", "Number"))
            .send()
            .await
            .expect("send");
        forged_ids.push(sent.message_id().expect("id").to_owned());
    }
    let summary = drain(&function, &queues, &queues.queue_url).await;
    assert_eq!((summary.written, summary.already_present), (2, 0), "{summary:?}");

    // Each forged message is a login of its own, under its own id and today's date.
    let today = Utc::now().date_naive();
    for id in &forged_ids {
        let date: NaiveDate = db
            .connect()
            .await
            .query_one("SELECT create_date FROM login_data.user_logins WHERE sqs_message_id = $1", &[id])
            .await
            .expect("the forged message's own row")
            .get(0);
        assert!(date >= today - chrono::TimeDelta::days(1), "{id} backdated to {date}");
    }
    assert_eq!(
        db.count("SELECT count(*) FROM login_data.user_logins WHERE sqs_message_id = 'never-sent'").await,
        0
    );
    assert_eq!(
        db.count("SELECT count(*) FROM login_data.user_logins WHERE create_date = '2025-01-02'").await,
        0
    );
    assert_eq!(db.count("SELECT count(*) FROM login_data.user_logins").await, 3);
}

#[tokio::test]
async fn forget_and_purge_erase_quarantined_bodies_which_are_then_never_shown_or_replayed() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app = cold_start(&db, &kms).await;
    let queues = TestQueues::new(3, 2).await;
    let service = quarantine_service(&db, &kms, 100, &queues).await;
    // Rejected messages (no app_version, or a bad one) whose ip and device id can be read.
    let bad =
        |ip: &str, device: &str| format!(r#"{{"user_id": "u", "ip": "{ip}", "device_id": "{device}"}}"#);
    let rejected = event(&[
        ("q-1".into(), bad("198.51.100.7", "dev-q1")),
        ("q-2".into(), bad("198.51.100.7", "dev-q2")),
        ("q-3".into(), bad("198.51.100.8", "dev-q3")),
        ("q-4".into(), bad("198.51.100.9", "dev-q4")),
    ]);
    let (_, stats) = handler::handle_with_stats(&app, rejected).await.expect("batch");
    assert_eq!(stats.quarantined, 4);

    // Forget the ip, spelled otherwise: both bodies holding it are erased with the value.
    let amy = staff("amy");
    let outcome = service
        .forget(
            &amy,
            PiiField::Ip,
            &ForgetTarget::Plaintext(Plaintext::new("::ffff:198.51.100.7")),
            Some(REASON),
        )
        .await
        .expect("forget");
    assert_eq!(outcome, Outcome::Forgotten, "the same answer whether the value was vaulted or not");
    let row = &rows_of(&db, &amy.request_id).await[0];
    assert_eq!(
        (row.3.as_deref(), row.4.as_deref()),
        (Some("forgotten"), None),
        "no count of bodies: no oracle"
    );
    // Forget a device id by its mask: its body too.
    let device_mask = app.keyring.indexer.index(PiiField::DeviceId, "dev-q4");
    service
        .forget(
            &staff("amy"),
            PiiField::DeviceId,
            &ForgetTarget::Mask(device_mask.as_str().into()),
            Some(REASON),
        )
        .await
        .expect("forget by mask");
    let erased = |by: &str| {
        format!(
            "SELECT string_agg(message_id, ',' ORDER BY message_id) FROM login_data.login_quarantine
              WHERE erased_by = '{by}' AND erased_at IS NOT NULL AND ciphertext IS NULL AND nonce IS NULL"
        )
    };
    let erased_ids = |sql: String| {
        let db = &db;
        async move { db.connect().await.query_one(&sql, &[]).await.expect("erased").get::<_, Option<String>>(0) }
    };
    assert_eq!(erased_ids(erased("forget")).await.as_deref(), Some("q-1,q-2,q-4"));

    // q-3 was quarantined long ago: past the 14 days, the purge takes it.
    db.connect()
        .await
        .batch_execute("UPDATE login_data.login_quarantine SET quarantined_at = now() - interval '15 days' WHERE message_id = 'q-3'")
        .await
        .expect("age q-3");
    let purged = service.quarantine_purge(&staff("amy")).await.expect("purge");
    assert_eq!((purged.purged, purged.retention_days, purged.more), (1, 14, false));
    assert_eq!(erased_ids(erased("purge")).await.as_deref(), Some("q-3"));
    assert_eq!(service.quarantine_purge(&staff("amy")).await.expect("again").purged, 0);

    // Neither a forgotten nor a purged body is ever shown or replayed.
    for id in ["q-1", "q-2", "q-3", "q-4"] {
        let shown = service.quarantine_show(&staff("amy"), id, None, Some(REASON)).await.expect("show");
        assert_eq!((shown.outcome, shown.body.is_none()), (Outcome::Erased, true), "{id}");
    }
    let (rows, _) = service
        .quarantine_replay(&staff("amy"), &ids(&["q-1", "q-2", "q-3", "q-4"]), Some(REASON))
        .await
        .expect("replay");
    assert!(rows.iter().all(|r| r.outcome == ReplayOutcome::Erased), "{rows:?}");
    let selection = ReplaySelection::ReasonCode { code: "missing_field".into(), since: None, after: None };
    let (rows, _) =
        service.quarantine_replay(&staff("amy"), &selection, Some(REASON)).await.expect("by code");
    assert_eq!(rows.len(), 4);
    assert!(rows.iter().all(|r| r.outcome == ReplayOutcome::Erased), "{rows:?}");
    assert_eq!(depth(&queues, &queues.replay_queue_url).await, 0, "nothing sent");
    assert_eq!(
        db.count("SELECT count(*) FROM login_data.login_quarantine WHERE replayed_at IS NOT NULL").await,
        0
    );
    // The list says what became of each.
    let (listed, _) =
        service.quarantine_list(&staff("amy"), &QuarantineFilter::default()).await.expect("list");
    let by: Vec<Option<&str>> = listed.iter().map(|r| r.erased_by.as_deref()).collect();
    assert_eq!(by.iter().filter(|b| **b == Some("forget")).count(), 3);
    assert_eq!(by.iter().filter(|b| **b == Some("purge")).count(), 1);
}

#[tokio::test]
async fn import_dlq_moves_dead_letters_into_the_quarantine_sealed_and_leaves_no_plaintext_in_a_queue() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app = cold_start(&db, &kms).await;
    let queues = TestQueues::new(3, 2).await;
    let service = quarantine_service(&db, &kms, 100, &queues).await;

    // What an outage or a crash leaves in the DLQ: a good login, a bad one, no JSON at all.
    let good = login_body("u-dlq", "192.0.2.71", "dev-dlq-71");
    let bad_ip = r#"{"user_id": "u-dlq-2", "app_version": "1.0", "device_type": "ios", "ip": "300.1.1.1", "locale": null, "device_id": "dev-dlq-72"}"#;
    let not_json = "not json, but a device id: dev-dlq-73";
    let plaintexts = ["192.0.2.71", "dev-dlq-71", "300.1.1.1", "dev-dlq-72", "dev-dlq-73"];
    let mut sent = Vec::new();
    for body in [good.as_str(), bad_ip, not_json] {
        let output = queues
            .sqs
            .send_message()
            .queue_url(&queues.dlq_url)
            .message_body(body)
            .send()
            .await
            .expect("send");
        sent.push(output.message_id().expect("id").to_owned());
    }
    // One of them was imported before (an import that committed but could not delete): kept as it is.
    let kept = app.keyring.data_key.seal_body(&sent[2], 0, "imported earlier").expect("seal");
    db.connect()
        .await
        .execute(
            "INSERT INTO login_data.login_quarantine (message_id, attempt, source, reason_code, key_version, nonce, ciphertext)
             VALUES ($1, 0, 'dead-letter', 'not_json', $2, $3, $4)",
            &[&sent[2], &kept.key_version, &kept.nonce.as_slice(), &kept.ciphertext],
        )
        .await
        .expect("earlier import");

    // Bounded by --max: two now, the rest on the next call.
    let first = service.quarantine_import_dlq(&staff("ben"), Some(2)).await.expect("import");
    assert_eq!((first.imported + first.already_quarantined, first.more), (2, true), "{first:?}");
    let ben = staff("ben");
    let second = service.quarantine_import_dlq(&ben, None).await.expect("import the rest");
    assert!(!second.more, "{second:?}");
    assert_eq!(first.imported + second.imported, 2);
    assert_eq!(first.already_quarantined + second.already_quarantined, 1);
    assert_eq!(first.left_on_queue + second.left_on_queue, 0);
    let audit = rows_of(&db, &ben.request_id).await;
    assert_eq!((audit[0].0.as_str(), audit[0].3.as_deref()), ("quarantine-import-dlq", Some("imported")));
    assert!(audit[0].4.as_deref().unwrap_or_default().contains("imported"), "{audit:?}");

    // Every queue is empty: no plaintext of the batch is left in SQS.
    for url in [&queues.dlq_url, &queues.queue_url, &queues.replay_queue_url] {
        assert_eq!(depth(&queues, url).await, 0, "{url}");
    }
    // Each row sealed: keyed by its SQS id, dated, masked where readable, no plaintext.
    let rows = db
        .connect()
        .await
        .query(
            "SELECT message_id, attempt, source, reason_code, sent_at IS NOT NULL
               FROM login_data.login_quarantine ORDER BY message_id",
            &[],
        )
        .await
        .expect("rows");
    assert_eq!(rows.len(), 3);
    let row = |id: &str| rows.iter().find(|r| r.get::<_, &str>(0) == id).expect("row");
    let (good_row, bad_row) = (row(&sent[0]), row(&sent[1]));
    assert_eq!(
        (
            good_row.get::<_, i32>(1),
            good_row.get::<_, &str>(2),
            good_row.get::<_, &str>(3),
            good_row.get::<_, bool>(4)
        ),
        (0, "dead-letter", "dead_lettered", true)
    );
    let mask = |field: PiiField, value: &str| {
        (field.as_str().to_owned(), app.keyring.indexer.index(field, value).as_str().to_owned())
    };
    assert_eq!(
        quarantine_masks(&db, &sent[0]).await,
        vec![mask(PiiField::DeviceId, "dev-dlq-71"), mask(PiiField::Ip, "192.0.2.71")]
    );
    assert_eq!(bad_row.get::<_, &str>(3), "invalid_ip");
    assert_eq!(quarantine_masks(&db, &sent[1]).await, vec![mask(PiiField::DeviceId, "dev-dlq-72")]);
    for plaintext in plaintexts {
        let found = db
            .connect()
            .await
            .query_one(
                "SELECT count(*) FROM login_data.login_quarantine WHERE position(convert_to($1, 'UTF8') IN ciphertext) > 0",
                &[&plaintext],
            )
            .await
            .expect("scan")
            .get::<_, i64>(0);
        assert_eq!(found, 0, "a plaintext value in a sealed body");
    }
    // It opens to what was sent; the earlier import is untouched.
    let shown = service.quarantine_show(&staff("ben"), &sent[0], None, Some(REASON)).await.expect("show");
    assert_eq!(shown.body.as_deref().map(String::as_str), Some(good.as_str()));
    let shown = service.quarantine_show(&staff("ben"), &sent[2], None, Some(REASON)).await.expect("show");
    assert_eq!(shown.body.as_deref().map(String::as_str), Some("imported earlier"));
    // Nothing left: an import finds nothing.
    let third = service.quarantine_import_dlq(&staff("ben"), None).await.expect("empty");
    assert_eq!((third.imported, third.already_quarantined, third.more), (0, 0, false));
}

#[tokio::test]
async fn reencrypt_reseals_quarantined_bodies_which_still_open() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    loaded_by_writer(&db, &kms).await;
    let service = vault_service(&db, &kms, 100).await;
    let admin = key_admin();

    assert_eq!(service.rotate_key(&admin).await.expect("rotate"), 2);
    let done = service.reencrypt(&admin, 7).await.expect("reencrypt");
    assert_eq!((done.vault, done.quarantine), (198, 1));
    assert_eq!(db.count("SELECT count(*) FROM login_data.login_quarantine WHERE key_version = 2").await, 1);
    let shown =
        service.quarantine_show(&staff("cal"), SAMPLE_BAD_ID, None, Some(REASON)).await.expect("show");
    assert_eq!(shown.body.as_deref().map(String::as_str), Some(SAMPLE_BAD_BODY));
    assert_eq!(service.reencrypt(&admin, 7).await.expect("resumable").quarantine, 0);
}

#[tokio::test]
async fn list_pages_through_every_row_in_order_without_bodies_or_masks() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app = cold_start(&db, &kms).await;
    let service = vault_service(&db, &kms, 100).await;
    let records: Vec<(String, String)> = (0..25)
        .map(|i| {
            let body =
                if i % 5 == 0 { "not json".to_owned() } else { format!(r#"{{"ip": "198.51.100.{i}"}}"#) };
            (format!("list-{i:02}"), body)
        })
        .collect();
    handler::handle_with_stats(&app, event(&records)).await.expect("batch");

    let (mut rows, mut after, mut pages) = (Vec::new(), None, 0);
    loop {
        let filter = QuarantineFilter { limit: Some(10), after: after.take(), ..QuarantineFilter::default() };
        let (page, next) = service.quarantine_list(&staff("dee"), &filter).await.expect("page");
        pages += 1;
        assert!(page.len() <= 10);
        // What a page carries: no body, no mask, no value.
        let json = serde_json::to_string(&page).expect("json");
        assert!(
            !json.contains("198.51.100") && !json.contains("masked") && !json.contains("cipher"),
            "{json}"
        );
        rows.extend(page);
        match next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!((rows.len(), pages), (25, 3));
    let keys: Vec<_> = rows.iter().map(|r| (r.quarantined_at, r.message_id.clone(), r.attempt)).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(keys, sorted, "in order, each row once");
    let not_json = QuarantineFilter { reason_code: Some("not_json".into()), ..QuarantineFilter::default() };
    let (page, next) = service.quarantine_list(&staff("dee"), &not_json).await.expect("filtered");
    assert_eq!((page.len(), next), (5, None));
    let since = Utc::now() - chrono::TimeDelta::hours(1);
    let recent = QuarantineFilter { since: Some(since.to_rfc3339()), ..QuarantineFilter::default() };
    assert_eq!(service.quarantine_list(&staff("dee"), &recent).await.expect("since").0.len(), 25);
    assert_eq!(
        db.count("SELECT count(*) FROM pii_audit WHERE action = 'quarantine-list' AND outcome = 'listed'")
            .await,
        5
    );
}

#[tokio::test]
async fn only_staff_run_the_quarantine_and_unset_queues_are_refused_with_a_code() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    loaded_by_writer(&db, &kms).await;
    let queues = TestQueues::new(3, 2).await;
    let service = quarantine_service(&db, &kms, 100, &queues).await;

    async fn all(service: &VaultService, caller: &RequestContext, n: usize) -> Result<(), ServiceError> {
        match n {
            0 => service.quarantine_list(caller, &QuarantineFilter::default()).await.map(drop),
            1 => service.quarantine_show(caller, SAMPLE_BAD_ID, None, Some(REASON)).await.map(drop),
            2 => service.quarantine_replay(caller, &ids(&[SAMPLE_BAD_ID]), Some(REASON)).await.map(drop),
            3 => service.quarantine_import_dlq(caller, None).await.map(drop),
            _ => service.quarantine_purge(caller).await.map(drop),
        }
    }
    // The key administrator acts on keys, never on data; a caller in no role on nothing.
    for n in 0..5 {
        for caller in [key_admin(), nobody()] {
            let error = all(&service, &caller, n).await.expect_err("not allowed");
            assert!(matches!(error, ServiceError::NotAllowed { .. }), "{n}: {error}");
            let rows = rows_of(&db, &caller.request_id).await;
            assert_eq!(rows.len(), 1);
            assert!(
                rows[0].0.starts_with("quarantine-") && rows[0].3.as_deref() == Some("refused"),
                "{rows:?}"
            );
        }
    }
    assert!(quarantine_state(&db).await[0].3, "not replayed");
    assert_eq!(depth(&queues, &queues.replay_queue_url).await, 0);

    // A service without queues refuses replay and import with a code of their own.
    let bare = vault_service(&db, &kms, 100).await;
    for n in [2, 3] {
        let caller = staff("eve");
        let error = all(&bare, &caller, n).await.expect_err("not configured");
        assert_eq!(error.code(), ErrorCode::NotConfigured, "{error}");
        let rows = rows_of(&db, &caller.request_id).await;
        assert_eq!((rows[0].3.as_deref(), rows[0].4.as_deref()), (Some("failed"), Some("not_configured")));
    }
    assert!(quarantine_state(&db).await[0].3, "not replayed");
}
