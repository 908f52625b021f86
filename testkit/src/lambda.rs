//! Function binaries run as Lambda runs them: cargo-lambda serves the runtime API and the
//! Invoke API, the real binary polls it; and the vault service run that way.

use std::path::Path;
use std::time::Duration;

use login_etl_core::keys::Kms;
use reqwest::StatusCode;
use reqwest::header::CONTENT_TYPE;

use crate::{TestDb, repo_path, url_of};

/// A Lambda function binary run as Lambda runs it: `cargo lambda watch --only-lambda-apis`
/// serves the runtime API (and function URLs, and the Invoke API), and the real binary
/// polls it. The processes stop on drop.
pub struct LocalLambda {
    pub port: u16,
    http: reqwest::Client,
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
        let mut lambda = LocalLambda { port, http: http_client(), children: vec![watch] };
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
        let url = format!("http://127.0.0.1:{}/2015-03-31/functions/_/invocations", self.port);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let answer = self
                .http
                .post(&url)
                .header(CONTENT_TYPE, "application/json")
                .body(event.to_vec())
                .send()
                .await;
            if let Ok(answer) = answer
                && answer.status() == StatusCode::OK
                && let Ok(body) = answer.bytes().await
            {
                return body.to_vec();
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
    lambda: LocalLambda,
}

impl LocalVaultService {
    /// `service_binary`: [`workspace_binary`]`("pii-vault-service-local")` (the service with
    /// `identity` as the caller of cargo-lambda's requests, which carry no IAM identity;
    /// both roles unless `env` names `STAFF_ROLE_ARN` / `KEY_ADMIN_ROLE_ARN`).
    pub async fn start(db: &TestDb, kms: &Kms, service_binary: &str, identity: &str) -> LocalVaultService {
        LocalVaultService::start_with(db, kms, service_binary, identity, &[], None).await
    }

    /// As [`LocalVaultService::start`], its log (the service's log stream) written to `log`.
    pub async fn start_logging_to(
        db: &TestDb,
        kms: &Kms,
        service_binary: &str,
        identity: &str,
        log: Option<&Path>,
    ) -> LocalVaultService {
        LocalVaultService::start_with(db, kms, service_binary, identity, &[], log).await
    }

    /// [`LocalVaultService::start`] with more environment, its log written to `log`.
    pub async fn start_with(
        db: &TestDb,
        kms: &Kms,
        service_binary: &str,
        identity: &str,
        more: &[(&str, String)],
        log: Option<&Path>,
    ) -> LocalVaultService {
        let mut env = vec![
            ("DATABASE_URL", url_of(&db.login_in("login_etl_vault_service").await)),
            ("KMS_KEY_ID", kms.key_id().to_owned()),
            ("PII_VAULT_LOCAL_IDENTITY", identity.to_owned()),
            ("REVEAL_BUDGET_PER_DAY", "100000".to_owned()),
            ("REVEAL_BUDGET_PER_ROLE_PER_DAY", "100000".to_owned()),
        ];
        env.extend(more.iter().cloned());
        let lambda = LocalLambda::start(service_binary, &env, log).await;
        // Ready when the service itself answers: a GET is refused (400 in a role, 403 in
        // none), on the record as a `request` refused.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !matches!(
            lambda.http.get(lambda.url()).send().await.map(|answer| answer.status()),
            Ok(StatusCode::BAD_REQUEST | StatusCode::FORBIDDEN)
        ) {
            assert!(
                std::time::Instant::now() < deadline,
                "pii-vault-service did not answer on {}",
                lambda.port
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        LocalVaultService { url: lambda.url(), lambda }
    }

    /// POSTs `body` to the function URL unsigned (cargo-lambda adds no identity): the
    /// status and the answer's body.
    pub async fn post(&self, body: Vec<u8>) -> (u16, String) {
        let answer =
            self.lambda.http.post(&self.url).body(body).send().await.expect("the function URL answers");
        (answer.status().as_u16(), answer.text().await.unwrap_or_default())
    }
}

/// A client for the emulator on loopback: plain http, no proxy, no redirects, and a
/// request that takes longer than 30 s fails (then it is retried).
fn http_client() -> reqwest::Client {
    // reqwest builds its TLS configuration even when only http:// is used, with the process's
    // default provider: aws-lc-rs, as everywhere in the workspace (installed once).
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(30))
        .build()
        .expect("HTTP client")
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
