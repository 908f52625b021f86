//! The vault service's wire protocol: what `pii-vault` sends (a JSON [`Request`], `POST`ed
//! to the function URL), what it gets back (a JSON [`Response`], or an [`ErrorBody`] with a
//! stable [`ErrorCode`] and the HTTP status the service derives from it), and the types in
//! between. The service and the CLI both import it; neither owns it. Exit codes are the
//! CLI's business and never cross the wire.
#![forbid(unsafe_code)]

use chrono::{DateTime, NaiveDate, Utc};
use zeroize::Zeroizing;

pub use login_etl_core::crypto::PiiField;

/// A request to the service, as the function URL receives it (JSON).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    Find { field: PiiField, value: Plaintext, reason: Option<String> },
    Reveal { target: RevealTarget, reason: Option<String> },
    Forget { field: PiiField, target: ForgetTarget, reason: Option<String> },
    Audit { since: Option<DateTime<Utc>> },
    InitKeys,
    RotateKey,
    Reencrypt { batch_size: i64 },
}

/// The service's answer to a [`Request`] that succeeded.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Response {
    Find { field: PiiField, mask: String, rows: Vec<LoginMatch> },
    Reveal { values: Vec<Revealed> },
    Forget { field: PiiField, mask: String, outcome: Outcome },
    Audit { entries: Vec<AuditRow> },
    InitKeys { created: Vec<String> },
    RotateKey { version: i32 },
    Reencrypt { reencrypted: u64 },
}

/// What to reveal.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevealTarget {
    Mask { field: PiiField, mask: String },
    UserId(String),
    MessageId(String),
}

/// What to erase: a mask from `user_logins`, or a plaintext value.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ForgetTarget {
    Mask(String),
    Plaintext(Plaintext),
}

/// PII on its way to or from the service: never printed by `Debug`, wiped on drop.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Plaintext(Zeroizing<String>);

impl Plaintext {
    pub fn new(text: impl Into<String>) -> Plaintext {
        Plaintext(Zeroizing::new(text.into()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Plaintext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Plaintext(<redacted>)")
    }
}

/// One value's answer to a reveal.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Revealed {
    pub field: PiiField,
    pub mask: String,
    pub outcome: Outcome,
    /// The original value, for `revealed` only.
    pub value: Option<Plaintext>,
}

/// A `user_logins` row as `find` shows it (masks only, no PII).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LoginMatch {
    pub sqs_message_id: Option<String>,
    pub user_id: Option<String>,
    pub device_type: Option<String>,
    pub locale: Option<String>,
    pub app_version_raw: Option<String>,
    pub create_date: Option<NaiveDate>,
    pub masked_ip: Option<String>,
    pub masked_device_id: Option<String>,
}

impl LoginMatch {
    /// The `user_logins` columns a match shows, in field order (the service selects these;
    /// a test of the service checks each against the table description).
    pub const COLUMNS: [&str; 8] = [
        "sqs_message_id",
        "user_id",
        "device_type",
        "locale",
        "app_version_raw",
        "create_date",
        "masked_ip",
        "masked_device_id",
    ];
}

/// An audit row as the `audit` listing shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuditRow {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub caller: String,
    pub action: String,
    pub field: Option<String>,
    pub blind_index: Option<String>,
    pub target: Option<String>,
    pub reason: Option<String>,
    pub request_id: Option<String>,
    pub outcome: Option<String>,
    pub detail: Option<String>,
}

/// How an audited act ended, as the audit stores it and answers carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Revealed,
    Erased,
    Unknown,
    Forgotten,
    Refused,
    Found,
    Listed,
    Failed,
    Done,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Revealed => "revealed",
            Outcome::Erased => "erased",
            Outcome::Unknown => "unknown",
            Outcome::Forgotten => "forgotten",
            Outcome::Refused => "refused",
            Outcome::Found => "found",
            Outcome::Listed => "listed",
            Outcome::Failed => "failed",
            Outcome::Done => "done",
        }
    }
}

/// Why a request was refused or failed: stable snake_case codes, the contract between the
/// service (which derives the HTTP status from it) and the CLI (which derives its exit code).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// A missing or unusable reason.
    BadReason,
    /// A malformed request or argument.
    BadRequest,
    /// The request carried no IAM identity.
    NoIdentity,
    /// The caller's role does not allow the operation.
    NotAllowed,
    /// The caller's daily budget of reveals and finds is spent.
    BudgetExhausted,
    /// No row or vault entry for that target.
    Unknown,
    /// The value was erased by `forget`.
    Erased,
    /// The audit could not be written, so nothing was done.
    AuditUnavailable,
    /// KMS refused or was unreachable, or the keys are missing.
    Keys,
    /// The service's database failed.
    Database,
    /// A vault row failed authentication.
    Unauthentic,
    /// Two rotations raced for the same version.
    RotationRace,
    /// A code this build does not know (from a newer service); never sent.
    #[serde(other)]
    Other,
}

impl ErrorCode {
    /// Every code the service sends.
    pub const ALL: [ErrorCode; 12] = [
        ErrorCode::BadReason,
        ErrorCode::BadRequest,
        ErrorCode::NoIdentity,
        ErrorCode::NotAllowed,
        ErrorCode::BudgetExhausted,
        ErrorCode::Unknown,
        ErrorCode::Erased,
        ErrorCode::AuditUnavailable,
        ErrorCode::Keys,
        ErrorCode::Database,
        ErrorCode::Unauthentic,
        ErrorCode::RotationRace,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadReason => "bad_reason",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::NoIdentity => "no_identity",
            ErrorCode::NotAllowed => "not_allowed",
            ErrorCode::BudgetExhausted => "budget_exhausted",
            ErrorCode::Unknown => "unknown",
            ErrorCode::Erased => "erased",
            ErrorCode::AuditUnavailable => "audit_unavailable",
            ErrorCode::Keys => "keys",
            ErrorCode::Database => "database",
            ErrorCode::Unauthentic => "unauthentic",
            ErrorCode::RotationRace => "rotation_race",
            ErrorCode::Other => "other",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The body of every answer that is not a [`Response`]: `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    /// The error and its causes, for a person to read.
    pub message: String,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ErrorBody {
        ErrorBody { error: ErrorDetail { code, message: message.into() } }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_keep_their_wire_strings() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_value(code).expect("serialize");
            assert_eq!(json, code.as_str());
            assert_eq!(serde_json::from_value::<ErrorCode>(json).expect("deserialize"), code);
        }
        let unknown: ErrorCode = serde_json::from_str("\"some_future_code\"").expect("tolerated");
        assert_eq!(unknown, ErrorCode::Other);
    }

    #[test]
    fn the_error_body_has_code_and_message_and_no_exit_code() {
        let body = serde_json::to_value(ErrorBody::new(ErrorCode::BudgetExhausted, "spent")).expect("json");
        assert_eq!(body, serde_json::json!({"error": {"code": "budget_exhausted", "message": "spent"}}));
        // An older service also sent `exit_code`: still readable.
        let old: ErrorBody =
            serde_json::from_str(r#"{"error": {"code": "erased", "message": "m", "exit_code": 4}}"#)
                .expect("old body");
        assert_eq!(old.error.code, ErrorCode::Erased);
    }

    #[test]
    fn requests_keep_their_json_shape() {
        let request = Request::Reveal {
            target: RevealTarget::Mask { field: PiiField::Ip, mask: "ab".into() },
            reason: Some("ticket SEC-1".into()),
        };
        let json = serde_json::to_value(&request).expect("json");
        assert_eq!(
            json,
            serde_json::json!({"op": "reveal", "target": {"mask": {"field": "ip", "mask": "ab"}},
                               "reason": "ticket SEC-1"})
        );
        assert_eq!(serde_json::from_value::<Request>(json).expect("back"), request);
        assert_eq!(
            serde_json::to_value(Request::Reencrypt { batch_size: 5 }).expect("json"),
            serde_json::json!({"op": "reencrypt", "batch_size": 5})
        );
        assert!(format!("{:?}", Plaintext::new("10.0.0.1")).contains("redacted"));
    }
}
