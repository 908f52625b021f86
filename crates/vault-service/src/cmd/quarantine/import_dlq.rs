//! `quarantine import-dlq`: moves what reached the dead-letter queue into the quarantine,
//! sealed, so that no plaintext waits in SQS and staff never read it there. Each message
//! becomes a row keyed by its SQS message id and attempt 0 (source `dead-letter`), with the
//! reason the function would give its body (`dead_lettered` for a body it would take: an
//! outage or a crash sent it here), its `SentTimestamp`, the blind indexes of whatever PII
//! can be read, and the body sealed under the newest data key. Per receive (at most ten):
//! the rows are committed, and only then are the messages deleted from the queue. A key
//! already quarantined is kept as it is, and its message still deleted.
//!
//! A message that came from the replay queue (its `DeadLetterQueueSourceArn`, where SQS
//! sets it, names `REPLAY_QUEUE_URL`'s queue) keeps the original id, date and attempt its
//! replay attributes carry, as the function would have; from anywhere else those
//! attributes are ignored.

use std::time::Instant;

use aws_sdk_sqs::types::{Message, MessageSystemAttributeName};
use chrono::{DateTime, Utc};
use zeroize::Zeroizing;

use super::WORK_BUDGET;
use crate::audit::Action;
use crate::operation::{Described, Done, Operation, Work};
use crate::queues::arn_names_queue;
use crate::{RequestContext, ServiceError, VaultService};
use login_etl_core::crypto::{BlindIndexer, DataKey, SealError};
use login_etl_core::event::{LoginEvent, MessageId, ReadablePii, RejectReason};
use login_etl_core::replay::ReplayOrigin;
use login_etl_core::store;
use login_etl_core::store::quarantine::{self, DEAD_LETTERED, QuarantineRow, Source};
use pii_vault_protocol::Outcome;

pub const DEFAULT_MAX: u32 = 100;
/// Messages per request: ten per receive, each receive a commit and a delete.
pub const MAX_MAX: u32 = 500;

struct ImportDlq {
    max: Option<u32>,
}

/// What an import did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Imported {
    pub imported: u64,
    pub already_quarantined: u64,
    pub left_on_queue: u64,
    /// Stopped at `max` or for time: the queue may hold more.
    pub more: bool,
}

impl Operation for ImportDlq {
    const ACTION: Action = Action::QuarantineImportDlq;
    type Valid = u32;
    type Output = Imported;

    fn describe(&self) -> Described {
        Described::default()
    }

    fn validate(self) -> Result<u32, ServiceError> {
        let max = self.max.unwrap_or(DEFAULT_MAX);
        if !(1..=MAX_MAX).contains(&max) {
            return Err(ServiceError::BadRequest(format!("--max is 1 to {MAX_MAX}")));
        }
        Ok(max)
    }

    async fn work(max: u32, work: &mut Work<'_>) -> Result<Done<Imported>, ServiceError> {
        let queues = work.queues();
        queues.dead_letter_queue_url()?;
        let replay_queue = queues.replay_queue_url().ok();
        let started = Instant::now();
        let indexer = work.indexer().await?;
        let erasure_key = work.erasure_key().await?;
        let mut client = work.client().await?;
        let newest = super::super::newest_data_key_version(&mut client).await?;
        let mut done = Imported::default();
        let mut received = 0u32;
        loop {
            // One more round is a receive and a delete, each up to OPERATION_TIMEOUT: start
            // it only if both still fit in the budget (the function's timeout is 30 s).
            if received >= max || started.elapsed() + 2 * crate::queues::OPERATION_TIMEOUT >= WORK_BUDGET {
                done.more = true;
                break;
            }
            let messages = queues.receive_dead_letters((max - received).min(10) as i32).await?;
            if messages.is_empty() {
                break;
            }
            received += messages.len() as u32;
            let (mut rows, mut handles) = (Vec::with_capacity(messages.len()), Vec::new());
            {
                // Read and unwrapped once per process, in a bounded transaction (begun
                // before the cache is locked: no lock is held while waiting for a connection).
                let tx = store::begin(&mut client).await?;
                let mut keys = work.data_keys().await;
                let key = keys.get(&*tx, work.kms(), newest).await?;
                tx.commit().await?;
                for message in &messages {
                    match (quarantine_row(message, indexer, key, replay_queue)?, message.receipt_handle()) {
                        (Some(row), Some(handle)) => {
                            rows.push(row);
                            handles.push(handle.to_owned());
                        }
                        // No id a column can hold (SQS ids always fit): left for a person.
                        _ => done.left_on_queue += 1,
                    }
                }
            }
            let tx = store::begin(&mut client).await?;
            let inserted = quarantine::insert(&*tx, &mut rows, erasure_key).await?;
            tx.commit().await?;
            // Committed: only now may the queue let go of them.
            done.imported += inserted;
            done.already_quarantined += rows.len() as u64 - inserted;
            let deleted = queues.delete_dead_letters(&handles).await?;
            done.left_on_queue += (handles.len() - deleted) as u64;
        }
        let detail = format!(
            "{} imported, {} already quarantined, {} left on the queue{}",
            done.imported,
            done.already_quarantined,
            done.left_on_queue,
            if done.more { ", more may follow" } else { "" }
        );
        Ok(Done::new(done, Outcome::Imported).detail(detail))
    }
}

/// A dead-letter message as the quarantine keeps it; `None` when its id fits no column.
fn quarantine_row(
    message: &Message,
    indexer: &BlindIndexer,
    data_key: &DataKey,
    replay_queue_url: Option<&str>,
) -> Result<Option<QuarantineRow>, SealError> {
    let Some(own_id) = message.message_id().and_then(|id| MessageId::parse(id.to_owned()).ok()) else {
        return Ok(None);
    };
    let system = |name: MessageSystemAttributeName| {
        message.attributes().and_then(|a| a.get(&name)).map(String::as_str)
    };
    let sent_timestamp = system(MessageSystemAttributeName::SentTimestamp).and_then(epoch_millis);
    let from_replay_queue = replay_queue_url
        .zip(system(MessageSystemAttributeName::DeadLetterQueueSourceArn))
        .is_some_and(|(url, arn)| arn_names_queue(arn, url));
    let attribute = |name: &str| {
        message.message_attributes().and_then(|a| a.get(name)).and_then(|value| value.string_value())
    };
    let (key, attempt, sent_at, verdict) =
        match from_replay_queue.then(|| ReplayOrigin::from_attributes(attribute)) {
            Some(Ok(origin)) => (origin.message_id, origin.attempt, Some(origin.sent_at), Ok(())),
            Some(Err(_)) => (own_id, 0, sent_timestamp, Err(RejectReason::InvalidReplayAttributes)),
            None => (own_id, 0, sent_timestamp, Ok(())),
        };
    let body = Zeroizing::new(message.body().unwrap_or_default().to_owned());
    let (reason_code, field) = match verdict.and_then(|()| judge(sent_at, message.body())) {
        Ok(()) => (DEAD_LETTERED, None),
        Err(reason) => (reason.code(), reason.field().map(|f| f.name())),
    };
    Ok(Some(QuarantineRow {
        sealed: data_key.seal_body(key.as_str(), attempt, &body)?,
        message_id: key,
        attempt,
        source: Source::DeadLetter,
        reason_code,
        field,
        sent_at,
        receive_count: system(MessageSystemAttributeName::ApproximateReceiveCount)
            .and_then(|n| n.parse::<u32>().ok())
            .and_then(|n| i32::try_from(n).ok()),
        masks: QuarantineRow::masks_of(indexer, &ReadablePii::of(&body)),
    }))
}

/// What the function would say of the message, in its order: the timestamp, the body.
fn judge(sent_at: Option<DateTime<Utc>>, body: Option<&str>) -> Result<(), RejectReason> {
    sent_at.ok_or(RejectReason::InvalidSentTimestamp)?;
    let body = body.ok_or(RejectReason::MissingBody)?;
    if body.trim().is_empty() {
        return Err(RejectReason::EmptyBody);
    }
    LoginEvent::parse(body).map(drop)
}

/// `SentTimestamp`: epoch milliseconds, digits only.
fn epoch_millis(text: &str) -> Option<DateTime<Utc>> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    DateTime::from_timestamp_millis(text.parse().ok()?)
}

impl VaultService {
    /// Moves up to `max` dead-letter messages into the quarantine.
    pub async fn quarantine_import_dlq(
        &self,
        context: &RequestContext,
        max: Option<u32>,
    ) -> Result<Imported, ServiceError> {
        self.run(context, ImportDlq { max }).await
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_sqs::types::MessageAttributeValue;
    use login_etl_core::crypto::{KeyMaterial, PiiField};
    use login_etl_core::replay::{ORIGINAL_MESSAGE_ID, ORIGINAL_SENT_TIMESTAMP, REPLAY_ATTEMPT};

    use super::*;

    const REPLAY_QUEUE_URL: &str = "http://127.0.0.1:5055/123456789012/login-replay-queue";
    const SENT_MS: &str = "1763625600000";
    const ORIGINAL_MS: i64 = 1_735_787_045_678;

    fn keys() -> (BlindIndexer, DataKey) {
        let key = |seed| KeyMaterial::from_bytes([seed; 32]);
        (BlindIndexer::new(&key(1), &key(2)), DataKey::new(1, &key(3)))
    }

    fn message(body: &str, source_arn: Option<&str>, replay: bool) -> Message {
        let mut builder = Message::builder()
            .message_id("dlq-id-1")
            .receipt_handle("handle")
            .body(body)
            .attributes(MessageSystemAttributeName::SentTimestamp, SENT_MS)
            .attributes(MessageSystemAttributeName::ApproximateReceiveCount, "4");
        if let Some(arn) = source_arn {
            builder = builder.attributes(MessageSystemAttributeName::DeadLetterQueueSourceArn, arn);
        }
        if replay {
            for (name, data_type, value) in [
                (ORIGINAL_MESSAGE_ID, "String", "orig-1".to_owned()),
                (ORIGINAL_SENT_TIMESTAMP, "Number", ORIGINAL_MS.to_string()),
                (REPLAY_ATTEMPT, "Number", "2".to_owned()),
            ] {
                let value = MessageAttributeValue::builder().data_type(data_type).string_value(value).build();
                builder = builder.message_attributes(name, value.expect("attribute"));
            }
        }
        builder.build()
    }

    fn login() -> String {
        serde_json::json!({"user_id": "u", "app_version": "1.2.3", "device_type": "ios",
                           "ip": "203.0.113.9", "locale": null, "device_id": "dev-9"})
        .to_string()
    }

    #[test]
    fn a_dead_letter_is_keyed_by_its_own_id_dated_by_its_timestamp_and_sealed() {
        let (indexer, key) = keys();
        let row = quarantine_row(&message(&login(), None, false), &indexer, &key, Some(REPLAY_QUEUE_URL))
            .expect("seal")
            .expect("row");
        assert_eq!((row.message_id.as_str(), row.attempt, row.source), ("dlq-id-1", 0, Source::DeadLetter));
        assert_eq!((row.reason_code, row.field), (DEAD_LETTERED, None));
        assert_eq!(row.sent_at.map(|t| t.timestamp_millis().to_string()).as_deref(), Some(SENT_MS));
        assert_eq!(row.receive_count, Some(4));
        assert_eq!(
            row.masks,
            vec![
                (PiiField::DeviceId, indexer.index(PiiField::DeviceId, "dev-9")),
                (PiiField::Ip, indexer.index(PiiField::Ip, "203.0.113.9")),
            ]
        );
        assert!(!String::from_utf8_lossy(&row.sealed.ciphertext).contains("203.0.113.9"));
        assert_eq!(key.open_body("dlq-id-1", 0, &row.sealed).expect("opens").as_str(), login());

        let bad = r#"{"user_id": "u", "ip": "300.1.1.1", "device_id": "dev-9"}"#;
        let row =
            quarantine_row(&message(bad, None, false), &indexer, &key, None).expect("seal").expect("row");
        assert_eq!((row.reason_code, row.field), ("missing_field", Some("app_version")));
        assert_eq!(row.masks, vec![(PiiField::DeviceId, indexer.index(PiiField::DeviceId, "dev-9"))]);
        let row =
            quarantine_row(&message("  ", None, false), &indexer, &key, None).expect("seal").expect("row");
        assert_eq!(row.reason_code, "empty_body");
    }

    #[test]
    fn replay_attributes_count_only_on_a_message_from_the_replay_queue() {
        let (indexer, key) = keys();
        let replay_arn = "arn:aws:sqs:us-east-1:123456789012:login-replay-queue";
        let login_arn = "arn:aws:sqs:us-east-1:123456789012:login-queue";
        let honoured = quarantine_row(
            &message(&login(), Some(replay_arn), true),
            &indexer,
            &key,
            Some(REPLAY_QUEUE_URL),
        )
        .expect("seal")
        .expect("row");
        assert_eq!((honoured.message_id.as_str(), honoured.attempt), ("orig-1", 2));
        assert_eq!(honoured.sent_at.map(|t| t.timestamp_millis()), Some(ORIGINAL_MS));
        assert_eq!(
            key.open_body("orig-1", 2, &honoured.sealed).expect("bound to the original").as_str(),
            login()
        );

        // From the login queue, with no source, or with no replay queue configured: ignored.
        for (arn, url) in [
            (Some(login_arn), Some(REPLAY_QUEUE_URL)),
            (None, Some(REPLAY_QUEUE_URL)),
            (Some(replay_arn), None),
        ] {
            let row = quarantine_row(&message(&login(), arn, true), &indexer, &key, url)
                .expect("seal")
                .expect("row");
            assert_eq!((row.message_id.as_str(), row.attempt), ("dlq-id-1", 0), "{arn:?} {url:?}");
            assert_eq!(row.sent_at.map(|t| t.timestamp_millis().to_string()).as_deref(), Some(SENT_MS));
            assert_eq!(row.reason_code, DEAD_LETTERED);
        }
        // From the replay queue without usable attributes: its own id, and why.
        let row = quarantine_row(
            &message(&login(), Some(replay_arn), false),
            &indexer,
            &key,
            Some(REPLAY_QUEUE_URL),
        )
        .expect("seal")
        .expect("row");
        assert_eq!((row.message_id.as_str(), row.reason_code), ("dlq-id-1", "invalid_replay_attributes"));
    }

    #[test]
    fn an_id_no_column_holds_is_left_on_the_queue() {
        let (indexer, key) = keys();
        let long = Message::builder().message_id("x".repeat(129)).body("{}").build();
        assert!(quarantine_row(&long, &indexer, &key, None).expect("no seal needed").is_none());
        let none = Message::builder().body("{}").build();
        assert!(quarantine_row(&none, &indexer, &key, None).expect("no seal needed").is_none());
    }
}
