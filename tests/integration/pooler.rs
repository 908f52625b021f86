//! Many instances, few connections: the function through a transaction-pooling proxy
//! (PgBouncer 1.18, `pool_mode = transaction`, 4 server connections), where consecutive
//! transactions of one client run on different server connections. Nothing the function
//! sends may rely on its session: no named prepared statement, no session-level `SET`.

use std::sync::Arc;

use login_etl::handler;
use testkit::*;
use tokio::sync::Barrier;

const WRITERS: usize = 32;
const SERVER_CONNECTIONS: u32 = 4;
const ROUNDS: usize = 3;
/// New messages per writer and round; the last round's first writers send large batches.
const NEW: usize = 150;
const LARGE: usize = 1000;
const LARGE_WRITERS: usize = 4;
/// Messages of the previous round (another writer's) delivered again in each batch.
const AGAIN: usize = 30;
/// Shared ips and device ids: every batch holds many of the others' values.
const VALUES: usize = 300;

fn id(round: usize, writer: usize, n: usize) -> String {
    format!("r{round}-w{writer:02}-m{n:04}")
}

fn new_messages(round: usize, writer: usize) -> usize {
    if round == ROUNDS - 1 && writer < LARGE_WRITERS { LARGE } else { NEW }
}

fn body(round: usize, writer: usize, n: usize) -> String {
    let v = (writer * 37 + round * 11 + n * 7) % VALUES;
    login_body(
        &id(round, writer, n),
        &format!("100.64.{}.{}", v / 200, v % 200 + 1),
        &format!("dev-{:03}", (v * 3) % VALUES),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_writers_through_four_pooled_server_connections_lose_and_double_nothing() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let bouncer = PgBouncer::in_front_of(&db.config, SERVER_CONNECTIONS).await;
    init_keys(&db, &kms).await;
    let mut config = db.app_config();
    config.database = bouncer.config.clone().into();
    let mut writers = Vec::new();
    for _ in 0..WRITERS {
        // Each instance's cold start (keys, table check) goes through the pooler as well.
        let app = login_etl::App::init(&config, &kms).await;
        writers.push(Arc::new(app.unwrap_or_else(|e| panic!("cold start through the pooler: {e:?}"))));
    }

    let (mut unique, mut again, mut bad) = (0u64, 0u64, 0u64);
    let (mut written, mut already_present, mut quarantined) = (0u64, 0u64, 0u64);
    let mut failures = Vec::new();
    for round in 0..ROUNDS {
        let barrier = Arc::new(Barrier::new(WRITERS));
        let mut runs = Vec::new();
        for (writer, app) in writers.iter().enumerate() {
            let mut records: Vec<(String, String)> = (0..new_messages(round, writer))
                .map(|n| (id(round, writer, n), body(round, writer, n)))
                .collect();
            unique += records.len() as u64;
            if round > 0 {
                // The previous writer's messages of the previous round, again.
                let other = (writer + WRITERS - 1) % WRITERS;
                records.extend((0..AGAIN).map(|n| (id(round - 1, other, n), body(round - 1, other, n))));
                again += AGAIN as u64;
            }
            // A bad message in every other batch: batches of different shapes (what a
            // session-bound statement cache on a shared server connection trips over).
            if (writer + round) % 2 == 0 {
                let bad_id = format!("bad-r{round}-w{writer:02}");
                records.push((bad_id.clone(), rejected_login_body(&bad_id, "198.51.100.7", "dev-bad")));
                bad += 1;
            }
            let (app, barrier) = (app.clone(), barrier.clone());
            runs.push(tokio::spawn(async move {
                let event = event(&records);
                barrier.wait().await;
                handler::handle_with_stats(&app, event).await
            }));
        }
        for run in runs {
            match run.await.expect("task") {
                Ok((response, stats)) => {
                    assert!(response.batch_item_failures.is_empty(), "{:?}", response.batch_item_failures);
                    written += stats.written;
                    already_present += stats.already_present;
                    quarantined += stats.quarantined;
                }
                Err(error) => failures.push(login_etl_core::error::report(&error)),
            }
        }
    }

    assert!(
        failures.is_empty(),
        "{} of {} invocations failed through the pooler, first: {}",
        failures.len(),
        WRITERS * ROUNDS,
        failures[0]
    );
    assert_eq!(written, unique, "every new message written by its own invocation");
    assert_eq!(already_present, again, "every message delivered again found present");
    assert_eq!(quarantined, bad);
    assert_eq!(db.count("SELECT count(*) FROM user_logins").await, unique as i64);
    assert_eq!(db.count("SELECT count(DISTINCT sqs_message_id) FROM user_logins").await, unique as i64);
    assert_eq!(db.count("SELECT count(*) FROM login_data.login_quarantine").await, bad as i64);
    let ips = db.count("SELECT count(DISTINCT masked_ip) FROM user_logins").await;
    // (The bad messages' values are masked in the quarantine, never vaulted.)
    assert_eq!(db.count("SELECT count(*) FROM vault.pii_vault WHERE field = 'ip'").await, ips);
    let devices = db.count("SELECT count(DISTINCT masked_device_id) FROM user_logins").await;
    assert_eq!(db.count("SELECT count(*) FROM vault.pii_vault WHERE field = 'device_id'").await, devices);
    // Every row as its message said (the one user per message id).
    assert_eq!(db.count("SELECT count(*) FROM user_logins WHERE user_id <> sqs_message_id").await, 0);
    drop(bouncer);
}

/// The function's lock bound holds through the pooler (its `SET LOCAL` is in the
/// transaction it bounds), and nothing of it is left on the server connection afterwards:
/// through a pooler of one server connection, the next client sees the defaults.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lock_bound_holds_through_the_pooler_and_does_not_outlive_its_transaction() {
    let db = TestDb::new().await;
    let kms = new_kms().await;
    let bouncer = PgBouncer::in_front_of(&db.config, 1).await;
    init_keys(&db, &kms).await;
    let mut config = db.app_config();
    config.database = bouncer.config.clone().into();
    config.retry_budget = std::time::Duration::ZERO;
    let app = login_etl::App::init(&config, &kms).await.expect("cold start through the pooler");
    let batch = |id: &str| event(&[(id.to_owned(), login_body(id, "192.0.2.1", "d-1"))]);
    let (_, stats) = handler::handle_with_stats(&app, batch("m-1")).await.expect("written");
    assert_eq!(stats.written, 1);

    // The one server connection, as the next client sees it: nothing the function set.
    let next = testkit::connect(&bouncer.config).await;
    let settings = "SELECT current_setting('statement_timeout'), current_setting('lock_timeout')";
    let row = next.query_typed_one(settings, &[]).await.expect("settings");
    assert_eq!((row.get::<_, String>(0), row.get::<_, String>(1)), ("0".to_owned(), "0".to_owned()));
    drop(next);

    // A forget in progress elsewhere: the erasure lock held exclusive.
    let mut holder = db.connect().await;
    let forget = holder.transaction().await.expect("begin");
    forget.batch_execute("SELECT only_row FROM pii_locks.erasure FOR UPDATE").await.expect("lock");
    let started = std::time::Instant::now();
    let error = handler::handle_with_stats(&app, batch("m-2"))
        .await
        .expect_err("the batch waits for the lock no longer than the bound");
    let waited = started.elapsed();
    forget.rollback().await.expect("release");
    let report = login_etl_core::error::report(&error);
    assert!(report.contains("55P03"), "a lock_timeout error: {report}");
    assert!(waited < std::time::Duration::from_secs(8), "bounded by lock_timeout (3 s): {waited:?}");
    let (response, stats) =
        handler::handle_with_stats(&app, batch("m-2")).await.expect("written once the lock is free");
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(stats.written, 1);
}
