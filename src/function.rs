//! The function over an instance's lifetime, and its failure path.
//!
//! Init reads the configuration only: it needs neither the database nor KMS, so an
//! instance that cold-starts during an outage still reaches its handler. The pool and the
//! keys ([`App`]) are made on the first batch that can reach them, and tried again on each
//! batch until then.
//!
//! A batch that cannot be written (database or KMS unreachable, a transient fault past the
//! retry budget, a database that never answers) is hidden on its queue before the
//! invocation fails: each message for `min(max, base · 2^(receive count − 1))`
//! ([`OutagePolicy`]), so an outage rides out on the queue instead of pushing good
//! messages into the dead-letter queue. Every wait is bounded by the invocation's deadline
//! minus the time the hiding needs. After an unreachable database, the instance fails its
//! next batches at once for `DB_FAIL_FAST_MS`, still hiding them, instead of spending a
//! connect timeout on each.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::ChangeMessageVisibilityBatchRequestEntry;
use chrono::Utc;
use futures_util::StreamExt;
use tokio::sync::OnceCell;

use crate::app::{App, InitError};
use crate::handler::{self, BatchError, BatchStats};
use login_etl_core::config::outage::OutagePolicy;
use login_etl_core::config::{Config, ConfigError};
use login_etl_core::error::report;
use login_etl_core::keys::Kms;
use login_etl_core::metrics;

/// Time kept back from the invocation's deadline to hide the batch on the queue: this, plus
/// [`HIDING_ROUND`] per round of [`HIDE_CONCURRENCY`] calls of ten messages, at most half
/// of the time there is.
pub const HIDING_RESERVE: Duration = Duration::from_secs(3);
pub const HIDING_ROUND: Duration = Duration::from_millis(250);
/// `ChangeMessageVisibilityBatch` calls in flight at once (10,000 messages: 20 rounds).
pub const HIDE_CONCURRENCY: usize = 50;

/// The time kept back to hide `messages` messages.
fn hiding_reserve(messages: usize) -> Duration {
    let rounds = messages.div_ceil(10).div_ceil(HIDE_CONCURRENCY) as u32;
    HIDING_RESERVE + HIDING_ROUND * rounds
}

pub struct Function {
    config: Config,
    kms: Kms,
    queues: Queues,
    app: OnceCell<App>,
    fail_fast_until: Mutex<Option<Instant>>,
}

/// A batch that failed, and what the failure path did about it.
#[derive(Debug)]
pub struct BatchFailure {
    pub error: BatchError,
    pub received: usize,
    /// Messages whose visibility was extended.
    pub hidden: usize,
}

impl Function {
    /// No I/O: the resources are made by the first batch (see the module's doc).
    pub fn new(config: Config, kms: Kms, sqs: aws_sdk_sqs::Client) -> Function {
        Function {
            config,
            kms,
            queues: Queues { sqs, urls: Mutex::default() },
            app: OnceCell::new(),
            fail_fast_until: Mutex::new(None),
        }
    }

    /// The settings from the environment (and the database secret, if configured) and the
    /// AWS SDK configuration the binary loaded once.
    pub async fn from_env(sdk: &aws_config::SdkConfig) -> Result<Function, ConfigError> {
        let config = Config::from_env(sdk).await?;
        let kms = Kms::new(aws_sdk_kms::Client::new(sdk), config.kms_key_id.clone());
        Ok(Function::new(config, kms, aws_sdk_sqs::Client::new(sdk)))
    }

    /// The resources, made now if no batch has made them yet.
    pub async fn ready(&self) -> Result<&App, InitError> {
        self.app
            .get_or_try_init(|| async {
                let app = App::init(&self.config, &self.kms).await;
                match &app {
                    Ok(_) => tracing::info!("resources ready (pool, keys)"),
                    Err(error) => {
                        tracing::error!(error = %report(error), "resources not ready; batch will be retried")
                    }
                }
                app
            })
            .await
    }

    /// The Lambda entry point: the batch, then its metrics line.
    pub async fn invoke(&self, event: SqsEvent, deadline: Instant) -> Result<SqsBatchResponse, BatchError> {
        let started = Instant::now();
        let now_ms = || Utc::now().timestamp_millis();
        match self.handle(event, deadline).await {
            Ok((response, stats)) => {
                let elapsed = started.elapsed().as_secs_f64() * 1000.0;
                for line in handler::metric_lines(&stats, elapsed, now_ms()) {
                    println!("{line}");
                }
                Ok(response)
            }
            Err(failure) => {
                println!("{}", failure_metric_line(&failure, now_ms()));
                Err(failure.error)
            }
        }
    }

    /// One batch, bounded by `deadline`; on failure, its messages hidden on the queue.
    pub async fn handle(
        &self,
        event: SqsEvent,
        deadline: Instant,
    ) -> Result<(SqsBatchResponse, BatchStats), BatchFailure> {
        let receipts = Receipt::all(&event);
        let received = event.records.len();
        let result = if self.failing_fast() {
            Err(BatchError::FailingFast)
        } else {
            let left = deadline.saturating_duration_since(Instant::now());
            let budget = left.saturating_sub(hiding_reserve(receipts.len()).min(left / 2));
            match tokio::time::timeout(budget, self.process(event)).await {
                Ok(result) => result,
                Err(_) => Err(BatchError::Timeout),
            }
        };
        let error = match result {
            Ok(done) => return Ok(done),
            Err(error) => error,
        };
        if error.is_unreachable() {
            self.start_failing_fast();
        }
        if matches!(error, BatchError::Timeout)
            && let Some(app) = self.app.get()
        {
            // The cancelled attempt's connection went back to the pool, and may be dead
            // without knowing it (a failover, a black-holed path): drop every idle one, so
            // the next batch connects afresh instead of waiting on it again.
            app.pool.retain(|_, _| false);
        }
        let hiding_time = deadline.saturating_duration_since(Instant::now());
        let hidden = AtomicUsize::new(0);
        if tokio::time::timeout(hiding_time, self.queues.hide(&receipts, &self.config.outage, &hidden))
            .await
            .is_err()
        {
            tracing::error!("hiding the batch on the queue ran out of time");
        }
        let hidden = hidden.load(Ordering::SeqCst);
        tracing::error!(
            error = %report(&error),
            error_type = error.error_type(),
            records = received,
            hidden,
            "batch not written; hidden on the queue for the backoff, invocation fails"
        );
        Err(BatchFailure { error, received, hidden })
    }

    async fn process(&self, event: SqsEvent) -> Result<(SqsBatchResponse, BatchStats), BatchError> {
        let app = self.ready().await?;
        handler::handle_with_stats(app, event).await
    }

    fn failing_fast(&self) -> bool {
        let mut until = self.fail_fast_until.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match *until {
            Some(at) if Instant::now() < at => true,
            Some(_) => {
                *until = None;
                false
            }
            None => false,
        }
    }

    fn start_failing_fast(&self) {
        if !self.config.outage.fail_fast.is_zero() {
            let mut until = self.fail_fast_until.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            *until = Some(Instant::now() + self.config.outage.fail_fast);
        }
    }
}

/// The failed batch's CloudWatch metrics (EMF).
pub fn failure_metric_line(failure: &BatchFailure, timestamp_ms: i64) -> String {
    let failed_fast = matches!(failure.error, BatchError::FailingFast);
    metrics::line(
        &[("Function", "login-etl")],
        &[
            ("Received", failure.received as f64, "Count"),
            ("BatchFailed", 1.0, "Count"),
            ("FailedFast", if failed_fast { 1.0 } else { 0.0 }, "Count"),
            ("VisibilityExtended", failure.hidden as f64, "Count"),
        ],
        timestamp_ms,
    )
}

/// What hiding a message needs: its queue, its receipt and how often SQS delivered it.
struct Receipt {
    queue_arn: String,
    handle: String,
    receive_count: u32,
}

impl Receipt {
    /// Records without a receipt (hand-made events) cannot be hidden, and are skipped.
    fn all(event: &SqsEvent) -> Vec<Receipt> {
        event
            .records
            .iter()
            .filter_map(|record| {
                Some(Receipt {
                    queue_arn: record.event_source_arn.clone()?,
                    handle: record.receipt_handle.clone()?,
                    receive_count: record
                        .attributes
                        .get("ApproximateReceiveCount")
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(1),
                })
            })
            .collect()
    }
}

/// The queues the batches come from, by ARN (their URLs looked up once).
struct Queues {
    sqs: aws_sdk_sqs::Client,
    urls: Mutex<HashMap<String, String>>,
}

impl Queues {
    /// Extends each message's visibility as the policy says, [`HIDE_CONCURRENCY`] calls at
    /// a time; counts the messages hidden in `hidden` as they are (so a hide cut short by
    /// the deadline still says how far it got).
    async fn hide(&self, receipts: &[Receipt], policy: &OutagePolicy, hidden: &AtomicUsize) {
        let mut by_queue: HashMap<&str, Vec<&Receipt>> = HashMap::new();
        for receipt in receipts {
            by_queue.entry(&receipt.queue_arn).or_default().push(receipt);
        }
        let mut calls = Vec::new();
        for (arn, receipts) in by_queue {
            let Some(url) = self.url(arn).await else { continue };
            for chunk in receipts.chunks(10) {
                let entries: Vec<_> = chunk
                    .iter()
                    .enumerate()
                    .filter_map(|(i, receipt)| {
                        let seconds = policy.hide_for(receipt.receive_count).as_secs();
                        ChangeMessageVisibilityBatchRequestEntry::builder()
                            .id(i.to_string())
                            .receipt_handle(&receipt.handle)
                            .visibility_timeout(i32::try_from(seconds).unwrap_or(i32::MAX))
                            .build()
                            .ok()
                    })
                    .collect();
                calls.push(
                    self.sqs
                        .change_message_visibility_batch()
                        .queue_url(url.clone())
                        .set_entries(Some(entries))
                        .send(),
                );
            }
        }
        futures_util::stream::iter(calls)
            .buffer_unordered(HIDE_CONCURRENCY)
            .for_each(|answer| async move {
                match answer {
                    Ok(output) => {
                        hidden.fetch_add(output.successful().len(), Ordering::SeqCst);
                        for failure in output.failed() {
                            tracing::warn!(code = failure.code(), "a message's visibility could not be extended");
                        }
                    }
                    Err(error) => {
                        tracing::error!(error = %DisplayErrorContext(error), "ChangeMessageVisibilityBatch failed");
                    }
                }
            })
            .await;
    }

    /// The queue's URL, from `GetQueueUrl` (name and owner from the ARN), cached.
    async fn url(&self, arn: &str) -> Option<String> {
        if let Some(url) = self.urls.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(arn) {
            return Some(url.clone());
        }
        // arn:PARTITION:sqs:REGION:ACCOUNT:NAME
        let parts: Vec<&str> = arn.split(':').collect();
        let [_, _, "sqs", _, account, name] = parts[..] else {
            tracing::error!("eventSourceARN is not an SQS queue ARN; the batch cannot be hidden");
            return None;
        };
        let found =
            self.sqs.get_queue_url().queue_name(name).queue_owner_aws_account_id(account).send().await;
        match found {
            Ok(output) => {
                let url = output.queue_url?;
                self.urls
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(arn.to_owned(), url.clone());
                Some(url)
            }
            Err(error) => {
                tracing::error!(error = %DisplayErrorContext(error), "GetQueueUrl failed; the batch cannot be hidden");
                None
            }
        }
    }
}
