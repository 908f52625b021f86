//! The handler end to end: real Postgres (a database per test), real KMS API (moto).

use std::collections::{HashMap, HashSet};

use chrono::NaiveDate;
use login_etl::handler;
use login_etl_core::crypto::SealedValue;
use login_etl_core::crypto::{BlindIndex, KeyPurpose, PiiField};
use serde_json::Value;
use testkit::*;

#[tokio::test]
async fn the_exercise_queue_gives_99_rows_and_quarantines_exactly_the_malformed_message_sealed() {
    let db = TestDb::new().await;
    let app = cold_start(&db, &new_kms().await).await;
    let event = load_event("events/login-queue-100.json");
    let malformed_id = event.records[12].message_id.clone().expect("id");
    let malformed_body = event.records[12].body.clone().expect("body");
    let malformed_sent: i64 = event.records[12].attributes["SentTimestamp"].parse().expect("ms");
    assert!(malformed_body.contains("oops_wrong_msg_type"));

    let (response, stats) = handler::handle_with_stats(&app, event).await.expect("batch");

    // Quarantined, so processed: SQS deletes it on this first receive.
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(quarantined_ids(&db).await, vec![malformed_id.clone()]);
    assert_eq!(stats.quarantined, 1);
    let row = db
        .connect()
        .await
        .query_one(
            "SELECT reason_code, field, (extract(epoch FROM sent_at) * 1000)::int8, receive_count, source,
                    attempt, key_version, nonce, ciphertext
               FROM login_data.login_quarantine",
            &[],
        )
        .await
        .expect("row");
    assert_eq!(row.get::<_, &str>(0), "missing_field");
    assert_eq!(row.get::<_, Option<&str>>(1), Some("user_id"));
    assert_eq!(row.get::<_, i64>(2), malformed_sent);
    assert_eq!(row.get::<_, Option<i32>>(3), Some(1));
    assert_eq!((row.get::<_, &str>(4), row.get::<_, i32>(5)), ("queue", 0));
    let ciphertext: Vec<u8> = row.get(8);
    assert!(!ciphertext.windows(11).any(|w| w == b"oops_wrong_"), "the body is sealed, not stored");
    let sealed = SealedValue::from_stored(row.get(6), row.get::<_, &[u8]>(7), ciphertext).expect("sealed");
    let opened = app.keyring.data_key.open_body(&malformed_id, 0, &sealed).expect("opens bound to its id");
    assert_eq!(opened.as_str(), malformed_body);
    assert!(app.keyring.data_key.open_body(&malformed_id, 1, &sealed).is_err(), "bound to its attempt");
    // A body without ip or device id leaves no mask.
    assert!(quarantine_masks(&db, &malformed_id).await.is_empty());
    assert_eq!(stats.written, 99);
    assert_eq!(stats.rejected_by_reason.get("missing_field"), Some(&1));
    assert_eq!(db.count("SELECT count(*) FROM login_data.user_logins").await, 99);
    assert_eq!(db.count("SELECT count(*) FROM login_data.user_logins WHERE locale IS NULL").await, 29);
    assert_eq!(db.count("SELECT count(*) FROM vault.pii_vault").await, 198);
    // create_date is the SentTimestamp's UTC date, not the processing date.
    let client = db.connect().await;
    let dates: Vec<NaiveDate> = client
        .query("SELECT DISTINCT create_date FROM login_data.user_logins", &[])
        .await
        .expect("dates")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(dates, vec![NaiveDate::from_ymd_opt(2025, 11, 20).expect("date")]);

    // Every row: the exercise's columns hold masks and the encoded version, never PII.
    let messages = sample_messages();
    let rows = client
        .query(
            "SELECT user_id, device_type, masked_ip, masked_device_id, locale, app_version, app_version_raw
               FROM login_data.user_logins",
            &[],
        )
        .await
        .expect("rows");
    let by_user: HashMap<String, &tokio_postgres::Row> = rows.iter().map(|r| (r.get(0), r)).collect();
    for message in messages.iter().filter(|m| m.get("user_id").is_some()) {
        let row = by_user[message["user_id"].as_str().expect("user_id")];
        let ip = message["ip"].as_str().expect("ip");
        let device_id = message["device_id"].as_str().expect("device_id");
        let masked_ip: String = row.get(2);
        let masked_device_id: String = row.get(3);
        assert_eq!(masked_ip, app.keyring.indexer.index(PiiField::Ip, ip).as_str());
        assert_eq!(masked_device_id, app.keyring.indexer.index(PiiField::DeviceId, device_id).as_str());
        assert_ne!(masked_ip, ip);
        assert_eq!(row.get::<_, String>(1), message["device_type"].as_str().expect("device_type"));
        assert_eq!(row.get::<_, Option<String>>(4).as_deref(), message["locale"].as_str());
        assert_eq!(row.get::<_, String>(6), message["app_version"].as_str().expect("app_version"));
        let encoded: i32 = row.get(5);
        assert!(encoded > 0);
    }
}

#[tokio::test]
async fn a_mixed_batch_quarantines_exactly_its_bad_messages_and_writes_every_good_one() {
    let db = TestDb::new().await;
    let app = cold_start(&db, &new_kms().await).await;
    let event = load_event("events/mixed-batch.json");
    let ids: Vec<String> = event.records.iter().filter_map(|r| r.message_id.clone()).collect();
    let expected_bad: Vec<String> = ids.iter().filter(|id| id.contains("-bad-")).cloned().collect();
    let expected_good: HashSet<String> = ids.iter().filter(|id| id.contains("-good-")).cloned().collect();
    assert_eq!(expected_bad.len(), 10);

    let (response, stats) = handler::handle_with_stats(&app, event).await.expect("batch");

    let mut sorted_bad = expected_bad.clone();
    sorted_bad.sort();
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(quarantined_ids(&db).await, sorted_bad);
    let written: HashSet<String> = db
        .connect()
        .await
        .query("SELECT sqs_message_id FROM login_data.user_logins", &[])
        .await
        .expect("ids")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(written, expected_good);
    let reasons: HashSet<&str> = stats.rejected_by_reason.keys().copied().collect();
    let want: HashSet<&str> = [
        "missing_field",
        "not_json",
        "not_an_object",
        "invalid_ip",
        "invalid_app_version",
        "app_version_out_of_range",
        "too_long",
        "wrong_type",
        "null_field",
        "control_character",
    ]
    .into();
    assert_eq!(reasons, want);
}

#[tokio::test]
async fn records_without_body_or_timestamp_are_quarantined_and_only_unkeyable_ids_are_item_failures() {
    let db = TestDb::new().await;
    let app = cold_start(&db, &new_kms().await).await;
    let long_id = "x".repeat(129);
    let mut event = event(&[
        ("good".into(), login_body("u1", "10.0.0.1", "d-1")),
        ("no-body".into(), String::new()),
        ("no-timestamp".into(), login_body("u2", "10.0.0.2", "d-2")),
        ("no-id".into(), login_body("u3", "10.0.0.3", "d-3")),
        (long_id.clone(), login_body("u4", "10.0.0.4", "d-4")),
        ("bell\u{7}".into(), login_body("u5", "10.0.0.5", "d-5")),
    ]);
    event.records[1].body = None;
    event.records[2].attributes.remove("SentTimestamp");
    event.records[3].message_id = None;

    let (response, stats) = handler::handle_with_stats(&app, event).await.expect("batch");

    // Ids no column can hold go back to the queue (and so, in the end, to the DLQ).
    assert_eq!(failed_ids(&response), vec!["bell\u{7}".to_string(), long_id]);
    assert!(response.batch_item_failures.iter().all(|f| !f.item_identifier.is_empty()));
    assert_eq!(quarantined_ids(&db).await, vec!["no-body".to_string(), "no-timestamp".to_string()]);
    let reasons: Vec<(String, Option<String>)> = db
        .connect()
        .await
        .query("SELECT reason_code, (sent_at IS NULL)::text FROM login_data.login_quarantine ORDER BY message_id", &[])
        .await
        .expect("reasons")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        reasons,
        vec![
            ("missing_body".into(), Some("false".into())),
            ("invalid_sent_timestamp".into(), Some("true".into()))
        ]
    );
    assert_eq!((stats.unidentifiable, stats.unstorable_ids), (1, 2));
    assert_eq!(stats.written, 1);
}

#[tokio::test]
async fn a_quarantined_body_keeps_the_masks_of_the_pii_it_holds_so_forget_can_reach_it() {
    let db = TestDb::new().await;
    let app = cold_start(&db, &new_kms().await).await;
    // Rejected for its app_version; its ip (spelled oddly) and device id are readable.
    let body = r#"{"user_id": "u", "app_version": "x", "device_type": "ios", "ip": " ::ffff:198.51.100.7 ",
                   "locale": null, "device_id": "dev-77"}"#;
    handler::handle_with_stats(&app, event(&[("q1".into(), body.into())])).await.expect("batch");
    let reason = db
        .connect()
        .await
        .query_one("SELECT reason_code FROM login_data.login_quarantine", &[])
        .await
        .expect("row");
    assert_eq!(reason.get::<_, &str>(0), "invalid_app_version");
    let mask = |field: PiiField, value: &str| {
        (field.as_str().to_owned(), app.keyring.indexer.index(field, value).as_str().to_owned())
    };
    assert_eq!(
        quarantine_masks(&db, "q1").await,
        vec![mask(PiiField::DeviceId, "dev-77"), mask(PiiField::Ip, "198.51.100.7")]
    );
}

#[tokio::test]
async fn repeated_values_get_equal_masks_and_one_vault_row_each() {
    let db = TestDb::new().await;
    let app = cold_start(&db, &new_kms().await).await;
    let event = load_event("events/duplicates.json");
    let bodies: Vec<Value> = event
        .records
        .iter()
        .map(|r| serde_json::from_str(r.body.as_deref().expect("body")).expect("json"))
        .collect();

    let response = handler::handle(&app, event).await.expect("batch");
    assert!(response.batch_item_failures.is_empty());

    let rows = db
        .connect()
        .await
        .query("SELECT user_id, masked_ip, masked_device_id FROM login_data.user_logins", &[])
        .await
        .expect("rows");
    let masks: HashMap<String, (String, String)> =
        rows.iter().map(|r| (r.get(0), (r.get(1), r.get(2)))).collect();
    assert_eq!(masks.len(), 6);
    for a in &bodies {
        for b in &bodies {
            let (ma, mb) =
                (&masks[a["user_id"].as_str().expect("id")], &masks[b["user_id"].as_str().expect("id")]);
            assert_eq!(a["ip"] == b["ip"], ma.0 == mb.0, "ip masks equal exactly when ips are");
            assert_eq!(
                a["device_id"] == b["device_id"],
                ma.1 == mb.1,
                "device masks equal exactly when ids are"
            );
        }
    }
    let distinct_ips = bodies.iter().map(|b| b["ip"].to_string()).collect::<HashSet<_>>().len() as i64;
    let distinct_devices =
        bodies.iter().map(|b| b["device_id"].to_string()).collect::<HashSet<_>>().len() as i64;
    assert!(distinct_ips < 6 && distinct_devices < 6, "the event must repeat values");
    assert_eq!(db.count("SELECT count(*) FROM vault.pii_vault WHERE field = 'ip'").await, distinct_ips);
    assert_eq!(
        db.count("SELECT count(*) FROM vault.pii_vault WHERE field = 'device_id'").await,
        distinct_devices
    );
}

#[tokio::test]
async fn equivalent_ip_spellings_share_one_mask() {
    let db = TestDb::new().await;
    let app = cold_start(&db, &new_kms().await).await;
    let event = event(&[
        ("a".into(), login_body("u1", "2001:db8::1", "d-1")),
        ("b".into(), login_body("u2", "2001:DB8:0:0::0:1", "d-2")),
        ("c".into(), login_body("u3", "::ffff:192.0.2.7", "d-3")),
        ("d".into(), login_body("u4", "192.0.2.7", " d-3 ")),
    ]);
    handler::handle(&app, event).await.expect("batch");
    assert_eq!(db.count("SELECT count(DISTINCT masked_ip) FROM login_data.user_logins").await, 2);
    assert_eq!(db.count("SELECT count(DISTINCT masked_device_id) FROM login_data.user_logins").await, 3);
}

#[tokio::test]
async fn redelivery_adds_nothing_and_a_new_cold_start_keeps_the_masks() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let app = cold_start(&db, &kms).await;
    let event = load_event("events/login-queue-100.json");
    handler::handle(&app, event.clone()).await.expect("first delivery");
    let masks_before = masks(&db).await;

    let (response, stats) = handler::handle_with_stats(&app, event.clone()).await.expect("redelivery");
    assert!(response.batch_item_failures.is_empty());
    assert_eq!((stats.written, stats.already_present), (0, 99));
    assert_eq!(stats.quarantined, 0, "a redelivered rejected message is quarantined once");
    assert_eq!(db.count("SELECT count(*) FROM login_data.login_quarantine").await, 1);
    assert_eq!(db.count("SELECT count(*) FROM login_data.user_logins").await, 99);
    assert_eq!(db.count("SELECT count(*) FROM vault.pii_vault").await, 198);

    // A second instance: unwraps the stored keys, creates none, masks the same.
    let second = cold_start(&db, &kms).await;
    assert_eq!(db.count("SELECT count(*) FROM vault.pii_keys").await, KeyPurpose::ALL.len() as i64);
    handler::handle(&second, event).await.expect("redelivery to a new instance");
    assert_eq!(db.count("SELECT count(*) FROM login_data.user_logins").await, 99);
    let ip = "198.51.100.23";
    assert_eq!(app.keyring.indexer.index(PiiField::Ip, ip), second.keyring.indexer.index(PiiField::Ip, ip));
    let fresh = testkit::event(&[("after-restart".into(), login_body("u9", ip, "d-9"))]);
    handler::handle(&second, fresh).await.expect("new message");
    let mut masks_after = masks(&db).await;
    masks_after.remove("u9");
    assert_eq!(masks_before, masks_after);
}

async fn masks(db: &TestDb) -> HashMap<String, (String, String)> {
    db.connect()
        .await
        .query("SELECT user_id, masked_ip, masked_device_id FROM login_data.user_logins", &[])
        .await
        .expect("rows")
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect()
}

#[tokio::test]
async fn the_vault_returns_every_sample_value_and_refuses_moved_or_tampered_rows() {
    let db = TestDb::new().await;
    let app = cold_start(&db, &new_kms().await).await;
    handler::handle(&app, load_event("events/login-queue-100.json")).await.expect("batch");

    let rows = db
        .connect()
        .await
        .query("SELECT field, blind_index, key_version, nonce, ciphertext FROM vault.pii_vault", &[])
        .await
        .expect("vault");
    let vault: HashMap<(PiiField, BlindIndex), SealedValue> = rows
        .iter()
        .map(|r| {
            let field = PiiField::from_db(r.get(0)).expect("field");
            let index = BlindIndex::parse(r.get(1)).expect("index");
            let sealed = SealedValue::from_stored(r.get(2), r.get(3), r.get(4)).expect("12-byte nonce");
            ((field, index), sealed)
        })
        .collect();

    let key = &app.keyring.data_key;
    let mut checked = 0;
    for message in sample_messages().iter().filter(|m| m.get("ip").is_some()) {
        for (field, name) in [(PiiField::Ip, "ip"), (PiiField::DeviceId, "device_id")] {
            let value = message[name].as_str().expect("value");
            let index = app.keyring.indexer.index(field, value);
            let sealed = &vault[&(field, index.clone())];
            assert_eq!(key.open(field, &index, sealed).expect("opens").as_str(), value);
            checked += 1;
        }
    }
    assert_eq!(checked, 198);

    // A ciphertext copied onto another row does not open there.
    let mut entries = vault.iter();
    let ((field_a, index_a), sealed_a) = entries.next().expect("row");
    let ((field_b, index_b), _) = entries.find(|((f, _), _)| f == field_a).expect("second row");
    assert_eq!(field_a, field_b);
    assert!(key.open(*field_b, index_b, sealed_a).is_err());
    let mut tampered = sealed_a.clone();
    tampered.nonce[11] ^= 0x80;
    assert!(key.open(*field_a, index_a, &tampered).is_err());
}

/// A batch of the largest size a real invocation carries is one set-based INSERT into the
/// partitioned table, and its re-delivery (whole, or mixed with new messages) adds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_batch_is_one_insert_and_its_redelivery_still_adds_nothing() {
    let db = TestDb::new().await;
    let app = cold_start(&db, &new_kms().await).await;
    // Counts the statements that insert into user_logins.
    db.fault_on_insert("login_data.user_logins", "NULL;").await;
    let records = many_logins(1000, "big");
    let n = records.len() as u64;

    let (_, first) = handler::handle_with_stats(&app, event(&records)).await.expect("first");
    assert_eq!((first.written, first.already_present), (n, 0));
    assert_eq!(db.fault_calls("login_data.user_logins").await, 1, "one statement");

    let (response, again) = handler::handle_with_stats(&app, event(&records)).await.expect("again");
    assert!(response.batch_item_failures.is_empty());
    assert_eq!((again.written, again.already_present), (0, n));
    assert_eq!(db.fault_calls("login_data.user_logins").await, 2);

    // Half re-delivered, half new, and one new id twice in the same batch.
    let half = 300;
    let mut mixed: Vec<(String, String)> = records[..half].to_vec();
    mixed.extend(many_logins(half, "new"));
    mixed.push(("new-00000".to_owned(), login_body("other", "192.0.2.1", "other-device")));
    let (_, stats) = handler::handle_with_stats(&app, event(&mixed)).await.expect("mixed");
    let half = half as u64;
    assert_eq!((stats.accepted as u64, stats.written, stats.already_present), (2 * half + 1, half, half + 1));
    assert_eq!(db.count("SELECT count(*) FROM login_data.user_logins").await as u64, n + half);
    assert_eq!(
        db.count("SELECT count(DISTINCT sqs_message_id) FROM login_data.user_logins").await as u64,
        n + half
    );
}

/// The function as it really runs, a login in the writer role: a large batch and its
/// re-delivery need nothing beyond INSERT, and COPY TO reads nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_role_writes_large_batches_but_cannot_copy_anything_out() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    init_keys(&db, &kms).await;
    let writer_login = db.login_in("login_etl_writer").await;
    let mut config = db.app_config();
    config.database = writer_login.clone().into();
    let app = login_etl::App::init(&config, &kms).await.expect("the writer starts");
    let records = many_logins(1000, "writer");

    let (_, first) = handler::handle_with_stats(&app, event(&records)).await.expect("written");
    let (_, again) = handler::handle_with_stats(&app, event(&records)).await.expect("again");

    assert_eq!((first.written, again.written, again.already_present), (1000, 0, 1000));
    let writer = connect(&writer_login).await;
    // (It reads the wrapped keys, by design: decision 8.)
    for table in ["login_data.user_logins", "vault.pii_vault", "pii_audit_log.pii_audit_entries"] {
        let error = writer
            .copy_out(&format!("COPY {table} TO STDOUT") as &str)
            .await
            .err()
            .unwrap_or_else(|| panic!("the writer copied {table} out"));
        assert_eq!(error.code(), Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE), "{table}");
    }
}
