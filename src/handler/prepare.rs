//! The pure part of a batch (no I/O): validate each record, mask the PII of the valid ones,
//! seal each distinct value once, and hand the rows over in parts, in the order the store
//! writes them (its lock order): login rows sorted by message id, in parts that start small
//! (so the database starts early) and grow, then the vault rows sorted by (field, blind
//! index), in one part.

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use chrono::{DateTime, Utc};
use zeroize::Zeroizing;

use super::{BatchStats, Rejection};
use login_etl_core::crypto::{BlindIndex, PiiField, SealError};
use login_etl_core::event::{LoginEvent, RejectReason};
use login_etl_core::keys::Keyring;
use login_etl_core::store::{BatchPart, LoginRow, VaultRow};

/// Rows in the first part; each next part doubles, up to [`MAX_PART_ROWS`].
const FIRST_PART_ROWS: usize = 256;
const MAX_PART_ROWS: usize = 4096;

/// A batch parsed, masked and sealed, ready to be written.
#[derive(Debug)]
pub struct PreparedBatch {
    /// Sorted by message id.
    pub logins: Vec<LoginRow>,
    /// Sorted by (field, blind index); one row per distinct value.
    pub vault: Vec<VaultRow>,
    pub response: SqsBatchResponse,
    pub stats: BatchStats,
}

/// The whole batch at once (what [`produce`] sends, gathered).
pub fn prepare(keyring: &Keyring, event: SqsEvent) -> Result<PreparedBatch, SealError> {
    let (mut logins, mut vault) = (Vec::new(), Vec::new());
    let (response, stats) = produce(keyring, event, |part| match part {
        BatchPart::Logins(rows) => logins.extend(rows),
        BatchPart::Vault(rows) => vault.extend(rows),
        BatchPart::Complete => {}
    })?;
    Ok(PreparedBatch { logins, vault, response, stats })
}

/// Sends the batch's rows to `send` in parts (every login part, the vault part, then
/// `Complete`) and returns the item failures and counts. On an error `Complete` is never
/// sent, so nothing of the batch can be committed.
pub fn produce(
    keyring: &Keyring,
    event: SqsEvent,
    mut send: impl FnMut(BatchPart),
) -> Result<(SqsBatchResponse, BatchStats), SealError> {
    let mut stats = BatchStats { received: event.records.len(), ..BatchStats::default() };
    let mut part_rows = PartSizes::default();
    // Message ids compare bytewise, as the store's "C" collation does. Positions are sorted,
    // not the (large) records.
    let mut records = event.records;
    let mut order: Vec<usize> = (0..records.len()).collect();
    order.sort_by(|&a, &b| records[a].message_id.cmp(&records[b].message_id));

    let mut rejections = Vec::new();
    let mut values = Vec::with_capacity(records.len() * 2);
    let mut logins = Vec::with_capacity(part_rows.current().min(records.len()));
    for position in order {
        let record = &mut records[position];
        // An empty id in batchItemFailures fails the whole batch, so a record without one
        // can only be logged. SQS always sets it; hand-made events might not.
        let Some(message_id) = record.message_id.as_deref().filter(|id| !id.is_empty()) else {
            stats.unidentifiable += 1;
            tracing::error!(reason = "missing_message_id", "record without messageId skipped");
            continue;
        };
        let message_id = message_id.to_owned();
        let accepted = accept(record);
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

        let ip = Zeroizing::new(login.ip().canonical());
        let device_id = Zeroizing::new(login.device_id().canonical().to_owned());
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
            user_id: login.user_id().to_owned(),
            device_type: login.device_type().to_owned(),
            masked_ip,
            masked_device_id,
            locale: login.locale().map(str::to_owned),
            app_version: login.app_version().encoded(),
            app_version_raw: login.app_version().raw().to_owned(),
            create_date: sent_at.date_naive(),
            sent_at,
            index_key_version: keyring.index_key_version,
        });
        if logins.len() == part_rows.current() {
            send(BatchPart::Logins(std::mem::take(&mut logins)));
            logins.reserve(part_rows.next_size());
        }
    }
    if !logins.is_empty() {
        send(BatchPart::Logins(logins));
    }

    // Each distinct value once, in the vault's key order, in one part: it is ready long
    // before the database is through the login rows.
    values.sort_unstable_by(|a, b| a.key().cmp(&b.key()));
    values.dedup_by(|a, b| a.key() == b.key());
    if !values.is_empty() {
        let rows = values
            .iter()
            .map(|value| {
                let sealed = keyring.data_key.seal(value.field, &value.index, &value.plaintext)?;
                Ok(VaultRow { field: value.field, blind_index: value.index.clone(), sealed })
            })
            .collect::<Result<Vec<_>, SealError>>()?;
        send(BatchPart::Vault(rows));
    }
    send(BatchPart::Complete);

    // Item failures in batch order.
    rejections.sort_unstable_by_key(|(position, _)| *position);
    let mut response = SqsBatchResponse::default();
    for (_, rejection) in rejections {
        response.add_failure(rejection.message_id.clone());
        stats.rejections.push(rejection);
    }
    Ok((response, stats))
}

/// A value to vault, wiped from memory when dropped.
struct Value {
    field: PiiField,
    index: BlindIndex,
    plaintext: Zeroizing<String>,
}

impl Value {
    /// The vault's key, ordered as the store's "C" collation orders (field name, index).
    fn key(&self) -> (&str, &str) {
        (self.field.as_str(), self.index.as_str())
    }
}

/// The number of rows of each part: FIRST_PART_ROWS, doubling, at most MAX_PART_ROWS.
struct PartSizes(usize);

impl Default for PartSizes {
    fn default() -> Self {
        PartSizes(FIRST_PART_ROWS)
    }
}

impl PartSizes {
    fn current(&self) -> usize {
        self.0
    }

    fn next_size(&mut self) -> usize {
        self.0 = (self.0 * 2).min(MAX_PART_ROWS);
        self.0
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
        batch.logins.into_iter().map(|row| row.masked_ip.as_str().to_owned()).collect()
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
    fn parts_come_in_lock_order_growing_and_end_with_complete() {
        let mut parts = Vec::new();
        let (response, stats) =
            produce(&keyring(), shuffled_event(3000), |part| parts.push(part)).expect("produce");

        let kinds: String = parts
            .iter()
            .map(|part| match part {
                BatchPart::Logins(_) => 'L',
                BatchPart::Vault(_) => 'V',
                BatchPart::Complete => 'C',
            })
            .collect();
        assert!(kinds.trim_start_matches('L').trim_start_matches('V') == "C", "{kinds}");
        let logins: Vec<&LoginRow> = parts
            .iter()
            .filter_map(|p| if let BatchPart::Logins(r) = p { Some(r) } else { None })
            .flatten()
            .collect();
        let vault: Vec<&VaultRow> = parts
            .iter()
            .filter_map(|p| if let BatchPart::Vault(r) = p { Some(r) } else { None })
            .flatten()
            .collect();
        let sizes: Vec<usize> = parts
            .iter()
            .filter_map(|p| if let BatchPart::Logins(r) = p { Some(r.len()) } else { None })
            .collect();
        assert_eq!(sizes, [256, 512, 1024, 1148]);
        // Across all parts: ids non-decreasing bytewise (the duplicate id is adjacent), vault
        // keys strictly increasing (each value once).
        assert!(logins.windows(2).all(|w| w[0].sqs_message_id.as_bytes() <= w[1].sqs_message_id.as_bytes()));
        let keys: Vec<(&str, &str)> =
            vault.iter().map(|v| (v.field.as_str(), v.blind_index.as_str())).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
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
