//! Test support for login-etl's integration tests: a database of its own per test
//! (created from `DATABASE_URL`, migrated, dropped afterwards), a KMS key and SQS queues of
//! its own per test on the moto server at `AWS_ENDPOINT_URL`, SQS events, and log capture.
//! `make test` provides the stack. A crate of its own so that both test binaries share it.
#![forbid(unsafe_code)]

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_config::BehaviorVersion;
use aws_lambda_events::sqs::SqsEvent;
use aws_sdk_kms::config::Credentials;
use aws_sdk_sqs::types::{QueueAttributeName, SendMessageBatchRequestEntry};
use login_etl::{App, handler};
use login_etl_core::config::{Config, database};
use login_etl_core::keys::Kms;
use login_etl_core::store;
use pii_vault_service::{RequestContext, VaultService};
use serde_json::{Value, json};

pub const FIRST_SENT_MS: i64 = 1_763_625_600_000;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run the tests through `make test`"))
}

/// A database of this test's own, migrated; dropped when the value is dropped.
pub struct TestDb {
    pub name: String,
    pub config: tokio_postgres::Config,
    admin: tokio_postgres::Config,
    /// Login roles made for this test (cluster-wide): dropped after the database.
    logins: Mutex<Vec<String>>,
}

impl TestDb {
    pub async fn new() -> TestDb {
        let db = TestDb::empty().await;
        let mut client = db.connect().await;
        login_etl_migrations::migrate(&mut client).await.expect("migrations apply");
        db
    }

    /// Created but not migrated.
    pub async fn empty() -> TestDb {
        let admin = database::parse_database_url(&env("DATABASE_URL")).expect("DATABASE_URL parses").config;
        let name = format!("etl_test_{}", unique_suffix());
        let admin_client = connect(&admin).await;
        admin_client.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("create test database");
        let mut config = admin.clone();
        config.dbname(&name);
        TestDb { name, config, admin, logins: Mutex::default() }
    }

    /// A new login in `group` (e.g. `login_etl_analyst`) and the config to connect as it.
    pub async fn login_in(&self, group: &str) -> tokio_postgres::Config {
        let login = format!(
            "{}_{}_{}",
            self.name,
            group.trim_start_matches("login_etl_"),
            self.logins.lock().expect("logins").len()
        );
        self.admin_connect()
            .await
            .batch_execute(&format!("CREATE ROLE {login} LOGIN IN ROLE {group}"))
            .await
            .expect("create login role");
        self.logins.lock().expect("logins").push(login.clone());
        let mut config = self.config.clone();
        config.user(&login);
        config
    }

    pub async fn connect(&self) -> tokio_postgres::Client {
        connect(&self.config).await
    }

    /// A connection to the database `DATABASE_URL` names (not this test's).
    pub async fn admin_connect(&self) -> tokio_postgres::Client {
        connect(&self.admin).await
    }

    /// A real fault inside the database: a statement-level BEFORE INSERT trigger on `table`
    /// runs `action` (PL/pgSQL; `call` is this statement's number, from 1) on each INSERT.
    /// The calls are counted in a sequence, which a rollback does not undo.
    pub async fn fault_on_insert(&self, table: &str, action: &str) {
        self.connect()
            .await
            .batch_execute(&format!(
                "CREATE SEQUENCE {table}_fault_calls;
                 CREATE FUNCTION {table}_fault() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
                     SET search_path = public, pg_catalog AS
                     $$ DECLARE call bigint := nextval('{table}_fault_calls');
                        BEGIN {action} RETURN NULL; END $$;
                 CREATE TRIGGER {table}_fault BEFORE INSERT ON {table}
                     FOR EACH STATEMENT EXECUTE FUNCTION {table}_fault();"
            ))
            .await
            .expect("fault trigger");
    }

    /// Makes every INSERT into `table` raise `message`.
    pub async fn fail_inserts_into(&self, table: &str, message: &str) {
        self.fault_on_insert(table, &format!("RAISE EXCEPTION '{message}';")).await;
    }

    /// How many INSERT statements into `table` the fault trigger saw.
    pub async fn fault_calls(&self, table: &str) -> i64 {
        self.count(&format!("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM {table}_fault_calls"))
            .await
    }

    pub async fn count(&self, sql: &str) -> i64 {
        self.connect().await.query_one(sql, &[]).await.expect(sql).get(0)
    }

    /// The function's configuration against this database.
    pub fn app_config(&self) -> Config {
        Config {
            database: self.config.clone().into(),
            kms_key_id: String::new(),
            pool_size: 2,
            retry_budget: login_etl_core::config::DEFAULT_RETRY_BUDGET,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let admin = self.admin.clone();
        let name = self.name.clone();
        let logins = std::mem::take(&mut *self.logins.lock().unwrap_or_else(|e| e.into_inner()));
        // Drop runs inside the test's runtime, which cannot be blocked on: use a thread.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            runtime.block_on(async {
                let client = connect(&admin).await;
                client.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await.ok()?;
                for login in logins {
                    client.batch_execute(&format!("DROP ROLE IF EXISTS {login}")).await.ok()?;
                }
                Some(())
            })
        })
        .join();
    }
}

/// `process_counter_nanos`: unique across the parallel tests and test processes of one run.
pub fn unique_suffix() -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").subsec_nanos();
    format!("{}_{}_{nanos}", std::process::id(), COUNTER.fetch_add(1, Ordering::SeqCst))
}

pub async fn connect(config: &tokio_postgres::Config) -> tokio_postgres::Client {
    database::connect(&config.clone().into()).await.expect("connect to test Postgres")
}

/// A `postgres://` URL for a TCP config of the test server (for binaries run as processes).
pub fn url_of(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        other => panic!("the test server must be reached over TCP, not {other:?}"),
    };
    format!(
        "postgres://{}@{host}:{}/{}",
        config.get_user().expect("user"),
        config.get_ports().first().copied().unwrap_or(5432),
        config.get_dbname().expect("dbname")
    )
}

/// The moto server the stack runs.
pub fn aws_endpoint() -> String {
    env("AWS_ENDPOINT_URL")
}

pub async fn sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "tests"))
        .load()
        .await
}

/// A KMS key of this test's own on the moto server.
pub async fn new_kms() -> Kms {
    let client = aws_sdk_kms::Client::new(&sdk_config(&aws_endpoint()).await);
    let key = client.create_key().description("login-etl test key").send().await.expect("moto CreateKey");
    let key_id = key.key_metadata().expect("key metadata").key_id().to_owned();
    Kms::new(client, key_id)
}

/// What `pii-vault admin init-keys` does: the keys, created once (idempotent).
pub async fn init_keys(db: &TestDb, kms: &Kms) {
    login_etl_core::keys::create_missing_keys(&db.connect().await, kms).await.expect("init keys");
}

/// A cold start against this database and key (the keys created first if missing).
pub async fn cold_start(db: &TestDb, kms: &Kms) -> App {
    init_keys(db, kms).await;
    App::init(&db.app_config(), kms).await.expect("init")
}

/// The vault service, connected as a login in `login_etl_vault_service`.
pub async fn vault_service(db: &TestDb, kms: &Kms, reveal_budget_per_day: u32) -> VaultService {
    let pool = store::pool(db.login_in("login_etl_vault_service").await.into(), 4).expect("pool");
    VaultService::new(pool, kms.clone(), reveal_budget_per_day)
}

/// A reason the vault service accepts.
pub const REASON: &str = "ticket SEC-4711";

/// The function, running as a login in the writer role, loads the exercise's queue.
pub async fn loaded_by_writer(db: &TestDb, kms: &Kms) -> App {
    init_keys(db, kms).await;
    let mut config = db.app_config();
    config.database = db.login_in("login_etl_writer").await.into();
    let app = App::init(&config, kms).await.expect("the writer loads the keys");
    let response = handler::handle(&app, load_event("events/login-queue-100.json")).await.expect("batch");
    assert_eq!(response.batch_item_failures.len(), 1);
    app
}

/// A staff member's request, as SigV4 on the function URL proves it.
pub fn staff(name: &str) -> RequestContext {
    RequestContext {
        caller: format!("arn:aws:sts::123456789012:assumed-role/pii-vault-staff/{name}"),
        request_id: format!("req-{}", unique_suffix()),
        staff: true,
        key_admin: false,
    }
}

/// The key administrator's request.
pub fn key_admin() -> RequestContext {
    RequestContext {
        caller: "arn:aws:sts::123456789012:assumed-role/pii-vault-key-admin/admin".into(),
        request_id: format!("req-{}", unique_suffix()),
        staff: false,
        key_admin: true,
    }
}

/// The repository's root, where `events/` and `tests/fixtures/` are.
fn repo_path(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

pub fn load_event(path: &str) -> SqsEvent {
    let full = repo_path(path);
    let text = std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()));
    serde_json::from_str(&text).expect("event parses")
}

/// The exercise's 100 message bodies, in queue order.
pub fn sample_messages() -> Vec<Value> {
    let path = repo_path("tests/fixtures/login-queue-messages.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("fixture parses")
}

/// An SQS event with the given (message id, body) records, sent one second apart.
pub fn event(records: &[(String, String)]) -> SqsEvent {
    let records: Vec<Value> = records
        .iter()
        .enumerate()
        .map(|(i, (id, body))| {
            json!({
                "messageId": id,
                "receiptHandle": format!("handle-{id}"),
                "body": body,
                "attributes": {
                    "ApproximateReceiveCount": "1",
                    "SentTimestamp": (FIRST_SENT_MS + i as i64 * 1000).to_string(),
                },
                "messageAttributes": {},
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:login-queue",
                "awsRegion": "us-east-1",
            })
        })
        .collect();
    serde_json::from_value(json!({ "Records": records })).expect("event shape")
}

/// `n` valid logins with ids `{tag}-00000`…, their ips and device ids repeating every 7.
pub fn many_logins(n: usize, tag: &str) -> Vec<(String, String)> {
    (0..n)
        .map(|i| {
            let id = format!("{tag}-{i:05}");
            let body = login_body(&id, &format!("198.51.100.{}", i % 7), &format!("dev-{}", i % 7));
            (id, body)
        })
        .collect()
}

/// A valid login body with the given ip and device id.
pub fn login_body(user: &str, ip: &str, device_id: &str) -> String {
    json!({
        "user_id": user, "app_version": "1.2.3", "device_type": "ios",
        "ip": ip, "locale": "DE", "device_id": device_id,
    })
    .to_string()
}

pub fn failed_ids(response: &aws_lambda_events::sqs::SqsBatchResponse) -> Vec<String> {
    let mut ids: Vec<String> =
        response.batch_item_failures.iter().map(|f| f.item_identifier.clone()).collect();
    ids.sort();
    ids
}

/// Collects what the JSON log subscriber writes.
#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl LogCapture {
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().expect("log buffer").clone()).expect("utf-8 logs")
    }
}

impl Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A queue and its dead-letter queue of one test's own on the moto server.
pub struct TestQueues {
    pub sqs: aws_sdk_sqs::Client,
    pub queue_url: String,
    pub dlq_url: String,
}

impl TestQueues {
    /// The DLQ receives what was received `max_receive_count` times.
    pub async fn new(max_receive_count: u32, visibility_timeout: u32) -> TestQueues {
        let sqs = aws_sdk_sqs::Client::new(&sdk_config(&aws_endpoint()).await);
        let name = format!("esm-test-{}", unique_suffix());
        let dlq_url = sqs
            .create_queue()
            .queue_name(format!("{name}-dlq"))
            .send()
            .await
            .expect("dlq")
            .queue_url
            .expect("url");
        let dlq_arn = sqs
            .get_queue_attributes()
            .queue_url(&dlq_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .expect("dlq arn")
            .attributes
            .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
            .expect("arn");
        let redrive =
            json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive_count.to_string()});
        let queue_url = sqs
            .create_queue()
            .queue_name(&name)
            .attributes(QueueAttributeName::VisibilityTimeout, visibility_timeout.to_string())
            .attributes(QueueAttributeName::RedrivePolicy, redrive.to_string())
            .send()
            .await
            .expect("queue")
            .queue_url
            .expect("url");
        TestQueues { sqs, queue_url, dlq_url }
    }

    /// Sends the bodies, ten per `SendMessageBatch`.
    pub async fn send(&self, bodies: &[String]) {
        for chunk in bodies.chunks(10) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, body)| {
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(body)
                        .build()
                        .expect("entry")
                })
                .collect();
            let output = self
                .sqs
                .send_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(entries))
                .send()
                .await;
            assert!(output.expect("send").failed().is_empty());
        }
    }
}

/// A Lambda function binary run as Lambda runs it: `cargo lambda watch --only-lambda-apis`
/// serves the runtime API (and function URLs, and the Invoke API), and the real binary
/// polls it. The processes stop on drop.
pub struct LocalLambda {
    pub port: u16,
    children: Vec<std::process::Child>,
}

impl LocalLambda {
    /// Starts the emulator, then `binary` with `env` (and the runtime's own variables); the
    /// binary's stdout and stderr go to `output` if given.
    pub async fn start(binary: &str, env: &[(&str, String)], output: Option<&Path>) -> LocalLambda {
        let port = free_port();
        let path =
            format!("{}:{}", repo_path(".venv/bin").display(), std::env::var("PATH").unwrap_or_default());
        let watch = std::process::Command::new("cargo")
            .args(["lambda", "watch", "--only-lambda-apis", "--invoke-address", "127.0.0.1"])
            .args(["--invoke-port", &port.to_string()])
            .current_dir(repo_path(""))
            .env("PATH", &path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("cargo lambda watch (make test installs cargo-lambda into .venv)");
        let mut lambda = LocalLambda { port, children: vec![watch] };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(std::time::Instant::now() < deadline, "cargo lambda watch did not listen on {port}");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let mut command = std::process::Command::new(binary);
        command
            .env("AWS_LAMBDA_RUNTIME_API", format!("http://127.0.0.1:{port}/.rt"))
            .env(
                "AWS_LAMBDA_FUNCTION_NAME",
                Path::new(binary).file_name().and_then(|n| n.to_str()).unwrap_or("fn"),
            )
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
        match output {
            Some(path) => {
                let file = std::fs::File::create(path).expect("output file");
                command.stdout(file.try_clone().expect("file")).stderr(file);
            }
            None => {
                command.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
            }
        }
        lambda.children.push(command.spawn().expect("function binary"));
        lambda
    }

    /// The function URL (cargo-lambda serves the one function as `_`).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/lambda-url/_/", self.port)
    }

    /// Invokes the function with `event` (the Invoke API), retrying until it answers 200.
    pub async fn invoke(&self, event: &[u8]) -> Vec<u8> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if let Some((200, body)) =
                http_request(self.port, "POST", "/2015-03-31/functions/_/invocations", event).await
            {
                return body;
            }
            assert!(std::time::Instant::now() < deadline, "the function did not answer on {}", self.port);
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
}

impl Drop for LocalLambda {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The vault service on the same path as the local stack's (`scripts/local-service.sh`),
/// as a login in `login_etl_vault_service` of this test's database.
pub struct LocalVaultService {
    /// The function URL to give `pii-vault` as `PII_VAULT_URL`.
    pub url: String,
    _lambda: LocalLambda,
}

impl LocalVaultService {
    /// `service_binary`: [`workspace_binary`]`("pii-vault-service")`, or the test's own
    /// `env!("CARGO_BIN_EXE_pii-vault-service")`.
    pub async fn start(db: &TestDb, kms: &Kms, service_binary: &str, identity: &str) -> LocalVaultService {
        let env = [
            ("DATABASE_URL", url_of(&db.login_in("login_etl_vault_service").await)),
            ("KMS_KEY_ID", kms.key_id().to_owned()),
            ("PII_VAULT_LOCAL_IDENTITY", identity.to_owned()),
            ("REVEAL_BUDGET_PER_DAY", "100000".to_owned()),
        ];
        let lambda = LocalLambda::start(service_binary, &env, None).await;
        // Ready when the service itself answers: a GET is refused with 400 before it is
        // audited (only POSTed requests are operations).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while http_request(lambda.port, "GET", "/lambda-url/_/", b"").await.map(|(status, _)| status)
            != Some(400)
        {
            assert!(
                std::time::Instant::now() < deadline,
                "pii-vault-service did not answer on {}",
                lambda.port
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        LocalVaultService { url: lambda.url(), _lambda: lambda }
    }
}

/// A bare HTTP/1.1 request to 127.0.0.1:`port`: the status and body, if an answer came.
async fn http_request(port: u16, method: &str, path: &str, body: &[u8]) -> Option<(u16, Vec<u8>)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.ok()?;
        stream.write_all(body).await.ok()?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.ok()?;
        let split = answer.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = std::str::from_utf8(&answer[..split]).ok()?.to_ascii_lowercase();
        let status = head.get(9..12)?.parse().ok()?;
        let mut body = answer[split + 4..].to_vec();
        if head.contains("transfer-encoding: chunked") {
            body = dechunk(&body)?;
        }
        Some((status, body))
    };
    tokio::time::timeout(std::time::Duration::from_secs(30), attempt).await.ok().flatten()
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size = usize::from_str_radix(std::str::from_utf8(&data[..line_end]).ok()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

/// A binary of another package of the workspace, built beside the running test binary
/// (`cargo test --workspace` builds every package's binaries before it runs a test).
pub fn workspace_binary(name: &str) -> String {
    let test_binary = std::env::current_exe().expect("the test binary's path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let profile_dir = test_binary.parent().and_then(Path::parent).expect("target/<profile>");
    let binary = profile_dir.join(name);
    assert!(
        binary.exists(),
        "{} is not built: run the tests with `cargo test --workspace`",
        binary.display()
    );
    binary.display().to_string()
}

/// A loopback port nothing listens on (just now).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A throwaway PostgreSQL that accepts TLS only (`hostssl` lines alone in `pg_hba.conf`),
/// with a server certificate for `localhost` and `127.0.0.1` signed by a CA of its own;
/// `other_ca` is a CA it has never seen. Stopped and removed on drop.
pub struct TlsCluster {
    pub port: u16,
    /// The CA that signed the server certificate (PEM).
    pub ca: std::path::PathBuf,
    /// Another CA (PEM).
    pub other_ca: std::path::PathBuf,
    dir: std::path::PathBuf,
}

impl TlsCluster {
    pub fn start() -> TlsCluster {
        let dir = std::env::temp_dir().join(format!("login-etl-tls-{}", unique_suffix()));
        std::fs::create_dir_all(&dir).expect("cluster dir");
        let run = |program: &str, args: &[&str]| {
            let output = std::process::Command::new(program).args(args).current_dir(&dir).output();
            let output = output.unwrap_or_else(|e| panic!("{program}: {e}"));
            assert!(
                output.status.success(),
                "{program} {args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        };
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        for (name, cn) in [("ca", "login-etl test CA"), ("other-ca", "a CA nobody trusts")] {
            let (key, pem, subject) = (format!("{name}.key"), format!("{name}.pem"), format!("/CN={cn}"));
            let mut args = vec!["req", "-x509"];
            args.extend(ec);
            args.extend(["-keyout", &key, "-out", &pem, "-days", "2", "-subj", &subject]);
            run("openssl", &args);
        }
        let mut args = vec!["req"];
        args.extend(ec);
        args.extend(["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"]);
        run("openssl", &args);
        std::fs::write(dir.join("san.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n").expect("ext");
        run(
            "openssl",
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.crt",
                "-days",
                "2",
                "-extfile",
                "san.ext",
            ],
        );

        let root = running_as_root();
        let as_postgres = |program: &std::path::Path, args: &[&str]| {
            let mut command = if root {
                let mut c = std::process::Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(program);
                c
            } else {
                std::process::Command::new(program)
            };
            let output = command.args(args).output().expect("postgres tool");
            assert!(
                output.status.success(),
                "{program:?} {args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        };
        let data = dir.join("data");
        if root {
            run("chown", &["-R", "postgres:", "."]);
        }
        as_postgres(
            &pg_tool("initdb"),
            &["-D", data.to_str().expect("utf-8"), "-U", "postgres", "--auth=trust", "--no-sync"],
        );
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostssl all all ::1/128 trust\n",
        )
        .expect("pg_hba.conf");
        for file in ["server.crt", "server.key"] {
            std::fs::copy(dir.join(file), data.join(file)).expect("certificate into the data dir");
        }
        if root {
            run("chown", &["-R", "postgres:", "."]);
        }
        run("chmod", &["600", "data/server.key"]);
        let port = free_port();
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {port} -k {} -c ssl=on -c ssl_cert_file=server.crt \
             -c ssl_key_file=server.key -c fsync=off",
            dir.display()
        );
        let log = dir.join("server.log");
        as_postgres(
            &pg_tool("pg_ctl"),
            &[
                "-D",
                data.to_str().expect("utf-8"),
                "-l",
                log.to_str().expect("utf-8"),
                "-w",
                "-t",
                "30",
                "-o",
                &options,
                "start",
            ],
        );
        TlsCluster { port, ca: dir.join("ca.pem"), other_ca: dir.join("other-ca.pem"), dir }
    }

    /// A libpq URL for this cluster (host `localhost`), with extra query parameters.
    pub fn url(&self, params: &str) -> String {
        format!("postgres://postgres@localhost:{}/postgres?{params}", self.port)
    }
}

impl Drop for TlsCluster {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let mut command = if running_as_root() {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(pg_tool("pg_ctl"));
            c
        } else {
            std::process::Command::new(pg_tool("pg_ctl"))
        };
        let _ = command.args(["-D", data.to_str().unwrap_or_default(), "-m", "immediate", "stop"]).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether the tests run as root (then the server runs as `postgres`).
fn running_as_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A PostgreSQL server tool: on PATH, else the newest under /usr/lib/postgresql.
fn pg_tool(name: &str) -> std::path::PathBuf {
    if let Ok(output) = std::process::Command::new("sh").args(["-c", &format!("command -v {name}")]).output()
        && output.status.success()
    {
        return std::path::PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    }
    let mut versions: Vec<_> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|dir| {
            dir.filter_map(Result::ok)
                .map(|e| e.path().join("bin").join(name))
                .filter(|p| p.exists())
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    versions.pop().unwrap_or_else(|| panic!("{name} not found: scripts/stack.sh deps installs PostgreSQL"))
}
