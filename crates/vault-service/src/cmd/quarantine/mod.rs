//! The quarantine's operations (`pii-vault quarantine …`), one a file: `list`, `show`,
//! `replay`, `import_dlq`, `purge`. Here: the checks they share (ids, reason codes, times,
//! the page cursor) and the bounds that keep every answer inside the function URL's 6 MB
//! and the service's 30 s.
//!
//! Every check runs on text the caller typed, in `validate` (after the request is on the
//! record), so a malformed id, filter or cursor is refused on the record, and only a
//! value that passed is ever written into the audit.

mod import_dlq;
mod list;
mod purge;
mod replay;
mod show;

use std::sync::LazyLock;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::ServiceError;
use login_etl_core::event::MessageId;
use login_etl_core::replay::MAX_ATTEMPT;
use login_etl_core::store::quarantine::{LOGIN_QUARANTINE, LOGIN_QUARANTINE_MASKS, reason_codes};

pub use import_dlq::Imported;
pub use list::QuarantineFilter;
pub use purge::Purged;
pub use show::Shown;

/// How long the work of one request may take: the service's timeout is 30 s, and the
/// audit's outcome still has to be written after it.
const WORK_BUDGET: Duration = Duration::from_secs(20);

/// A message id the quarantine's key can hold (the column's rule: 1 to 128 characters, no
/// control character), or the refusal. Invisible characters are allowed: a row keyed by
/// such an id (a hand-made event's) must stay reachable; the audit records it escaped.
fn message_id(id: &str) -> Result<&str, ServiceError> {
    MessageId::parse(id.to_owned()).map(|_| id).map_err(|_| {
        ServiceError::BadRequest(format!(
            "a message id is 1 to {} printable ASCII characters",
            MessageId::MAX_CHARS
        ))
    })
}

/// A message id as the audit records it: only one the key can hold (printable ASCII, so
/// nothing in it can hide or steer what a person reads).
fn audit_id(id: &str) -> Option<String> {
    message_id(id).ok().map(str::to_owned)
}

/// SQL: whether the quarantined row `q` holds a value `forget` erased: a mask of the body
/// is an erasure token, or (erased by an older version, not yet converted) a vault
/// tombstone's mask. True also for a body quarantined after the forget (the function
/// quarantines such a message like any other, its masks written as the token): show and
/// replay treat it as erased, and erase it on the spot.
static HOLDS_FORGOTTEN_VALUE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "EXISTS (SELECT 1 FROM {} m
             WHERE m.message_id = q.message_id AND m.attempt = q.attempt
               AND (EXISTS (SELECT 1 FROM vault.pii_erasures e WHERE e.field = m.field AND e.token = m.blind_index)
                    OR EXISTS (SELECT 1 FROM vault.pii_vault v
                                WHERE v.field = m.field AND v.blind_index = m.blind_index
                                  AND v.erased_at IS NOT NULL)))",
        LOGIN_QUARANTINE_MASKS.name
    )
});

/// Erases one quarantined body found to hold a forgotten value (as `forget` would have).
/// One another session holds is left (the purge's login may hold an old body: waiting
/// would let it stall show and replay); it holds the value's token, so it stays erased
/// for show and replay until the purge or a later show or replay erases it.
static ERASE_FORGOTTEN: LazyLock<String> = LazyLock::new(|| {
    let bodies = LOGIN_QUARANTINE.name;
    format!(
        "UPDATE {bodies}
    SET key_version = NULL, nonce = NULL, ciphertext = NULL, erased_at = clock_timestamp(), erased_by = 'forget'
    WHERE (message_id, attempt) IN (SELECT message_id, attempt FROM {bodies}
                                     WHERE message_id = $1 AND attempt = $2 AND erased_at IS NULL
                                     FOR UPDATE SKIP LOCKED)"
    )
});

/// An attempt number as the quarantine keys it (0 when first seen, n for the n-th replay).
fn attempt(attempt: i64) -> Result<i32, ServiceError> {
    i32::try_from(attempt)
        .ok()
        .filter(|a| (0..=MAX_ATTEMPT).contains(a))
        .ok_or_else(|| ServiceError::BadRequest(format!("an attempt is 0 to {MAX_ATTEMPT}")))
}

/// A reason code a quarantine row can carry.
fn reason_code(code: &str) -> Result<&'static str, ServiceError> {
    let codes = reason_codes();
    codes.iter().find(|known| **known == code).copied().ok_or_else(|| {
        ServiceError::BadRequest(format!("unknown reason code; the codes are: {}", codes.join(", ")))
    })
}

/// Clock skew tolerated on `--since` before it counts as in the future.
const SINCE_SKEW: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

/// `--since`: an RFC 3339 time, not in the future (nothing could match).
fn since(text: &str) -> Result<DateTime<Utc>, ServiceError> {
    let since = DateTime::parse_from_rfc3339(text.trim())
        .map_err(|_| {
            ServiceError::BadRequest("--since is an RFC 3339 time, e.g. 2026-11-01T00:00:00Z".into())
        })?
        .with_timezone(&Utc);
    if since > Utc::now() + SINCE_SKEW {
        return Err(ServiceError::BadRequest("--since is in the future: nothing can match".into()));
    }
    Ok(since)
}

/// Where a page ends: the last row's (quarantined_at, message_id, attempt), the order
/// every page is read in. On the wire an opaque text, checked like everything else.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cursor {
    quarantined_at: DateTime<Utc>,
    message_id: String,
    attempt: i32,
}

impl Cursor {
    /// `q1.<microseconds>.<attempt>.<message id>`: the id last, as it may hold dots.
    fn encode(&self) -> String {
        format!("q1.{}.{}.{}", self.quarantined_at.timestamp_micros(), self.attempt, self.message_id)
    }

    fn decode(text: &str) -> Result<Cursor, ServiceError> {
        let malformed =
            || ServiceError::BadRequest("malformed page cursor (pass `next` as it was answered)".into());
        let mut parts = text.splitn(4, '.');
        let (Some("q1"), Some(micros), Some(attempt_text), Some(id)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed());
        };
        let quarantined_at =
            micros.parse().ok().and_then(DateTime::from_timestamp_micros).ok_or_else(malformed)?;
        let attempt = attempt_text
            .parse::<i64>()
            .map_err(|_| malformed())
            .and_then(|a| attempt(a).map_err(|_| malformed()))?;
        let message_id = message_id(id).map_err(|_| malformed())?.to_owned();
        Ok(Cursor { quarantined_at, message_id, attempt })
    }
}

/// What a filter's request row records: only parts that passed their checks.
fn describe_filter(since_text: Option<&str>, code: Option<&str>) -> Option<String> {
    let parts: Vec<String> = [
        code.and_then(|c| reason_code(c).ok()).map(|c| format!("reason_code:{c}")),
        since_text.and_then(|s| since(s).ok()).map(|s| format!("since:{}", s.to_rfc3339())),
    ]
    .into_iter()
    .flatten()
    .collect();
    (!parts.is_empty()).then(|| parts.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_and_nothing_else_passes_for_one() {
        let cursor = Cursor {
            quarantined_at: DateTime::from_timestamp_micros(1_763_625_600_123_456).expect("time"),
            message_id: "a.b.c".into(),
            attempt: 3,
        };
        assert_eq!(Cursor::decode(&cursor.encode()).expect("decodes"), cursor);
        for bad in [
            "",
            "q1",
            "q2.1.0.m",
            "q1.x.0.m",
            "q1.1.-1.m",
            "q1.1.1001.m",
            "q1.1.0.",
            "q1.1.0.m\u{1b}[2J",
            &format!("q1.1.0.{}", "m".repeat(129)),
            "q1.99999999999999999999.0.m",
        ] {
            let error = Cursor::decode(bad).expect_err(bad);
            assert!(error.to_string().contains("cursor"), "{bad:?}: {error}");
        }
    }

    #[test]
    fn forgotten_values_are_looked_up_by_each_fields_mask_column() {}

    #[test]
    fn filters_are_checked_and_only_checked_parts_are_described() {
        assert!(reason_code("invalid_ip").is_ok() && reason_code("dead_lettered").is_ok());
        for bad in ["", "INVALID_IP", "invalid_ip ", "nope", "x\u{0}"] {
            assert!(matches!(reason_code(bad), Err(ServiceError::BadRequest(_))), "{bad:?}");
        }
        assert!(since("2026-11-01T00:00:00Z").is_ok() && since(" 2026-11-01T01:00:00+01:00 ").is_ok());
        for bad in ["", "yesterday", "2026-11-01", "2026-13-01T00:00:00Z", "9999-01-01T00:00:00Z"] {
            assert!(matches!(since(bad), Err(ServiceError::BadRequest(_))), "{bad:?}");
        }
        assert_eq!(
            describe_filter(Some("2026-11-01T00:00:00Z"), Some("invalid_ip")).as_deref(),
            Some("reason_code:invalid_ip since:2026-11-01T00:00:00+00:00")
        );
        assert_eq!(describe_filter(Some("\u{1b}[2J"), Some("x".repeat(10_000).as_str())), None);
        assert!(message_id(&"~".repeat(128)).is_ok());
        for bad in ["", "m\u{7}", "m\u{1b}[2J", "m\u{9b}", &"m".repeat(129), "é", "m\u{202E}di\u{200B}"] {
            assert!(matches!(message_id(bad), Err(ServiceError::BadRequest(_))), "{bad:?}");
            assert_eq!(audit_id(bad), None, "{bad:?}");
        }
        let cursor = Cursor { quarantined_at: Utc::now(), message_id: "m.1~x".into(), attempt: 0 };
        assert_eq!(Cursor::decode(&cursor.encode()).ok().map(|c| c.message_id), Some("m.1~x".to_owned()));
        assert!(Cursor::decode("q1.1.0.m\u{202E}").is_err(), "no cursor names an id no key holds");
        assert_eq!(attempt(1000).ok(), Some(1000));
        assert!(attempt(-1).is_err() && attempt(1001).is_err() && attempt(i64::MAX).is_err());
    }
}
