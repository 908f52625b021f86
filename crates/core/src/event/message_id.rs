//! The id a message is keyed by in `user_logins` and `login_quarantine`: the SQS message
//! id, or for a replay the original message's id.

use std::fmt;

/// 1 to [`MessageId::MAX_CHARS`] printable ASCII characters (`!` to `~`). SQS's own ids are
/// UUIDs; a record whose id does not fit cannot be stored, only reported. Exactly what
/// `login_quarantine`'s CHECK accepts, so no id this takes can fail a batch's insert.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageId(String);

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MessageIdError {
    #[error("the message id is empty")]
    Empty,
    #[error("the message id is longer than 128 characters")]
    TooLong,
    #[error("the message id holds a character other than printable ASCII")]
    NotPrintableAscii,
}

impl MessageId {
    /// The width of the `sqs_message_id` and `message_id` columns.
    pub const MAX_CHARS: usize = 128;

    pub fn parse(text: String) -> Result<MessageId, MessageIdError> {
        if text.is_empty() {
            return Err(MessageIdError::Empty);
        }
        if text.chars().count() > Self::MAX_CHARS {
            return Err(MessageIdError::TooLong);
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(MessageIdError::NotPrintableAscii);
        }
        Ok(MessageId(text))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ids_a_column_can_hold_are_taken() {
        assert_eq!(MessageId::parse(String::new()), Err(MessageIdError::Empty));
        assert_eq!(MessageId::parse("x".repeat(129)), Err(MessageIdError::TooLong));
        for bad in ["a\u{1b}[2J", "a\0", "a b", "é", "a\u{2028}b", "\u{200B}"] {
            assert_eq!(
                MessageId::parse(bad.into()),
                Err(MessageIdError::NotPrintableAscii),
                "{}",
                bad.escape_unicode()
            );
        }
        let id = MessageId::parse("~".repeat(128)).expect("128 characters fit");
        assert_eq!(id.as_str().len(), 128);
        assert_eq!(
            MessageId::parse("3b5f0c5e-1f7a-4c5e-9d8e-0a1b2c3d4e5f".into()).map(MessageId::into_string),
            Ok("3b5f0c5e-1f7a-4c5e-9d8e-0a1b2c3d4e5f".to_owned())
        );
    }
}
