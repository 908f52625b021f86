//! The pure part of a batch (no I/O): validate each record, mask the PII of the valid ones,
//! seal each distinct value once, and hand the store a [`PreparedBatch`]; report the
//! rejected records.

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use chrono::{DateTime, Utc};
use login_etl_core::crypto::{BlindIndex, PiiField, SealError};
use login_etl_core::event::{LoginEvent, RejectReason};
use login_etl_core::keys::Keyring;
use login_etl_core::store::{LoginRow, PreparedBatch, VaultRow};
use zeroize::Zeroizing;

use super::{BatchStats, Rejection};

/// A batch parsed, masked and sealed: the rows to write, the item failures, the counts.
#[derive(Debug)]
pub struct Prepared {
    pub rows: PreparedBatch,
    pub response: SqsBatchResponse,
    pub stats: BatchStats,
}

/// Parses, masks and seals the whole batch. An error (a value that cannot be sealed) fails
/// the batch before anything is written.
pub fn prepare(keyring: &Keyring, event: SqsEvent) -> Result<Prepared, SealError> {
    let mut stats = BatchStats { received: event.records.len(), ..BatchStats::default() };
    let mut rejections = Vec::new();
    let mut values = Vec::with_capacity(event.records.len() * 2);
    let mut logins = Vec::with_capacity(event.records.len());
    for (position, mut record) in event.records.into_iter().enumerate() {
        // An empty id in batchItemFailures fails the whole batch, so a record without one
        // can only be logged. SQS always sets it; hand-made events might not.
        let Some(message_id) = record.message_id.take().filter(|id| !id.is_empty()) else {
            stats.unidentifiable += 1;
            tracing::error!(reason = "missing_message_id", "record without messageId skipped");
            continue;
        };
        let accepted = accept(&record);
        // The body (ip and device id in clear) is wiped as soon as it is parsed.
        drop(record.body.take().map(Zeroizing::new));
        let (sent_at, login) = match accepted {
            Ok(accepted) => accepted,
            Err(reason) => {
                tracing::warn!(
                    message_id = %message_id,
                    reason = reason.code(),
                    field = reason.field().map(|f| f.name()),
                    detail = %reason,
                    "message rejected"
                );
                *stats.rejected_by_reason.entry(reason.code()).or_default() += 1;
                rejections.push((position, Rejection { message_id, reason }));
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
            sqs_message_id: message_id,
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

    let mut response = SqsBatchResponse::default();
    for (_, rejection) in rejections {
        response.add_failure(rejection.message_id.clone());
        stats.rejections.push(rejection);
    }
    Ok(Prepared { rows: PreparedBatch::new(logins, vault), response, stats })
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

fn accept(record: &SqsMessage) -> Result<(DateTime<Utc>, LoginEvent), RejectReason> {
    let sent_at = sent_timestamp(record).ok_or(RejectReason::InvalidSentTimestamp)?;
    let body = record.body.as_deref().ok_or(RejectReason::MissingBody)?;
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
    use login_etl_core::crypto::{BlindIndexer, DataKey, KeyMaterial};

    fn keyring() -> Keyring {
        let key = |seed| KeyMaterial::from_bytes([seed; 32]);
        Keyring {
            indexer: BlindIndexer::new(&key(1), &key(2)),
            index_key_version: 1,
            data_key: DataKey::new(1, &key(3)),
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
        let batch = prepare(&keyring(), event).expect("prepare");
        assert!(batch.response.batch_item_failures.is_empty(), "{:?}", batch.stats.rejections);
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
    fn rows_come_in_lock_order_each_value_once_and_failures_in_batch_order() {
        let Prepared { rows, response, stats } = prepare(&keyring(), shuffled_event(3000)).expect("prepare");
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
        // Item failures stay in batch order.
        let failed: Vec<&str> =
            response.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
        let expected: Vec<String> =
            (0..3000).filter(|i| i % 50 == 0).map(|i| format!("m-{}", i * 7919 % 3000 * 31 % 3000)).collect();
        assert_eq!(failed, expected);
    }
}
