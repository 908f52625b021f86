//! Red-team attacks on the failure path that need the real queue (moto SQS receipts and
//! visibility), network faults between the function and its database or SQS, and
//! esm-local. Each test fails if the attack works; the ones that still work are marked
//! `#[ignore = "…what breaks…"]` (run them with `-- --include-ignored`).
//!
//! Network faults come from a TCP proxy of this file's own ([`FaultProxy`]): it delays,
//! black-holes or cuts real connections (after a real COMMIT), as networks and NAT do. The
//! database proxy of the testkit refuses and swallows whole servers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aws_lambda_events::sqs::SqsEvent;
use aws_sdk_sqs::types::{Message, MessageSystemAttributeName, QueueAttributeName};
use login_etl::Function;
use login_etl::function::BatchFailure;
use login_etl::handler::{BatchError, BatchStats};
use login_etl_core::config::outage::OutagePolicy;
use login_etl_local_tools::esm::{self, EsmOptions};
use testkit::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

// ---------------------------------------------------------------------------------------
// A TCP proxy with faults.
// ---------------------------------------------------------------------------------------

const ON_COMMIT_PASS: u8 = 0;
/// Forward the COMMIT, let the server commit, then cut the connection before its answer.
const ON_COMMIT_CUT: u8 = 1;
/// Forward the COMMIT, then drop everything the server says on that connection, forever.
const ON_COMMIT_SWALLOW: u8 = 2;

#[derive(Default)]
struct Faults {
    /// Added before each chunk is forwarded, either way (ms).
    delay_ms: AtomicU64,
    /// Connections numbered below this forward nothing any more, either way, and stay open:
    /// a NAT or conntrack entry that expired, a failed-over address. New ones pass.
    black_hole_below: AtomicU64,
    on_commit: AtomicU8,
    commits: AtomicUsize,
    accepted: AtomicU64,
}

struct FaultProxy {
    port: u16,
    faults: Arc<Faults>,
}

impl FaultProxy {
    async fn start(target: String) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let faults = Arc::new(Faults::default());
        let shared = faults.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let id = shared.accepted.fetch_add(1, Ordering::SeqCst);
                let (faults, target) = (shared.clone(), target.clone());
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(&target).await {
                        connection(id, client, server, faults).await;
                    }
                });
            }
        });
        FaultProxy { port, faults }
    }

    /// Black-holes every connection open now.
    fn black_hole_open_connections(&self) {
        let open = self.faults.accepted.load(Ordering::SeqCst);
        self.faults.black_hole_below.store(open, Ordering::SeqCst);
    }
}

async fn connection(id: u64, client: TcpStream, server: TcpStream, faults: Arc<Faults>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let swallow_answers = Arc::new(AtomicBool::new(false));
    let black_holed = {
        let faults = faults.clone();
        move || id < faults.black_hole_below.load(Ordering::SeqCst)
    };
    let upstream = {
        let (faults, swallow_answers, black_holed) =
            (faults.clone(), swallow_answers.clone(), black_holed.clone());
        async move {
            let mut buffer = vec![0u8; 64 * 1024];
            loop {
                let n = match client_read.read(&mut buffer).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                if black_holed() {
                    continue;
                }
                let delay = faults.delay_ms.load(Ordering::SeqCst);
                if delay > 0 {
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                }
                let chunk = &buffer[..n];
                let is_commit = chunk.first() == Some(&b'Q') && chunk.windows(7).any(|w| w == b"COMMIT\0");
                if server_write.write_all(chunk).await.is_err() {
                    return;
                }
                // Each commit fault strikes once, on the connection that sent the COMMIT.
                let fault = if is_commit {
                    faults.on_commit.swap(ON_COMMIT_PASS, Ordering::SeqCst)
                } else {
                    ON_COMMIT_PASS
                };
                match fault {
                    ON_COMMIT_CUT => {
                        faults.commits.fetch_add(1, Ordering::SeqCst);
                        swallow_answers.store(true, Ordering::SeqCst);
                        // The server reads and commits the COMMIT before it notices.
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        return;
                    }
                    ON_COMMIT_SWALLOW => {
                        faults.commits.fetch_add(1, Ordering::SeqCst);
                        swallow_answers.store(true, Ordering::SeqCst);
                    }
                    _ => {}
                }
            }
        }
    };
    let downstream = async move {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let n = match server_read.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if black_holed() || swallow_answers.load(Ordering::SeqCst) {
                continue;
            }
            let delay = faults.delay_ms.load(Ordering::SeqCst);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            if client_write.write_all(&buffer[..n]).await.is_err() {
                return;
            }
        }
    };
    // Either side ending (or the cut) ends the connection: both sockets are dropped.
    tokio::select! {
        _ = upstream => {}
        _ = downstream => {}
    }
}

// ---------------------------------------------------------------------------------------
// The function, real queues and real receipts.
// ---------------------------------------------------------------------------------------

const POLICY: OutagePolicy = OutagePolicy {
    backoff_base: Duration::from_secs(2),
    backoff_max: Duration::from_secs(4),
    fail_fast: Duration::from_millis(500),
};

struct Setup {
    db: TestDb,
    kms: login_etl_core::keys::Kms,
    queues: TestQueues,
    queue_arn: String,
}

impl Setup {
    async fn new(max_receive_count: u32, visibility_timeout: u32) -> Setup {
        let db = TestDb::new().await;
        let kms = new_kms().await;
        init_keys(&db, &kms).await;
        let queues = TestQueues::new(max_receive_count, visibility_timeout).await;
        let queue_arn = queues
            .sqs
            .get_queue_attributes()
            .queue_url(&queues.queue_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .expect("arn")
            .attributes
            .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
            .expect("arn");
        Setup { db, kms, queues, queue_arn }
    }

    /// The function against `database`, its SQS calls to `sqs_endpoint`.
    async fn function(
        &self,
        database: tokio_postgres::Config,
        sqs_endpoint: &str,
        outage: OutagePolicy,
        retry_budget: Option<Duration>,
    ) -> Function {
        let mut config = self.db.app_config();
        config.database = database.into();
        config.outage = outage;
        if let Some(budget) = retry_budget {
            config.retry_budget = budget;
        }
        Function::new(config, self.kms.clone(), aws_sdk_sqs::Client::new(&sdk_config(sqs_endpoint).await))
    }

    /// Sends `bodies` and receives every one of them once (in flight for the queue's
    /// visibility timeout), as the event source mapping would.
    async fn send_and_receive(&self, bodies: &[String]) -> Vec<Message> {
        self.queues.send(bodies).await;
        let mut received = Vec::new();
        let started = Instant::now();
        while received.len() < bodies.len() {
            assert!(started.elapsed() < Duration::from_secs(600), "only {} received", received.len());
            let output = self
                .queues
                .sqs
                .receive_message()
                .queue_url(&self.queues.queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .message_attribute_names("All")
                .send()
                .await
                .expect("receive");
            received.extend(output.messages.unwrap_or_default());
        }
        received
    }

    fn event(&self, messages: &[Message]) -> SqsEvent {
        esm::sqs_event(messages, &self.queue_arn, "us-east-1").expect("event")
    }

    /// The ids visible on the queue now (received, then made visible again at once).
    async fn visible_ids(&self) -> Vec<String> {
        let mut ids = Vec::new();
        loop {
            let output = self
                .queues
                .sqs
                .receive_message()
                .queue_url(&self.queues.queue_url)
                .max_number_of_messages(10)
                .visibility_timeout(0)
                .send()
                .await
                .expect("receive");
            let messages = output.messages.unwrap_or_default();
            let new: Vec<String> = messages
                .iter()
                .filter_map(|m| m.message_id().map(str::to_owned))
                .filter(|id| !ids.contains(id))
                .collect();
            if new.is_empty() {
                ids.sort();
                return ids;
            }
            ids.extend(new);
        }
    }
}

fn bodies(tag: &str, n: usize) -> Vec<String> {
    many_logins(n, tag).into_iter().map(|(_, body)| body).collect()
}

async fn handle(
    function: &Function,
    event: SqsEvent,
    timeout: Duration,
) -> (Result<(usize, BatchStats), BatchFailure>, Duration) {
    let started = Instant::now();
    let result = function
        .handle(event, started + timeout)
        .await
        .map(|(response, stats)| (response.batch_item_failures.len(), stats));
    (result, started.elapsed())
}

// ---------------------------------------------------------------------------------------
// The deadline and the hide.
// ---------------------------------------------------------------------------------------

/// `ApproximateReceiveCount` missing, garbage, 0 or `u32::MAX`: each message is hidden for
/// the base (or the cap), never for more than SQS allows (moto refuses > 43,200 s), and the
/// next batch, which fails fast, hides its messages too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_network_odd_receive_counts_hide_for_the_base_or_the_cap_and_fail_fast_still_hides() {
    let setup = Setup::new(10, 60).await;
    let (proxy, through_proxy) = DatabaseProxy::in_front_of(&setup.db.config).await;
    proxy.set(Mode::Refuse);
    // A fail-fast window and a cap far beyond what a loaded machine takes between the
    // steps: the second batch surely fails fast, and only the second hide can explain
    // messages back within seconds.
    let policy =
        OutagePolicy { backoff_max: Duration::from_secs(40), fail_fast: Duration::from_secs(30), ..POLICY };
    let function = setup.function(through_proxy, &aws_endpoint(), policy, None).await;
    let messages = setup.send_and_receive(&bodies("count", 4)).await;
    let ids: Vec<String> = messages.iter().map(|m| m.message_id().unwrap_or_default().to_owned()).collect();
    let mut event = setup.event(&messages);
    event.records[0].attributes.remove("ApproximateReceiveCount");
    event.records[1].attributes.insert("ApproximateReceiveCount".into(), "garbage".into());
    event.records[2].attributes.insert("ApproximateReceiveCount".into(), u32::MAX.to_string());
    event.records[3].attributes.insert("ApproximateReceiveCount".into(), "0".into());
    let (result, _) = handle(&function, event, Duration::from_secs(10)).await;
    let failure = result.expect_err("the database is refused");
    assert_eq!(failure.hidden, 4, "{failure:?}");

    // The same messages again at once: the instance fails fast, and still hides them.
    let (result, _) = handle(&function, setup.event(&messages), Duration::from_secs(10)).await;
    let rehidden_at = Instant::now();
    let failure = result.expect_err("failing fast");
    assert!(matches!(failure.error, BatchError::FailingFast), "{failure:?}");
    assert_eq!(failure.hidden, 4);

    // The second hide (receive count 1 each: 2 s) replaced the first (up to the 40 s cap):
    // all back after 2 s, long before the queue's own 60 s.
    tokio::time::sleep(Duration::from_millis(2600).saturating_sub(rehidden_at.elapsed())).await;
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(setup.visible_ids().await, expected);

    // The longest hide the default policy asks for, after the longest count: accepted.
    let mut refused = setup.db.config.clone();
    refused.port(1);
    let function = setup.function(refused, &aws_endpoint(), OutagePolicy::default(), None).await;
    let messages = setup.send_and_receive(&bodies("cap", 1)).await;
    let mut event = setup.event(&messages[..1]);
    event.records[0].attributes.insert("ApproximateReceiveCount".into(), u32::MAX.to_string());
    let (result, _) = handle(&function, event, Duration::from_secs(10)).await;
    assert_eq!(result.expect_err("refused").hidden, 1, "a 41,400 s hide is within SQS's 12 h");
}

/// SQS itself hangs (a swallowing proxy in front of moto) while the database is hung too:
/// the invocation still ends by its deadline (hiding nothing), instead of running into the
/// Lambda timeout with the batch's state unknown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_network_hung_sqs_and_hung_database_end_the_invocation_by_its_deadline() {
    let setup = Setup::new(10, 60).await;
    let (db_proxy, through_proxy) = DatabaseProxy::in_front_of(&setup.db.config).await;
    let sqs_proxy = DatabaseProxy::start(aws_endpoint().trim_start_matches("http://").to_owned()).await;
    let function =
        setup.function(through_proxy, &format!("http://127.0.0.1:{}", sqs_proxy.port), POLICY, None).await;
    let messages = setup.send_and_receive(&bodies("hung", 10)).await;
    db_proxy.set(Mode::Swallow);
    sqs_proxy.set(Mode::Swallow);
    let timeout = Duration::from_secs(8);
    let (result, elapsed) = handle(&function, setup.event(&messages), timeout).await;
    let failure = result.expect_err("nothing answers");
    assert!(elapsed <= timeout + Duration::from_millis(300), "ran {elapsed:?} past a {timeout:?} deadline");
    assert_eq!(failure.hidden, 0);
}

/// What a hide achieved: (what the failure reported as hidden, how many really were, how
/// long the invocation ran).
struct Hidden {
    reported: usize,
    actually: u64,
    elapsed: Duration,
}

/// `n` messages in flight (queue visibility 300 s) on a warm instance whose database stops
/// answering on its open connection (statement_timeout cannot fire on a server that does
/// not answer): the batch gets the invocation's time minus what hiding `n` is given
/// (`hiding_reserve`), then the hide, through SQS slowed by `delay_ms` each way. The messages really hidden (for the
/// base, 2 s) are visible again 2.5 s later; the others stay in flight for 300 s.
async fn hide_on_a_hung_database(tag: &str, n: usize, delay_ms: u64, timeout: Duration) -> Hidden {
    let setup = Setup::new(10, 300).await;
    let db_proxy = FaultProxy::start(tcp_target(&setup.db.config)).await;
    let sqs_proxy = FaultProxy::start(aws_endpoint().trim_start_matches("http://").to_owned()).await;
    let sqs_endpoint = format!("http://127.0.0.1:{}", sqs_proxy.port);
    let function =
        setup.function(via_loopback(&setup.db.config, db_proxy.port), &sqs_endpoint, POLICY, None).await;
    let messages = setup.send_and_receive(&bodies(tag, n)).await;
    function.ready().await.expect("resources");
    db_proxy.black_hole_open_connections();
    sqs_proxy.faults.delay_ms.store(delay_ms, Ordering::SeqCst);
    let (result, elapsed) = handle(&function, setup.event(&messages), timeout).await;
    let failure = result.expect_err("hung database");
    tokio::time::sleep(POLICY.backoff_base + Duration::from_millis(500)).await;
    let actually = esm::queue_depth(&setup.queues.sqs, &setup.queues.queue_url).await.expect("depth").visible;
    eprintln!("{tag}: reported {} hidden, {actually} of {n} really, in {elapsed:?}", failure.hidden);
    assert!(elapsed <= timeout + Duration::from_millis(300), "ran {elapsed:?} past a {timeout:?} deadline");
    Hidden { reported: failure.hidden, actually, elapsed }
}

/// The template's default batch (100), SQS at normal speed: every message hidden, and
/// reported so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_network_a_hung_database_on_a_warm_instance_still_hides_a_default_batch() {
    let hidden = hide_on_a_hung_database("default", 100, 0, Duration::from_secs(10)).await;
    assert_eq!((hidden.reported, hidden.actually), (100, 100));
    // The write had its budget: the deadline minus what hiding 100 messages is given.
    assert!(hidden.elapsed >= Duration::from_millis(6500), "the write had the budget: {:?}", hidden.elapsed);
}

/// A batch of 1,000 (the template allows 10,000) with SQS at a
/// 40 ms round trip (20 ms each way, an ordinary API latency): the hide sends one
/// ChangeMessageVisibilityBatch per ten messages, one after another, inside the fixed 3 s
/// `HIDING_RESERVE`. The messages not hidden come back after the visibility timeout, not
/// the backoff, and spend receives towards the DLQ (10 × 180 s = 30 min in the template).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_network_a_large_batch_on_a_hung_database_is_hidden_whole() {
    let hidden = hide_on_a_hung_database("large", 1000, 20, Duration::from_secs(30)).await;
    assert_eq!(hidden.actually, 1000, "messages left to come back without the backoff");
}

/// The default batch (100) with SQS slow (a 600 ms round trip, a brownout): eleven
/// sequential calls (GetQueueUrl first) need more than the 3 s kept for hiding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_network_slow_sqs_and_a_hung_database_still_hide_a_default_batch() {
    let hidden = hide_on_a_hung_database("slow", 100, 300, Duration::from_secs(10)).await;
    assert_eq!(hidden.actually, 100);
}

/// When the hide runs out of time part way, `Function::handle` must report what it did
/// hide (it once reported 0 whatever it had done): the `VisibilityExtended` metric and
/// esm-local's `hidden`/`not_hidden` depend on it. 1,000 messages (two rounds of 50 calls)
/// with SQS at a 1.4 s round trip: GetQueueUrl and the first round fit in the 3.5 s kept
/// for hiding, the second does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_network_a_hide_cut_short_reports_what_it_hid() {
    let hidden = hide_on_a_hung_database("report", 1000, 700, Duration::from_secs(10)).await;
    // (Usually cut short part way; on a loaded machine it may be cut before the first answer.)
    assert!(hidden.actually < 1000, "the hide must be cut short: {}", hidden.actually);
    // What SQS confirmed in time is reported (counted as each call answers, so a hide cut
    // short keeps its count); calls cut off in flight may still have been applied, so the
    // report is a lower bound and never claims more than was hidden. (How many answers
    // arrive before the cut depends on the machine's load, so no lower figure is asserted.)
    assert!(hidden.reported as u64 <= hidden.actually, "{} of {}", hidden.reported, hidden.actually);
}

// ---------------------------------------------------------------------------------------
// The database connection, cut or hung at the worst moment.
// ---------------------------------------------------------------------------------------

/// Good and bad messages; the connection is cut right after the server received COMMIT
/// (it commits; the function never hears so). With retries the same invocation writes it
/// again; without, the batch is hidden, comes back and is written then. Either way each
/// login and each quarantined message is there exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_network_a_connection_cut_after_commit_writes_each_message_exactly_once() {
    let setup = Setup::new(10, 60).await;
    let proxy = FaultProxy::start(tcp_target(&setup.db.config)).await;
    let mut bodies = bodies("cut", 8);
    bodies.extend(["not json 1".to_owned(), "{\"ip\": \"198.51.100.250\"}".to_owned()]);
    let messages = setup.send_and_receive(&bodies).await;

    // Retries on: the cut commit is retried inside the invocation.
    let function =
        setup.function(via_loopback(&setup.db.config, proxy.port), &aws_endpoint(), POLICY, None).await;
    function.ready().await.expect("resources");
    proxy.faults.on_commit.store(ON_COMMIT_CUT, Ordering::SeqCst);
    let (result, _) = handle(&function, setup.event(&messages[..5]), Duration::from_secs(10)).await;
    let (failures, stats) = result.expect("retried inside the invocation");
    assert_eq!(failures, 0);
    assert!(proxy.faults.commits.load(Ordering::SeqCst) >= 1, "the cut must have happened");
    assert_eq!(stats.written + stats.already_present, stats.accepted as u64);

    // Retries off: the invocation fails and hides; the redelivery writes nothing twice.
    let function = setup
        .function(via_loopback(&setup.db.config, proxy.port), &aws_endpoint(), POLICY, Some(Duration::ZERO))
        .await;
    proxy.faults.on_commit.store(ON_COMMIT_PASS, Ordering::SeqCst);
    function.ready().await.expect("resources");
    proxy.faults.on_commit.store(ON_COMMIT_CUT, Ordering::SeqCst);
    let (result, _) = handle(&function, setup.event(&messages[5..]), Duration::from_secs(10)).await;
    assert_eq!(result.expect_err("no retry").hidden, 5);
    proxy.faults.on_commit.store(ON_COMMIT_PASS, Ordering::SeqCst);
    let mut again = setup.event(&messages[5..]);
    for record in &mut again.records {
        record.attributes.insert("ApproximateReceiveCount".into(), "2".into());
    }
    tokio::time::sleep(POLICY.fail_fast).await;
    let (result, _) = handle(&function, again, Duration::from_secs(10)).await;
    result.expect("written on redelivery");

    let db = &setup.db;
    assert_eq!(db.count("SELECT count(*) FROM login_data.user_logins").await, 8);
    assert_eq!(db.count("SELECT count(DISTINCT sqs_message_id) FROM login_data.user_logins").await, 8);
    assert_eq!(db.count("SELECT count(*) FROM login_data.login_quarantine").await, 2);
}

/// The server commits, and its answer never comes (that one connection's return path is
/// gone). The invocation runs out its budget and hides the batch; a new instance later
/// receives it and writes nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_network_a_commit_whose_answer_never_comes_is_hidden_and_written_once() {
    let setup = Setup::new(10, 60).await;
    let proxy = FaultProxy::start(tcp_target(&setup.db.config)).await;
    let mut bodies = bodies("lost", 6);
    bodies.push("not json".to_owned());
    let messages = setup.send_and_receive(&bodies).await;
    let function =
        setup.function(via_loopback(&setup.db.config, proxy.port), &aws_endpoint(), POLICY, None).await;
    function.ready().await.expect("resources");
    proxy.faults.on_commit.store(ON_COMMIT_SWALLOW, Ordering::SeqCst);
    let (result, elapsed) = handle(&function, setup.event(&messages), Duration::from_secs(6)).await;
    let failure = result.expect_err("no answer to COMMIT");
    assert!(matches!(failure.error, BatchError::Timeout), "{failure:?}");
    assert_eq!(failure.hidden, 7);
    assert!(elapsed <= Duration::from_millis(6300));
    assert_eq!(
        setup.db.count("SELECT count(*) FROM login_data.user_logins").await,
        6,
        "the server did commit"
    );

    let fresh = setup.function(setup.db.config.clone(), &aws_endpoint(), POLICY, None).await;
    let mut again = setup.event(&messages);
    for record in &mut again.records {
        record.attributes.insert("ApproximateReceiveCount".into(), "2".into());
    }
    let (result, _) = handle(&fresh, again, Duration::from_secs(10)).await;
    let (_, stats) = result.expect("redelivered");
    assert_eq!((stats.written, stats.already_present, stats.quarantined), (0, 6, 0));
    assert_eq!(setup.db.count("SELECT count(*) FROM login_data.login_quarantine").await, 1);
}

/// A pooled connection goes silently dead between two batches (an expired NAT or conntrack
/// entry, a failed-over address: packets vanish, nothing is reset) while new connections
/// work. The batch on it times out and is hidden, as it should. But the cancelled write
/// returns that connection to the pool (`write_once` drops a connection only when an
/// attempt *returns* an error; a timeout cancels it instead), and `RecyclingMethod::Fast`
/// hands it out again: every later batch of the instance hangs on it until TCP gives up
/// (about 15 minutes on Linux), each one hidden, none written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_network_a_silently_dead_pooled_connection_does_not_wedge_the_instance() {
    let setup = Setup::new(10, 60).await;
    let proxy = FaultProxy::start(tcp_target(&setup.db.config)).await;
    let messages = setup.send_and_receive(&bodies("nat", 30)).await;
    let function =
        setup.function(via_loopback(&setup.db.config, proxy.port), &aws_endpoint(), POLICY, None).await;
    let (result, _) = handle(&function, setup.event(&messages[..10]), Duration::from_secs(6)).await;
    result.expect("first batch");

    proxy.black_hole_open_connections();
    let (result, _) = handle(&function, setup.event(&messages[10..20]), Duration::from_secs(6)).await;
    let failure = result.expect_err("the pooled connection is dead");
    assert!(matches!(failure.error, BatchError::Timeout), "{failure:?}");
    assert_eq!(failure.hidden, 10);

    // The database is fine; new connections work. The next batch, once the fail-fast window
    // is over, must be written.
    tokio::time::sleep(POLICY.fail_fast + Duration::from_millis(100)).await;
    let mut outcomes = Vec::new();
    for _ in 0..2 {
        let (result, _) = handle(&function, setup.event(&messages[20..]), Duration::from_secs(6)).await;
        outcomes.push(
            result.as_ref().map(|(_, s)| s.written + s.already_present).map_err(|f| f.error.error_type()),
        );
        if result.is_ok() {
            break;
        }
        tokio::time::sleep(POLICY.fail_fast + Duration::from_millis(100)).await;
    }
    assert_eq!(outcomes.last(), Some(&Ok(10)), "batches after the dead connection: {outcomes:?}");
}

// ---------------------------------------------------------------------------------------
// esm-local, and what an operator can read from the queues.
// ---------------------------------------------------------------------------------------

fn esm_options(queue_url: &str) -> EsmOptions {
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

/// Receives everything left in a queue (bodies), leaving it there.
async fn bodies_left(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> Vec<String> {
    let mut bodies = Vec::new();
    for _ in 0..5 {
        let output = sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .visibility_timeout(0)
            .wait_time_seconds(0)
            .send()
            .await
            .expect("receive");
        bodies.extend(output.messages.unwrap_or_default().into_iter().filter_map(|m| m.body));
    }
    bodies
}

/// esm-local as the event source mapping: a bad message (with an ip and a device id in
/// clear) arrives while the database refuses; each failed receive is hidden for the growing backoff (so the queue's
/// long visibility timeout never brings them back), the receive count the function sees is
/// SQS's own (the quarantine row records it: one more than the failed invocations that
/// carried it), nothing is deleted before it is written, and afterwards an operator who
/// may ReceiveMessage on the queue or its DLQ finds nothing at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_esm_receive_counts_and_hides_are_sqs_own_and_nothing_is_left_to_read() {
    let setup = Setup::new(10, 120).await;
    let (proxy, through_proxy) = DatabaseProxy::in_front_of(&setup.db.config).await;
    proxy.set(Mode::Refuse);
    let policy = OutagePolicy {
        backoff_base: Duration::from_secs(1),
        backoff_max: Duration::from_secs(2),
        fail_fast: Duration::ZERO,
    };
    let function = Arc::new(setup.function(through_proxy, &aws_endpoint(), policy, None).await);
    let (ip, device) = ("203.0.113.150", "operator-readable-150");
    // The bad message alone, so that every failed invocation carried it.
    let sent = vec![format!("{{\"user_id\": \"bad\", \"ip\": \"{ip}\", \"device_id\": \"{device}\"")];
    setup.queues.send(&sent).await;

    let started = Instant::now();
    let drain = {
        let (function, sqs, options) =
            (function.clone(), setup.queues.sqs.clone(), esm_options(&setup.queues.queue_url));
        tokio::spawn(async move {
            esm::run(&function, &sqs, &options, Arc::new(AtomicBool::new(false))).await.expect("drain")
        })
    };
    tokio::time::sleep(Duration::from_secs(7)).await;
    proxy.set(Mode::Pass);
    let summary = drain.await.expect("task");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "hidden by the backoff, not the 120 s visibility timeout: {summary:?}"
    );
    assert_eq!(summary.not_hidden, 0, "{summary:?}");
    let receive_count = setup.db.count("SELECT receive_count::int8 FROM login_data.login_quarantine").await;
    assert!(summary.failed_invocations >= 2, "{summary:?}");
    assert_eq!(receive_count, summary.failed_invocations as i64 + 1, "{summary:?}");
    assert_eq!(summary.deleted, 1, "{summary:?}");
    for url in [&setup.queues.queue_url, &setup.queues.dlq_url] {
        let left = bodies_left(&setup.queues.sqs, url).await;
        assert!(left.is_empty(), "{} bodies left in {url}", left.len());
    }
}
