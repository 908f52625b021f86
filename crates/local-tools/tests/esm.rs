//! esm-local end to end through the real moto SQS: drain, bad messages quarantined at
//! first sight, and database outages (refused, cut again and again) that lose nothing.
//! The long outages of the failure path are in `outage.rs`.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use login_etl::Function;
use login_etl_core::config::outage::OutagePolicy;
use login_etl_local_tools::esm::{self, EsmOptions};
use testkit::*;

fn options(queue_url: &str) -> EsmOptions {
    EsmOptions {
        queue_url: queue_url.to_owned(),
        batch_size: 10,
        batching_window: Duration::from_millis(200),
        pollers: 2,
        wait_time_seconds: 1,
        until_empty: true,
        progress: false,
        function_timeout: Duration::from_secs(10),
    }
}

/// Backoff of 1 s, then 2 s: these tests' outages are seconds long.
const SHORT_BACKOFF: OutagePolicy = OutagePolicy {
    backoff_base: Duration::from_secs(1),
    backoff_max: Duration::from_secs(2),
    fail_fast: Duration::from_millis(200),
};

async fn function_for(db: &TestDb) -> Function {
    function(db, &new_kms().await, db.config.clone(), SHORT_BACKOFF).await
}

fn sample_bodies() -> Vec<String> {
    sample_messages().iter().map(|m| m.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drains_the_exercise_queue_into_99_rows_and_quarantines_the_bad_messages_at_first_sight() {
    let db = TestDb::new().await;
    let app = function_for(&db).await;
    let queues = TestQueues::new(2, 1).await;
    let mut bodies = sample_bodies();
    bodies.push("not json".into());
    bodies.push(login_body("u-extra", "not-an-ip", "d-extra"));
    queues.send(&bodies).await;

    let summary = esm::run(&app, &queues.sqs, &options(&queues.queue_url), Arc::new(AtomicBool::new(false)))
        .await
        .expect("drain");

    assert_eq!(summary.written, 99);
    assert_eq!(summary.failed_invocations, 0);
    assert_eq!(db.count("SELECT count(*) FROM login_data.user_logins").await, 99);
    assert_eq!(db.count("SELECT count(DISTINCT user_id) FROM login_data.user_logins").await, 99);
    assert_eq!(esm::queue_depth(&queues.sqs, &queues.queue_url).await.expect("depth").total(), 0);
    // Each bad message was quarantined on its first receive and deleted: none is left in
    // a queue, and none was received twice.
    assert_eq!(esm::queue_depth(&queues.sqs, &queues.dlq_url).await.expect("dlq").total(), 0);
    // (A slow batch can outlast the 1 s visibility timeout: a message then comes again,
    // and is already present or already quarantined.)
    assert_eq!(summary.quarantined, 3, "{summary:?}");
    assert_eq!(summary.deleted + summary.delete_failed, summary.received, "{summary:?}");
    assert_eq!(
        db.count("SELECT count(*) FROM login_data.login_quarantine WHERE attempt = 0 AND source = 'queue' AND receive_count = 1").await,
        3
    );
    assert_eq!(
        esm::dead_letter_queue_url(&queues.sqs, &queues.queue_url).await.expect("redrive"),
        Some(queues.dlq_url.clone())
    );
}

/// Four instances drain one queue through a transaction-pooling proxy (PgBouncer 1.18,
/// `pool_mode = transaction`) of two server connections: the function's statements carry
/// no session state, so every message is written or quarantined, once, and none fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_instances_drain_through_a_transaction_pooler_of_two_server_connections() {
    const INSTANCES: usize = 4;
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let bouncer = PgBouncer::in_front_of(&db.config, 2).await;
    let queues = TestQueues::new(2, 1).await;
    let mut bodies = sample_bodies();
    // Batches of different shapes: some with rejected messages (quarantine statements),
    // some without, as batches come.
    for i in 0..200 {
        let ip = format!("192.0.2.{}", i % 7 + 1);
        bodies.push(if i % 4 == 0 {
            rejected_login_body(&format!("bad-{i}"), &ip, "d-shared")
        } else {
            login_body(&format!("u-{i}"), &ip, "d-shared")
        });
    }
    queues.send(&bodies).await;

    let mut drains = Vec::new();
    for _ in 0..INSTANCES {
        let app = Arc::new(function(&db, &kms, bouncer.config.clone(), SHORT_BACKOFF).await);
        let (sqs, options) = (queues.sqs.clone(), options(&queues.queue_url));
        drains.push(tokio::spawn(async move {
            esm::run(&app, &sqs, &options, Arc::new(AtomicBool::new(false))).await.expect("drain")
        }));
    }
    let (mut written, mut failed, mut quarantined) = (0, 0, 0);
    for drain in drains {
        let summary = drain.await.expect("task");
        written += summary.written;
        failed += summary.failed_invocations;
        quarantined += summary.quarantined;
    }

    assert_eq!(failed, 0, "invocations failed through the pooler:\n{}", bouncer.log());
    assert_eq!(written, 99 + 150);
    assert_eq!(quarantined, 1 + 50);
    assert_eq!(db.count("SELECT count(*) FROM user_logins").await, 99 + 150);
    assert_eq!(db.count("SELECT count(DISTINCT sqs_message_id) FROM user_logins").await, 99 + 150);
    assert_eq!(db.count("SELECT count(*) FROM login_data.login_quarantine").await, 1 + 50);
    assert_eq!(esm::queue_depth(&queues.sqs, &queues.queue_url).await.expect("depth").total(), 0);
    assert_eq!(esm::queue_depth(&queues.sqs, &queues.dlq_url).await.expect("dlq").total(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_mid_drain_deletes_nothing_and_loses_nothing() {
    let db = TestDb::new().await;
    let app = function_for(&db).await;
    let queues = TestQueues::new(6, 1).await;
    queues.send(&sample_bodies()).await;

    // The database stops taking connections; pooled ones are cut.
    db.admin_connect()
        .await
        .batch_execute(&format!(
            "ALTER DATABASE {0} ALLOW_CONNECTIONS false;
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity
              WHERE datname = '{0}' AND pid <> pg_backend_pid();",
            db.name
        ))
        .await
        .expect("block connections");

    let drain = {
        let queues_sqs = queues.sqs.clone();
        let options = options(&queues.queue_url);
        let app = Arc::new(app);
        tokio::spawn(
            async move { esm::run(&app, &queues_sqs, &options, Arc::new(AtomicBool::new(false))).await },
        )
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // moto's counts can be off by one while a receive is under way: read a few times.
    let mut during = Vec::new();
    for _ in 0..5 {
        during.push(esm::queue_depth(&queues.sqs, &queues.queue_url).await.expect("depth").total());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(during.contains(&100), "nothing may be deleted while the handler fails: {during:?}");

    db.admin_connect()
        .await
        .batch_execute(&format!("ALTER DATABASE {} ALLOW_CONNECTIONS true", db.name))
        .await
        .expect("unblock");

    let summary = drain.await.expect("task").expect("drain");
    assert!(summary.failed_invocations > 0, "the outage must have been hit: {summary:?}");
    assert!(summary.hidden > 0, "failed batches are hidden for the backoff: {summary:?}");
    // Only messages that are in user_logins or the quarantine are ever deleted. A message whose visibility
    // timeout ran out while the database recovered may come back once more after it was
    // written (its first delete then may fail on an outdated receipt handle): it is then
    // already present, deleted again, and adds no row.
    assert_eq!(summary.written, 99);
    assert_eq!(
        (summary.deleted + summary.delete_failed) as u64,
        summary.written + summary.already_present + summary.rejected() as u64
    );
    assert_eq!(db.count("SELECT count(*) FROM login_data.user_logins").await, 99);
    assert_eq!(db.count("SELECT count(*) FROM login_data.login_quarantine").await, 1);
    assert_eq!(esm::queue_depth(&queues.sqs, &queues.queue_url).await.expect("depth").total(), 0);
    assert_eq!(esm::queue_depth(&queues.sqs, &queues.dlq_url).await.expect("dlq").total(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_backend_terminated_again_and_again_while_draining_loses_and_doubles_nothing() {
    let db = TestDb::new().await;
    let app = function_for(&db).await;
    let queues = TestQueues::new(5, 1).await;
    let mut bodies = sample_bodies();
    bodies.push("{\"ip\": \"10.0.0.1\"}".into());
    queues.send(&bodies).await;

    // Like a database restart seen from the client: every session of the test database
    // is cut, every 150 ms, while the queue drains.
    let terminator = {
        let admin = db.admin_connect().await;
        let name = db.name.clone();
        tokio::spawn(async move {
            let mut terminated = 0;
            for _ in 0..20 {
                let rows = admin
                    .query(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                          WHERE datname = $1 AND pid <> pg_backend_pid()",
                        &[&name],
                    )
                    .await
                    .expect("terminate");
                terminated += rows.len();
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            terminated
        })
    };
    let summary = esm::run(&app, &queues.sqs, &options(&queues.queue_url), Arc::new(AtomicBool::new(false)))
        .await
        .expect("drain");
    let terminated = terminator.await.expect("terminator");

    assert!(terminated > 0, "sessions were cut while draining");
    assert_eq!(db.count("SELECT count(*) FROM login_data.user_logins").await, 99);
    assert_eq!(db.count("SELECT count(DISTINCT sqs_message_id) FROM login_data.user_logins").await, 99);
    assert_eq!(db.count("SELECT count(DISTINCT user_id) FROM login_data.user_logins").await, 99);
    assert_eq!(db.count("SELECT count(*) FROM vault.pii_vault").await, 198);
    assert_eq!(esm::queue_depth(&queues.sqs, &queues.queue_url).await.expect("depth").total(), 0);
    // The two malformed messages are quarantined once each, and nothing reached the DLQ.
    assert_eq!(db.count("SELECT count(*) FROM login_data.login_quarantine").await, 2);
    assert_eq!(esm::queue_depth(&queues.sqs, &queues.dlq_url).await.expect("dlq").total(), 0);
    assert_eq!(
        summary.written + summary.already_present + summary.rejected() as u64,
        (summary.deleted + summary.delete_failed) as u64
    );
}
