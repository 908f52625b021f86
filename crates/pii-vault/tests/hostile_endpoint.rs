//! The `pii-vault` binary against endpoints that are not the vault service: one that
//! redirects (to plain http, to another origin), a plain-http non-loopback URL, answers
//! with terminal escape sequences and bidi overrides, an oversized answer, and silence.
//! The request carries a plaintext ip and signed headers: none of it may go anywhere but
//! the configured https endpoint, and nothing the endpoint says may reach the terminal raw.

use std::process::Output;
use std::time::{Duration, Instant};

use pii_vault_protocol::{AuditRow, ErrorBody, ErrorCode, Response};
use testkit::{Answer, HostileEndpoint};

const PLAINTEXT_IP: &str = "198.51.100.77";
const HOSTILE: &str = "\u{1b}[2J\u{1b}[H\u{1b}]0;owned\u{7}mallory\u{202E}reversed\u{9b}31m";

/// `pii-vault ARGS` against `url`, trusting `ca`, with test credentials.
fn pii_vault(url: &str, ca: Option<&std::path::Path>, extra_env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_pii-vault"));
    command
        .args(args)
        .env("PII_VAULT_URL", url)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_SESSION_TOKEN", "session-token-that-must-not-travel")
        .env_remove("AWS_ENDPOINT_URL")
        .envs(extra_env.iter().copied());
    if let Some(ca) = ca {
        command.env("SSL_CERT_FILE", ca);
    }
    command.output().expect("run pii-vault")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn find(endpoint: &HostileEndpoint) -> Output {
    pii_vault(&endpoint.url(), endpoint.ca.as_deref(), &[], &["find", "--ip", PLAINTEXT_IP])
}

/// No raw control or bidi character in what a terminal would get.
fn assert_inert(text: &str) {
    assert!(
        !text
            .chars()
            .any(|c| c.is_control() && c != '\n'
                || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')),
        "raw control or bidi character reached the terminal: {}",
        text.escape_debug()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_is_never_followed_not_to_plain_http_nor_to_another_origin() {
    let plain = HostileEndpoint::http(Answer::Http(200, vec![], b"{}".to_vec())).await;
    let other = HostileEndpoint::https(Answer::Http(200, vec![], b"{}".to_vec())).await;
    for (status, target) in [
        (307, format!("http://127.0.0.1:{}/", plain.port)),
        (308, other.url()),
        (302, plain.url()),
        (301, other.url()),
    ] {
        let redirecting =
            HostileEndpoint::https(Answer::Http(status, vec![("Location".into(), target.clone())], vec![]))
                .await;
        let output = find(&redirecting);
        assert_eq!(output.status.code(), Some(7), "{status}: {}", stderr(&output));
        assert!(stderr(&output).contains("redirects are never followed"), "{}", stderr(&output));
        assert_eq!(redirecting.received().len(), 1, "the request went to the configured endpoint");
    }
    assert!(plain.received().is_empty(), "nothing reached the plain-http target");
    assert!(other.received().is_empty(), "nothing reached the other origin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_is_used_only_for_a_loopback_address() {
    for url in ["http://203.0.113.9:9/", "http://localhost.example.com:9/", "ftp://127.0.0.1:9/"] {
        let started = Instant::now();
        let output = pii_vault(url, None, &[], &["find", "--ip", PLAINTEXT_IP]);
        assert_eq!(output.status.code(), Some(2), "{url}: {}", stderr(&output));
        assert!(stderr(&output).contains("must be https://"), "{}", stderr(&output));
        assert!(started.elapsed() < Duration::from_secs(5), "refused before any connection is tried");
    }
    // The local stack's loopback http is fine: the request reaches it.
    let local = HostileEndpoint::http(Answer::Http(500, vec![], b"not json".to_vec())).await;
    let output =
        pii_vault(&format!("http://127.0.0.1:{}/", local.port), None, &[], &["find", "--ip", PLAINTEXT_IP]);
    assert_eq!(output.status.code(), Some(7), "{}", stderr(&output));
    assert_eq!(local.received().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_endpoint_says_is_shown_escaped_and_json_stays_exact() {
    // An error message made of escape sequences.
    let error = serde_json::to_vec(&ErrorBody::new(ErrorCode::BadRequest, HOSTILE)).expect("json");
    let endpoint = HostileEndpoint::https(Answer::Http(404, vec![], error)).await;
    let output = find(&endpoint);
    assert_ne!(output.status.code(), Some(0));
    assert_inert(&stderr(&output));
    assert!(stderr(&output).contains("\\u{001b}[2J"), "{}", stderr(&output));

    // An audit listing whose rows carry them (as a caller's chosen user id would).
    let row = AuditRow {
        id: 1,
        at: chrono::Utc::now(),
        caller: HOSTILE.into(),
        action: "reveal".into(),
        field: Some("ip".into()),
        blind_index: Some(format!("é{HOSTILE}")),
        target: Some(HOSTILE.into()),
        reason: Some(HOSTILE.into()),
        request_id: Some("r".into()),
        outcome: Some(HOSTILE.into()),
        detail: None,
    };
    let answer = serde_json::to_vec(&Response::Audit { entries: vec![row], next: None }).expect("json");
    let endpoint = HostileEndpoint::https(Answer::Http(200, vec![], answer)).await;
    let table = pii_vault(&endpoint.url(), endpoint.ca.as_deref(), &[], &["audit"]);
    assert_eq!(table.status.code(), Some(0), "{}", stderr(&table));
    let shown = String::from_utf8_lossy(&table.stdout);
    assert_inert(&shown);
    assert!(shown.contains("mallory\\u{202e}reversed"), "{shown}");
    let json = pii_vault(&endpoint.url(), endpoint.ca.as_deref(), &[], &["audit", "--json"]);
    assert_inert(&String::from_utf8_lossy(&json.stdout));
    let rows: Vec<AuditRow> = serde_json::from_slice(&json.stdout).expect("json");
    assert_eq!(rows[0].caller, HOSTILE, "--json carries the exact string");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_answer_is_refused_and_silence_times_out() {
    let huge = HostileEndpoint::https(Answer::Http(200, vec![], vec![b' '; 9 * 1024 * 1024])).await;
    let output = find(&huge);
    assert_eq!(output.status.code(), Some(7), "{}", stderr(&output));
    assert!(stderr(&output).contains("exceeds 8 MB"), "{}", stderr(&output));

    let silent = HostileEndpoint::https(Answer::Silence).await;
    let started = Instant::now();
    let output = pii_vault(
        &silent.url(),
        silent.ca.as_deref(),
        &[("PII_VAULT_TIMEOUT_SECONDS", "2")],
        &["find", "--ip", PLAINTEXT_IP],
    );
    assert_eq!(output.status.code(), Some(7), "{}", stderr(&output));
    assert!(started.elapsed() < Duration::from_secs(10), "bounded: {:?}", started.elapsed());
}
