//! `LoginEvent::parse` on arbitrary bytes: it must never panic, everything it accepts
//! must satisfy the column invariants, and whenever serde_json can also read the body as
//! a `Value`, the streaming parser must agree with it (same values, same kind of error).
#![no_main]

use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use login_etl_core::event::text::is_invisible;
use login_etl_core::event::{AppVersion, ClientIp, DeviceId, Field, LoginEvent, RejectReason};
use serde_json::{Map, Value};

fuzz_target!(|data: &[u8]| {
    let Ok(body) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = LoginEvent::parse(body);
    // Deterministic: the same body always gives the same answer.
    assert_eq!(parsed, LoginEvent::parse(body), "parse is not deterministic");

    // serde_json's tree parser is stricter (recursion limit, lone surrogates and number
    // range in ignored values), so only where it succeeds is it an oracle.
    let tree = serde_json::from_str::<Value>(body).ok();
    match parsed {
        Ok(login) => {
            check_accepted(&login);
            if let Some(tree) = tree {
                let object = tree.as_object().expect("accepted body is not a JSON object");
                agrees_with_tree(&login, object);
            }
        }
        Err(reason) => {
            check_reason(&reason);
            if let Some(tree) = tree {
                reason_agrees_with_tree(&reason, &tree);
            }
        }
    }
});

/// Non-empty (after trimming), no control or invisible character, at most `max` characters.
fn column_ok(field: &str, text: &str, max: usize) {
    assert!(!text.trim().is_empty(), "{field}: accepted empty or blank");
    assert!(!text.chars().any(char::is_control), "{field}: accepted a control character");
    assert!(!text.chars().any(is_invisible), "{field}: accepted an invisible character");
    let chars = text.chars().count();
    assert!((1..=max).contains(&chars), "{field}: {chars} characters, limit {max}");
}

fn check_accepted(login: &LoginEvent) {
    column_ok("user_id", login.user_id(), 128);
    column_ok("device_type", login.device_type(), 32);
    if let Some(locale) = login.locale() {
        column_ok("locale", locale, 32);
    }

    // app_version: in range, reproducible from its raw text, and really its parts.
    let version = login.app_version();
    column_ok("app_version", version.raw(), 32);
    let encoded = version.encoded();
    assert!((0..=2_146_999_999).contains(&encoded), "app_version encoded {encoded}");
    assert_eq!(AppVersion::parse(version.raw()).as_ref(), Ok(version), "app_version does not re-parse");
    let parts: Vec<u32> = version
        .raw()
        .trim()
        .split('.')
        .map(|part| part.parse().expect("accepted app_version part is not a u32"))
        .collect();
    assert!((1..=3).contains(&parts.len()), "app_version has {} parts", parts.len());
    let mut decoded = [0u32; 3];
    decoded[..parts.len()].copy_from_slice(&parts);
    let [major, minor, patch] = decoded;
    assert!(major <= 2146 && minor <= 999 && patch <= 999, "app_version part out of range");
    assert_eq!(
        i64::from(encoded),
        i64::from(major) * 1_000_000 + i64::from(minor) * 1_000 + i64::from(patch)
    );

    // ip: canonical text is a fixed point of parse, and IPv4-mapped IPv6 is folded.
    let ip = login.ip();
    let canonical = ip.canonical();
    assert_eq!(canonical, ip.addr().to_string());
    assert_eq!(canonical.parse::<IpAddr>().ok(), Some(ip.addr()), "canonical ip does not parse back");
    let reparsed = ClientIp::parse(&canonical).expect("canonical ip is rejected");
    assert!(reparsed == ip && reparsed.canonical() == canonical, "canonical ip is not a fixed point");
    if let IpAddr::V6(v6) = ip.addr() {
        assert!(v6.to_ipv4_mapped().is_none(), "IPv4-mapped IPv6 not folded to IPv4");
    }

    // device_id: trimmed, fits, and a fixed point of parse.
    let device_id = login.device_id().canonical();
    assert_eq!(device_id, device_id.trim(), "device_id not trimmed");
    column_ok("device_id", device_id, 256);
    let reparsed = DeviceId::parse(device_id).expect("canonical device_id is rejected");
    assert_eq!(reparsed.canonical(), device_id, "canonical device_id is not a fixed point");
}

fn agrees_with_tree(login: &LoginEvent, object: &Map<String, Value>) {
    let text = |field: Field| object.get(field.name()).and_then(Value::as_str);
    assert_eq!(text(Field::UserId), Some(login.user_id()), "user_id differs from serde_json's");
    assert_eq!(text(Field::DeviceType), Some(login.device_type()), "device_type differs");
    assert_eq!(text(Field::AppVersion), Some(login.app_version().raw()), "app_version differs");
    match object.get("locale") {
        Some(Value::Null) => assert_eq!(login.locale(), None, "null locale accepted as text"),
        Some(Value::String(locale)) => assert_eq!(login.locale(), Some(locale.as_str()), "locale differs"),
        other => panic!("accepted a locale that is neither null nor a string: {}", kind(other)),
    }
    let ip = text(Field::Ip).expect("accepted without a string ip");
    let ip: IpAddr = ip.trim().parse().expect("accepted an ip std cannot parse");
    assert_eq!(ip.to_canonical(), login.ip().addr(), "ip differs from serde_json's");
    let device_id = text(Field::DeviceId).expect("accepted without a string device_id");
    assert_eq!(device_id.trim(), login.device_id().canonical(), "device_id differs");
    // A repeated unknown key counts once in the tree but every time in the stream.
    let distinct_unknown =
        object.keys().filter(|k| Field::ALL.iter().all(|f| f.name() != k.as_str())).count();
    assert!(login.unknown_fields() >= distinct_unknown, "unknown fields undercounted");
}

fn check_reason(reason: &RejectReason) {
    let code = reason.code();
    assert!(!code.is_empty(), "empty reject code");
    assert!(
        code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
        "reject code {code:?} is not snake_case"
    );
    assert!(!reason.to_string().is_empty(), "empty reject message");
    // Those come from the SQS record, never from the body.
    assert!(
        !matches!(
            reason,
            RejectReason::MissingBody | RejectReason::EmptyBody | RejectReason::InvalidSentTimestamp
        ),
        "parse returned a record-level reason: {code}"
    );
}

fn reason_agrees_with_tree(reason: &RejectReason, tree: &Value) {
    let code = reason.code();
    let Some(object) = tree.as_object() else {
        assert_eq!(*reason, RejectReason::NotAnObject, "non-object body rejected as {code}");
        return;
    };
    assert!(
        !matches!(reason, RejectReason::NotJson | RejectReason::NotAnObject),
        "JSON object rejected as {code}"
    );
    let Some(field) = reason.field() else {
        panic!("body-level reason {code} without a field for a JSON object");
    };
    let value = object.get(field.name());
    // Ip and device_id are trimmed before the column checks; the others are not.
    let checked = |text: &str| match field {
        Field::Ip | Field::DeviceId => text.trim().to_owned(),
        _ => text.to_owned(),
    };
    match reason {
        RejectReason::MissingField(_) => assert!(value.is_none(), "{field} present but reported missing"),
        RejectReason::NullField(_) => {
            assert!(field != Field::Locale, "null locale rejected");
            assert!(matches!(value, Some(Value::Null)), "{field} is {} but reported null", kind(value));
        }
        RejectReason::WrongType(_) => assert!(
            !matches!(value, None | Some(Value::Null | Value::String(_))),
            "{field} is {} but reported wrong type",
            kind(value)
        ),
        RejectReason::DuplicateField(_) => {} // invisible in the tree (last key wins there)
        RejectReason::EmptyField(_)
        | RejectReason::ControlCharacter(_)
        | RejectReason::InvisibleCharacter(_)
        | RejectReason::TooLong(_) => {
            let Some(Value::String(text)) = value else {
                panic!("{field} is {} but rejected as {code}", kind(value));
            };
            // The column checks run in this order: blank, control, invisible, length.
            let text = checked(text);
            let blank = text.trim().is_empty();
            let control = text.chars().any(char::is_control);
            let invisible = text.chars().any(is_invisible);
            let too_long = text.chars().count() > field.max_chars();
            let expected = if blank {
                "empty_field"
            } else if control {
                "control_character"
            } else if invisible {
                "invisible_character"
            } else if too_long {
                "too_long"
            } else {
                "(none: the value fits its column)"
            };
            assert_eq!(code, expected, "{field}: wrong column reason");
        }
        RejectReason::InvalidIp => {
            let Some(Value::String(text)) = value else {
                panic!("ip is {} but rejected as invalid_ip", kind(value));
            };
            assert!(text.trim().parse::<IpAddr>().is_err(), "std parses an ip rejected as invalid_ip");
        }
        // app_version's own checks, and any reason added later: all are about a string value.
        _ => assert!(
            matches!(value, Some(Value::String(_))),
            "{field} is {} but rejected as {code}",
            kind(value)
        ),
    }
}

/// What kind of JSON value, without its content (bodies carry PII).
fn kind(value: Option<&Value>) -> &'static str {
    match value {
        None => "missing",
        Some(Value::Null) => "null",
        Some(Value::Bool(_)) => "a boolean",
        Some(Value::Number(_)) => "a number",
        Some(Value::String(_)) => "a string",
        Some(Value::Array(_)) => "an array",
        Some(Value::Object(_)) => "an object",
    }
}
