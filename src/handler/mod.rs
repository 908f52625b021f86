//! One SQS batch: parse every record, mask and seal the PII of the valid ones, seal the
//! rejected ones for the quarantine, and write it all in one transaction. A rejected
//! message is then processed (SQS deletes it); only a record that cannot even be
//! quarantined is an item failure. A database fault fails the whole invocation instead
//! ([`crate::function`] first hides the batch on the queue).
//!
//! [`prepare`] is the pure part (no I/O: parsing, masking, sealing); [`handle_with_stats`]
//! hands what it prepared to `store::write_batch`.

use std::collections::BTreeMap;
use std::time::Instant;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use chrono::Utc;

use crate::app::{App, InitError};
use login_etl_core::crypto::SealError;
use login_etl_core::error::report;
use login_etl_core::event::RejectReason;
use login_etl_core::metrics;
use login_etl_core::store::{self, StoreError};

mod prepare;

pub use prepare::{Prepared, prepare};

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("batch not written, will be retried")]
    Store(#[from] StoreError),
    #[error("batch not written, will be retried")]
    Seal(#[from] SealError),
    #[error("batch not written, will be retried: the function's resources are not ready")]
    Init(#[from] InitError),
    #[error("batch not written, will be retried: the database did not answer in time")]
    Timeout,
    #[error("batch not written, will be retried: the database was unreachable moments ago")]
    FailingFast,
}

impl BatchError {
    /// What the Lambda runtime reports as the error type.
    pub fn error_type(&self) -> &'static str {
        match self {
            BatchError::Store(_) => "BatchNotWritten.Database",
            BatchError::Seal(_) => "BatchNotWritten.Seal",
            BatchError::Init(_) => "BatchNotWritten.Init",
            BatchError::Timeout => "BatchNotWritten.Timeout",
            BatchError::FailingFast => "BatchNotWritten.FailingFast",
        }
    }

    /// Whether the database (or what the keys need) could not be reached at all: the
    /// instance then fails its next batches at once for a while.
    pub fn is_unreachable(&self) -> bool {
        match self {
            BatchError::Store(error) => store::retry::is_unreachable(error),
            BatchError::Init(_) | BatchError::Timeout => true,
            BatchError::Seal(_) | BatchError::FailingFast => false,
        }
    }
}

/// What the Lambda runtime reports for a failed invocation (SQS then retries the batch).
impl From<BatchError> for lambda_runtime::Diagnostic {
    fn from(error: BatchError) -> Self {
        lambda_runtime::Diagnostic {
            error_type: error.error_type().to_owned(),
            error_message: report(&error),
        }
    }
}

/// A rejected message: quarantined, with its reason.
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
    /// Quarantine rows added (a re-delivered rejected message adds none).
    pub quarantined: u64,
    pub unknown_fields: usize,
    /// Records without a `messageId`: they cannot be reported, only logged.
    pub unidentifiable: usize,
    /// Records whose `messageId` fits no column: item failures, left to the queue.
    pub unstorable_ids: usize,
    /// Records from the replay queue whose original id and timestamp were honoured.
    pub replays: usize,
    /// Records from elsewhere that carried replay attributes (ignored).
    pub replay_attributes_ignored: usize,
    /// Transient database errors retried inside this invocation.
    pub retries: u32,
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
            ("Quarantined", stats.quarantined as f64, "Count"),
            ("Replayed", stats.replays as f64, "Count"),
            ("ReplayAttributesIgnored", stats.replay_attributes_ignored as f64, "Count"),
            ("VaultValuesAdded", stats.vault_values_added as f64, "Count"),
            ("Retries", f64::from(stats.retries), "Count"),
            ("Unidentifiable", (stats.unidentifiable + stats.unstorable_ids) as f64, "Count"),
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
    let mut partitions = app.partitions();
    if prepare::dates(&event, app.replay_queue.as_deref()).into_iter().any(|date| !partitions.covers(date)) {
        partitions = app.refresh_partitions().await?;
    }
    let Prepared { rows, response, mut stats } =
        prepare(&app.keyring, event, app.replay_queue.as_deref(), &partitions)?;
    let outcome = match store::write_batch(&app.pool, &rows, &app.retry).await {
        Ok(outcome) => outcome,
        Err(error) => {
            tracing::error!(error = %report(&error), records = stats.received, "batch write failed");
            if store::partitions::is_no_partition(&error) {
                // A partition went since the map was read: the batch fails (SQS delivers
                // it again), and its next delivery is prepared against the fresh map.
                app.refresh_partitions().await?;
            }
            return Err(error.into());
        }
    };
    stats.written = outcome.logins_inserted;
    stats.already_present = stats.accepted as u64 - outcome.logins_inserted;
    stats.vault_values_added = outcome.vault_inserted;
    stats.quarantined = outcome.quarantined;
    stats.retries = outcome.retries;

    tracing::info!(
        received = stats.received,
        written = stats.written,
        already_present = stats.already_present,
        rejected = stats.rejections.len(),
        rejected_by_reason = ?stats.rejected_by_reason,
        quarantined = stats.quarantined,
        replays = stats.replays,
        replay_attributes_ignored = stats.replay_attributes_ignored,
        item_failures = response.batch_item_failures.len(),
        vault_values_added = stats.vault_values_added,
        unknown_fields = stats.unknown_fields,
        unidentifiable = stats.unidentifiable,
        unstorable_ids = stats.unstorable_ids,
        retries = stats.retries,
        duration_ms = started.elapsed().as_secs_f64() * 1000.0,
        "batch processed"
    );
    Ok((response, stats))
}
