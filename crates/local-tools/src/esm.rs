//! A local SQS event source mapping: what AWS Lambda's SQS trigger does, in-process.
//! Pollers long-poll `ReceiveMessage` (10 per call); the batcher gathers up to
//! `batch_size` messages within `batching_window`, builds a real `SqsEvent`, calls the
//! same function code as the Lambda (`Function::handle`: resources on first use, the
//! failure path that hides a batch it cannot write), then deletes what succeeded. Item
//! failures are left for the queue's visibility timeout and redrive policy (→ DLQ); when
//! the invocation fails, nothing of the batch is deleted. Each invocation gets the
//! deadline a Lambda invocation would (`function_timeout`).

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use aws_lambda_events::sqs::SqsEvent;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, Message, MessageSystemAttributeName, QueueAttributeName,
};
use serde_json::{Map, Value, json};
use tokio::sync::{Semaphore, mpsc};
use tracing_subscriber::fmt::MakeWriter;

use login_etl::Function;
use login_etl_core::error::report;

#[derive(Debug, Clone)]
pub struct EsmOptions {
    pub queue_url: String,
    /// Messages per handler invocation (Lambda: 1..=10 000).
    pub batch_size: usize,
    /// How long to gather a batch once its first message has arrived.
    pub batching_window: Duration,
    /// Concurrent long-pollers.
    pub pollers: usize,
    /// `WaitTimeSeconds` of each receive (0..=20).
    pub wait_time_seconds: i32,
    /// Stop once the queue holds nothing visible, in flight or delayed.
    pub until_empty: bool,
    /// Progress on one rewritten line of a terminal (else a log line per batch). Log lines
    /// then go through [`LogWriter`], so they do not start at the end of that line.
    pub progress: bool,
    /// The function's timeout: each invocation's deadline is this far from its start.
    pub function_timeout: Duration,
}

/// Whether the progress line is open on stderr: printed without its newline.
static PROGRESS_LINE_OPEN: Mutex<bool> = Mutex::new(false);

fn progress_line() -> MutexGuard<'static, bool> {
    PROGRESS_LINE_OPEN.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Ends the progress line if it is open, so that what is printed next starts a line.
pub fn end_progress_line() {
    end_open_line(&mut progress_line());
}

fn end_open_line(open: &mut bool) {
    if std::mem::take(open) {
        eprintln!();
    }
}

/// Stdout for the log lines of a process that shows progress on stderr (`esm-local` in a
/// terminal): each log line first ends the open progress line, and is written whole before
/// the progress line is drawn again.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogWriter;

/// One log line being written; holds the progress line back until it is done.
pub struct LogLine {
    _progress_held: MutexGuard<'static, bool>,
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = LogLine;

    fn make_writer(&'a self) -> LogLine {
        let mut open = progress_line();
        end_open_line(&mut open);
        LogLine { _progress_held: open }
    }
}

impl Write for LogLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        std::io::stdout().write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stdout().flush()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EsmError {
    #[error("SQS {operation}: {message}")]
    Sqs { operation: &'static str, message: String },
}

fn sqs_error<E: std::error::Error + 'static>(operation: &'static str) -> impl FnOnce(E) -> EsmError {
    move |e| EsmError::Sqs { operation, message: DisplayErrorContext(e).to_string() }
}

/// What a drain did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DrainSummary {
    pub received: usize,
    pub batches: usize,
    pub written: u64,
    pub already_present: u64,
    pub rejected_by_reason: BTreeMap<String, usize>,
    /// Quarantine rows added.
    pub quarantined: u64,
    pub deleted: usize,
    /// Deletes SQS refused (e.g. a receipt handle outdated by a redelivery): the message
    /// comes back, and is then already present.
    pub delete_failed: usize,
    pub failed_invocations: usize,
    /// Failed invocations that failed at once (the database was unreachable moments ago).
    pub failed_fast: usize,
    /// Messages the failed invocations hid on the queue for the backoff.
    pub hidden: usize,
    /// Messages of failed invocations that could not be hidden (SQS too slow or failing):
    /// they come back after the queue's visibility timeout instead.
    pub not_hidden: usize,
    pub vault_values_added: u64,
    pub retries: u64,
    pub unidentifiable: usize,
    pub elapsed: Duration,
}

impl DrainSummary {
    pub fn rejected(&self) -> usize {
        self.rejected_by_reason.values().sum()
    }
}

/// Counts from `GetQueueAttributes`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueDepth {
    pub visible: u64,
    pub in_flight: u64,
    pub delayed: u64,
}

impl QueueDepth {
    pub fn total(&self) -> u64 {
        self.visible + self.in_flight + self.delayed
    }
}

pub async fn queue_depth(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> Result<QueueDepth, EsmError> {
    let attributes = queue_attributes(sqs, queue_url).await?;
    let count = |name: QueueAttributeName| {
        attributes.get(&name).and_then(|v| v.parse::<u64>().ok()).unwrap_or_default()
    };
    Ok(QueueDepth {
        visible: count(QueueAttributeName::ApproximateNumberOfMessages),
        in_flight: count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        delayed: count(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
    })
}

async fn queue_attributes(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
) -> Result<std::collections::HashMap<QueueAttributeName, String>, EsmError> {
    let output = sqs
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .map_err(sqs_error("GetQueueAttributes"))?;
    Ok(output.attributes.unwrap_or_default())
}

/// The dead-letter queue's URL from the queue's `RedrivePolicy`, if it has one.
pub async fn dead_letter_queue_url(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
) -> Result<Option<String>, EsmError> {
    let attributes = queue_attributes(sqs, queue_url).await?;
    let Some(policy) = attributes.get(&QueueAttributeName::RedrivePolicy) else {
        return Ok(None);
    };
    let arn = serde_json::from_str::<Value>(policy)
        .ok()
        .and_then(|p| p.get("deadLetterTargetArn").and_then(Value::as_str).map(str::to_owned));
    let Some(name) = arn.as_deref().and_then(|arn| arn.rsplit(':').next()) else {
        return Ok(None);
    };
    let output = sqs.get_queue_url().queue_name(name).send().await.map_err(sqs_error("GetQueueUrl"))?;
    Ok(output.queue_url)
}

/// Runs until the queue is empty (with `until_empty`) or `stop` is set. A batch in flight
/// when `stop` is set is finished and deleted first.
pub async fn run(
    function: &Function,
    sqs: &aws_sdk_sqs::Client,
    options: &EsmOptions,
    stop: Arc<AtomicBool>,
) -> Result<DrainSummary, EsmError> {
    let started = Instant::now();
    let attributes = queue_attributes(sqs, &options.queue_url).await?;
    let queue_arn = attributes.get(&QueueAttributeName::QueueArn).cloned().unwrap_or_default();
    let region = sqs.config().region().map(|r| r.to_string()).unwrap_or_default();

    // Pollers receive only what the function will take next (at most one batch ahead), so
    // no message waits in this process past its visibility timeout and comes back with a
    // receive count the function never saw: receive counts stay the function's own, as the
    // failure path's backoff needs.
    let demand = Arc::new(Semaphore::new(options.batch_size));
    let (sender, mut receiver) = mpsc::channel::<Message>(options.batch_size);
    let pollers: Vec<_> = (0..options.pollers.max(1))
        .map(|_| {
            tokio::spawn(poll(sqs.clone(), options.clone(), sender.clone(), demand.clone(), stop.clone()))
        })
        .collect();
    drop(sender);

    let mut summary = DrainSummary::default();
    let idle_wait = Duration::from_secs(options.wait_time_seconds.max(0) as u64) + Duration::from_millis(500);
    loop {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let first = match tokio::time::timeout(idle_wait, receiver.recv()).await {
            Ok(Some(message)) => message,
            Ok(None) => break,
            Err(_) => {
                if options.until_empty && queue_depth(sqs, &options.queue_url).await?.total() == 0 {
                    break;
                }
                continue;
            }
        };
        let mut batch = vec![first];
        let window_ends = tokio::time::Instant::now() + options.batching_window;
        while batch.len() < options.batch_size {
            match tokio::time::timeout_at(window_ends, receiver.recv()).await {
                Ok(Some(message)) => batch.push(message),
                _ => break,
            }
        }
        let taken = batch.len();
        process_batch(function, sqs, options, &queue_arn, &region, batch, &mut summary).await?;
        demand.add_permits(taken);
        summary.elapsed = started.elapsed();
        report_progress(options, &summary);
    }

    stop.store(true, Ordering::SeqCst);
    for poller in pollers {
        let _ = poller.await;
    }
    summary.elapsed = started.elapsed();
    end_progress_line();
    Ok(summary)
}

async fn poll(
    sqs: aws_sdk_sqs::Client,
    options: EsmOptions,
    sender: mpsc::Sender<Message>,
    demand: Arc<Semaphore>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::SeqCst) {
        // One message of demand at least, up to ten; what is not received is given back.
        let Ok(first) =
            tokio::time::timeout(Duration::from_millis(200), demand.clone().acquire_owned()).await
        else {
            continue;
        };
        let Ok(first) = first else { return };
        let mut wanted: usize = 1;
        first.forget();
        while wanted < 10 && demand.try_acquire().map(|p| p.forget()).is_ok() {
            wanted += 1;
        }
        let received = sqs
            .receive_message()
            .queue_url(&options.queue_url)
            .max_number_of_messages(wanted as i32)
            .wait_time_seconds(options.wait_time_seconds)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await;
        let messages = match received {
            Ok(output) => output.messages.unwrap_or_default(),
            Err(error) => {
                tracing::warn!(error = %DisplayErrorContext(error), "ReceiveMessage failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                Vec::new()
            }
        };
        demand.add_permits(wanted.saturating_sub(messages.len()));
        for message in messages {
            if sender.send(message).await.is_err() {
                return;
            }
        }
    }
}

async fn process_batch(
    function: &Function,
    sqs: &aws_sdk_sqs::Client,
    options: &EsmOptions,
    queue_arn: &str,
    region: &str,
    batch: Vec<Message>,
    summary: &mut DrainSummary,
) -> Result<(), EsmError> {
    summary.received += batch.len();
    summary.batches += 1;
    let event = match sqs_event(&batch, queue_arn, region) {
        Ok(event) => event,
        Err(error) => {
            summary.failed_invocations += 1;
            // serde's messages can quote values: log only the kind of failure.
            tracing::error!(error_kind = ?error.classify(), "could not build the SQS event; batch left on the queue");
            return Ok(());
        }
    };
    let deadline = Instant::now() + options.function_timeout;
    let (response, stats) = match function.handle(event, deadline).await {
        Ok(result) => result,
        Err(failure) => {
            // Like Lambda: an invocation error deletes nothing; SQS redelivers the batch
            // once the visibility the function set runs out.
            summary.failed_invocations += 1;
            summary.hidden += failure.hidden;
            summary.not_hidden += failure.received.saturating_sub(failure.hidden);
            if matches!(failure.error, login_etl::handler::BatchError::FailingFast) {
                summary.failed_fast += 1;
            }
            tracing::error!(error = %report(&failure.error), messages = batch.len(), "invocation failed; batch left on the queue");
            return Ok(());
        }
    };
    summary.written += stats.written;
    summary.already_present += stats.already_present;
    summary.vault_values_added += stats.vault_values_added;
    summary.quarantined += stats.quarantined;
    summary.retries += u64::from(stats.retries);
    summary.unidentifiable += stats.unidentifiable + stats.unstorable_ids;
    for (reason, count) in stats.rejected_by_reason {
        *summary.rejected_by_reason.entry(reason.to_owned()).or_default() += count;
    }

    let failed: std::collections::HashSet<&str> =
        response.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
    let succeeded: Vec<&Message> =
        batch.iter().filter(|m| !failed.contains(m.message_id().unwrap_or_default())).collect();
    for chunk in succeeded.chunks(10) {
        let entries = chunk
            .iter()
            .enumerate()
            .filter_map(|(i, m)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .set_receipt_handle(m.receipt_handle().map(str::to_owned))
                    .build()
                    .ok()
            })
            .collect::<Vec<_>>();
        let output = sqs
            .delete_message_batch()
            .queue_url(&options.queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(sqs_error("DeleteMessageBatch"))?;
        summary.deleted += output.successful().len();
        summary.delete_failed += output.failed().len();
        for failure in output.failed() {
            tracing::warn!(
                code = failure.code(),
                "DeleteMessageBatch entry failed; the message will be redelivered"
            );
        }
    }
    Ok(())
}

/// The event Lambda would deliver for these messages.
pub fn sqs_event(messages: &[Message], queue_arn: &str, region: &str) -> Result<SqsEvent, serde_json::Error> {
    let records: Vec<Value> = messages
        .iter()
        .map(|m| {
            let attributes: Map<String, Value> = m
                .attributes()
                .into_iter()
                .flatten()
                .map(|(name, value)| (name.as_str().to_owned(), Value::from(value.as_str())))
                .collect();
            let message_attributes: Map<String, Value> = m
                .message_attributes()
                .into_iter()
                .flatten()
                .map(|(name, value)| {
                    (
                        name.clone(),
                        json!({
                            "stringValue": value.string_value(),
                            "dataType": value.data_type(),
                            "stringListValues": [],
                            "binaryListValues": [],
                        }),
                    )
                })
                .collect();
            json!({
                "messageId": m.message_id(),
                "receiptHandle": m.receipt_handle(),
                "body": m.body(),
                "md5OfBody": m.md5_of_body(),
                "md5OfMessageAttributes": m.md5_of_message_attributes(),
                "attributes": attributes,
                "messageAttributes": message_attributes,
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": region,
            })
        })
        .collect();
    serde_json::from_value(json!({ "Records": records }))
}

fn report_progress(options: &EsmOptions, summary: &DrainSummary) {
    let rate = summary.received as f64 / summary.elapsed.as_secs_f64().max(1e-3);
    if options.progress {
        let mut open = progress_line();
        eprint!(
            "\resm-local: {} received, {} written, {} quarantined, {} failed invocations, {} batches, {:.0} msg/s   ",
            summary.received,
            summary.written,
            summary.quarantined,
            summary.failed_invocations,
            summary.batches,
            rate
        );
        let _ = std::io::stderr().flush();
        *open = true;
    } else {
        tracing::info!(
            received = summary.received,
            written = summary.written,
            quarantined = summary.quarantined,
            failed_invocations = summary.failed_invocations,
            batches = summary.batches,
            deleted = summary.deleted,
            "esm-local progress"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_line_ends_the_open_progress_line_and_holds_it_back_until_written() {
        *progress_line() = true;
        let line = LogWriter.make_writer();
        assert!(!*line._progress_held, "the progress line is ended before the log line");
        assert!(PROGRESS_LINE_OPEN.try_lock().is_err(), "no progress while the log line is written");
        drop(line);
        assert!(!*progress_line());
    }
}
