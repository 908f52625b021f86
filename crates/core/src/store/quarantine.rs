//! `login_quarantine` and `login_quarantine_masks`, described once (as
//! [`super::table::USER_LOGINS`] is): the rows the function writes for the messages it
//! rejects, in the same transaction as its batch, and the masks of the values they hold.

use chrono::{DateTime, Utc};
use zeroize::Zeroizing;

use super::table::{Column, Table};
use super::typed::typed;
use crate::crypto::{BlindIndex, BlindIndexer, PiiField, SealedValue};
use crate::event::{MessageId, ReadablePii, RejectReason};

/// Where a quarantined message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The login queue, first seen.
    Queue,
    /// A replay by the vault service that was rejected again.
    Replay,
    /// Moved out of the dead-letter queue (`pii-vault quarantine import-dlq`).
    DeadLetter,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Queue => "queue",
            Source::Replay => "replay",
            Source::DeadLetter => "dead-letter",
        }
    }
}

/// One quarantined message: why, where from, and its body sealed
/// ([`crate::crypto::DataKey::seal_body`], bound to `message_id` and `attempt`).
#[derive(Debug, Clone)]
pub struct QuarantineRow {
    pub message_id: MessageId,
    /// 0 when first seen; n for the n-th replay.
    pub attempt: i32,
    pub source: Source,
    /// A [`crate::event::RejectReason`] code, or `dead_lettered` for a valid body that
    /// reached the dead-letter queue.
    pub reason_code: &'static str,
    pub field: Option<&'static str>,
    /// The SQS `SentTimestamp` (for a replay, the original's), when valid.
    pub sent_at: Option<DateTime<Utc>>,
    pub receive_count: Option<i32>,
    /// Blind indexes of every ip and device id the body holds where they can be read
    /// ([`crate::event::ReadablePii`]): rows of `login_quarantine_masks`.
    pub masks: Vec<(PiiField, BlindIndex)>,
    pub sealed: SealedValue,
}

impl QuarantineRow {
    /// The key, as the store orders it.
    pub fn key(&self) -> (&str, i32) {
        (self.message_id.as_str(), self.attempt)
    }

    /// The masks of every readable value in `pii`, each once, in lock order.
    pub fn masks_of(indexer: &BlindIndexer, pii: &ReadablePii) -> Vec<(PiiField, BlindIndex)> {
        let mut masks: Vec<(PiiField, BlindIndex)> = pii
            .ips
            .iter()
            .map(|ip| (PiiField::Ip, indexer.index(PiiField::Ip, &Zeroizing::new(ip.canonical()))))
            .chain(
                pii.device_ids
                    .iter()
                    .map(|id| (PiiField::DeviceId, indexer.index(PiiField::DeviceId, id.canonical()))),
            )
            .collect();
        masks.sort_by(|a, b| (a.0.as_str(), a.1.as_str()).cmp(&(b.0.as_str(), b.1.as_str())));
        masks.dedup();
        masks
    }

    /// Its `login_quarantine_masks` rows.
    pub fn mask_rows(&self) -> impl Iterator<Item = QuarantineMask> + '_ {
        self.masks.iter().map(|(field, blind_index)| QuarantineMask {
            message_id: self.message_id.clone(),
            attempt: self.attempt,
            field: *field,
            blind_index: blind_index.clone(),
        })
    }
}

/// One `login_quarantine_masks` row: a quarantined body holds this value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantineMask {
    pub message_id: MessageId,
    pub attempt: i32,
    pub field: PiiField,
    pub blind_index: BlindIndex,
}

impl QuarantineMask {
    /// The key, as the store orders it.
    pub fn key(&self) -> (&str, i32, &str, &str) {
        (self.message_id.as_str(), self.attempt, self.field.as_str(), self.blind_index.as_str())
    }
}

pub static LOGIN_QUARANTINE: Table<QuarantineRow> = Table {
    name: "login_data.login_quarantine",
    columns: &[
        Column::varchar("message_id", 128, |r| r.message_id.as_str()),
        Column::integer("attempt", |r| r.attempt),
        Column::varchar("source", 16, |r| r.source.as_str()),
        Column::varchar("reason_code", 64, |r| r.reason_code),
        Column::optional_varchar("field", 32, |r| r.field),
        Column::optional_timestamptz("sent_at", |r| r.sent_at),
        Column::optional_integer("receive_count", |r| r.receive_count),
        Column::integer("key_version", |r| r.sealed.key_version),
        Column::bytea("nonce", |r| &r.sealed.nonce),
        Column::bytea("ciphertext", |r| &r.sealed.ciphertext),
    ],
    key: &["message_id", "attempt"],
    partition_key: None,
    // The default, and what later operations set (erasure, replay): never the writer.
    filled_by_table: &["quarantined_at", "erased_at", "erased_by", "replayed_at", "replay_attempt"],
};

/// New keys only: the purge's login may hold an old body it is erasing in an open
/// transaction, and a message quarantined again must not wait for it. The keys there are
/// asked of a definer function (sql/V14): the writer may not read the quarantine.
pub static INSERT_QUARANTINE: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| LOGIN_QUARANTINE.insert_new_sql("login_data.quarantined_keys"));

/// Which quarantined bodies hold which value, so that `forget` finds every copy.
pub static LOGIN_QUARANTINE_MASKS: Table<QuarantineMask> = Table {
    name: "login_data.login_quarantine_masks",
    columns: &[
        Column::varchar("message_id", 128, |r| r.message_id.as_str()),
        Column::integer("attempt", |r| r.attempt),
        Column::varchar("field", 16, |r| r.field.as_str()),
        Column::varchar("blind_index", 64, |r| r.blind_index.as_str()),
    ],
    key: &["message_id", "attempt", "field", "blind_index"],
    partition_key: None,
    filled_by_table: &[],
};

pub static INSERT_QUARANTINE_MASKS: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| LOGIN_QUARANTINE_MASKS.insert_sql());

/// Erases the bodies quarantined more than `retention_days` ago, at most `limit` rows in one
/// statement (rows another session holds are skipped, not waited for); returns how many.
/// The row stays, without its body: the runbook still sees what was quarantined and why.
/// Run by the scheduled `quarantine-purge` (its own role) and by `pii-vault quarantine
/// purge` through the vault service (audited), both through the database's
/// `purge_expired_quarantine` (sql/V12__tables_out_of_reach.sql), the statement's one
/// definition: the purge's login has no right on the table itself, and the function erases
/// nothing younger than a day whatever it is asked.
pub async fn purge_expired(
    client: &mut deadpool_postgres::Client,
    retention_days: u32,
    limit: u32,
) -> Result<u64, super::StoreError> {
    let days = i32::try_from(retention_days).unwrap_or(i32::MAX);
    let tx = super::begin(client).await?;
    let erased: Option<i64> = tx
        .query_typed_one(
            "SELECT public.purge_expired_quarantine($1, $2)",
            &[typed(&days), typed(&i64::from(limit))],
        )
        .await?
        .get(0);
    tx.commit().await?;
    Ok(erased.and_then(|n| u64::try_from(n).ok()).unwrap_or(0))
}

/// Adds quarantined messages, in key order, in the caller's transaction; a key already
/// there is kept as it is (`ON CONFLICT DO NOTHING`). An erased value's masks are written
/// as its token ([`super::erasure`]; the caller's transaction holds the erasure lock
/// until it ends). Returns how many were added. The vault service imports what reached
/// the dead-letter queue with it.
pub async fn insert(
    client: &impl tokio_postgres::GenericClient,
    rows: &mut [QuarantineRow],
    erasure_key: &crate::crypto::ErasureKey,
) -> Result<u64, super::StoreError> {
    if rows.is_empty() {
        return Ok(0);
    }
    let marked =
        super::erasure::mark(erasure_key, rows.iter().flat_map(|r| r.masks.iter().map(|(f, m)| (*f, m))));
    let erased = super::erasure::erased(client, &marked).await?;
    if !erased.is_empty() {
        for row in rows.iter_mut() {
            for (field, mask) in &mut row.masks {
                *mask = erased.masked(*field, mask);
            }
            row.masks.sort_by(|a, b| (a.0.as_str(), &a.1).cmp(&(b.0.as_str(), &b.1)));
        }
    }
    rows.sort_by(|a, b| a.key().cmp(&b.key()));
    let inserted = super::batch::insert_rows(client, &LOGIN_QUARANTINE, &INSERT_QUARANTINE, rows).await?;
    let mut masks: Vec<QuarantineMask> = rows.iter().flat_map(QuarantineRow::mask_rows).collect();
    masks.sort_by(|a, b| a.key().cmp(&b.key()));
    masks.dedup();
    super::batch::insert_rows(client, &LOGIN_QUARANTINE_MASKS, &INSERT_QUARANTINE_MASKS, &masks).await?;
    Ok(inserted)
}

/// The reason code of a message that reached the dead-letter queue with a body the
/// function would have accepted (an outage, a crash): nothing is wrong with it.
pub const DEAD_LETTERED: &str = "dead_lettered";

/// Every reason code a quarantine row can carry: each [`RejectReason`]'s, and
/// [`DEAD_LETTERED`]. What `pii-vault quarantine list --reason-code` accepts.
pub fn reason_codes() -> Vec<&'static str> {
    use crate::event::Field;
    let field = Field::UserId;
    let reasons = [
        RejectReason::MissingBody,
        RejectReason::EmptyBody,
        RejectReason::NotJson,
        RejectReason::NotAnObject,
        RejectReason::MissingField(field),
        RejectReason::NullField(field),
        RejectReason::WrongType(field),
        RejectReason::DuplicateField(field),
        RejectReason::EmptyField(field),
        RejectReason::TooLong(field),
        RejectReason::ControlCharacter(field),
        RejectReason::InvisibleCharacter(field),
        RejectReason::InvalidIp,
        RejectReason::InvalidAppVersion,
        RejectReason::AppVersionOutOfRange,
        RejectReason::InvalidSentTimestamp,
        RejectReason::InvalidReplayAttributes,
        RejectReason::NoPartition,
    ];
    // Every variant is listed above: a new one fails to compile here until it is added.
    for reason in &reasons {
        match reason {
            RejectReason::MissingBody
            | RejectReason::EmptyBody
            | RejectReason::NotJson
            | RejectReason::NotAnObject
            | RejectReason::MissingField(_)
            | RejectReason::NullField(_)
            | RejectReason::WrongType(_)
            | RejectReason::DuplicateField(_)
            | RejectReason::EmptyField(_)
            | RejectReason::TooLong(_)
            | RejectReason::ControlCharacter(_)
            | RejectReason::InvisibleCharacter(_)
            | RejectReason::InvalidIp
            | RejectReason::InvalidAppVersion
            | RejectReason::AppVersionOutOfRange
            | RejectReason::InvalidSentTimestamp
            | RejectReason::InvalidReplayAttributes
            | RejectReason::NoPartition => {}
        }
    }
    reasons.iter().map(RejectReason::code).chain([DEAD_LETTERED]).collect()
}

/// How long a quarantined body is kept when `QUARANTINE_RETENTION_DAYS` is not set: the
/// dead-letter queue's own retention.
pub const DEFAULT_RETENTION_DAYS: u32 = 14;
pub const MAX_RETENTION_DAYS: u32 = 3650;

/// `QUARANTINE_RETENTION_DAYS` (1 to 3650; unset or blank: 14), for the scheduled purge
/// and the vault service alike.
pub fn retention_days(value: Option<&str>) -> Result<u32, crate::config::ConfigError> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(DEFAULT_RETENTION_DAYS),
        Some(text) => text.parse().ok().filter(|d| (1..=MAX_RETENTION_DAYS).contains(d)).ok_or_else(|| {
            crate::config::ConfigError::Malformed {
                var: "QUARANTINE_RETENTION_DAYS",
                reason: format!("expected whole days from 1 to {MAX_RETENTION_DAYS}"),
            }
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_code_is_distinct_and_fits_the_column() {
        let codes = reason_codes();
        let distinct: std::collections::BTreeSet<_> = codes.iter().collect();
        assert_eq!(distinct.len(), codes.len());
        assert!(codes.contains(&"invalid_ip") && codes.contains(&DEAD_LETTERED));
        // The column's CHECK: ^[a-z_]{1,64}$.
        assert!(codes.iter().all(|c| !c.is_empty()
            && c.len() <= 64
            && c.bytes().all(|b| b == b'_' || b.is_ascii_lowercase())));
    }

    #[test]
    fn the_retention_is_whole_days_in_range() {
        assert_eq!(retention_days(None), Ok(14));
        assert_eq!(retention_days(Some(" ")), Ok(14));
        assert_eq!(retention_days(Some(" 30 ")), Ok(30));
        for bad in ["0", "-1", "3651", "two weeks", "1.5"] {
            let error = retention_days(Some(bad)).unwrap_err();
            assert!(
                error.to_string().starts_with("QUARANTINE_RETENTION_DAYS is malformed"),
                "{bad}: {error}"
            );
        }
    }
}
