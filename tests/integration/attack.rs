//! Red-team attacks on the ingest side of the failure path (issue 17), as a producer, as
//! each database role, and as someone who can rewrite rows. Each test is one attack against
//! the real stack and fails if the attack works. Attacks that still work are kept and
//! marked `#[ignore = "…what breaks…"]`; run them with `cargo test --test integration
//! attack -- --include-ignored`.
//!
//! (The attacks that need real SQS receipts, network faults and esm-local are in
//! `crates/local-tools/tests/attack.rs`.)

use std::collections::HashSet;

use aws_lambda_events::sqs::SqsEvent;
use chrono::{DateTime, Utc};
use login_etl::handler;
use login_etl_core::crypto::{PiiField, SealError, SealedValue};
use login_etl_core::replay::{ORIGINAL_MESSAGE_ID, ORIGINAL_SENT_TIMESTAMP, REPLAY_ATTEMPT};
use serde_json::{Value, json};
use testkit::*;
use tokio_postgres::error::SqlState;

const REPLAY_QUEUE: &str = "arn:aws:sqs:us-east-1:000000000000:login-replay-queue";
const LOGIN_QUEUE: &str = "arn:aws:sqs:us-east-1:000000000000:login-queue";
/// 2025-01-02T03:04:05.678Z: the date a forger would like to backdate to.
const BACKDATE_MS: i64 = 1_735_787_045_678;

/// A record as the event source mapping delivers it from `queue`, sent at `sent_ms`, with
/// the given message attributes (as String attributes).
fn record(id: &str, body: &str, queue: &str, sent_ms: i64, attributes: &[(&str, String)]) -> Value {
    let attributes: serde_json::Map<String, Value> = attributes
        .iter()
        .map(|(name, value)| {
            (
                name.to_string(),
                json!({"stringValue": value, "dataType": "String", "stringListValues": [], "binaryListValues": []}),
            )
        })
        .collect();
    json!({
        "messageId": id, "receiptHandle": format!("handle-{id}"), "body": body,
        "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": sent_ms.to_string()},
        "messageAttributes": attributes, "eventSource": "aws:sqs", "eventSourceARN": queue,
        "awsRegion": "us-east-1",
    })
}

fn forged_origin(id: &str, attempt: u32) -> Vec<(&'static str, String)> {
    vec![
        (ORIGINAL_MESSAGE_ID, id.to_owned()),
        (ORIGINAL_SENT_TIMESTAMP, BACKDATE_MS.to_string()),
        (REPLAY_ATTEMPT, attempt.to_string()),
    ]
}

fn batch(records: Vec<Value>) -> SqsEvent {
    serde_json::from_value(json!({ "Records": records })).expect("event")
}

/// One quarantine row as the vault service would read it.
struct Quarantined {
    message_id: String,
    attempt: i32,
    source: String,
    sent_ms: Option<i64>,
    sealed: SealedValue,
}

async fn quarantine(db: &TestDb) -> Vec<Quarantined> {
    db.connect()
        .await
        .query(
            "SELECT message_id, attempt, source, (extract(epoch FROM sent_at) * 1000)::int8,
                    key_version, nonce, ciphertext
               FROM login_data.login_quarantine ORDER BY message_id COLLATE \"C\", attempt",
            &[],
        )
        .await
        .expect("quarantine")
        .iter()
        .map(|r| Quarantined {
            message_id: r.get(0),
            attempt: r.get(1),
            source: r.get(2),
            sent_ms: r.get(3),
            sealed: SealedValue::from_stored(r.get(4), r.get::<_, &[u8]>(5), r.get(6)).expect("sealed"),
        })
        .collect()
}

async fn logins(db: &TestDb) -> Vec<(String, i64)> {
    db.connect()
        .await
        .query(
            "SELECT sqs_message_id, (extract(epoch FROM sent_at) * 1000)::int8 FROM login_data.user_logins
              ORDER BY sqs_message_id COLLATE \"C\"",
            &[],
        )
        .await
        .expect("logins")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

async fn refused(config: &tokio_postgres::Config, sql: &str) {
    let error = connect(config).await.batch_execute(sql).await.expect_err(sql);
    assert_eq!(error.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{sql}: {error}");
}

// ---------------------------------------------------------------------------------------
// A producer: anything on login-queue, in the body or the message attributes.
// ---------------------------------------------------------------------------------------

/// Forged replay attributes, in one batch with the messages they name: on a good message
/// (to suppress or backdate the victim's row), and on a bad one (to take the quarantine key
/// `(victim, attempt)` that a real replay of the victim would need, so that its rejection
/// would be dropped by `ON CONFLICT DO NOTHING`). Lock order puts each forger first.
#[tokio::test]
async fn attack_producer_forged_replay_attributes_in_the_victims_batch_take_nothing_of_the_victim() {
    let db = TestDb::new().await;
    let mut app = cold_start(&db, &new_kms().await).await;
    app.replay_queue = Some(REPLAY_QUEUE.to_owned());
    let sent = FIRST_SENT_MS;
    let forged = batch(vec![
        record(
            "A-forger-good",
            &login_body("u-f", "203.0.113.201", "d-f"),
            LOGIN_QUEUE,
            sent + 1,
            &forged_origin("B-victim-good", 1),
        ),
        record("B-victim-good", &login_body("u-v", "203.0.113.202", "d-v"), LOGIN_QUEUE, sent + 2, &[]),
        record(
            "C-forger-bad",
            "{\"ip\": \"203.0.113.203\"",
            LOGIN_QUEUE,
            sent + 3,
            &forged_origin("D-victim-bad", 1),
        ),
        record("D-victim-bad", "{\"ip\": \"203.0.113.204\"", LOGIN_QUEUE, sent + 4, &[]),
    ]);
    let (response, stats) = handler::handle_with_stats(&app, forged).await.expect("batch");
    assert!(response.batch_item_failures.is_empty());
    assert_eq!((stats.written, stats.replays, stats.replay_attributes_ignored), (2, 0, 2));
    assert_eq!(
        logins(&db).await,
        vec![("A-forger-good".to_owned(), sent + 1), ("B-victim-good".to_owned(), sent + 2)],
        "each under its own id and its own SentTimestamp"
    );
    let rows = quarantine(&db).await;
    let keys: Vec<(&str, i32, &str, Option<i64>)> =
        rows.iter().map(|q| (q.message_id.as_str(), q.attempt, q.source.as_str(), q.sent_ms)).collect();
    assert_eq!(
        keys,
        vec![("C-forger-bad", 0, "queue", Some(sent + 3)), ("D-victim-bad", 0, "queue", Some(sent + 4))]
    );
    // Each body opens under its own key, and only there.
    let key = &app.keyring.data_key;
    assert_eq!(
        key.open_body("C-forger-bad", 0, &rows[0].sealed).expect("own").as_str(),
        "{\"ip\": \"203.0.113.203\""
    );
    assert_eq!(key.open_body("D-victim-bad", 1, &rows[0].sealed).err(), Some(SealError::Unauthentic));

    // A real replay of the victim, rejected again, still gets its own row (victim, 1).
    let replay = batch(vec![record(
        "sqs-r1",
        "still not json",
        REPLAY_QUEUE,
        sent + 9,
        &forged_origin("D-victim-bad", 1),
    )]);
    let (_, stats) = handler::handle_with_stats(&app, replay).await.expect("replay");
    assert_eq!((stats.replays, stats.quarantined), (1, 1));
    assert!(quarantine(&db).await.iter().any(|q| q.message_id == "D-victim-bad" && q.attempt == 1));
}

enum Outcome {
    Written,
    /// Rejected (and quarantined) for any reason.
    Rejected,
}

/// Bodies hostile.rs does not try: NUL and other odd code points where the database might
/// refuse what Rust accepted (which would fail the whole batch, again and again, and ride
/// out 44 h with its good messages), huge key counts, huge numbers, a BOM.
fn odd_bodies() -> Vec<(&'static str, String, Outcome)> {
    use Outcome::*;
    let valid = |user: &str, ip: &str, device: &str| login_body(user, ip, device);
    let open = |user: &str| valid(user, "198.51.100.9", "dev-odd").trim_end_matches('}').to_owned();
    let many_keys: String = (0..12_000).map(|i| format!(", \"k{i}\": {i}")).collect();
    vec![
        ("nul-escape-in-unknown-field", format!("{}, \"x\": \"a\\u0000b\"}}", open("u1")), Written),
        ("nul-escape-in-unknown-key", format!("{}, \"ip\\u0000\": \"x\"}}", open("u2")), Written),
        ("raw-nul-after-object", format!("{}\u{0}", valid("u3", "198.51.100.9", "d")), Rejected),
        ("raw-nul-in-string", valid("u\u{0}4", "198.51.100.9", "d").replace("\\u0000", "\u{0}"), Rejected),
        ("noncharacters-user-id", valid("\u{FFFE}\u{FFFF}\u{FDD0}", "198.51.100.9", "d"), Written),
        ("max-code-point-device-id", valid("u5", "198.51.100.9", "\u{10FFFF}\u{10FFFE}"), Written),
        ("private-use-user-id", valid("\u{E000}\u{F8FF}\u{F0000}\u{10FFFD}", "198.51.100.9", "d"), Written),
        ("unassigned-code-points", valid("\u{0378}\u{0379}\u{2FFFF}", "198.51.100.9", "d"), Written),
        (
            "escaped-surrogate-pair",
            valid("u6", "198.51.100.9", "d").replace("\"d\"", "\"\\ud83d\\ude00\""),
            Written,
        ),
        ("line-separators-user-id", valid("a\u{2028}b\u{2029}c", "198.51.100.9", "d"), Written),
        (
            "combining-marks-at-limit",
            valid(&format!("e{}", "\u{0301}".repeat(127)), "198.51.100.9", "d"),
            Written,
        ),
        ("emoji-device-id-1024-bytes", valid("u7", "198.51.100.9", &"🧬".repeat(256)), Written),
        ("nbsp-around-ip", valid("u8", "\u{A0}198.51.100.9\u{3000}", "d"), Written),
        ("bom-before-object", format!("\u{FEFF}{}", valid("u9", "198.51.100.9", "d")), Rejected),
        ("twelve-thousand-keys", format!("{}{many_keys}}}", open("u10")), Written),
        ("huge-number-in-unknown-field", format!("{}, \"x\": 1e999999}}", open("u11")), Written),
        ("huge-number-in-locale", valid("u12", "198.51.100.9", "d").replace("\"DE\"", "1e999999"), Rejected),
        (
            "deep-nesting-in-locale",
            valid("u13", "198.51.100.9", "d")
                .replace("\"DE\"", &format!("{}{}", "[".repeat(50_000), "]".repeat(50_000))),
            Rejected,
        ),
        (
            "ip-with-escaped-nul",
            valid("u14", "198.51.100.9\\u0000", "d").replace("\\\\u0000", "\\u0000"),
            Rejected,
        ),
        ("app-version-arabic-digits", valid("u15", "198.51.100.9", "d").replace("1.2.3", "١.٢.٣"), Rejected),
        (
            "app-version-fullwidth-digits",
            valid("u16", "198.51.100.9", "d").replace("1.2.3", "１.２"),
            Rejected,
        ),
        ("app-version-plus-sign", valid("u17", "198.51.100.9", "d").replace("1.2.3", "+1.2"), Rejected),
        (
            "body-256kib-of-escapes",
            format!("{}, \"x\": \"{}\"}}", open("u18"), "\\u0000".repeat(43_000)),
            Written,
        ),
        ("body-256kib-not-json", "\u{1F9EC}".repeat(65_000), Rejected),
    ]
}

#[tokio::test]
async fn attack_producer_odd_unicode_nul_and_huge_bodies_never_fail_the_batch_or_cost_a_good_message() {
    let db = TestDb::new().await;
    let app = cold_start(&db, &new_kms().await).await;
    let cases = odd_bodies();
    let mut records = Vec::new();
    for (n, (id, body, _)) in cases.iter().enumerate() {
        let good = format!("good-{n:03}");
        records.push((good.clone(), login_body(&good, &format!("10.8.0.{}", n + 1), &good)));
        records.push((id.to_string(), body.clone()));
    }
    let (response, stats) =
        handler::handle_with_stats(&app, event(&records)).await.expect("the batch as a whole succeeds");
    assert!(response.batch_item_failures.is_empty());
    let rejected: HashSet<&str> = stats.rejections.iter().map(|r| r.message_id.as_str()).collect();
    let written: HashSet<String> = logins(&db).await.into_iter().map(|(id, _)| id).collect();
    for (id, _, outcome) in &cases {
        match outcome {
            Outcome::Written => {
                assert!(written.contains(*id), "{id} must be written ({:?})", stats.rejections)
            }
            Outcome::Rejected => assert!(rejected.contains(id), "{id} must be rejected"),
        }
    }
    assert_eq!(written.iter().filter(|id| id.starts_with("good-")).count(), cases.len());
    assert_eq!(quarantined_ids(&db).await.len(), rejected.len());
    // What Rust accepted, Postgres stored as sent.
    let stored: String = db
        .connect()
        .await
        .query_one(
            "SELECT user_id FROM login_data.user_logins WHERE sqs_message_id = 'noncharacters-user-id'",
            &[],
        )
        .await
        .expect("row")
        .get(0);
    assert_eq!(stored, "\u{FFFE}\u{FFFF}\u{FDD0}");
}

/// PII only in the sealed body: reason, field, dates, counts and the masks of every
/// quarantine row, for bodies rejected for every reason a body can have, hold no ip or
/// device id in any spelling the body used.
#[tokio::test]
async fn attack_producer_no_quarantine_column_outside_the_sealed_body_holds_plaintext() {
    let db = TestDb::new().await;
    let app = cold_start(&db, &new_kms().await).await;
    let (ip, device) = ("203.0.113.77", "device-secret-77");
    let full = login_body("u", ip, device);
    let open = full.trim_end_matches('}');
    let bodies = [
        format!("{open} x"),
        format!("{open}, \"ip\": \"{ip}\"}}"),
        full.replace("\"1.2.3\"", "\"v9\""),
        full.replace("\"1.2.3\"", "\"1.1000\""),
        full.replace("\"DE\"", "7"),
        full.replace("\"u\"", "null"),
        full.replace("\"u\"", "\"\""),
        full.replace(device, &format!("{device}\\u0007")),
        full.replace(device, &format!("{device}\u{200B}")),
        full.replace(device, &device.repeat(20)),
        full.replace(ip, &format!("{ip}.1")),
        full.replace(ip, &format!("{ip}/24")),
        format!("[{full}]"),
        format!("\"{ip} {device}\""),
        full[..full.len() / 2].to_owned(),
    ];
    let records: Vec<(String, String)> =
        bodies.iter().enumerate().map(|(i, body)| (format!("bad-{i:02}"), body.clone())).collect();
    let mut event = event(&records);
    // A record with a broken SentTimestamp: the reason, not the body, is what it lacks.
    event.records[0].attributes.insert("SentTimestamp".into(), ip.to_owned());
    let (_, stats) = handler::handle_with_stats(&app, event).await.expect("batch");
    assert_eq!(stats.quarantined as usize, bodies.len(), "{:?}", stats.rejections);
    let columns = db
        .connect()
        .await
        .query(
            "SELECT concat_ws('|', message_id, attempt, source, reason_code, field, sent_at, receive_count,
                              quarantined_at, key_version, erased_at, erased_by,
                              replayed_at, replay_attempt, encode(nonce, 'escape'))
               FROM login_data.login_quarantine",
            &[],
        )
        .await
        .expect("columns");
    let hex = |text: &str| text.bytes().map(|b| format!("{b:02x}")).collect::<String>();
    let (ip_hex, device_hex) = (hex(ip), hex(device));
    let secrets = [ip, device, "203.0.113", "secret-77", &ip_hex, &device_hex];
    for row in &columns {
        let text: String = row.get(0);
        for secret in secrets {
            assert!(!text.contains(secret), "a quarantine column holds {secret:?}: {text}");
        }
    }
    // And no ciphertext is the body in clear.
    for q in quarantine(&db).await {
        let raw = String::from_utf8_lossy(&q.sealed.ciphertext).into_owned();
        assert!(!raw.contains(ip) && !raw.contains(device), "{}", q.message_id);
    }
}

/// A body with the ip given twice is rejected (`duplicate_field`); both ips are in its
/// sealed body, so both must lead to it (`login_quarantine_masks`), or `forget` of the one
/// not masked could not reach this copy. (It once kept the last value only.)
#[tokio::test]
async fn attack_producer_a_duplicate_key_hides_a_value_in_the_quarantine_from_forget() {
    let db = TestDb::new().await;
    let app = cold_start(&db, &new_kms().await).await;
    let (victim_ip, decoy_ip) = ("203.0.113.91", "192.0.2.1");
    let (victim_device, decoy_device) = ("victim-device-91", "decoy");
    let body = format!(
        "{{\"user_id\": \"u\", \"app_version\": \"1\", \"device_type\": \"ios\", \"locale\": null,
           \"ip\": \"{victim_ip}\", \"device_id\": \"{victim_device}\",
           \"ip\": \"{decoy_ip}\", \"device_id\": \"{decoy_device}\"}}"
    );
    let (_, stats) =
        handler::handle_with_stats(&app, event(&[("dup".into(), body.clone())])).await.expect("batch");
    assert_eq!(stats.rejected_by_reason.get("duplicate_field"), Some(&1));
    let row = &quarantine(&db).await[0];
    assert_eq!(app.keyring.data_key.open_body("dup", 0, &row.sealed).expect("open").as_str(), body);
    let masks = quarantine_masks(&db, "dup").await;
    let mask = |field: PiiField, value: &str| {
        (field.as_str().to_owned(), app.keyring.indexer.index(field, value).as_str().to_owned())
    };
    for (field, value) in [
        (PiiField::Ip, victim_ip),
        (PiiField::Ip, decoy_ip),
        (PiiField::DeviceId, victim_device),
        (PiiField::DeviceId, decoy_device),
    ] {
        assert!(
            masks.contains(&mask(field, value)),
            "{field} value {value:?} must lead to the body that holds it"
        );
    }
}

/// A login that is valid JSON but for one byte after it (a producer's stray brace), and one
/// cut short after its ip: the values there are readable, so the quarantine rows keep
/// their masks and `forget` reaches them. (It once kept none.)
#[tokio::test]
async fn attack_producer_a_trailing_byte_keeps_the_pii_of_a_quarantined_body_out_of_forgets_reach() {
    let db = TestDb::new().await;
    let app = cold_start(&db, &new_kms().await).await;
    let body = format!("{} ", login_body("u", "203.0.113.92", "victim-device-92")).replace("} ", "}\n}");
    let (_, stats) =
        handler::handle_with_stats(&app, event(&[("garbage".into(), body)])).await.expect("batch");
    assert_eq!(stats.rejected_by_reason.get("not_json"), Some(&1));
    let ip_mask = app.keyring.indexer.index(PiiField::Ip, "203.0.113.92");
    let device_mask = app.keyring.indexer.index(PiiField::DeviceId, "victim-device-92");
    assert_eq!(
        quarantine_masks(&db, "garbage").await,
        vec![
            ("device_id".to_owned(), device_mask.as_str().to_owned()),
            ("ip".to_owned(), ip_mask.as_str().to_owned())
        ]
    );
    let cut = "{\"user_id\": \"u\", \"ip\": \"203.0.113.93\", \"device_id\": \"victim-dev";
    handler::handle_with_stats(&app, event(&[("cut".into(), cut.into())])).await.expect("batch");
    let ip_mask = app.keyring.indexer.index(PiiField::Ip, "203.0.113.93");
    assert_eq!(quarantine_masks(&db, "cut").await, vec![("ip".to_owned(), ip_mask.as_str().to_owned())]);
}

/// SQS's `ApproximateReceiveCount` is never negative, but an event made by hand (a console
/// test event, `make invoke`, `sam local invoke`) can say "-1": the record is rejected and
/// its quarantine row carries `receive_count = -1`, which the table's CHECK refuses. The
/// whole batch then fails (a permanent error, not retried), every time it comes back.
#[tokio::test]
async fn attack_producer_a_negative_receive_count_on_a_bad_record_fails_the_whole_batch() {
    let db = TestDb::new().await;
    let app = cold_start(&db, &new_kms().await).await;
    let mut event =
        event(&[("good".into(), login_body("u", "198.51.100.31", "d")), ("bad".into(), "not json".into())]);
    event.records[1].attributes.insert("ApproximateReceiveCount".into(), "-1".into());
    let (_, stats) =
        handler::handle_with_stats(&app, event).await.expect("a bad record must not fail its batch");
    assert_eq!((stats.written, stats.quarantined), (1, 1));
}

/// The other attributes SQS sets, at the edges of what the function parses: a
/// `SentTimestamp` at chrono's last millisecond or at 0, a receive count past `i32`. Each
/// record is written or quarantined; none fails the batch. (No partition takes the year
/// 262143 or 1970: those two are quarantined, `no_partition`.)
#[tokio::test]
async fn attack_producer_extreme_sqs_attributes_never_fail_the_batch() {
    let db = TestDb::new().await;
    let app = cold_start(&db, &new_kms().await).await;
    let max_ms = DateTime::<Utc>::MAX_UTC.timestamp_millis();
    let records: Vec<(String, String)> = ["max-ts", "zero-ts", "huge-count", "max-ts-bad", "huge-count-bad"]
        .iter()
        .map(|id| {
            let body = if id.ends_with("bad") {
                "not json".to_owned()
            } else {
                login_body(id, "198.51.100.32", "d")
            };
            (id.to_string(), body)
        })
        .collect();
    let mut event = event(&records);
    for (i, (ts, count)) in [
        (max_ms.to_string(), "1"),
        ("0".to_owned(), "1"),
        (FIRST_SENT_MS.to_string(), "99999999999"),
        (max_ms.to_string(), "1"),
        (FIRST_SENT_MS.to_string(), "2147483648"),
    ]
    .into_iter()
    .enumerate()
    {
        event.records[i].attributes.insert("SentTimestamp".into(), ts);
        event.records[i].attributes.insert("ApproximateReceiveCount".into(), count.into());
    }
    let (_, stats) = handler::handle_with_stats(&app, event).await.expect("no attribute fails the batch");
    assert_eq!((stats.written, stats.quarantined), (1, 4), "{:?}", stats.rejections);
    assert_eq!(stats.rejected_by_reason.get("no_partition"), Some(&2));
}

// ---------------------------------------------------------------------------------------
// The database roles.
// ---------------------------------------------------------------------------------------

/// Two rejected messages and one good one, written by the writer role.
async fn quarantined_pair(db: &TestDb) -> login_etl::App {
    let kms = new_kms().await;
    init_keys(db, &kms).await;
    let mut config = db.app_config();
    config.database = db.login_in("login_etl_writer").await.into();
    let app = login_etl::App::init(&config, &kms).await.expect("writer app");
    let records = [
        ("q-a".to_owned(), login_body("u-a", "203.0.113.11", "dev-a").replace("\"1.2.3\"", "\"x\"")),
        ("q-b".to_owned(), login_body("u-b", "203.0.113.12", "dev-b").replace("\"ios\"", "7")),
        ("good".to_owned(), login_body("u-c", "203.0.113.13", "dev-c")),
    ];
    let (_, stats) = handler::handle_with_stats(&app, event(&records)).await.expect("batch");
    assert_eq!((stats.written, stats.quarantined), (1, 2));
    app
}

/// The writer may add quarantine rows, and nothing else: not backdate one (so the purge
/// takes it early), not mark one erased or replayed, not read one back through RETURNING,
/// COPY TO, an upsert or a constraint's error detail.
#[tokio::test]
async fn attack_writer_cannot_read_backdate_mark_or_probe_quarantine_rows() {
    let db = TestDb::new().await;
    let _app = quarantined_pair(&db).await;
    let writer = db.login_in("login_etl_writer").await;
    let values = "('m-x', 0, 'queue', 'not_json', 1, '\\x000000000000000000000000'::bytea, '\\x00'::bytea)";
    let columns = "(message_id, attempt, source, reason_code, key_version, nonce, ciphertext";
    for sql in [
        format!("INSERT INTO login_data.login_quarantine {columns}, quarantined_at) VALUES ('m-x', 0, 'queue', 'not_json', 1, '\\x000000000000000000000000', '\\x00', now() - interval '1 year')"),
        format!("INSERT INTO login_data.login_quarantine {columns}, erased_at) VALUES ('m-x', 0, 'queue', 'not_json', 1, '\\x000000000000000000000000', '\\x00', now())"),
        format!("INSERT INTO login_data.login_quarantine {columns}, replayed_at, replay_attempt) VALUES ('m-x', 0, 'queue', 'not_json', 1, '\\x000000000000000000000000', '\\x00', now(), 1)"),
        format!("INSERT INTO login_data.login_quarantine {columns}) VALUES {values} RETURNING message_id"),
        format!("INSERT INTO login_data.login_quarantine {columns}) SELECT * FROM (VALUES {values}) v WHERE EXISTS (SELECT 1 FROM login_data.login_quarantine)"),
        format!("INSERT INTO login_data.login_quarantine {columns}) VALUES {values} ON CONFLICT (message_id, attempt) DO UPDATE SET reason_code = 'x'"),
        "COPY login_data.login_quarantine TO STDOUT".to_owned(),
        "COPY (SELECT * FROM login_data.login_quarantine) TO STDOUT".to_owned(),
        "TRUNCATE login_data.login_quarantine".to_owned(),
        "CREATE TRIGGER t BEFORE INSERT ON login_data.login_quarantine FOR EACH ROW EXECUTE FUNCTION suppress_redundant_updates_trigger()".to_owned(),
        "SELECT query_to_xml('SELECT * FROM login_data.login_quarantine', true, true, '')".to_owned(),
    ] {
        let error = connect(&writer).await.batch_execute(&sql).await.expect_err(&sql);
        assert_eq!(error.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{sql}: {error}");
    }
    // A duplicate key (a plain INSERT, no ON CONFLICT): the error says a row exists, and
    // nothing of it beyond the key the writer chose.
    let error = connect(&writer)
        .await
        .batch_execute(&format!(
            "INSERT INTO login_data.login_quarantine {columns}) VALUES ('q-a', 0, 'queue', 'not_json', 1, '\\x000000000000000000000000', '\\x00')"
        ))
        .await
        .expect_err("duplicate");
    assert_eq!(error.code(), Some(&SqlState::UNIQUE_VIOLATION));
    let detail = error.as_db_error().and_then(|e| e.detail()).unwrap_or_default().to_owned();
    for hidden in ["invalid_app_version", "app_version", "queue", "203.0.113"] {
        assert!(!detail.contains(hidden), "{detail}");
    }
}

/// The people's roles learn nothing of the quarantine: no rows, no column statistics
/// (pg_stats), no definer function that reads it for them (the purge's login may call the
/// purge's, which answers a count).
#[tokio::test]
async fn attack_people_get_no_quarantine_values_from_statistics_or_definer_functions() {
    let db = TestDb::new().await;
    let _app = quarantined_pair(&db).await;
    db.connect().await.batch_execute("ANALYZE login_data.login_quarantine").await.expect("analyze");
    for group in [
        "login_etl_analyst",
        "login_etl_vault_reader",
        "login_etl_auditor",
        "login_etl_writer",
        "login_etl_quarantine_purge",
    ] {
        let person = db.login_in(group).await;
        let client = connect(&person).await;
        let stats: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_stats WHERE schemaname = 'login_data' AND tablename = 'login_quarantine'
                    AND attname NOT IN ('message_id', 'attempt', 'quarantined_at', 'erased_at')",
                &[],
            )
            .await
            .expect("pg_stats")
            .get(0);
        assert_eq!(stats, 0, "{group} sees column statistics of the quarantine");
        let definers: Vec<String> = client
            .query(
                "SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                  WHERE p.prosecdef AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                    AND has_function_privilege(p.oid, 'EXECUTE') AND p.prosrc ILIKE '%quarantine%'",
                &[],
            )
            .await
            .expect("definers")
            .iter()
            .map(|r| r.get(0))
            .collect();
        let purge_only = ["purge_expired_quarantine(integer,bigint)".to_owned()];
        // Which of the keys it names are quarantined: what a plain INSERT's unique
        // violation tells the writer anyway (its insert skips them without waiting, V14).
        let writer_only = ["login_data.quarantined_keys(text[],integer[])".to_owned()];
        let allowed: &[String] = match group {
            "login_etl_quarantine_purge" => &purge_only,
            "login_etl_writer" => &writer_only,
            _ => &[],
        };
        assert_eq!(definers, allowed, "{group} may call {definers:?}");
        if group == "login_etl_writer" {
            let keys = client
                .query("SELECT * FROM login_data.quarantined_keys(ARRAY['q-a', 'q-none'], ARRAY[0, 0])", &[])
                .await
                .expect("keys");
            let answered: Vec<(String, i32)> = keys.iter().map(|r| (r.get(0), r.get(1))).collect();
            assert_eq!(answered, [("q-a".to_owned(), 0)], "the keys named that exist, and nothing else");
            assert_eq!(keys[0].len(), 2, "two columns: the key");
        }
        if group != "login_etl_quarantine_purge" {
            refused(&person, "COPY login_data.login_quarantine TO STDOUT").await;
            refused(
                &person,
                "SELECT query_to_xml('SELECT reason_code FROM login_data.login_quarantine', true, true, '')",
            )
            .await;
        }
    }
}

/// The purge's login can erase a body quarantined an hour ago, inside the retention: the
/// retention lives only in the purge job's code (`purge_expired`), not in the database.
/// Whoever holds that login (or a bug in the job, or `QUARANTINE_RETENTION_DAYS` misread)
/// erases any body the moment it is quarantined, before anyone could replay it.
#[tokio::test]
async fn attack_purge_role_erases_a_body_inside_its_retention() {
    let db = TestDb::new().await;
    let _app = quarantined_pair(&db).await;
    let purge = db.login_in("login_etl_quarantine_purge").await;
    let erased = connect(&purge)
        .await
        .execute(
            "UPDATE login_data.login_quarantine SET key_version = NULL, nonce = NULL, ciphertext = NULL,
                    erased_at = now(), erased_by = 'forget'
              WHERE message_id = 'q-a' AND quarantined_at > now() - interval '1 hour'",
            &[],
        )
        .await
        .unwrap_or(0);
    assert_eq!(erased, 0, "a body inside the retention was erased by the purge's login");
    // Nor through its function, asked for no retention at all.
    let erased: i64 = connect(&purge)
        .await
        .query_one("SELECT public.purge_expired_quarantine(0, 100)", &[])
        .await
        .expect("the purge")
        .get(0);
    assert_eq!(erased, 0, "a body inside the retention was erased by the purge's function");
    assert_eq!(db.count("SELECT count(*) FROM login_data.login_quarantine WHERE erased_at IS NULL").await, 2);
}

/// What the purge's login can do to a row beyond erasing an expired body: nothing. It
/// has no right on the quarantine's schema (sql/V12: it calls `purge_expired_quarantine`),
/// so it cannot copy a ciphertext from another row or the vault, see a body, or un-erase,
/// relabel or forge an erased row with bytes of its own; were it able to, the service
/// would still refuse to open the result.
#[tokio::test]
async fn attack_purge_role_cannot_copy_forge_or_read_bodies() {
    let db = TestDb::new().await;
    let app = quarantined_pair(&db).await;
    db.connect()
        .await
        .batch_execute(
            "UPDATE login_data.login_quarantine SET key_version = NULL, nonce = NULL, ciphertext = NULL,
                    erased_at = now(), erased_by = 'purge' WHERE message_id = 'q-b';
             UPDATE login_data.login_quarantine SET quarantined_at = now() - interval '30 days' WHERE message_id = 'q-b'",
        )
        .await
        .expect("erase q-b as the purge would, long ago");
    let purge = db.login_in("login_etl_quarantine_purge").await;
    for sql in [
        "UPDATE login_data.login_quarantine SET ciphertext = (SELECT ciphertext FROM login_data.login_quarantine WHERE message_id = 'q-a') WHERE message_id = 'q-b'",
        "UPDATE login_data.login_quarantine SET (key_version, nonce, ciphertext) = (SELECT key_version, nonce, ciphertext FROM vault.pii_vault LIMIT 1) WHERE message_id = 'q-b'",
        "UPDATE login_data.login_quarantine SET ciphertext = ciphertext WHERE message_id = 'q-a'",
        "UPDATE login_data.login_quarantine SET erased_at = now() WHERE reason_code = 'invalid_app_version'",
        "SELECT count(*) FROM login_data.login_quarantine_masks",
        "DELETE FROM login_data.login_quarantine_masks",
        "UPDATE login_data.login_quarantine SET erased_at = erased_at RETURNING reason_code",
    ] {
        refused(&purge, sql).await;
    }
    // The young body is not there for it: nothing to erase, nothing for an error to show.
    refused(&purge, "UPDATE login_data.login_quarantine SET ciphertext = NULL WHERE message_id = 'q-a'")
        .await;
    // The old, erased body cannot be brought back, relabelled or re-erased as a forget.
    for sql in [
        "UPDATE login_data.login_quarantine SET erased_at = NULL, erased_by = NULL, key_version = 1,
                nonce = '\\x0102030405060708090a0b0c', ciphertext = '\\xdeadbeefdeadbeefdeadbeefdeadbeefdeadbeef'
          WHERE message_id = 'q-b'",
        "UPDATE login_data.login_quarantine SET erased_by = 'forget' WHERE message_id = 'q-b'",
    ] {
        let changed = connect(&purge).await.execute(sql, &[]).await;
        assert!(matches!(changed, Ok(0) | Err(_)), "{sql}: {changed:?}");
    }
    assert_eq!(
        db.count(
            "SELECT count(*) FROM login_data.login_quarantine WHERE message_id = 'q-b' AND erased_by = 'purge'
                AND erased_at IS NOT NULL AND ciphertext IS NULL AND key_version IS NULL"
        )
        .await,
        1,
        "q-b stays erased, as a purge"
    );
    let row = db
        .connect()
        .await
        .query_one(
            "SELECT key_version, nonce, ciphertext FROM login_data.login_quarantine WHERE message_id = 'q-a'",
            &[],
        )
        .await
        .expect("q-a");
    let sealed = SealedValue::from_stored(row.get(0), row.get::<_, &[u8]>(1), row.get(2)).expect("sealed");
    let key = &app.keyring.data_key;
    let mut relabelled = sealed.clone();
    relabelled.key_version += 1;
    assert!(matches!(key.open_body("q-a", 0, &relabelled), Err(SealError::WrongKeyVersion { .. })));
    assert!(key.open_body("q-a", 0, &sealed).is_ok(), "the untouched body still opens");
}

/// Someone who can rewrite the tables (a DBA, a restored backup, SQL injection elsewhere):
/// swap ciphertexts between quarantine rows, rekey a row to another message id or attempt,
/// move a sealed body into pii_vault and a vault value into the quarantine, relabel the key
/// version. `DataKey::open_body` and `DataKey::open` refuse every one.
#[tokio::test]
async fn attack_table_writer_swapped_moved_or_relabelled_ciphertexts_never_open() {
    let db = TestDb::new().await;
    let app = quarantined_pair(&db).await;
    let key = &app.keyring.data_key;
    let client = db.connect().await;
    client
        .batch_execute(
            "UPDATE login_data.login_quarantine a SET nonce = b.nonce, ciphertext = b.ciphertext
               FROM login_data.login_quarantine b WHERE a.message_id = 'q-a' AND b.message_id = 'q-b';",
        )
        .await
        .expect("swap one way");
    let rows = quarantine(&db).await;
    assert_eq!(rows[0].sealed.ciphertext, rows[1].sealed.ciphertext);
    assert_eq!(key.open_body("q-a", 0, &rows[0].sealed).err(), Some(SealError::Unauthentic));
    assert!(key.open_body("q-b", 0, &rows[1].sealed).is_ok());

    // q-b's body under another id, another attempt, and into the vault as an ip.
    client
        .batch_execute(
            "INSERT INTO login_data.login_quarantine (message_id, attempt, source, reason_code, key_version, nonce, ciphertext)
             SELECT 'q-c', 0, source, reason_code, key_version, nonce, ciphertext FROM login_data.login_quarantine WHERE message_id = 'q-b';
             INSERT INTO login_data.login_quarantine (message_id, attempt, source, reason_code, key_version, nonce, ciphertext)
             SELECT 'q-b', 1, source, reason_code, key_version, nonce, ciphertext FROM login_data.login_quarantine WHERE message_id = 'q-b';",
        )
        .await
        .expect("rekeyed copies");
    let rows = quarantine(&db).await;
    let row = |id: &str, attempt: i32| {
        rows.iter().find(|q| q.message_id == id && q.attempt == attempt).expect("row")
    };
    assert_eq!(key.open_body("q-c", 0, &row("q-c", 0).sealed).err(), Some(SealError::Unauthentic));
    assert_eq!(key.open_body("q-b", 1, &row("q-b", 1).sealed).err(), Some(SealError::Unauthentic));
    let ip_index = app.keyring.indexer.index(PiiField::Ip, "203.0.113.13");
    client
        .execute(
            "UPDATE vault.pii_vault v SET key_version = q.key_version, nonce = q.nonce, ciphertext = q.ciphertext
               FROM login_data.login_quarantine q WHERE v.field = 'ip' AND v.blind_index = $1 AND q.message_id = 'q-b' AND q.attempt = 0",
            &[&ip_index.as_str()],
        )
        .await
        .expect("body into the vault");
    let vault = client
        .query_one(
            "SELECT key_version, nonce, ciphertext FROM vault.pii_vault WHERE field = 'ip' AND blind_index = $1",
            &[&ip_index.as_str()],
        )
        .await
        .expect("vault row");
    let moved =
        SealedValue::from_stored(vault.get(0), vault.get::<_, &[u8]>(1), vault.get(2)).expect("sealed");
    assert_eq!(key.open(PiiField::Ip, &ip_index, &moved).err(), Some(SealError::Unauthentic));

    // And back: a vault value (the device id of the good login) into q-a's row.
    let device_index = app.keyring.indexer.index(PiiField::DeviceId, "dev-c");
    client
        .execute(
            "UPDATE login_data.login_quarantine q SET key_version = v.key_version, nonce = v.nonce, ciphertext = v.ciphertext
               FROM vault.pii_vault v WHERE v.field = 'device_id' AND v.blind_index = $1 AND q.message_id = 'q-a'",
            &[&device_index.as_str()],
        )
        .await
        .expect("vault value into the quarantine");
    let rows = quarantine(&db).await;
    assert_eq!(key.open_body("q-a", 0, &rows[0].sealed).err(), Some(SealError::Unauthentic));
    // Relabelled to a version this key is not: refused before any decryption.
    client
        .batch_execute(
            "UPDATE login_data.login_quarantine SET key_version = 2 WHERE message_id = 'q-b' AND attempt = 0",
        )
        .await
        .expect("relabel");
    let rows = quarantine(&db).await;
    let relabelled = &rows.iter().find(|q| q.message_id == "q-b" && q.attempt == 0).expect("q-b").sealed;
    assert!(matches!(
        key.open_body("q-b", 0, relabelled),
        Err(SealError::WrongKeyVersion { expected: 1, found: 2 })
    ));
}

// ---------------------------------------------------------------------------------------
// The deployment: what the function calls, against what its role may call.
// ---------------------------------------------------------------------------------------

/// The failure path hides a batch with `GetQueueUrl` (to turn the record's ARN into a URL)
/// and then `ChangeMessageVisibilityBatch` (src/function.rs, `Queues`). IAM authorizes
/// `GetQueueUrl` by an action of its own (`sqs:GetQueueUrl`; only the batch actions share
/// their single action's permission). The function's role (template.yaml, `FunctionRole`,
/// `ConsumeSourceQueues`) does not grant it: in AWS every hide would fail with AccessDenied,
/// no batch would ever be hidden, and an outage would push every good message into the DLQ
/// after MaxReceiveCount × 180 s, as before issue 17. moto does not enforce IAM, so the
/// local outage tests cannot see it; this test reads the template.
#[test]
fn attack_deploy_the_function_role_grants_every_sqs_action_the_failure_path_calls() {
    let template =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/template.yaml")).expect("template");
    let function =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/function.rs")).expect("source");
    let statement = template.split("Sid: ConsumeSourceQueues").nth(1).expect("ConsumeSourceQueues statement");
    let actions = statement.lines().find(|l| l.trim_start().starts_with("Action:")).expect("Action line");
    for (call, action) in [
        (".change_message_visibility_batch()", "sqs:ChangeMessageVisibility"),
        (".get_queue_url()", "sqs:GetQueueUrl"),
    ] {
        if function.contains(call) {
            assert!(actions.contains(action), "src/function.rs calls {call}, the role grants only {actions}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Logs at TRACE, on the failure path.
// ---------------------------------------------------------------------------------------

/// The event Lambda's SQS trigger builds for `messages` of `queue_arn`.
fn event_json(
    messages: &[aws_sdk_sqs::types::Message],
    queue_arn: &str,
    receive_count: Option<&str>,
) -> Vec<u8> {
    let records: Vec<Value> = messages
        .iter()
        .map(|m| {
            let mut attributes: serde_json::Map<String, Value> = m
                .attributes()
                .into_iter()
                .flatten()
                .map(|(name, value)| (name.as_str().to_owned(), Value::from(value.as_str())))
                .collect();
            if let Some(count) = receive_count {
                attributes.insert("ApproximateReceiveCount".into(), Value::from(count));
            }
            json!({
                "messageId": m.message_id(), "receiptHandle": m.receipt_handle(), "body": m.body(),
                "md5OfBody": m.md5_of_body(), "attributes": attributes, "messageAttributes": {},
                "eventSource": "aws:sqs", "eventSourceARN": queue_arn, "awsRegion": "us-east-1",
            })
        })
        .collect();
    serde_json::to_vec(&json!({ "Records": records })).expect("event")
}

/// One Invoke API call on loopback, whatever its status: the raw answer.
async fn invoke_raw(port: u16, event: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    let head = format!(
        "POST /2015-03-31/functions/_/invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        event.len()
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    stream.write_all(event).await.expect("body");
    let mut answer = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(60), stream.read_to_end(&mut answer))
        .await
        .expect("answered")
        .expect("read");
    String::from_utf8_lossy(&answer).into_owned()
}

/// The function binary at TRACE, its database refused: a batch of good and bad messages
/// (real receipts on a moto queue) fails, is hidden and comes back once the database is
/// there. Neither its output (logs, EMF) nor the error it returns holds an ip or device id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_logs_at_trace_the_failure_path_logs_no_ip_or_device_id() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    init_keys(&db, &kms).await;
    let (proxy, through_proxy) = DatabaseProxy::in_front_of(&db.config).await;
    let queues = TestQueues::new(10, 60).await;
    let queue_arn = queues
        .sqs
        .get_queue_attributes()
        .queue_url(&queues.queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("arn")
        .attributes
        .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn).cloned())
        .expect("arn");
    let secrets: Vec<(String, String)> =
        (0..8).map(|i| (format!("203.0.113.{}", 160 + i), format!("trace-secret-device-{i}"))).collect();
    let mut bodies: Vec<String> = secrets[..5].iter().map(|(ip, d)| login_body("u-trace", ip, d)).collect();
    bodies.push(format!("{{\"ip\": \"{}\", \"device_id\": \"{}\"", secrets[5].0, secrets[5].1));
    bodies.push(login_body("u-trace", &secrets[6].0, &secrets[6].1).replace("\"ios\"", "[\"ios\"]"));
    bodies.push(format!("{} {}", secrets[7].0, secrets[7].1));
    queues.send(&bodies).await;
    let mut messages = Vec::new();
    while messages.len() < bodies.len() {
        let output = queues
            .sqs
            .receive_message()
            .queue_url(&queues.queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
            .send()
            .await
            .expect("receive");
        messages.extend(output.messages.unwrap_or_default());
    }

    let output = std::env::temp_dir().join(format!("login-etl-attack-trace-{}.log", unique_suffix()));
    let env = [
        ("DATABASE_URL", url_of(&through_proxy)),
        ("KMS_KEY_ID", kms.key_id().to_owned()),
        ("RUST_LOG", "trace".to_owned()),
        ("AWS_LAMBDA_LOG_LEVEL", "TRACE".to_owned()),
        ("DB_FAIL_FAST_MS", "200".to_owned()),
        ("VISIBILITY_BACKOFF_BASE_SECONDS", "1".to_owned()),
        ("VISIBILITY_BACKOFF_MAX_SECONDS", "2".to_owned()),
    ];
    let function = LocalLambda::start(env!("CARGO_BIN_EXE_login-etl"), &env, Some(&output)).await;
    // Up and answering (an empty batch needs no database).
    let empty: Value = serde_json::from_slice(&function.invoke(b"{\"Records\": []}").await).expect("JSON");
    assert!(empty["batchItemFailures"].is_array(), "{empty}");

    proxy.set(Mode::Refuse);
    let failed = invoke_raw(function.port, &event_json(&messages, &queue_arn, None)).await;
    assert!(failed.contains("BatchNotWritten"), "{failed}");
    proxy.set(Mode::Pass);
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let written = invoke_raw(function.port, &event_json(&messages, &queue_arn, Some("2"))).await;
    assert!(written.contains("batchItemFailures"), "{written}");
    assert_eq!(db.count("SELECT count(*) FROM login_data.user_logins").await, 5);
    assert_eq!(db.count("SELECT count(*) FROM login_data.login_quarantine").await, 3);
    drop(function);

    let logs = std::fs::read_to_string(&output).expect("function output");
    let _ = std::fs::remove_file(&output);
    assert!(logs.contains("\"level\":\"DEBUG\"") || logs.contains("\"level\":\"TRACE\""), "TRACE was on");
    assert!(logs.contains("hidden on the queue"), "the failure path ran");
    assert!(logs.contains("batch processed"));
    for (ip, device) in &secrets {
        for (text, what) in [(&logs, "the logs"), (&failed, "the error answer"), (&written, "the answer")] {
            assert!(
                !text.contains(ip.as_str()) && !text.contains(device.as_str()),
                "{what} hold a value of the batch"
            );
        }
    }
}

/// The runtime's deadline just passed (a sandbox clock a little ahead of Lambda's, or an
/// invoke that waited): `invocation_time_left` reads any deadline not in the future as
/// `cargo lambda watch`'s relative timeout, so an epoch deadline 1 ms ago gives the batch
/// 15 minutes, and a hung database would keep it from hiding anything before Lambda kills
/// it. A deadline that is an epoch time in the past should leave no time at all.
#[test]
fn attack_deadline_an_epoch_deadline_already_past_leaves_no_time() {
    let just_passed = u64::try_from(Utc::now().timestamp_millis() - 1).expect("epoch ms");
    let left = login_etl_core::config::invocation_time_left(just_passed);
    assert!(left < std::time::Duration::from_secs(1), "{left:?} left after the deadline");
}
