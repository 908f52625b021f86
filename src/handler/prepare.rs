//! The pure part of a batch (no I/O): validate each record, mask the PII of the valid ones,
//! seal each distinct value once, seal the body of each rejected one for the quarantine,
//! and hand the store a [`PreparedBatch`]. Only a record that cannot even be quarantined
//! (its id fits no column) is reported back to SQS as an item failure.

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use chrono::{DateTime, Utc};
use login_etl_core::crypto::{BlindIndex, PiiField, SealError};
use login_etl_core::event::{LoginEvent, MessageId, ReadablePii, RejectReason};
use login_etl_core::keys::Keyring;
use login_etl_core::replay::{self, ReplayOrigin};
use login_etl_core::store::{LoginRow, PartitionMap, PreparedBatch, QuarantineRow, Source, VaultRow};
use zeroize::Zeroizing;

use super::{BatchStats, Rejection};

/// A batch parsed, masked and sealed: the rows to write, the item failures, the counts.
#[derive(Debug)]
pub struct Prepared {
    pub rows: PreparedBatch,
    pub response: SqsBatchResponse,
    pub stats: BatchStats,
}

/// Parses, masks and seals the whole batch. Records from `replay_queue` (the queue only the
/// vault service may send to) keep the original id and `SentTimestamp` their attributes
/// carry. A valid message whose date no partition of `user_logins` takes (`partitions`) is
/// quarantined (`no_partition`). An error (a value that cannot be sealed) fails the batch
/// before anything is written.
pub fn prepare(
    keyring: &Keyring,
    event: SqsEvent,
    replay_queue: Option<&str>,
    partitions: &PartitionMap,
) -> Result<Prepared, SealError> {
    let mut stats = BatchStats { received: event.records.len(), ..BatchStats::default() };
    let mut response = SqsBatchResponse::default();
    let mut values = Vec::with_capacity(event.records.len() * 2);
    let mut logins = Vec::with_capacity(event.records.len());
    let mut quarantine = Vec::new();
    for mut record in event.records {
        // An empty id in batchItemFailures fails the whole batch, so a record without one
        // can only be logged. SQS always sets it; hand-made events might not.
        let Some(sqs_id) = record.message_id.take().filter(|id| !id.is_empty()) else {
            stats.unidentifiable += 1;
            tracing::error!(reason = "missing_message_id", "record without messageId skipped");
            continue;
        };
        let Ok(sqs_message_id) = MessageId::parse(sqs_id.clone()) else {
            // No table can key it: left to the queue, whose redrive policy ends it in the DLQ.
            stats.unstorable_ids += 1;
            tracing::error!(
                reason = "unstorable_message_id",
                "record whose messageId fits no column left on the queue"
            );
            response.add_failure(sqs_id);
            continue;
        };
        // The body (ip and device id in clear) is wiped when this iteration ends.
        let body = record.body.take().map(Zeroizing::new);
        let origin = origin(&record, sqs_message_id, replay_queue, &mut stats);
        let accepted = origin
            .verdict
            .clone()
            .and_then(|()| accept(origin.sent_at, body.as_ref().map(|b| b.as_str())))
            .and_then(|(sent_at, login)| {
                if partitions.covers(sent_at.date_naive()) {
                    Ok((sent_at, login))
                } else {
                    Err(RejectReason::NoPartition)
                }
            });
        let (sent_at, login) = match accepted {
            Ok(accepted) => accepted,
            Err(reason) => {
                tracing::warn!(
                    message_id = %origin.sqs_message_id,
                    original_message_id = (origin.source == Source::Replay).then(|| origin.key.as_str()),
                    reason = reason.code(),
                    field = reason.field().map(|f| f.name()),
                    detail = %reason,
                    "message rejected; quarantined"
                );
                *stats.rejected_by_reason.entry(reason.code()).or_default() += 1;
                quarantine.push(quarantine_row(
                    keyring,
                    &origin,
                    &reason,
                    &record,
                    body.as_ref().map(|b| b.as_str()),
                )?);
                stats.rejections.push(Rejection { message_id: origin.sqs_message_id.into_string(), reason });
                continue;
            }
        };
        stats.accepted += 1;
        stats.unknown_fields += login.unknown_fields();

        let (details, ip, device_id) = login.into_parts();
        let ip = Zeroizing::new(ip.canonical());
        let device_id = Zeroizing::new(device_id.canonical().to_owned());
        let masked_ip = keyring.indexer.index(PiiField::Ip, &ip);
        let masked_device_id = keyring.indexer.index(PiiField::DeviceId, &device_id);
        values.push(Value { field: PiiField::Ip, index: masked_ip.clone(), plaintext: ip });
        values.push(Value {
            field: PiiField::DeviceId,
            index: masked_device_id.clone(),
            plaintext: device_id,
        });
        logins.push(LoginRow {
            sqs_message_id: origin.key.into_string(),
            sent_at,
            details,
            masked_ip,
            masked_device_id,
            index_key_version: keyring.index_key_version,
        });
    }

    // Each distinct value sealed once.
    values.sort_unstable_by(|a, b| a.key().cmp(&b.key()));
    values.dedup_by(|a, b| a.key() == b.key());
    let vault = values
        .iter()
        .map(|value| {
            let sealed = keyring.data_key.seal(value.field, &value.index, &value.plaintext)?;
            Ok(VaultRow { field: value.field, blind_index: value.index.clone(), sealed })
        })
        .collect::<Result<Vec<_>, SealError>>()?;

    Ok(Prepared { rows: PreparedBatch::new(logins, quarantine, vault, &keyring.erasure), response, stats })
}

/// The dates (UTC) the batch's records carry, as [`prepare`] reads them (a replay's from
/// its attributes): the function checks them against its partition map before
/// preparing, and reads the map again when one misses.
pub fn dates(event: &SqsEvent, replay_queue: Option<&str>) -> Vec<chrono::NaiveDate> {
    let mut dates: Vec<chrono::NaiveDate> = event
        .records
        .iter()
        .filter_map(|record| {
            let from_replay_queue =
                replay_queue.is_some() && record.event_source_arn.as_deref() == replay_queue;
            if from_replay_queue {
                let attribute =
                    |name: &str| record.message_attributes.get(name).and_then(|a| a.string_value.as_deref());
                ReplayOrigin::from_attributes(attribute).ok().map(|r| r.sent_at)
            } else {
                sent_timestamp(record)
            }
        })
        .map(|at| at.date_naive())
        .collect();
    dates.sort_unstable();
    dates.dedup();
    dates
}

/// Who a record is, for the rows: its own id and `SentTimestamp`, or, for a replay from
/// the replay queue, the original message's.
struct Origin {
    sqs_message_id: MessageId,
    /// The id its rows are keyed by.
    key: MessageId,
    attempt: i32,
    source: Source,
    sent_at: Option<DateTime<Utc>>,
    /// `Err` when the record is a replay whose attributes are unusable.
    verdict: Result<(), RejectReason>,
}

fn origin(
    record: &SqsMessage,
    sqs_message_id: MessageId,
    replay_queue: Option<&str>,
    stats: &mut BatchStats,
) -> Origin {
    let attribute = |name: &str| record.message_attributes.get(name).and_then(|a| a.string_value.as_deref());
    let from_replay_queue = replay_queue.is_some() && record.event_source_arn.as_deref() == replay_queue;
    let own = |verdict| Origin {
        key: sqs_message_id.clone(),
        sqs_message_id: sqs_message_id.clone(),
        attempt: 0,
        source: if from_replay_queue { Source::Replay } else { Source::Queue },
        sent_at: sent_timestamp(record),
        verdict,
    };
    if !from_replay_queue {
        if replay::ATTRIBUTES.iter().any(|name| record.message_attributes.contains_key(*name)) {
            // Only the vault service can send to the replay queue: from anywhere else these
            // attributes prove nothing, and must neither suppress nor backdate a row.
            stats.replay_attributes_ignored += 1;
            tracing::warn!(message_id = %sqs_message_id, "replay attributes on a record not from the replay queue ignored");
        }
        return own(Ok(()));
    }
    match ReplayOrigin::from_attributes(attribute) {
        Ok(replayed) => {
            stats.replays += 1;
            Origin {
                sqs_message_id,
                key: replayed.message_id,
                attempt: replayed.attempt,
                source: Source::Replay,
                sent_at: Some(replayed.sent_at),
                verdict: Ok(()),
            }
        }
        Err(error) => {
            tracing::warn!(message_id = %sqs_message_id, %error, "replay without usable attributes");
            own(Err(RejectReason::InvalidReplayAttributes))
        }
    }
}

/// A rejected record as the quarantine keeps it: reason, attributes, the blind indexes of
/// whatever PII can be read, and the body sealed to its id and attempt.
fn quarantine_row(
    keyring: &Keyring,
    origin: &Origin,
    reason: &RejectReason,
    record: &SqsMessage,
    body: Option<&str>,
) -> Result<QuarantineRow, SealError> {
    let body = body.unwrap_or_default();
    Ok(QuarantineRow {
        message_id: origin.key.clone(),
        attempt: origin.attempt,
        source: origin.source,
        reason_code: reason.code(),
        field: reason.field().map(|f| f.name()),
        sent_at: origin.sent_at,
        // Unsigned as SQS sends it: a hand-made "-1" must not fail the batch's CHECK.
        receive_count: record
            .attributes
            .get("ApproximateReceiveCount")
            .and_then(|n| n.parse::<u32>().ok())
            .and_then(|n| i32::try_from(n).ok()),
        masks: QuarantineRow::masks_of(&keyring.indexer, &ReadablePii::of(body)),
        sealed: keyring.data_key.seal_body(origin.key.as_str(), origin.attempt, body)?,
    })
}

/// A value to vault, wiped from memory when dropped.
struct Value {
    field: PiiField,
    index: BlindIndex,
    plaintext: Zeroizing<String>,
}

impl Value {
    fn key(&self) -> (&str, &str) {
        (self.field.as_str(), self.index.as_str())
    }
}

fn accept(
    sent_at: Option<DateTime<Utc>>,
    body: Option<&str>,
) -> Result<(DateTime<Utc>, LoginEvent), RejectReason> {
    let sent_at = sent_at.ok_or(RejectReason::InvalidSentTimestamp)?;
    let body = body.ok_or(RejectReason::MissingBody)?;
    if body.trim().is_empty() {
        return Err(RejectReason::EmptyBody);
    }
    Ok((sent_at, LoginEvent::parse(body)?))
}

/// `SentTimestamp`: epoch milliseconds (digits only), as SQS sets it when the message is sent.
fn sent_timestamp(record: &SqsMessage) -> Option<DateTime<Utc>> {
    let text = record.attributes.get("SentTimestamp")?;
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    DateTime::from_timestamp_millis(text.parse().ok()?)
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use login_etl_core::crypto::{BlindIndexer, DataKey, ErasureKey, KeyMaterial};

    fn keyring() -> Keyring {
        let key = |seed| KeyMaterial::from_bytes([seed; 32]);
        Keyring {
            indexer: BlindIndexer::new(&key(1), &key(2)),
            index_key_version: 1,
            data_key: DataKey::new(1, &key(3)),
            erasure: ErasureKey::new(&key(4)),
        }
    }

    /// The masked ip of each body, through the whole pure path of a batch.
    fn masked_ips(ips: &[String]) -> Vec<String> {
        let records: Vec<_> = ips
            .iter()
            .enumerate()
            .map(|(i, ip)| {
                let body = json!({"user_id": "u", "app_version": "1", "device_type": "ios",
                                  "ip": ip, "locale": null, "device_id": "d"});
                json!({"messageId": format!("m{i}"), "body": body.to_string(),
                       "attributes": {"SentTimestamp": "1763625600000"}})
            })
            .collect();
        let event: SqsEvent = serde_json::from_value(json!({ "Records": records })).expect("event");
        let batch = prepare(&keyring(), event, None, &PartitionMap::everything()).expect("prepare");
        assert!(batch.stats.rejections.is_empty(), "{:?}", batch.stats.rejections);
        // Rows come sorted by message id: put them back in input order.
        let mut rows: Vec<_> = batch.rows.logins().iter().collect();
        rows.sort_by_key(|row| row.sqs_message_id.trim_start_matches('m').parse::<usize>().unwrap_or(0));
        rows.into_iter().map(|row| row.masked_ip.as_str().to_owned()).collect()
    }

    /// Equivalent spellings of one address, as clients send them.
    fn spellings(addr: IpAddr) -> Vec<String> {
        match addr {
            IpAddr::V4(v4) => {
                let [a, b, c, d] = v4.octets();
                vec![
                    v4.to_string(),
                    format!(" {v4}\t"),
                    format!("::ffff:{v4}"),
                    format!("::FFFF:{:x}{:02x}:{:x}{:02x}", a, b, c, d),
                    format!("0:0:0:0:0:ffff:{v4}"),
                ]
            }
            IpAddr::V6(v6) => {
                let groups = v6.segments();
                let full: Vec<String> = groups.iter().map(|g| format!("{g:04x}")).collect();
                let short: Vec<String> = groups.iter().map(|g| format!("{g:x}")).collect();
                vec![v6.to_string(), full.join(":"), full.join(":").to_uppercase(), short.join(":")]
            }
        }
    }

    fn address() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<u32>().prop_map(|n| IpAddr::V4(Ipv4Addr::from(n))),
            // IPv4-mapped addresses are IPv4 for masking; the rest stay IPv6.
            any::<u128>()
                .prop_filter("not IPv4-mapped", |n| Ipv6Addr::from(*n).to_ipv4_mapped().is_none())
                .prop_map(|n| IpAddr::V6(Ipv6Addr::from(n))),
            // Runs of zero groups, where the compressed forms differ most.
            (any::<u16>(), 0..8usize).prop_map(|(g, at)| {
                let mut groups = [0u16; 8];
                groups[at] = g.max(1);
                IpAddr::V6(Ipv6Addr::from(groups))
            }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn every_spelling_of_an_address_masks_the_same_and_other_addresses_differ(
            a in address(),
            b in address(),
        ) {
            let a_spellings = spellings(a);
            let masks = masked_ips(&a_spellings);
            prop_assert!(masks.windows(2).all(|w| w[0] == w[1]), "{:?}", a_spellings);
            let other = masked_ips(&[b.to_string()]);
            prop_assert_eq!(a == b || a.to_canonical() == b.to_canonical(), masks[0] == other[0]);
        }
    }

    /// Ids and values in an order of their own; some records rejected, one id twice.
    fn shuffled_event(n: usize) -> SqsEvent {
        let records: Vec<_> = (0..n)
            .map(|i| {
                let v = i * 7919 % n;
                let body = if i % 50 == 0 {
                    "{}".to_owned()
                } else {
                    json!({"user_id": "u", "app_version": "1", "device_type": "ios",
                           "ip": format!("10.{}.{}.1", v % 251, v % 13), "locale": null,
                           "device_id": format!("d{}", v % 911)})
                    .to_string()
                };
                let id = if i == 7 { "m-duplicate".to_owned() } else { format!("m-{}", v * 31 % n) };
                json!({"messageId": if i == 9 { "m-duplicate".to_owned() } else { id },
                       "body": body, "attributes": {"SentTimestamp": "1763625600000"}})
            })
            .collect();
        serde_json::from_value(json!({ "Records": records })).expect("event")
    }

    #[test]
    fn rows_come_in_lock_order_each_value_once_and_rejections_quarantined() {
        let Prepared { rows, response, stats } =
            prepare(&keyring(), shuffled_event(3000), None, &PartitionMap::everything()).expect("prepare");
        let (logins, vault) = (rows.logins(), rows.vault());
        // Ids non-decreasing bytewise (the duplicate id is adjacent), vault keys strictly
        // increasing (each value once).
        assert!(logins.windows(2).all(|w| w[0].sqs_message_id.as_bytes() <= w[1].sqs_message_id.as_bytes()));
        assert!(vault.windows(2).all(|w| w[0].key() < w[1].key()));
        assert_eq!(logins.len(), stats.accepted);
        assert_eq!(stats.accepted + stats.rejections.len(), 3000);
        let used: std::collections::HashSet<(&str, &str)> = logins
            .iter()
            .flat_map(|l| [("ip", l.masked_ip.as_str()), ("device_id", l.masked_device_id.as_str())])
            .collect();
        assert_eq!(vault.len(), used.len());
        // Every rejected record is quarantined, in lock order, and none is an item failure.
        assert!(response.batch_item_failures.is_empty());
        let mut expected: Vec<String> =
            (0..3000).filter(|i| i % 50 == 0).map(|i| format!("m-{}", i * 7919 % 3000 * 31 % 3000)).collect();
        let rejected: Vec<&str> = stats.rejections.iter().map(|r| r.message_id.as_str()).collect();
        assert_eq!(rejected, expected, "rejections in batch order");
        expected.sort();
        let quarantined: Vec<&str> = rows.quarantine().iter().map(|q| q.message_id.as_str()).collect();
        assert_eq!(quarantined, expected);
        assert!(rows.quarantine().iter().all(|q| q.reason_code == "missing_field" && q.attempt == 0));
    }
}
