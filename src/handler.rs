//! One SQS batch: parse every record, mask and seal the PII of the valid ones, write them
//! all in one transaction, and report exactly the rejected messages as item failures.
//! A database fault fails the whole invocation instead, so SQS retries the batch.
//!
//! [`prepare`] is the pure part (no I/O: parsing, masking, sealing); [`handle_with_stats`]
//! adds the write.

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use chrono::{DateTime, Utc};

use crate::app::App;
use crate::crypto::{PiiField, SealError};
use crate::error::report;
use crate::event::{LoginEvent, RejectReason};
use crate::keys::Keyring;
use crate::metrics;
use crate::store::{self, LoginRow, StoreError, VaultRow};

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("batch not written, will be retried")]
    Store(#[from] StoreError),
    #[error("batch not written, will be retried")]
    Seal(#[from] SealError),
}

/// What the Lambda runtime reports for a failed invocation (SQS then retries the batch).
impl From<BatchError> for lambda_runtime::Diagnostic {
    fn from(error: BatchError) -> Self {
        let error_type = match error {
            BatchError::Store(_) => "BatchNotWritten.Database",
            BatchError::Seal(_) => "BatchNotWritten.Seal",
        };
        lambda_runtime::Diagnostic { error_type: error_type.to_owned(), error_message: report(&error) }
    }
}

/// A rejected message: reported in `batchItemFailures`, left for the DLQ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub message_id: String,
    pub reason: RejectReason,
}

/// What a batch did, for the summary log line and for callers such as `esm-local`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BatchStats {
    pub received: usize,
    pub accepted: usize,
    pub written: u64,
    pub already_present: u64,
    pub vault_values_added: u64,
    pub rejected_by_reason: BTreeMap<&'static str, usize>,
    /// Each rejected message with its reason, in batch order.
    pub rejections: Vec<Rejection>,
    pub unknown_fields: usize,
    /// Records without a `messageId`: they cannot be reported, only logged.
    pub unidentifiable: usize,
    /// Transient database errors retried inside this invocation.
    pub retries: u32,
}

/// A batch parsed, masked and sealed, ready to be written.
#[derive(Debug)]
pub struct PreparedBatch {
    pub logins: Vec<LoginRow>,
    pub vault: Vec<VaultRow>,
    pub response: SqsBatchResponse,
    pub stats: BatchStats,
}

/// The Lambda entry point's logic (see `main.rs`): the batch, then its metrics line.
pub async fn handle(app: &App, event: SqsEvent) -> Result<SqsBatchResponse, BatchError> {
    let started = Instant::now();
    let (response, stats) = handle_with_stats(app, event).await?;
    for line in metric_lines(&stats, started.elapsed().as_secs_f64() * 1000.0, Utc::now().timestamp_millis())
    {
        println!("{line}");
    }
    Ok(response)
}

/// The batch's CloudWatch metrics (EMF): one line of counts and duration, one per
/// rejection reason (dimension `Reason`).
pub fn metric_lines(stats: &BatchStats, duration_ms: f64, timestamp_ms: i64) -> Vec<String> {
    let function = [("Function", "login-etl")];
    let rejected: usize = stats.rejected_by_reason.values().sum();
    let mut lines = vec![metrics::line(
        &function,
        &[
            ("Received", stats.received as f64, "Count"),
            ("Written", stats.written as f64, "Count"),
            ("AlreadyPresent", stats.already_present as f64, "Count"),
            ("Rejected", rejected as f64, "Count"),
            ("VaultValuesAdded", stats.vault_values_added as f64, "Count"),
            ("Retries", f64::from(stats.retries), "Count"),
            ("Unidentifiable", stats.unidentifiable as f64, "Count"),
            ("BatchDuration", duration_ms, "Milliseconds"),
        ],
        timestamp_ms,
    )];
    for (reason, count) in &stats.rejected_by_reason {
        lines.push(metrics::line(
            &[("Function", "login-etl"), ("Reason", reason)],
            &[("RejectedByReason", *count as f64, "Count")],
            timestamp_ms,
        ));
    }
    lines
}

pub async fn handle_with_stats(
    app: &App,
    event: SqsEvent,
) -> Result<(SqsBatchResponse, BatchStats), BatchError> {
    let started = Instant::now();
    tracing::debug!(records = event.records.len(), "batch received");
    let PreparedBatch { logins, vault, response, mut stats } = prepare(&app.keyring, event)?;

    let outcome = store::write_batch(&app.pool, &logins, &vault, &app.retry).await.inspect_err(|error| {
        tracing::error!(error = %report(error), records = stats.received, "batch write failed");
    })?;
    stats.written = outcome.logins_inserted;
    stats.already_present = logins.len() as u64 - outcome.logins_inserted;
    stats.vault_values_added = outcome.vault_inserted;
    stats.retries = outcome.retries;

    tracing::info!(
        received = stats.received,
        written = stats.written,
        already_present = stats.already_present,
        rejected = response.batch_item_failures.len(),
        rejected_by_reason = ?stats.rejected_by_reason,
        vault_values_added = stats.vault_values_added,
        unknown_fields = stats.unknown_fields,
        unidentifiable = stats.unidentifiable,
        retries = stats.retries,
        duration_ms = started.elapsed().as_secs_f64() * 1000.0,
        "batch processed"
    );
    Ok((response, stats))
}

/// Everything but the write: validates each record, masks the PII of the valid ones and
/// seals each distinct value once. Rejected records become item failures.
pub fn prepare(keyring: &Keyring, event: SqsEvent) -> Result<PreparedBatch, SealError> {
    let mut response = SqsBatchResponse::default();
    let mut stats = BatchStats { received: event.records.len(), ..BatchStats::default() };
    let mut logins = Vec::with_capacity(event.records.len());
    let mut vault = Vec::with_capacity(event.records.len() * 2);
    let mut sealed = HashSet::with_capacity(event.records.len() * 2);

    for record in event.records {
        // An empty id in batchItemFailures fails the whole batch, so a record without one
        // can only be logged. SQS always sets it; hand-made events might not.
        let Some(message_id) = record.message_id.as_deref().filter(|id| !id.is_empty()) else {
            stats.unidentifiable += 1;
            tracing::error!(reason = "missing_message_id", "record without messageId skipped");
            continue;
        };
        let message_id = message_id.to_owned();
        let (sent_at, login) = match accept(&record) {
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
                response.add_failure(message_id.clone());
                stats.rejections.push(Rejection { message_id, reason });
                continue;
            }
        };
        stats.accepted += 1;
        stats.unknown_fields += login.unknown_fields();

        let ip = login.ip().canonical();
        let values = [(PiiField::Ip, ip.as_str()), (PiiField::DeviceId, login.device_id().canonical())];
        let [masked_ip, masked_device_id] = values.map(|(field, value)| keyring.indexer.index(field, value));
        for ((field, value), index) in values.into_iter().zip([&masked_ip, &masked_device_id]) {
            if sealed.insert((field, index.clone())) {
                let sealed = keyring.data_key.seal(field, index, value)?;
                vault.push(VaultRow { field, blind_index: index.clone(), sealed });
            }
        }
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
    }
    Ok(PreparedBatch { logins, vault, response, stats })
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
    use crate::crypto::{BlindIndexer, DataKey, KeyMaterial};

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
}
