//! The id a message is keyed by in `user_logins` and `login_quarantine`: the SQS message
//! id, or for a replay the original message's id.

use std::fmt;

/// 1 to [`MessageId::MAX_CHARS`] characters, none a control character. SQS's own ids are
/// far shorter; a record whose id does not fit cannot be stored, only reported.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageId(String);

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MessageIdError {
    #[error("the message id is empty")]
    Empty,
    #[error("the message id is longer than 128 characters")]
    TooLong,
    #[error("the message id contains control characters")]
    ControlCharacter,
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
        if text.chars().any(char::is_control) {
            return Err(MessageIdError::ControlCharacter);
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
        assert_eq!(MessageId::parse("é".repeat(129)), Err(MessageIdError::TooLong));
        assert_eq!(MessageId::parse("a\u{1b}[2J".into()), Err(MessageIdError::ControlCharacter));
        assert_eq!(MessageId::parse("a\0".into()), Err(MessageIdError::ControlCharacter));
        let id = MessageId::parse("é".repeat(128)).expect("128 characters fit");
        assert_eq!(id.as_str().chars().count(), 128);
        assert_eq!(
            MessageId::parse("3b5f0c5e-1f7a-4c5e-9d8e-0a1b2c3d4e5f".into()).map(MessageId::into_string),
            Ok("3b5f0c5e-1f7a-4c5e-9d8e-0a1b2c3d4e5f".to_owned())
        );
    }
}
