//! A replay's provenance: the SQS message attributes with which the vault service sends a
//! quarantined body back (`pii-vault quarantine replay`), so that the login keeps its
//! original message id (its idempotency key) and `SentTimestamp` (its `create_date`).
//!
//! The function honours them only on records from the replay queue, which only the vault
//! service's role may send to (`REPLAY_QUEUE_ARN`; the event source mapping sets each
//! record's `eventSourceARN`). The same attributes arriving any other way are ignored.

use chrono::{DateTime, Utc};

use crate::event::MessageId;

pub const ORIGINAL_MESSAGE_ID: &str = "login-etl.original-message-id";
pub const ORIGINAL_SENT_TIMESTAMP: &str = "login-etl.original-sent-timestamp";
pub const REPLAY_ATTEMPT: &str = "login-etl.replay-attempt";
/// Every attribute of a replay.
pub const ATTRIBUTES: [&str; 3] = [ORIGINAL_MESSAGE_ID, ORIGINAL_SENT_TIMESTAMP, REPLAY_ATTEMPT];

/// The highest attempt number (`login_quarantine.attempt`'s bound).
pub const MAX_ATTEMPT: i32 = 1000;

/// Where a replayed message came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayOrigin {
    pub message_id: MessageId,
    pub sent_at: DateTime<Utc>,
    /// 1 for the first replay of a message, and so on.
    pub attempt: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("replay attribute {0} is missing or malformed")]
pub struct ReplayAttributeError(pub &'static str);

impl ReplayOrigin {
    /// From a record's message attributes (`attribute(name)` gives the string value).
    pub fn from_attributes<'a>(
        attribute: impl Fn(&str) -> Option<&'a str>,
    ) -> Result<ReplayOrigin, ReplayAttributeError> {
        let message_id = attribute(ORIGINAL_MESSAGE_ID)
            .and_then(|id| MessageId::parse(id.to_owned()).ok())
            .ok_or(ReplayAttributeError(ORIGINAL_MESSAGE_ID))?;
        let sent_at = attribute(ORIGINAL_SENT_TIMESTAMP)
            .filter(|text| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|text| text.parse::<i64>().ok())
            .and_then(DateTime::from_timestamp_millis)
            .ok_or(ReplayAttributeError(ORIGINAL_SENT_TIMESTAMP))?;
        let attempt = attribute(REPLAY_ATTEMPT)
            .and_then(|text| text.parse::<i32>().ok())
            .filter(|n| (1..=MAX_ATTEMPT).contains(n))
            .ok_or(ReplayAttributeError(REPLAY_ATTEMPT))?;
        Ok(ReplayOrigin { message_id, sent_at, attempt })
    }

    /// The attributes to send: (name, SQS data type, value).
    pub fn to_attributes(&self) -> [(&'static str, &'static str, String); 3] {
        [
            (ORIGINAL_MESSAGE_ID, "String", self.message_id.to_string()),
            (ORIGINAL_SENT_TIMESTAMP, "Number", self.sent_at.timestamp_millis().to_string()),
            (REPLAY_ATTEMPT, "Number", self.attempt.to_string()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_what_a_column_cannot_hold() {
        let origin = ReplayOrigin {
            message_id: MessageId::parse("m-1".into()).expect("id"),
            sent_at: DateTime::from_timestamp_millis(1_763_625_600_123).expect("time"),
            attempt: 2,
        };
        let sent = origin.to_attributes();
        let get = |sent: &[(&'static str, &'static str, String)], name: &str| {
            sent.iter().find(|(n, _, _)| *n == name).map(|(_, _, v)| v.clone())
        };
        let parsed = ReplayOrigin::from_attributes(|name| {
            sent.iter().find(|(n, _, _)| *n == name).map(|(_, _, v)| v.as_str())
        });
        assert_eq!(parsed, Ok(origin.clone()));
        assert_eq!(get(&sent, REPLAY_ATTEMPT).as_deref(), Some("2"));

        for (broken, value) in [
            (ORIGINAL_MESSAGE_ID, ""),
            (ORIGINAL_MESSAGE_ID, "a\u{1b}b"),
            (ORIGINAL_SENT_TIMESTAMP, "-5"),
            (ORIGINAL_SENT_TIMESTAMP, "1e12"),
            (REPLAY_ATTEMPT, "0"),
            (REPLAY_ATTEMPT, "1001"),
        ] {
            let result = ReplayOrigin::from_attributes(|name| {
                if name == broken {
                    Some(value)
                } else {
                    sent.iter().find(|(n, _, _)| *n == name).map(|(_, _, v)| v.as_str())
                }
            });
            assert_eq!(result, Err(ReplayAttributeError(broken)), "{broken}={value:?}");
        }
        let missing = ReplayOrigin::from_attributes(|name| {
            (name != REPLAY_ATTEMPT).then(|| get(&sent, name)).flatten().map(|v| &*v.leak())
        });
        assert_eq!(missing, Err(ReplayAttributeError(REPLAY_ATTEMPT)));
    }
}
