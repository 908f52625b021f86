//! One SQS batch: parse every record, mask and seal the PII of the valid ones, write them
//! all in one transaction, and report exactly the rejected messages as item failures.
//! A database fault fails the whole invocation instead, so SQS retries the batch.

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use chrono::{DateTime, Utc};

use crate::app::App;
use crate::crypto::{PiiField, SealError};
use crate::error::report;
use crate::event::{LoginEvent, RejectReason};
use crate::keys::Keyring;
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

/// A record that passed validation.
struct Accepted {
    message_id: String,
    sent_at: DateTime<Utc>,
    login: LoginEvent,
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
    pub unknown_fields: usize,
    pub unidentifiable: usize,
}

/// The Lambda entry point's logic (see `main.rs`).
pub async fn handle(app: &App, event: SqsEvent) -> Result<SqsBatchResponse, BatchError> {
    handle_with_stats(app, event).await.map(|(response, _)| response)
}

pub async fn handle_with_stats(
    app: &App,
    event: SqsEvent,
) -> Result<(SqsBatchResponse, BatchStats), BatchError> {
    let started = Instant::now();
    let mut response = SqsBatchResponse::default();
    let mut stats = BatchStats { received: event.records.len(), ..BatchStats::default() };
    let mut accepted = Vec::with_capacity(event.records.len());

    for record in event.records {
        // An empty id in batchItemFailures fails the whole batch, so a record without one
        // can only be logged. SQS always sets it; hand-made events might not.
        let Some(message_id) = record.message_id.clone().filter(|id| !id.is_empty()) else {
            stats.unidentifiable += 1;
            tracing::error!(reason = "missing_message_id", "record without messageId skipped");
            continue;
        };
        match accept(message_id.clone(), record) {
            Ok(login) => {
                stats.unknown_fields += login.login.unknown_fields();
                accepted.push(login);
            }
            Err(reason) => {
                tracing::warn!(
                    message_id = %message_id,
                    reason = reason.code(),
                    field = reason.field().map(|f| f.name()),
                    detail = %reason,
                    "message rejected"
                );
                *stats.rejected_by_reason.entry(reason.code()).or_default() += 1;
                response.add_failure(message_id);
            }
        }
    }
    stats.accepted = accepted.len();

    let (logins, vault) = mask_and_seal(&app.keyring, &accepted)?;
    let outcome = store::write_batch(&app.pool, &logins, &vault).await.inspect_err(|error| {
        tracing::error!(error = %report(error), records = stats.received, "batch write failed");
    })?;
    stats.written = outcome.logins_inserted;
    stats.already_present = logins.len() as u64 - outcome.logins_inserted;
    stats.vault_values_added = outcome.vault_inserted;

    tracing::info!(
        received = stats.received,
        written = stats.written,
        already_present = stats.already_present,
        rejected = response.batch_item_failures.len(),
        rejected_by_reason = ?stats.rejected_by_reason,
        vault_values_added = stats.vault_values_added,
        unknown_fields = stats.unknown_fields,
        unidentifiable = stats.unidentifiable,
        duration_ms = started.elapsed().as_secs_f64() * 1000.0,
        "batch processed"
    );
    Ok((response, stats))
}

fn accept(message_id: String, record: SqsMessage) -> Result<Accepted, RejectReason> {
    let sent_at = sent_timestamp(&record).ok_or(RejectReason::InvalidSentTimestamp)?;
    let body = record.body.as_deref().ok_or(RejectReason::MissingBody)?;
    let login = LoginEvent::parse(body)?;
    Ok(Accepted { message_id, sent_at, login })
}

/// `SentTimestamp`: epoch milliseconds, as SQS sets it when the message is sent.
fn sent_timestamp(record: &SqsMessage) -> Option<DateTime<Utc>> {
    let millis: i64 = record.attributes.get("SentTimestamp")?.trim().parse().ok()?;
    DateTime::from_timestamp_millis(millis)
}

/// Masks every login and seals each distinct PII value of the batch once.
fn mask_and_seal(
    keyring: &Keyring,
    accepted: &[Accepted],
) -> Result<(Vec<LoginRow>, Vec<VaultRow>), SealError> {
    let mut logins = Vec::with_capacity(accepted.len());
    let mut vault = Vec::with_capacity(accepted.len() * 2);
    let mut sealed = HashSet::with_capacity(accepted.len() * 2);

    for Accepted { message_id, sent_at, login } in accepted {
        let ip = login.ip().canonical();
        let values = [(PiiField::Ip, ip.as_str()), (PiiField::DeviceId, login.device_id().canonical())];
        let [masked_ip, masked_device_id] = values.map(|(field, value)| keyring.indexer.index(field, value));
        for ((field, value), index) in values.into_iter().zip([&masked_ip, &masked_device_id]) {
            if sealed.insert((field, index.clone())) {
                vault.push(VaultRow {
                    field,
                    blind_index: index.clone(),
                    sealed: keyring.data_key.seal(field, index, value)?,
                });
            }
        }
        logins.push(LoginRow {
            sqs_message_id: message_id.clone(),
            user_id: login.user_id().to_owned(),
            device_type: login.device_type().to_owned(),
            masked_ip,
            masked_device_id,
            locale: login.locale().map(str::to_owned),
            app_version: login.app_version().encoded(),
            app_version_raw: login.app_version().raw().to_owned(),
            create_date: sent_at.date_naive(),
            sent_at: *sent_at,
            index_key_version: keyring.index_key_version,
        });
    }
    Ok((logins, vault))
}
