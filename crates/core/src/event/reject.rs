//! Why a message body is rejected: the body's fields and a [`RejectReason`] per problem,
//! each with a stable, low-cardinality code for logs, metrics and the DLQ runbook.

use std::fmt;

use super::app_version::AppVersionError;

/// The fields of a login message, as named in the JSON body. The discriminants are the
/// positions in [`Field::ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    UserId,
    AppVersion,
    DeviceType,
    Ip,
    Locale,
    DeviceId,
}

impl Field {
    pub const ALL: [Field; 6] =
        [Field::UserId, Field::AppVersion, Field::DeviceType, Field::Ip, Field::Locale, Field::DeviceId];

    pub fn name(self) -> &'static str {
        match self {
            Field::UserId => "user_id",
            Field::AppVersion => "app_version",
            Field::DeviceType => "device_type",
            Field::Ip => "ip",
            Field::Locale => "locale",
            Field::DeviceId => "device_id",
        }
    }

    /// Longest accepted value in characters: the `user_logins` column width, or for the
    /// PII fields (stored only encrypted) a bound that keeps the vault rows small.
    pub fn max_chars(self) -> usize {
        match self {
            Field::UserId => 128,
            Field::DeviceType | Field::Locale | Field::AppVersion => 32,
            Field::Ip => 64,
            Field::DeviceId => 256,
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a message was rejected. `code()` is what logs and metrics carry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RejectReason {
    #[error("message has no body")]
    MissingBody,
    #[error("message body is empty or only white space")]
    EmptyBody,
    #[error("body is not valid JSON")]
    NotJson,
    #[error("body is JSON but not an object")]
    NotAnObject,
    #[error("required field `{0}` is missing")]
    MissingField(Field),
    #[error("required field `{0}` is null")]
    NullField(Field),
    #[error("field `{0}` is not a string")]
    WrongType(Field),
    #[error("field `{0}` is given more than once")]
    DuplicateField(Field),
    #[error("field `{0}` is empty")]
    EmptyField(Field),
    #[error("field `{0}` is longer than {max} characters", max = .0.max_chars())]
    TooLong(Field),
    #[error("field `{0}` contains NUL or control characters")]
    ControlCharacter(Field),
    #[error("field `{0}` contains invisible characters (zero-width, BOM, soft hyphen, bidi controls, …)")]
    InvisibleCharacter(Field),
    #[error("ip is not a valid IPv4 or IPv6 address")]
    InvalidIp,
    #[error("app_version is not 1 to 3 dot-separated decimal numbers")]
    InvalidAppVersion,
    #[error("app_version has a part too large to encode (major <= 2146, minor and patch <= 999)")]
    AppVersionOutOfRange,
    #[error("SQS attribute SentTimestamp is missing or not epoch milliseconds")]
    InvalidSentTimestamp,
    #[error("a replay from the replay queue lacks valid original-message attributes")]
    InvalidReplayAttributes,
    /// A valid message whose date (its `SentTimestamp`'s UTC date) no partition of
    /// `user_logins` takes: not yet made, or already dropped. Kept, never lost: replayed
    /// once its month has a partition.
    #[error("no partition of user_logins takes the message's date (SentTimestamp)")]
    NoPartition,
}

impl RejectReason {
    /// Stable, low-cardinality reason code for logs, metrics and the DLQ runbook.
    pub fn code(&self) -> &'static str {
        match self {
            RejectReason::MissingBody => "missing_body",
            RejectReason::EmptyBody => "empty_body",
            RejectReason::NotJson => "not_json",
            RejectReason::NotAnObject => "not_an_object",
            RejectReason::MissingField(_) => "missing_field",
            RejectReason::NullField(_) => "null_field",
            RejectReason::WrongType(_) => "wrong_type",
            RejectReason::DuplicateField(_) => "duplicate_field",
            RejectReason::EmptyField(_) => "empty_field",
            RejectReason::TooLong(_) => "too_long",
            RejectReason::ControlCharacter(_) => "control_character",
            RejectReason::InvisibleCharacter(_) => "invisible_character",
            RejectReason::InvalidIp => "invalid_ip",
            RejectReason::InvalidAppVersion => "invalid_app_version",
            RejectReason::AppVersionOutOfRange => "app_version_out_of_range",
            RejectReason::InvalidSentTimestamp => "invalid_sent_timestamp",
            RejectReason::InvalidReplayAttributes => "invalid_replay_attributes",
            RejectReason::NoPartition => "no_partition",
        }
    }

    /// The body field the reason is about, if any.
    pub fn field(&self) -> Option<Field> {
        match self {
            RejectReason::MissingField(f)
            | RejectReason::NullField(f)
            | RejectReason::WrongType(f)
            | RejectReason::DuplicateField(f)
            | RejectReason::EmptyField(f)
            | RejectReason::TooLong(f)
            | RejectReason::ControlCharacter(f)
            | RejectReason::InvisibleCharacter(f) => Some(*f),
            RejectReason::InvalidIp => Some(Field::Ip),
            RejectReason::InvalidAppVersion | RejectReason::AppVersionOutOfRange => Some(Field::AppVersion),
            _ => None,
        }
    }
}

impl From<AppVersionError> for RejectReason {
    fn from(e: AppVersionError) -> Self {
        match e {
            AppVersionError::Malformed => RejectReason::InvalidAppVersion,
            AppVersionError::OutOfRange => RejectReason::AppVersionOutOfRange,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discriminants_are_positions_in_all() {
        for (position, field) in Field::ALL.into_iter().enumerate() {
            assert_eq!(field as usize, position);
        }
    }
}
