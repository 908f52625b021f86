//! The failure path, time-scaled: outages longer than the queue's plain redelivery budget
//! (maxReceiveCount × its visibility timeout) but shorter than the function's backoff
//! budget, during an esm-local drain of good and bad messages, ride out on the queue.
//!
//! Scale: function timeout 3 s, visibility 4 s, maxReceiveCount 4 (16 s of plain
//! redelivery: without the backoff a message failing from the outage's start reaches the
//! DLQ after 16 s), backoff 4, 8, 16, 16 s (44 s), outage 24 s.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use chrono::Utc;
use login_etl::Function;
use login_etl_core::config::outage::OutagePolicy;
use login_etl_local_tools::esm::{self, DrainSummary, EsmOptions};
use testkit::*;

const VISIBILITY_SECONDS: u32 = 4;
const MAX_RECEIVES: u32 = 4;
const OUTAGE: Duration = Duration::from_secs(24);
const BACKOFF: OutagePolicy = OutagePolicy {
    backoff_base: Duration::from_secs(4),
    backoff_max: Duration::from_secs(16),
    fail_fast: Duration::from_millis(500),
};

fn options(queue_url: &str) -> EsmOptions {
    EsmOptions {
        queue_url: queue_url.to_owned(),
        batch_size: 10,
        batching_window: Duration::from_millis(100),
        pollers: 2,
        wait_time_seconds: 1,
        until_empty: true,
        progress: false,
        function_timeout: Duration::from_secs(3),
    }
}

/// `n` valid logins and `bad` rejected ones, ids tagged.
fn bodies(tag: &str, n: usize, bad: usize) -> Vec<String> {
    let mut bodies: Vec<String> = many_logins(n, tag).into_iter().map(|(_, body)| body).collect();
    bodies.extend((0..bad).map(|i| format!("{{\"user_id\": \"{tag}-bad-{i}\", \"ip\": \"not json")));
    bodies
}

struct Outage {
    db: TestDb,
    proxy: DatabaseProxy,
    queues: TestQueues,
    function: Arc<Function>,
}

impl Outage {
    async fn new() -> Outage {
        assert!(
            BACKOFF.ride_out(MAX_RECEIVES) > OUTAGE
                && OUTAGE > Duration::from_secs(u64::from(MAX_RECEIVES * VISIBILITY_SECONDS))
        );
        let db = TestDb::new().await;
        let (proxy, through_proxy) = DatabaseProxy::in_front_of(&db.config).await;
        let function = Arc::new(function(&db, &new_kms().await, through_proxy, BACKOFF).await);
        let queues = TestQueues::new(MAX_RECEIVES, VISIBILITY_SECONDS).await;
        Outage { db, proxy, queues, function }
    }

    fn drain(&self) -> tokio::task::JoinHandle<DrainSummary> {
        let (function, sqs, options) =
            (self.function.clone(), self.queues.sqs.clone(), options(&self.queues.queue_url));
        tokio::spawn(async move {
            esm::run(&function, &sqs, &options, Arc::new(AtomicBool::new(false))).await.expect("drain")
        })
    }

    async fn wait_for_rows(&self, at_least: i64) {
        let started = Instant::now();
        while self.db.count("SELECT count(*) FROM login_data.user_logins").await < at_least {
            assert!(started.elapsed() < Duration::from_secs(60), "rows never arrived");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Everything written once, dated by its SentTimestamp, the bad ones quarantined, and
    /// nothing in the dead-letter queue or left on the queue.
    async fn assert_rode_out(
        &self,
        summary: &DrainSummary,
        good: i64,
        bad: i64,
        outage_ended: chrono::DateTime<Utc>,
    ) {
        assert!(summary.failed_invocations > 0, "the outage must have been hit: {summary:?}");
        assert!(summary.hidden > 0, "failed batches are hidden for the backoff: {summary:?}");
        assert_eq!(summary.not_hidden, 0, "every message of a failed batch is hidden: {summary:?}");
        assert_eq!(
            esm::queue_depth(&self.queues.sqs, &self.queues.dlq_url).await.expect("dlq").total(),
            0,
            "{summary:?}"
        );
        assert_eq!(
            esm::queue_depth(&self.queues.sqs, &self.queues.queue_url).await.expect("queue").total(),
            0
        );
        assert_eq!(self.db.count("SELECT count(*) FROM login_data.user_logins").await, good, "{summary:?}");
        assert_eq!(
            self.db.count("SELECT count(DISTINCT sqs_message_id) FROM login_data.user_logins").await,
            good
        );
        assert_eq!(
            self.db
                .count(
                    "SELECT count(*) FROM login_data.user_logins WHERE create_date <> (sent_at AT TIME ZONE 'UTC')::date"
                )
                .await,
            0
        );
        // Rows written after the outage keep the time their message was sent.
        let after = self
            .db
            .connect()
            .await
            .query_one(
                "SELECT count(*) FROM login_data.user_logins WHERE loaded_at > $1 AND sent_at < $1",
                &[&outage_ended],
            )
            .await
            .expect("count")
            .get::<_, i64>(0);
        assert!(after > 0, "some logins sent during the outage were written after it, dated when sent");
        assert_eq!(
            self.db.count("SELECT count(*) FROM login_data.login_quarantine").await,
            bad,
            "{summary:?}"
        );
        assert_eq!(
            self.db.count("SELECT count(DISTINCT message_id) FROM login_data.login_quarantine").await,
            bad
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_database_for_longer_than_the_redelivery_budget_sends_nothing_to_the_dlq() {
    let outage = Outage::new().await;
    outage.queues.send(&bodies("before", 40, 3)).await;
    let drain = outage.drain();
    outage.wait_for_rows(10).await;

    outage.proxy.set(Mode::Refuse);
    outage.queues.send(&bodies("during", 20, 2)).await;
    tokio::time::sleep(OUTAGE).await;
    let ended = Utc::now();
    outage.proxy.set(Mode::Pass);

    let summary = drain.await.expect("task");
    assert!(summary.failed_fast > 0, "after a refused connection, batches fail at once: {summary:?}");
    outage.assert_rode_out(&summary, 60, 5, ended).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_cold_starts_during_the_outage_reaches_its_handler_and_rides_it_out() {
    let outage = Outage::new().await;
    // Down before the first batch: the instance has never reached the database or its keys.
    outage.proxy.set(Mode::Refuse);
    outage.queues.send(&bodies("cold", 40, 4)).await;
    let drain = outage.drain();
    tokio::time::sleep(OUTAGE).await;
    let ended = Utc::now();
    outage.proxy.set(Mode::Pass);

    let summary = drain.await.expect("task");
    outage.assert_rode_out(&summary, 40, 4, ended).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_accepts_connections_but_never_answers_is_ridden_out_too() {
    let outage = Outage::new().await;
    outage.queues.send(&bodies("before", 40, 3)).await;
    let drain = outage.drain();
    outage.wait_for_rows(10).await;

    // Sessions open and new ones are accepted, and nothing is ever answered.
    outage.proxy.set(Mode::Swallow);
    outage.queues.send(&bodies("during", 20, 2)).await;
    tokio::time::sleep(OUTAGE).await;
    let ended = Utc::now();
    outage.proxy.set(Mode::Pass);

    let summary = drain.await.expect("task");
    outage.assert_rode_out(&summary, 60, 5, ended).await;
}
