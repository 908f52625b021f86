//! Invocations racing on shared values, as production runs them (the event source mapping's
//! `MaximumConcurrency`): eight function instances write at once, every batch holding the
//! same ips and device ids in a different order. Nothing may fail, deadlock or be retried.

use std::collections::HashSet;
use std::sync::Arc;

use login_etl::handler;
use testkit::*;
use tokio::sync::Barrier;

const INSTANCES: usize = 8;
/// Overlapping values in every batch: 600 login rows and many shared vault rows each.
const VALUES: usize = 600;
const ROUNDS: usize = 5;

/// A permutation of `0..VALUES` of its own for each instance: steps coprime to 600, one
/// walking backwards, each starting elsewhere.
fn order(instance: usize, round: usize) -> Vec<usize> {
    const STEPS: [usize; INSTANCES] = [1, 599, 7, 11, 13, 17, 19, 23];
    let start = (instance * 37 + round * 53) % VALUES;
    (0..VALUES).map(|i| (start + i * STEPS[instance]) % VALUES).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_instances_on_overlapping_values_in_different_orders_never_fail_or_deadlock() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let mut instances = Vec::new();
    for _ in 0..INSTANCES {
        instances.push(Arc::new(cold_start(&db, &kms).await));
    }
    let ips: Vec<String> = (0..VALUES).map(|i| format!("100.64.{}.{}", i / 250, i % 250 + 1)).collect();
    let devices: Vec<String> = (0..VALUES).map(|i| format!("family-device-{i:03}")).collect();

    let mut written = 0;
    let mut retries = 0;
    for round in 0..ROUNDS {
        let barrier = Arc::new(Barrier::new(INSTANCES));
        let runs = instances.iter().enumerate().map(|(instance, app)| {
            let records: Vec<(String, String)> = order(instance, round)
                .into_iter()
                .enumerate()
                .map(|(position, v)| {
                    // Ids follow the instance's order, so sorting by id keeps it.
                    let id = format!("r{round}-i{instance}-p{position:03}");
                    // Device ids pair with other ips in each round, so rows differ.
                    let device = &devices[(v * 3 + round) % VALUES];
                    (id.clone(), login_body(&id, &ips[v], device))
                })
                .collect();
            let (app, barrier) = (app.clone(), barrier.clone());
            tokio::spawn(async move {
                let event = event(&records);
                barrier.wait().await;
                handler::handle_with_stats(&app, event).await
            })
        });
        for run in futures_join(runs.collect()).await {
            let (response, stats) = run.expect("invocation must not fail");
            assert!(response.batch_item_failures.is_empty());
            written += stats.written;
            retries += stats.retries;
        }
    }

    let expected = (INSTANCES * VALUES * ROUNDS) as i64;
    assert_eq!(written as i64, expected, "every message written by its own invocation");
    assert_eq!(db.count("SELECT count(*) FROM login_data.user_logins").await, expected);
    assert_eq!(db.count("SELECT count(DISTINCT sqs_message_id) FROM login_data.user_logins").await, expected);
    assert_eq!(db.count("SELECT count(*) FROM vault.pii_vault WHERE field = 'ip'").await, VALUES as i64);
    assert_eq!(
        db.count("SELECT count(*) FROM vault.pii_vault WHERE field = 'device_id'").await,
        VALUES as i64
    );
    assert_eq!(db.count("SELECT count(DISTINCT masked_ip) FROM login_data.user_logins").await, VALUES as i64);
    // With one lock order there is no deadlock to retry: a retry here means the order broke.
    assert_eq!(retries, 0, "transient errors were retried: the lock order is not deterministic");
    let distinct: HashSet<_> = (0..INSTANCES).map(|i| order(i, 0)).collect();
    assert_eq!(distinct.len(), INSTANCES, "each instance sends its own order");
}

async fn futures_join<T>(handles: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut results = Vec::with_capacity(handles.len());
    for handle in handles {
        results.push(handle.await.expect("task"));
    }
    results
}

/// One batch delivered to several instances at once (at-least-once delivery: a visibility
/// timeout ran out while the first was still writing), each receiving the records in its
/// own order: one INSERT … ON CONFLICT each, its rows routed in key order to their
/// partitions.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_batch_delivered_to_four_instances_at_once_is_written_once_without_deadlock() {
    const COPIES: usize = 4;
    const MESSAGES: usize = 1000;
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let mut instances = Vec::new();
    for _ in 0..COPIES {
        instances.push(Arc::new(cold_start(&db, &kms).await));
    }
    // Counts the statements that insert into user_logins.
    db.fault_on_insert("login_data.user_logins", "NULL;").await;
    const ROUNDS: usize = 6;
    for round in 0..ROUNDS {
        let records: Vec<(String, String)> = (0..MESSAGES)
            .map(|v| {
                let id = format!("r{round}-m{v:04}");
                let ip = format!("100.64.{}.{}", v % 397 / 200, v % 397 % 200);
                (id.clone(), login_body(&id, &ip, &format!("family-{}", v % 389)))
            })
            .collect();
        let barrier = Arc::new(Barrier::new(COPIES));
        let runs = instances.iter().enumerate().map(|(copy, app)| {
            let mut mine = records.clone();
            // Each copy in another order: rotated, every other one reversed.
            mine.rotate_left(copy * 151 % MESSAGES);
            if copy % 2 == 1 {
                mine.reverse();
            }
            let (app, barrier) = (app.clone(), barrier.clone());
            tokio::spawn(async move {
                let event = event(&mine);
                barrier.wait().await;
                handler::handle_with_stats(&app, event).await
            })
        });
        let (mut written, mut already_present, mut retries) = (0, 0, 0);
        for run in futures_join(runs.collect()).await {
            let (response, stats) = run.expect("invocation must not fail");
            assert!(response.batch_item_failures.is_empty());
            written += stats.written;
            already_present += stats.already_present;
            retries += stats.retries;
        }
        assert_eq!(written, MESSAGES as u64, "round {round}: each message written by exactly one copy");
        assert_eq!(already_present, ((COPIES - 1) * MESSAGES) as u64);
        assert_eq!(retries, 0, "round {round}: a deadlock was retried");
    }
    // One INSERT … ON CONFLICT per copy and round: none was retried or went again.
    assert_eq!(db.fault_calls("login_data.user_logins").await, (ROUNDS * COPIES) as i64);
    assert_eq!(db.count("SELECT count(*) FROM login_data.user_logins").await, (ROUNDS * MESSAGES) as i64);
    assert_eq!(db.count("SELECT count(*) FROM vault.pii_vault").await, 397 + 389);
}
