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
    Find {
        field: PiiField,
        value: Plaintext,
        reason: Option<String>,
    },
    Reveal {
        target: RevealTarget,
        reason: Option<String>,
    },
    Forget {
        field: PiiField,
        target: ForgetTarget,
        reason: Option<String>,
    },
    /// Erases every ip and device id of this user's rows (an erasure request names a
    /// person); spends the erasure quota, not the reveal budget.
    ForgetUser {
        user_id: String,
        reason: Option<String>,
    },
    /// One page of the audit: requests at or after `since`, with ids after `after` (the
    /// cursor of the previous page), at most `limit` of them (and never more bytes than
    /// [`AUDIT_PAGE_BYTES`]).
    Audit {
        since: Option<DateTime<Utc>>,
        #[serde(default)]
        after: Option<i64>,
        #[serde(default)]
        limit: Option<u32>,
    },
    /// Recomputes one page of the audit's hash chain. `after` is the cursor the previous
    /// page answered (`SEQ:CHAIN`, none to start at the first chained entry); `head` a link
    /// the service's log stream recorded (`SEQ:CHAIN`), which the chain must reach and
    /// agree with. Text, so that a malformed one is refused on the record.
    AuditVerify {
        after: Option<String>,
        head: Option<String>,
    },
    InitKeys,
    RotateKey,
    Reencrypt {
        batch_size: i64,
    },
    /// One batch of the vault's expiry: at most `batch_size` vault rows after where the
    /// pass stands (kept by the service), those unseen for `VAULT_RETENTION_DAYS` deleted.
    Expire {
        batch_size: i64,
    },
    /// One page of the quarantine, without bodies or masks. `since` (RFC 3339) and `after`
    /// (the cursor of the previous page) are text, so that a malformed one reaches the
    /// service and is refused on the record.
    QuarantineList {
        since: Option<String>,
        reason_code: Option<String>,
        after: Option<String>,
        limit: Option<u32>,
    },
    /// One quarantined body (the newest attempt of that message id without `attempt`).
    QuarantineShow {
        message_id: String,
        attempt: Option<i64>,
        reason: Option<String>,
    },
    /// Sends quarantined bodies back for ingestion, keeping their id and date.
    QuarantineReplay {
        selection: ReplaySelection,
        reason: Option<String>,
    },
    /// Moves up to `max` messages of the dead-letter queue into the quarantine, sealed.
    QuarantineImportDlq {
        max: Option<u32>,
    },
    /// Erases the bodies quarantined longer than the retention.
    QuarantinePurge,
}

/// The service's answer to a [`Request`] that succeeded.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Response {
    Find {
        field: PiiField,
        mask: String,
        /// The oldest [`FIND_MAX_ROWS`] of the matching rows.
        rows: Vec<LoginMatch>,
        /// How many rows match (more than `rows` holds when over [`FIND_MAX_ROWS`]).
        #[serde(default)]
        total: u64,
    },
    Reveal {
        values: Vec<Revealed>,
    },
    /// Always `forgotten`, whether or not the value was ever vaulted: the answer is no
    /// oracle for a guess (and carries no mask).
    Forget {
        field: PiiField,
        outcome: Outcome,
    },
    ForgetUser {
        user_id: String,
        /// Distinct values (ip and device id) of the user's rows, now erased.
        erased: u64,
        /// Of those, values other users' rows hold too (erased for them as well).
        shared: u64,
    },
    Audit {
        entries: Vec<AuditRow>,
        /// The cursor of the next page (`after`); none after the last.
        #[serde(default)]
        next: Option<i64>,
    },
    AuditVerify(VerifyPage),
    InitKeys {
        created: Vec<String>,
    },
    RotateKey {
        version: i32,
    },
    Reencrypt {
        reencrypted: u64,
        /// Quarantined bodies re-sealed (absent from an older service).
        #[serde(default)]
        quarantine_reencrypted: u64,
    },
    Expire {
        /// Vault rows deleted by this batch.
        expired: u64,
        /// Vault rows this batch decided.
        scanned: u64,
        /// Whether the pass reached the end of the vault (ask again while false).
        done: bool,
        /// `VAULT_RETENTION_DAYS`; none: forever (only values in no login expire).
        retention_days: Option<u32>,
    },
    QuarantineList {
        rows: Vec<QuarantinedMessage>,
        /// The cursor of the next page; none after the last.
        next: Option<String>,
    },
    QuarantineShow {
        message_id: String,
        attempt: Option<i32>,
        /// `shown`, `erased` or `unknown`.
        outcome: Outcome,
        /// The body as it arrived, for `shown` only: attacker-controlled text.
        body: Option<Plaintext>,
    },
    QuarantineReplay {
        rows: Vec<ReplayedRow>,
        /// For a selection by reason code: the cursor of the next page.
        next: Option<String>,
    },
    QuarantineImportDlq {
        imported: u64,
        /// Already quarantined under the same key: kept as they were, deleted from the queue.
        already_quarantined: u64,
        /// Left on the queue: an id no column can hold, or a delete SQS refused.
        left_on_queue: u64,
        /// Whether the import stopped at `max` or for time with messages possibly left.
        more: bool,
    },
    QuarantinePurge {
        purged: u64,
        retention_days: u32,
        /// Whether it stopped for time with expired bodies possibly left.
        more: bool,
    },
}

/// What `quarantine replay` sends.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ReplaySelection {
    /// The newest attempt of each of these message ids.
    MessageIds(Vec<String>),
    /// Every row with this reason code (quarantined at or after `since`), one page a request.
    ReasonCode { code: String, since: Option<String>, after: Option<String> },
}

/// A quarantined message as `quarantine list` shows it: no body, no mask.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QuarantinedMessage {
    pub message_id: String,
    pub attempt: i32,
    pub source: String,
    pub reason_code: String,
    pub field: Option<String>,
    pub receive_count: Option<i32>,
    pub sent_at: Option<DateTime<Utc>>,
    pub quarantined_at: DateTime<Utc>,
    pub erased_at: Option<DateTime<Utc>>,
    pub erased_by: Option<String>,
    pub replayed_at: Option<DateTime<Utc>>,
    pub replay_attempt: Option<i32>,
}

/// One row's answer to a replay.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReplayedRow {
    pub message_id: String,
    /// The quarantine row's attempt (none for an unknown id).
    pub attempt: Option<i32>,
    pub outcome: ReplayOutcome,
    /// The attempt number the replay carried (for `replayed` and `already_replayed`).
    pub replay_attempt: Option<i32>,
}

/// What happened to one row of a replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplayOutcome {
    /// Sent to the replay queue now, and marked.
    Replayed,
    /// Sent before: not sent again.
    AlreadyReplayed,
    /// The body was erased (forget or purge): never sent.
    Erased,
    /// No quarantine row for that id.
    Unknown,
    /// The row has no SentTimestamp, so its date cannot be kept: not sent.
    NoSentAt,
    /// An empty body, which SQS cannot carry: not sent.
    EmptyBody,
    /// SQS refused the message itself (its contents or size): not sent.
    Unsendable,
    /// The message was replayed as often as an attempt number can say (1000).
    AttemptsExhausted,
    /// Another request holds the row (replaying it right now): not sent by this one.
    Busy,
    /// The request ran out of time before this row: not sent; run it again.
    NotAttempted,
    /// An outcome this build does not know (from a newer service); never sent.
    #[serde(other)]
    Other,
}

impl ReplayOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            ReplayOutcome::Replayed => "replayed",
            ReplayOutcome::AlreadyReplayed => "already_replayed",
            ReplayOutcome::Erased => "erased",
            ReplayOutcome::Unknown => "unknown",
            ReplayOutcome::NoSentAt => "no_sent_at",
            ReplayOutcome::EmptyBody => "empty_body",
            ReplayOutcome::Unsendable => "unsendable",
            ReplayOutcome::AttemptsExhausted => "attempts_exhausted",
            ReplayOutcome::Busy => "busy",
            ReplayOutcome::NotAttempted => "not_attempted",
            ReplayOutcome::Other => "other",
        }
    }
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

/// The most an `audit` page holds in JSON: far below the function URL's 6 MB answer.
pub const AUDIT_PAGE_BYTES: usize = 1 << 20;

/// The most rows a find answers (the oldest; the answer says how many match). A row is
/// bounded by its columns (ids of 128 characters, two masks), so 1000 rows stay far below
/// the function URL's 6 MB answer whatever the value: a find is a check, not an export.
pub const FIND_MAX_ROWS: usize = 1000;

/// What one page of `audit verify` found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VerifyPage {
    /// Entries of schema versions before the chain, which it does not cover.
    pub unchained: u64,
    /// Entries whose link this page recomputed and found as stored.
    pub verified: u64,
    /// The last entry verified, as `SEQ:CHAIN` (the form of the service's log lines).
    pub last: Option<String>,
    /// The cursor of the next page; none once the page reached the end of the chain.
    pub next: Option<String>,
    /// The first entry that does not verify, and why; none while the chain holds.
    pub broken: Option<Broken>,
}

impl VerifyPage {
    /// Nothing verified yet: what the pages of one verification add up in.
    pub fn empty() -> VerifyPage {
        VerifyPage { unchained: 0, verified: 0, last: None, next: None, broken: None }
    }

    /// Adds the next page; the cursor to ask for next, none once verification ended (at the
    /// end of the chain, or at a break).
    pub fn add(&mut self, page: VerifyPage) -> Option<String> {
        self.unchained = page.unchained;
        self.verified += page.verified;
        self.last = page.last.or(self.last.take());
        self.broken = page.broken;
        page.next.filter(|_| self.broken.is_none())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Broken {
    /// The sequence number (or, for an unchained entry, the id) at fault.
    pub seq: i64,
    pub problem: String,
}

/// An audit row as the `audit` listing shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuditRow {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub caller: String,
    pub action: String,
    pub field: Option<String>,
    /// Entries since the chain (schema version 8): the mask's keyed digest under the
    /// service's audit key, equal for equal masks and useless without the key; older
    /// entries: the mask itself.
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
    Shown,
    Replayed,
    Imported,
    Purged,
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
            Outcome::Shown => "shown",
            Outcome::Replayed => "replayed",
            Outcome::Imported => "imported",
            Outcome::Purged => "purged",
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
    /// A daily budget is spent: the caller's (reveals, finds, forgets of a value, quarantine
    /// shows), the staff role's, or the caller's erasure quota.
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
    /// The service lacks the setting the operation needs (a queue URL).
    NotConfigured,
    /// SQS refused or was unreachable.
    Queue,
    /// A code this build does not know (from a newer service); never sent.
    #[serde(other)]
    Other,
}

impl ErrorCode {
    /// Every code the service sends.
    pub const ALL: [ErrorCode; 14] = [
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
        ErrorCode::NotConfigured,
        ErrorCode::Queue,
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
            ErrorCode::NotConfigured => "not_configured",
            ErrorCode::Queue => "queue",
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
        let erase = Request::ForgetUser { user_id: "u-1".into(), reason: Some("erasure request 77".into()) };
        let json = serde_json::to_value(&erase).expect("json");
        assert_eq!(
            json,
            serde_json::json!({"op": "forget-user", "user_id": "u-1", "reason": "erasure request 77"})
        );
        assert_eq!(serde_json::from_value::<Request>(json).expect("back"), erase);
        // A forget's answer has no mask to carry.
        let forgotten = Response::Forget { field: PiiField::Ip, outcome: Outcome::Forgotten };
        assert_eq!(
            serde_json::to_value(forgotten).expect("json"),
            serde_json::json!({"op": "forget", "field": "ip", "outcome": "forgotten"})
        );
    }

    #[test]
    fn an_audit_request_or_answer_of_an_older_peer_still_reads_and_pages_add_up() {
        let request: Request =
            serde_json::from_str(r#"{"op": "audit", "since": null}"#).expect("old request");
        assert_eq!(request, Request::Audit { since: None, after: None, limit: None });
        let answer: Response = serde_json::from_str(r#"{"op": "audit", "entries": []}"#).expect("old answer");
        assert_eq!(answer, Response::Audit { entries: vec![], next: None });

        let page = |verified, last: &str, next: Option<&str>, broken: Option<i64>| VerifyPage {
            unchained: 3,
            verified,
            last: Some(last.to_owned()),
            next: next.map(str::to_owned),
            broken: broken.map(|seq| Broken { seq, problem: "p".into() }),
        };
        let mut total = VerifyPage::empty();
        assert_eq!(total.add(page(2, "2:aa", Some("2:aa"), None)), Some("2:aa".to_owned()));
        assert_eq!(total.add(page(1, "3:bb", Some("3:bb"), Some(4))), None, "a break ends it");
        assert_eq!((total.verified, total.last.as_deref(), total.unchained), (3, Some("3:bb"), 3));
        assert_eq!(total.broken.map(|b| b.seq), Some(4));
    }

    #[test]
    fn quarantine_requests_keep_their_json_shape() {
        let replay = Request::QuarantineReplay {
            selection: ReplaySelection::MessageIds(vec!["m-1".into()]),
            reason: Some("ticket SEC-1".into()),
        };
        let json = serde_json::to_value(&replay).expect("json");
        assert_eq!(
            json,
            serde_json::json!({"op": "quarantine-replay", "selection": {"message_ids": ["m-1"]},
                               "reason": "ticket SEC-1"})
        );
        assert_eq!(serde_json::from_value::<Request>(json).expect("back"), replay);
        // Optional fields may be left out.
        let list: Request = serde_json::from_str(r#"{"op": "quarantine-list"}"#).expect("list");
        assert_eq!(
            list,
            Request::QuarantineList { since: None, reason_code: None, after: None, limit: None }
        );
        let purge: Request = serde_json::from_str(r#"{"op": "quarantine-purge"}"#).expect("purge");
        assert_eq!(purge, Request::QuarantinePurge);
        // An older service's reencrypt answer still reads.
        let old: Response = serde_json::from_str(r#"{"op": "reencrypt", "reencrypted": 3}"#).expect("old");
        assert_eq!(old, Response::Reencrypt { reencrypted: 3, quarantine_reencrypted: 0 });
        let outcome: ReplayOutcome = serde_json::from_str("\"some_future_outcome\"").expect("tolerated");
        assert_eq!(outcome, ReplayOutcome::Other);
        assert!(
            format!(
                "{:?}",
                Response::QuarantineShow {
                    message_id: "m".into(),
                    attempt: Some(0),
                    outcome: Outcome::Shown,
                    body: Some(Plaintext::new("{\"ip\": \"10.0.0.1\"}")),
                }
            )
            .contains("redacted")
        );
    }
}
