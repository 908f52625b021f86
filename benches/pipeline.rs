//! `make bench`: the handler against the database's bulk-load limit, on the local stack
//! (PostgreSQL, moto KMS), release build, everything measured in one run so that ratios
//! hold on a shared, noisy machine. See BENCHMARKS.md for what each figure means.
//!
//! `BENCH_SMOKE=1` runs every section once on tiny inputs (what CI does, so the harness
//! cannot rot); timings from a smoke run mean nothing.

#[path = "pipeline/growth.rs"]
mod growth;

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_lambda_events::sqs::SqsEvent;
use aws_sdk_kms::config::interceptors::BeforeSerializationInterceptorContextRef;
use aws_sdk_kms::config::{ConfigBag, Intercept};
use aws_sdk_kms::error::BoxError;
use login_etl::{App, handler};
use login_etl_core::config::{Config, DEFAULT_RETRY_BUDGET};
use login_etl_core::keys::Kms;
use login_etl_core::store::table::{SqlType, USER_LOGINS};
use login_etl_core::store::{PreparedBatch, write_batch};
use serde_json::json;
use testkit::{TestDb, init_keys, sdk_config};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;

/// Counts every KMS operation the client sends.
#[derive(Debug, Default)]
struct KmsCalls(AtomicU64);

#[derive(Debug)]
struct CountKmsCalls(Arc<KmsCalls>);

impl Intercept for CountKmsCalls {
    fn name(&self) -> &'static str {
        "CountKmsCalls"
    }
    fn read_before_execution(
        &self,
        _context: &BeforeSerializationInterceptorContextRef<'_>,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.0.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// A KMS key of its own on moto, through a client that counts its calls.
async fn counted_kms() -> (Kms, Arc<KmsCalls>) {
    let sdk =
        sdk_config(&std::env::var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL: run through make bench"))
            .await;
    let calls = Arc::new(KmsCalls::default());
    let config = aws_sdk_kms::config::Builder::from(&sdk).interceptor(CountKmsCalls(calls.clone())).build();
    let client = aws_sdk_kms::Client::from_conf(config);
    let key = client.create_key().send().await.expect("CreateKey");
    let key_id = key.key_metadata().expect("metadata").key_id().to_owned();
    (Kms::new(client, key_id), calls)
}

/// The largest batch a real invocation can carry: Lambda takes at most 6 MB of payload,
/// and an SQS record with a login body is about 700 bytes, so about 8,000 records fit
/// (the event source's maximum of 10,000 never arrives whole).
const LARGEST_BATCH: usize = 8_000;

/// The messages' `SentTimestamp`s start here (2025-11-20T08:00:00Z).
const FIRST_SENT_MS: i64 = 1_763_625_600_000;

fn smoke() -> bool {
    std::env::var("BENCH_SMOKE").is_ok_and(|v| v == "1")
}

/// `n` realistic login messages as the runtime receives them (JSON bytes): about 30% of
/// ips and device ids repeat, 29% null locales, 1% bad messages; `tag` keeps ids unique.
fn event_bytes(n: usize, tag: &str, pool_offset: usize) -> Vec<u8> {
    event_bytes_from(n, tag, pool_offset, 0)
}

/// [`event_bytes`] whose values are numbered from `first_value` (batches with distinct
/// `first_value`s, `n` apart, share no ip or device id).
fn event_bytes_from(n: usize, tag: &str, pool_offset: usize, first_value: usize) -> Vec<u8> {
    let distinct = (n * 7 / 10).max(1);
    let records: Vec<_> = (0..n)
        .map(|i| {
            let v = first_value + (i * 7919 + pool_offset) % distinct;
            const VERSIONS: [&str; 4] = ["2.3.0", "0.96", "3.7", "1.12.4"];
            const DEVICES: [&str; 2] = ["android", "ios"];
            const LOCALES: [&str; 4] = ["RU", "PT", "DE", "BR"];
            let body = if i % 100 == 99 {
                json!({"foo": "oops_wrong_msg_type", "bar": i}).to_string()
            } else {
                json!({
                    "user_id": format!("user-{tag}-{i}"),
                    "app_version": VERSIONS[i % 4],
                    "device_type": DEVICES[i % 2],
                    "ip": format!("{}.{}.{}.{}", 11 + v % 200, (v / 200) % 250, (v / 50_000) % 250, v % 251),
                    "locale": if i % 100 < 29 { serde_json::Value::Null } else { json!(LOCALES[i % 4]) },
                    "device_id": format!("{:03}-{:02}-{:04}", v % 1000, v % 97, v),
                })
                .to_string()
            };
            json!({
                "messageId": format!("{tag}-{i:06}"),
                "receiptHandle": "handle",
                "body": body,
                "attributes": {"SentTimestamp": (FIRST_SENT_MS + i as i64).to_string(), "ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:login-queue",
                "awsRegion": "us-east-1",
            })
        })
        .collect();
    serde_json::to_vec(&json!({ "Records": records })).expect("event")
}

fn decode(bytes: &[u8]) -> SqsEvent {
    serde_json::from_slice(bytes).expect("the runtime decodes the event")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    percentile(&times, 0.5)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn config_for(db: &TestDb, kms: &Kms, pool_size: usize) -> Config {
    Config {
        database: db.config.clone().into(),
        kms_key_id: kms.key_id().to_owned(),
        pool_size,
        retry_budget: DEFAULT_RETRY_BUDGET,
        outage: Default::default(),
        replay_queue_arn: None,
    }
}

/// The pure part of a batch, every date taken (the benchmark's databases have the
/// partitions its dates need).
fn prepare(keyring: &login_etl_core::keys::Keyring, event: SqsEvent) -> handler::Prepared {
    handler::prepare(keyring, event, None, &login_etl_core::store::PartitionMap::everything())
        .expect("prepare")
}

async fn cold_start(db: &TestDb, kms: &Kms) -> App {
    init_keys(db, kms).await;
    App::init(&config_for(db, kms, 2), kms).await.expect("cold start")
}

/// Handler batches of each size: messages/s, p50 and p99.
async fn handler_table(out: &mut Vec<String>) {
    out.push("## Handler, in-process (events decoded from JSON bytes, then written)".into());
    out.push("| batch | repetitions | messages/s | p50 | p99 |".into());
    out.push("| --- | --- | --- | --- | --- |".into());
    let sizes: &[(usize, usize)] =
        if smoke() { &[(10, 2), (100, 1)] } else { &[(10, 200), (100, 100), (1000, 30), (LARGEST_BATCH, 8)] };
    for &(size, reps) in sizes {
        let db = TestDb::new().await;
        let (kms, _) = counted_kms().await;
        let app = cold_start(&db, &kms).await;
        // One warm-up batch, not counted.
        handler::handle_with_stats(&app, decode(&event_bytes(size, "warm", 0))).await.expect("warm-up");
        let mut times = Vec::with_capacity(reps);
        for rep in 0..reps {
            let bytes = event_bytes(size, &format!("s{size}r{rep}"), rep * 13);
            let started = Instant::now();
            handler::handle_with_stats(&app, decode(&bytes)).await.expect("batch");
            times.push(started.elapsed());
        }
        times.sort();
        let total: Duration = times.iter().sum();
        out.push(format!(
            "| {size} | {reps} | {:.0} | {:.2} ms | {:.2} ms |",
            (size * reps) as f64 / total.as_secs_f64(),
            ms(percentile(&times, 0.5)),
            ms(percentile(&times, 0.99))
        ));
    }
}

/// The same largest batch by the handler, and its rows by binary COPY into the same
/// fresh tables and indexes, alternated, several times.
async fn copy_baseline(out: &mut Vec<String>) {
    let size = if smoke() { 100 } else { LARGEST_BATCH };
    let reps = if smoke() { 1 } else { 5 };
    let (mut handler_times, mut copy_times, mut write_times) = (Vec::new(), Vec::new(), Vec::new());
    let (mut vault_store_times, mut vault_copy_times) = (Vec::new(), Vec::new());
    let mut rows = (0, 0);
    for rep in 0..reps {
        let (kms, _) = counted_kms().await;
        let source = TestDb::new().await;
        let app = cold_start(&source, &kms).await;
        let bytes = event_bytes(size, &format!("copy{rep}"), rep);
        let started = Instant::now();
        handler::handle_with_stats(&app, decode(&bytes)).await.expect("batch");
        handler_times.push(started.elapsed());

        // The handler's own statements alone: the same batch prepared beforehand, written
        // into a fresh database.
        let fresh = TestDb::new().await;
        let writer = cold_start(&fresh, &kms).await;
        let prepared = prepare(&app.keyring, decode(&bytes));
        let started = Instant::now();
        write_batch(&writer.pool, &prepared.rows, &writer.retry).await.expect("write");
        write_times.push(started.elapsed());

        // Its vault statement alone (INSERT … ON CONFLICT DO NOTHING), into a fresh database.
        let vault_rows = prepared.rows.vault().to_vec();
        let vault_only = PreparedBatch::new(Vec::new(), Vec::new(), vault_rows, &app.keyring.erasure);
        let fresh = TestDb::new().await;
        let writer = cold_start(&fresh, &kms).await;
        let started = Instant::now();
        write_batch(&writer.pool, &vault_only, &writer.retry).await.expect("write");
        vault_store_times.push(started.elapsed());

        // Exactly what the handler wrote, into a fresh database with the same schema.
        let from = source.connect().await;
        let columns = USER_LOGINS.column_names().collect::<Vec<_>>().join(", ");
        let logins =
            from.query(&format!("SELECT {columns} FROM login_data.user_logins"), &[]).await.expect("logins");
        let vault = from
            .query("SELECT field, blind_index, key_version, nonce, ciphertext FROM vault.pii_vault", &[])
            .await
            .expect("vault");
        rows = (logins.len(), vault.len());
        let target = TestDb::new().await;
        let mut to = target.connect().await;
        let started = Instant::now();
        let tx = to.transaction().await.expect("tx");
        let sink = tx
            .copy_in(
                "COPY vault.pii_vault (field, blind_index, key_version, nonce, ciphertext) FROM STDIN BINARY",
            )
            .await
            .expect("copy");
        let writer =
            BinaryCopyInWriter::new(sink, &[Type::TEXT, Type::VARCHAR, Type::INT4, Type::BYTEA, Type::BYTEA]);
        tokio::pin!(writer);
        for row in &vault {
            let (f, b, k, n, c): (&str, &str, i32, &[u8], &[u8]) =
                (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
            writer.as_mut().write(&[&f, &b, &k, &n, &c]).await.expect("row");
        }
        writer.finish().await.expect("finish");
        vault_copy_times.push(started.elapsed());
        let sink = tx.copy_in(&USER_LOGINS.copy_sql()).await.expect("copy");
        let writer = BinaryCopyInWriter::new(sink, &USER_LOGINS.copy_types());
        tokio::pin!(writer);
        for row in &logins {
            let values: Vec<Box<dyn tokio_postgres::types::ToSql + Sync + Send>> = USER_LOGINS
                .columns
                .iter()
                .enumerate()
                .map(|(i, column)| -> Box<dyn tokio_postgres::types::ToSql + Sync + Send> {
                    match column.sql_type {
                        SqlType::Varchar(_) => Box::new(row.get::<_, Option<String>>(i)),
                        SqlType::Integer => Box::new(row.get::<_, Option<i32>>(i)),
                        SqlType::Date => Box::new(row.get::<_, Option<chrono::NaiveDate>>(i)),
                        SqlType::Timestamptz => {
                            Box::new(row.get::<_, Option<chrono::DateTime<chrono::Utc>>>(i))
                        }
                        SqlType::Bytea => Box::new(row.get::<_, Option<Vec<u8>>>(i)),
                    }
                })
                .collect();
            let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                values.iter().map(|v| v.as_ref() as &(dyn tokio_postgres::types::ToSql + Sync)).collect();
            writer.as_mut().write(&refs).await.expect("row");
        }
        writer.finish().await.expect("finish");
        tx.commit().await.expect("commit");
        copy_times.push(started.elapsed());
    }
    let (handler, copy, write) = (median(handler_times), median(copy_times), median(write_times));
    let (vault_store, vault_copy) = (median(vault_store_times), median(vault_copy_times));
    out.push(format!(
        "## {size} messages: handler against binary COPY of the same rows ({reps} alternated runs, medians)"
    ));
    out.push(format!("rows written: {} user_logins, {} pii_vault", rows.0, rows.1));
    out.push("| | median | messages/s |".into());
    out.push("| --- | --- | --- |".into());
    for (what, time) in [
        ("handler (decode, parse, mask, seal, write)", handler),
        ("its statements alone (rows prepared beforehand, one transaction)", write),
        ("binary COPY of its rows, one transaction", copy),
    ] {
        out.push(format!("| {what} | {:.1} ms | {:.0} |", ms(time), size as f64 / time.as_secs_f64()));
    }
    out.push(format!(
        "| its vault rows alone, INSERT … ON CONFLICT DO NOTHING (the store) | {:.1} ms | |",
        ms(vault_store)
    ));
    out.push(format!(
        "| its vault rows alone, binary COPY (part of the row above) | {:.1} ms | |",
        ms(vault_copy)
    ));
    out.push(format!(
        "handler ÷ COPY (throughput) = {:.2}; its statements alone ÷ COPY = {:.2}",
        copy.as_secs_f64() / handler.as_secs_f64(),
        copy.as_secs_f64() / write.as_secs_f64()
    ));
}

/// What the unnamed statement costs against a prepared one (issue 19: the function sends
/// every statement unnamed, `execute_typed`, so that it carries no session state): the
/// same login-row INSERT of the same prepared batches, one committed transaction each,
/// into two databases, alternated; prepared once per connection (`prepare_cached`, what
/// the store did before) against parsed and planned on every call.
async fn unnamed_statement(out: &mut Vec<String>) {
    let sizes: &[usize] = if smoke() { &[10] } else { &[10, 100, 1000, LARGEST_BATCH] };
    let reps = if smoke() { 1 } else { 41 };
    let (kms, _) = counted_kms().await;
    out.push(format!(
        "## The login INSERT, prepared once per connection against unnamed ({reps} alternated runs, medians)"
    ));
    out.push("| batch | prepared | unnamed | unnamed costs |".into());
    out.push("| --- | --- | --- | --- |".into());
    let sql = USER_LOGINS.insert_sql();
    let types = USER_LOGINS.array_types();
    for &size in sizes {
        let (named_db, unnamed_db) = (TestDb::new().await, TestDb::new().await);
        let app = cold_start(&named_db, &kms).await;
        let (mut named, mut unnamed) = (named_db.connect().await, unnamed_db.connect().await);
        // Prepared once on its connection, as `prepare_cached` did.
        let statement = named.prepare(&sql).await.expect("prepare");
        let mut times: HashMap<&str, Vec<Duration>> = HashMap::new();
        for rep in 0..=reps {
            let bytes = event_bytes(size, &format!("unnamed{size}r{rep}"), rep * 13);
            let prepared = prepare(&app.keyring, decode(&bytes));
            let arrays = USER_LOGINS.column_arrays(prepared.rows.logins());
            let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                arrays.iter().map(|a| a as &(dyn tokio_postgres::types::ToSql + Sync)).collect();
            let typed: Vec<(&(dyn tokio_postgres::types::ToSql + Sync), Type)> =
                params.iter().copied().zip(types.iter().cloned()).collect();
            for turn in 0..2 {
                let started = Instant::now();
                let name = if (rep + turn) % 2 == 0 {
                    let tx = named.transaction().await.expect("begin");
                    tx.execute(&statement, &params).await.expect("insert");
                    tx.commit().await.expect("commit");
                    "prepared"
                } else {
                    let tx = unnamed.transaction().await.expect("begin");
                    tx.execute_typed(&sql, &typed).await.expect("insert");
                    tx.commit().await.expect("commit");
                    "unnamed"
                };
                // The first round warms both up and is not counted.
                if rep > 0 {
                    times.entry(name).or_default().push(started.elapsed());
                }
            }
        }
        let prepared = median(times.remove("prepared").unwrap_or_default());
        let unnamed = median(times.remove("unnamed").unwrap_or_default());
        out.push(format!(
            "| {size} | {:.3} ms | {:.3} ms | {:+.3} ms ({:+.0} %) |",
            ms(prepared),
            ms(unnamed),
            ms(unnamed) - ms(prepared),
            (unnamed.as_secs_f64() / prepared.as_secs_f64() - 1.0) * 100.0
        ));
    }
}

/// Many instances through a transaction-pooling proxy: the concurrency section's batches
/// from 8 and 16 instances, straight to the database (each instance its pool of 2) and
/// through a PgBouncer in transaction mode with 4 server connections (testkit's).
async fn pooler(out: &mut Vec<String>) {
    let (size, rounds) = if smoke() { (50, 1) } else { (1000, 5) };
    out.push(format!(
        "## Through PgBouncer (transaction mode, 4 server connections; {size}-message batches)"
    ));
    out.push("| instances | path | rounds | messages/s (all) | failed invocations |".into());
    out.push("| --- | --- | --- | --- | --- |".into());
    for instances in [8usize, 16] {
        for through in [false, true] {
            let db = TestDb::new().await;
            let (kms, _) = counted_kms().await;
            init_keys(&db, &kms).await;
            let bouncer = testkit::PgBouncer::in_front_of(&db.config, 4).await;
            let mut config = config_for(&db, &kms, 2);
            if through {
                config.database = bouncer.config.clone().into();
            }
            let mut apps = Vec::new();
            for _ in 0..instances {
                apps.push(Arc::new(App::init(&config, &kms).await.expect("init")));
            }
            let (failed, elapsed) =
                concurrent_rounds(&apps, size, rounds, &format!("p{through}{instances}")).await;
            out.push(format!(
                "| {instances} | {} | {rounds} | {:.0} | {failed} |",
                if through { "PgBouncer, 4 server connections" } else { "direct" },
                (instances * size * rounds) as f64 / elapsed.as_secs_f64()
            ));
        }
    }
}

/// The vault service's requests one after another, each through the whole path (the
/// request's audit entry, the work, the outcome's entry: three transactions or more),
/// straight to the database and through PgBouncer in transaction mode.
async fn vault_service(out: &mut Vec<String>) {
    let reps = if smoke() { 5 } else { 100 };
    out.push(format!(
        "## The vault service, direct and through PgBouncer (transaction mode), {reps} requests each"
    ));
    out.push("| request | path | p50 | p99 |".into());
    out.push("| --- | --- | --- | --- |".into());
    let db = TestDb::new().await;
    let (kms, _) = counted_kms().await;
    testkit::loaded_by_writer(&db, &kms).await;
    let login = db.login_in("login_etl_vault_service").await;
    let bouncer = testkit::PgBouncer::in_front_of(&login, 3).await;
    let who = testkit::staff("bench");
    for (path, database) in
        [("direct", login.clone()), ("PgBouncer, 3 server connections", bouncer.config.clone())]
    {
        let service = testkit::vault_service_on(database, 2, &kms, 1000);
        // Keys unwrapped once per process: not what a request costs.
        service.audit(&who, None, None, Some(1)).await.expect("warm");
        Box::pin(service.find(&who, login_etl_core::crypto::PiiField::Ip, "192.0.2.1", None))
            .await
            .expect("warm");
        let mut finds = Vec::with_capacity(reps);
        let mut audits = Vec::with_capacity(reps);
        for _ in 0..reps {
            let started = Instant::now();
            Box::pin(service.find(&who, login_etl_core::crypto::PiiField::Ip, "192.0.2.1", None))
                .await
                .expect("find");
            finds.push(started.elapsed());
            let started = Instant::now();
            Box::pin(service.audit(&who, None, None, Some(10))).await.expect("audit");
            audits.push(started.elapsed());
        }
        for (request, times) in [("find", &mut finds), ("audit (a page of 10)", &mut audits)] {
            times.sort_unstable();
            out.push(format!(
                "| {request} | {path} | {:.2} ms | {:.2} ms |",
                ms(percentile(times, 0.5)),
                ms(percentile(times, 0.99))
            ));
        }
    }
}

/// Parsing, masking and sealing alone, no database.
async fn crypto_alone(out: &mut Vec<String>) {
    let size = if smoke() { 100 } else { LARGEST_BATCH };
    let db = TestDb::new().await;
    let (kms, _) = counted_kms().await;
    let app = cold_start(&db, &kms).await;
    let bytes = event_bytes(size, "crypto", 0);
    let reps = if smoke() { 1 } else { 10 };
    let mut best = Duration::MAX;
    let mut decode_best = Duration::MAX;
    for _ in 0..reps {
        let started = Instant::now();
        let event = decode(&bytes);
        decode_best = decode_best.min(started.elapsed());
        let started = Instant::now();
        let batch = prepare(&app.keyring, event);
        best = best.min(started.elapsed());
        assert!(!batch.rows.logins().is_empty());
    }
    out.push(format!("## Where the time goes, {size} messages (best of {reps})"));
    out.push(format!(
        "- decode the SqsEvent JSON: {:.1} ms ({:.0} messages/s)",
        ms(decode_best),
        size as f64 / decode_best.as_secs_f64()
    ));
    out.push(format!(
        "- parse + mask + seal (`handler::prepare`, no I/O): {:.1} ms ({:.0} messages/s)",
        ms(best),
        size as f64 / best.as_secs_f64()
    ));
}

/// 1, 2, 4 and 8 instances at once on overlapping values.
async fn concurrency(out: &mut Vec<String>) {
    let (size, rounds) = if smoke() { (50, 1) } else { (1000, 5) };
    out.push(format!("## Concurrent instances on overlapping values ({size}-message batches)"));
    out.push("| instances | rounds | messages/s (all) | failed invocations |".into());
    out.push("| --- | --- | --- | --- |".into());
    for instances in [1usize, 2, 4, 8] {
        let db = TestDb::new().await;
        let (kms, _) = counted_kms().await;
        init_keys(&db, &kms).await;
        let mut apps = Vec::new();
        for _ in 0..instances {
            apps.push(Arc::new(App::init(&config_for(&db, &kms, 2), &kms).await.expect("init")));
        }
        let (failed, elapsed) = concurrent_rounds(&apps, size, rounds, &format!("c{instances}")).await;
        out.push(format!(
            "| {instances} | {rounds} | {:.0} | {failed} |",
            (instances * size * rounds) as f64 / elapsed.as_secs_f64()
        ));
    }
}

/// `rounds` rounds of one `size`-message batch per instance, all at once, on one value
/// pool, each instance in its own order: failed invocations and the time taken.
async fn concurrent_rounds(apps: &[Arc<App>], size: usize, rounds: usize, tag: &str) -> (usize, Duration) {
    let mut failed = 0;
    let started = Instant::now();
    for round in 0..rounds {
        let runs: Vec<_> = apps
            .iter()
            .enumerate()
            .map(|(i, app)| {
                // Same value pool for all, each in its own order.
                let bytes = event_bytes(size, &format!("{tag}r{round}i{i}"), i * 101);
                let app = app.clone();
                tokio::spawn(async move { handler::handle_with_stats(&app, decode(&bytes)).await.is_ok() })
            })
            .collect();
        for run in runs {
            if !run.await.expect("task") {
                failed += 1;
            }
        }
    }
    (failed, started.elapsed())
}

/// A cold start in a process of its own: time to ready, the KMS share, KMS calls; then one
/// warm batch (KMS calls counted again), and for `rss` the largest batch and the peak RSS.
async fn child(kind: &str) {
    let process_start = Instant::now();
    let db_url = std::env::var("BENCH_DATABASE_URL").expect("db");
    let key_id = std::env::var("BENCH_KMS_KEY_ID").expect("key");
    let sdk = sdk_config(&std::env::var("AWS_ENDPOINT_URL").expect("endpoint")).await;
    let calls = Arc::new(KmsCalls::default());
    let client = aws_sdk_kms::Client::from_conf(
        aws_sdk_kms::config::Builder::from(&sdk).interceptor(CountKmsCalls(calls.clone())).build(),
    );
    let kms = Kms::new(client.clone(), key_id.clone());
    let database = login_etl_core::config::database::parse_database_url(&db_url).expect("url");
    let config = Config {
        database,
        kms_key_id: key_id.clone(),
        pool_size: 2,
        retry_budget: DEFAULT_RETRY_BUDGET,
        outage: Default::default(),
        replay_queue_arn: None,
    };
    let init_started = Instant::now();
    let app = App::init(&config, &kms).await.expect("cold start");
    let init = init_started.elapsed();
    let ready = process_start.elapsed();
    let cold_calls = calls.0.load(Ordering::SeqCst);
    // The KMS share: the same calls again, alone (DescribeKey and the three Decrypts).
    let owner = login_etl_core::config::database::connect(
        &login_etl_core::config::database::parse_database_url(&db_url).expect("url"),
    )
    .await
    .expect("connect");
    let wrapped = login_etl_core::keys::latest_wrapped_keys(&owner).await.expect("keys");
    let kms_alone = Kms::new(client, key_id);
    let kms_started = Instant::now();
    kms_alone.key_arn().await.expect("describe");
    for key in &wrapped {
        kms_alone.unwrap(key).await.expect("decrypt");
    }
    let kms_time = kms_started.elapsed();
    let before_batch = calls.0.load(Ordering::SeqCst);
    let size = if kind == "rss" { if smoke() { 100 } else { LARGEST_BATCH } } else { 100 };
    handler::handle_with_stats(&app, decode(&event_bytes(size, &format!("{kind}-child"), 0)))
        .await
        .expect("batch");
    let warm_calls = calls.0.load(Ordering::SeqCst) - before_batch;
    let peak_kib: u64 = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0);
    println!(
        "{}",
        json!({"ready_ms": ms(ready), "init_ms": ms(init), "kms_ms": ms(kms_time), "cold_kms_calls": cold_calls,
               "warm_batch_kms_calls": warm_calls, "peak_rss_kib": peak_kib, "batch": size})
    );
}

async fn children(out: &mut Vec<String>) {
    let db = TestDb::new().await;
    let (kms, _) = counted_kms().await;
    init_keys(&db, &kms).await;
    let url = testkit::url_of(&db.config);
    let run = |kind: &str| {
        let output = std::process::Command::new(std::env::current_exe().expect("exe"))
            .env("BENCH_CHILD", kind)
            .env("BENCH_DATABASE_URL", &url)
            .env("BENCH_KMS_KEY_ID", kms.key_id())
            .output()
            .expect("child");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let text = String::from_utf8_lossy(&output.stdout);
        let line = text.lines().rev().find(|l| l.starts_with('{')).expect("child result").to_owned();
        serde_json::from_str::<HashMap<String, serde_json::Value>>(&line).expect("json")
    };
    let starts: Vec<_> = (0..if smoke() { 1 } else { 5 }).map(|_| run("cold")).collect();
    let median = |name: &str| {
        let mut v: Vec<f64> = starts.iter().filter_map(|s| s[name].as_f64()).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    out.push(format!("## Cold start, a process of its own ({} runs, medians)", starts.len()));
    out.push(format!(
        "- process start to ready: {:.1} ms, of which App::init (pool, keys) {:.1} ms",
        median("ready_ms"),
        median("init_ms")
    ));
    out.push(format!(
        "- the KMS share, measured alone (DescribeKey + 3 Decrypt against moto): {:.1} ms",
        median("kms_ms")
    ));
    out.push(format!("- init without the KMS round trips: {:.1} ms", median("init_ms") - median("kms_ms")));
    out.push(format!(
        "- KMS calls per cold start: {}; per warm batch: {} (counted by an SDK interceptor)",
        starts[0]["cold_kms_calls"], starts[0]["warm_batch_kms_calls"]
    ));
    let rss = run("rss");
    out.push(format!(
        "## Peak RSS of a function process (cold start + one {}-message batch): {:.1} MB",
        rss["batch"],
        rss["peak_rss_kib"].as_f64().unwrap_or(0.0) / 1024.0
    ));
}

/// One part of the report, appending its lines.
type Section = fn(&mut Vec<String>) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + '_>>;

#[tokio::main]
async fn main() {
    if let Ok(kind) = std::env::var("BENCH_CHILD") {
        child(&kind).await;
        return;
    }
    // `cargo bench` passes --bench; nothing else is taken from the command line.
    let mut out = Vec::new();
    let sections: [(&str, Section); 9] = [
        ("handler", |o| Box::pin(handler_table(o))),
        ("copy", |o| Box::pin(copy_baseline(o))),
        ("unnamed", |o| Box::pin(unnamed_statement(o))),
        ("crypto", |o| Box::pin(crypto_alone(o))),
        ("concurrency", |o| Box::pin(concurrency(o))),
        ("pooler", |o| Box::pin(pooler(o))),
        ("vault", |o| Box::pin(vault_service(o))),
        ("growth", |o| Box::pin(growth::growth(o))),
        ("cold-start", |o| Box::pin(children(o))),
    ];
    // BENCH_ONLY=<section> runs one section (for profiling); the report needs them all.
    let only = std::env::var("BENCH_ONLY").ok();
    for (name, section) in sections {
        if only.as_deref().is_some_and(|only| only != name) {
            continue;
        }
        eprintln!("bench: {name}…");
        section(&mut out).await;
        out.push(String::new());
    }
    let text = out.join("\n");
    println!("{text}");
    let _ = std::io::stdout().flush();
}
