//! Hostile input, table-driven: every case is one record of one batch, beside good
//! messages, and each has its exact outcome (the reason code of its item failure, or its
//! row). Nothing panics, and no bad record costs a good one its row.

use std::collections::HashMap;

use login_etl::handler;
use serde_json::{Value, json};
use testkit::*;

enum Expect {
    Rejected(&'static str),
    Written,
}
use Expect::*;

/// A valid body with one field replaced (or removed, with `None`).
fn with(field: &str, value: Option<Value>) -> String {
    let mut body = json!({
        "user_id": "hostile-user", "app_version": "2.3.0", "device_type": "android",
        "ip": "198.51.100.7", "locale": "RU", "device_id": "dev-hostile",
    });
    match value {
        Some(value) => body[field] = value,
        None => {
            body.as_object_mut().expect("object").remove(field);
        }
    }
    body.to_string()
}

fn text(field: &str, value: &str) -> String {
    with(field, Some(Value::from(value)))
}

fn deep(levels: usize) -> String {
    format!("{}{}", "[".repeat(levels), "]".repeat(levels))
}

fn cases() -> Vec<(&'static str, String, Expect)> {
    let valid = with("locale", Some(Value::from("RU")));
    let strip = |s: &str| s.trim_end_matches('}').to_owned();
    vec![
        // Bodies that are not a login object.
        ("empty-body", String::new(), Rejected("empty_body")),
        ("whitespace-body", " \n\t ".into(), Rejected("empty_body")),
        ("not-json", "user logged in".into(), Rejected("not_json")),
        ("truncated-json", "{\"user_id\": \"u".into(), Rejected("not_json")),
        ("trailing-garbage", format!("{valid} x"), Rejected("not_json")),
        ("json-array", "[1, 2, 3]".into(), Rejected("not_an_object")),
        ("json-string", "\"a login\"".into(), Rejected("not_an_object")),
        ("json-number", "42".into(), Rejected("not_an_object")),
        ("json-null", "null".into(), Rejected("not_an_object")),
        ("json-bool", "true".into(), Rejected("not_an_object")),
        ("deep-nesting-top", deep(50_000), Rejected("not_an_object")),
        ("deep-nesting-extra", format!("{}, \"extra\": {}}}", strip(&valid), deep(50_000)), Written),
        (
            "body-256kib-extra",
            format!("{}, \"padding\": \"{}\"}}", strip(&valid), "x".repeat(256 * 1024 - 200)),
            Written,
        ),
        ("body-256kib-user-id", text("user_id", &"u".repeat(256 * 1024 - 200)), Rejected("too_long")),
        ("lone-surrogate", valid.replace("hostile-user", "bad\\ud800user"), Rejected("not_json")),
        // Duplicate keys: which one wins differs between parsers, so neither does.
        (
            "duplicate-ip",
            format!("{}, \"ip\": \"203.0.113.99\"}}", strip(&valid)),
            Rejected("duplicate_field"),
        ),
        (
            "duplicate-escaped-key",
            format!("{}, \"device\\u005fid\": \"other\"}}", strip(&valid)),
            Rejected("duplicate_field"),
        ),
        // Wrong JSON types where strings belong.
        ("user-id-number", with("user_id", Some(json!(12345))), Rejected("wrong_type")),
        ("device-type-bool", with("device_type", Some(json!(true))), Rejected("wrong_type")),
        ("ip-object", with("ip", Some(json!({"v4": "10.0.0.1"}))), Rejected("wrong_type")),
        ("device-id-array", with("device_id", Some(json!(["a"]))), Rejected("wrong_type")),
        ("app-version-number", with("app_version", Some(json!(2.3))), Rejected("wrong_type")),
        ("locale-number", with("locale", Some(json!(7))), Rejected("wrong_type")),
        // Each field missing, and null.
        ("missing-user-id", with("user_id", None), Rejected("missing_field")),
        ("missing-app-version", with("app_version", None), Rejected("missing_field")),
        ("missing-device-type", with("device_type", None), Rejected("missing_field")),
        ("missing-ip", with("ip", None), Rejected("missing_field")),
        ("missing-locale", with("locale", None), Rejected("missing_field")),
        ("missing-device-id", with("device_id", None), Rejected("missing_field")),
        ("null-user-id", with("user_id", Some(Value::Null)), Rejected("null_field")),
        ("null-app-version", with("app_version", Some(Value::Null)), Rejected("null_field")),
        ("null-device-type", with("device_type", Some(Value::Null)), Rejected("null_field")),
        ("null-ip", with("ip", Some(Value::Null)), Rejected("null_field")),
        ("null-locale", with("locale", Some(Value::Null)), Written),
        ("null-device-id", with("device_id", Some(Value::Null)), Rejected("null_field")),
        ("blank-user-id", text("user_id", "   "), Rejected("empty_field")),
        // Column limits, counted in characters as Postgres counts them.
        ("user-id-at-limit", text("user_id", &"é".repeat(128)), Written),
        ("user-id-over", text("user_id", &"é".repeat(129)), Rejected("too_long")),
        ("device-type-at-limit", text("device_type", &"😀".repeat(32)), Written),
        ("device-type-over", text("device_type", &"😀".repeat(33)), Rejected("too_long")),
        ("locale-at-limit", text("locale", &"ü".repeat(32)), Written),
        ("locale-over", text("locale", &"ü".repeat(33)), Rejected("too_long")),
        ("app-version-at-limit", text("app_version", &format!("{}1", "0".repeat(31))), Written),
        ("app-version-over", text("app_version", &format!("{}1", "0".repeat(32))), Rejected("too_long")),
        ("device-id-at-limit", text("device_id", &"d".repeat(256)), Written),
        ("device-id-over", text("device_id", &"d".repeat(257)), Rejected("too_long")),
        ("ip-longest-form", text("ip", "0000:0000:0000:0000:0000:ffff:192.168.100.228"), Written),
        ("ip-over", text("ip", &"1".repeat(65)), Rejected("too_long")),
        // Control characters, NUL included.
        ("nul-in-user-id", text("user_id", "abc\u{0}def"), Rejected("control_character")),
        ("escape-in-device-type", text("device_type", "and\u{1b}[31mroid"), Rejected("control_character")),
        ("del-in-locale", text("locale", "R\u{7f}U"), Rejected("control_character")),
        ("c1-in-device-id", text("device_id", "dev\u{85}1"), Rejected("control_character")),
        ("newline-in-user-id", text("user_id", "a\nb"), Rejected("control_character")),
        // Invisible characters: the same-looking spelling would get its own mask.
        ("zero-width-space-device-id", text("device_id", "dev-\u{200B}1"), Rejected("invisible_character")),
        ("bom-device-id", text("device_id", "\u{FEFF}dev-1"), Rejected("invisible_character")),
        ("soft-hyphen-device-id", text("device_id", "dev\u{AD}-1"), Rejected("invisible_character")),
        ("bidi-override-user-id", text("user_id", "user\u{202E}cba"), Rejected("invisible_character")),
        ("bidi-isolate-locale", text("locale", "\u{2066}RU\u{2069}"), Rejected("invisible_character")),
        (
            "zero-width-joiner-device-type",
            text("device_type", "ios\u{200D}"),
            Rejected("invisible_character"),
        ),
        ("only-invisible-user-id", text("user_id", "\u{200B}\u{200B}"), Rejected("invisible_character")),
        ("word-joiner-ip", text("ip", "10.0.0.1\u{2060}"), Rejected("invisible_character")),
        // Device ids are opaque and case-sensitive: these are two devices.
        ("device-id-lower", text("device_id", "abc-device"), Written),
        ("device-id-upper", text("device_id", "ABC-DEVICE"), Written),
        // Text that must be stored as it is.
        ("sql-looking", text("user_id", "'); DROP TABLE login_data.user_logins; --"), Written),
        ("non-ascii", text("user_id", "用户-ünïcödé-Ω"), Written),
        ("emoji-device-id", text("device_id", "📱-family-42"), Written),
        // IP spellings.
        ("ipv6-compressed", text("ip", "2001:db8::1"), Written),
        ("ipv6-full-upper", text("ip", "2001:DB8:0:0:0:0:0:1"), Written),
        ("ipv6-leading-zeros", text("ip", "2001:0db8:0000::0001"), Written),
        ("ipv6-brackets", text("ip", "[2001:db8::1]"), Rejected("invalid_ip")),
        ("ipv6-zone", text("ip", "fe80::1%eth0"), Rejected("invalid_ip")),
        ("ipv4-mapped", text("ip", "::ffff:192.0.2.33"), Written),
        ("ipv4-plain", text("ip", "192.0.2.33"), Written),
        ("ipv4-leading-zero", text("ip", "192.0.2.033"), Rejected("invalid_ip")),
        ("ipv4-out-of-range", text("ip", "256.0.0.1"), Rejected("invalid_ip")),
        ("ip-hostname", text("ip", "localhost"), Rejected("invalid_ip")),
        // app_version shapes.
        ("version-major", text("app_version", "2"), Written),
        ("version-major-minor", text("app_version", "2.3"), Written),
        ("version-full", text("app_version", "2.3.0"), Written),
        ("version-decimal-like", text("app_version", "0.96"), Written),
        ("version-zero-padded", text("app_version", "2.00"), Written),
        ("version-v-prefix", text("app_version", "v2.3"), Rejected("invalid_app_version")),
        ("version-prerelease", text("app_version", "2.3.0-beta"), Rejected("invalid_app_version")),
        ("version-four-parts", text("app_version", "1.2.3.4"), Rejected("invalid_app_version")),
        ("version-negative", text("app_version", "-1"), Rejected("invalid_app_version")),
        ("version-huge-part", text("app_version", "1.1000"), Rejected("app_version_out_of_range")),
        (
            "version-huge-major",
            text("app_version", "99999999999999999999"),
            Rejected("app_version_out_of_range"),
        ),
    ]
}

#[tokio::test]
async fn every_hostile_record_has_its_exact_outcome_and_costs_no_good_message_its_row() {
    let db = TestDb::new().await;
    let app = cold_start(&db, &new_kms().await).await;
    let cases = cases();
    assert!(cases.len() >= 40);
    // Each case between two good messages.
    let mut records = Vec::new();
    for (n, (id, body, _)) in cases.iter().enumerate() {
        let good = format!("good-{n:03}");
        records.push((good.clone(), login_body(&good, &format!("10.9.{}.{}", n / 200, n % 200 + 1), &good)));
        let body = body.replace("hostile-user", id);
        records.push((id.to_string(), body));
    }
    // Record-level problems: SQS attributes and ids.
    for id in [
        "no-body",
        "no-timestamp",
        "garbage-timestamp",
        "negative-timestamp",
        "no-message-id",
        "empty-message-id",
    ] {
        records.push((id.into(), login_body(id, "192.0.2.200", id)));
    }
    let mut event = event(&records);
    let position = |id: &str| records.iter().position(|(r, _)| r == id).expect("record");
    event.records[position("no-body")].body = None;
    event.records[position("no-timestamp")].attributes.remove("SentTimestamp");
    event.records[position("garbage-timestamp")]
        .attributes
        .insert("SentTimestamp".into(), "yesterday".into());
    event.records[position("negative-timestamp")].attributes.insert("SentTimestamp".into(), "-5".into());
    event.records[position("no-message-id")].message_id = None;
    event.records[position("empty-message-id")].message_id = Some(String::new());

    let (response, stats) =
        handler::handle_with_stats(&app, event).await.expect("the batch as a whole succeeds");

    let rejected: HashMap<&str, &str> =
        stats.rejections.iter().map(|r| (r.message_id.as_str(), r.reason.code())).collect();
    assert!(response.batch_item_failures.is_empty(), "every rejection is quarantined, none left to SQS");
    let quarantined = quarantined_ids(&db).await;
    assert_eq!(quarantined.len(), rejected.len(), "one quarantine row per rejection");
    assert!(quarantined.iter().all(|id| rejected.contains_key(id.as_str())));
    let client = db.connect().await;
    let written: HashMap<String, tokio_postgres::Row> = client
        .query("SELECT sqs_message_id, user_id, app_version, masked_ip, locale, masked_device_id FROM login_data.user_logins", &[])
        .await
        .expect("rows")
        .into_iter()
        .map(|row| (row.get(0), row))
        .collect();

    for (id, _, expect) in &cases {
        match expect {
            Rejected(code) => {
                assert_eq!(rejected.get(id), Some(code), "{id}");
                assert!(!written.contains_key(*id), "{id} must not be written");
            }
            Written => {
                assert!(!rejected.contains_key(id), "{id} rejected as {:?}", rejected.get(id));
                assert!(written.contains_key(*id), "{id} must be written");
            }
        }
    }
    for (id, code) in [
        ("no-body", "missing_body"),
        ("no-timestamp", "invalid_sent_timestamp"),
        ("garbage-timestamp", "invalid_sent_timestamp"),
        ("negative-timestamp", "invalid_sent_timestamp"),
    ] {
        assert_eq!(rejected.get(id), Some(&code), "{id}");
    }
    // A record without an id can be neither quarantined nor reported (an empty id in
    // batchItemFailures fails the whole batch).
    assert_eq!(stats.unidentifiable, 2);
    // Every good neighbour was written, once.
    let good = written.keys().filter(|id| id.starts_with("good-")).count();
    assert_eq!(good, cases.len());
    assert_eq!(stats.written as usize, written.len());

    // Stored as sent, not interpreted.
    let user = |id: &str| written[id].get::<_, String>(1);
    assert_eq!(user("sql-looking"), "'); DROP TABLE login_data.user_logins; --");
    assert_eq!(user("non-ascii"), "用户-ünïcödé-Ω");
    assert_eq!(user("user-id-at-limit").chars().count(), 128);
    assert_eq!(written["null-locale"].get::<_, Option<String>>(4), None);
    // One address, one mask, however it is spelled.
    let mask = |id: &str| written[id].get::<_, String>(3);
    assert_eq!(mask("ipv6-compressed"), mask("ipv6-full-upper"));
    assert_eq!(mask("ipv6-compressed"), mask("ipv6-leading-zeros"));
    assert_eq!(mask("ipv4-mapped"), mask("ipv4-plain"));
    assert_ne!(mask("ipv4-plain"), mask("ipv6-compressed"));
    let device_mask = |id: &str| written[id].get::<_, String>(5);
    assert_ne!(device_mask("device-id-lower"), device_mask("device-id-upper"), "case-sensitive");
    // The version encoding: major * 1e6 + minor * 1e3 + patch.
    let version = |id: &str| written[id].get::<_, i32>(2);
    assert_eq!(version("version-major"), 2_000_000);
    assert_eq!(version("version-major-minor"), 2_003_000);
    assert_eq!(version("version-full"), 2_003_000);
    assert_eq!(version("version-decimal-like"), 96_000);
    assert_eq!(version("version-zero-padded"), 2_000_000);
    assert_eq!(version("app-version-at-limit"), 1_000_000);
    // A rejected duplicate vaulted neither of its values.
    let index = app.keyring.indexer.index(login_etl_core::crypto::PiiField::Ip, "203.0.113.99");
    assert_eq!(
        db.count(&format!("SELECT count(*) FROM vault.pii_vault WHERE blind_index = '{index}'")).await,
        0
    );
    assert_eq!(
        db.count("SELECT count(*) FROM login_data.user_logins WHERE user_id LIKE '%DROP TABLE%'").await,
        1
    );
}
